"""tf_rcnn.models.detectors."""

from tf_rcnn.models.detectors.fast_rcnn import FastRCNN
from tf_rcnn.models.detectors.mask_rcnn import MaskRCNN
from tf_rcnn.models.detectors.rfcn import RFCN

__all__ = ["FastRCNN", "MaskRCNN", "RFCN"]
