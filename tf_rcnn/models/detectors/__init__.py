"""tf_rcnn.models.detectors."""

from tf_rcnn.models.detectors.fast_rcnn import FastRCNN
from tf_rcnn.models.detectors.rfcn import RFCN

__all__ = ["FastRCNN", "RFCN"]
