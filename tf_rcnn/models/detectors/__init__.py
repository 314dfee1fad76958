"""tf_rcnn.models.detectors: the detector families on the shared TwoStageDetector base."""

from tf_rcnn.models.detectors.cascade_rcnn import CascadeMaskRCNN, CascadeRCNN
from tf_rcnn.models.detectors.fast_rcnn import FastRCNN
from tf_rcnn.models.detectors.faster_rcnn import FasterRCNN
from tf_rcnn.models.detectors.mask_rcnn import MaskRCNN
from tf_rcnn.models.detectors.rfcn import RFCN
from tf_rcnn.models.detectors.two_stage import TwoStageDetector

__all__ = ["CascadeMaskRCNN", "CascadeRCNN", "FastRCNN", "FasterRCNN", "MaskRCNN", "RFCN",
           "TwoStageDetector"]
