"""tf_rcnn.models.detectors."""

from tf_rcnn.models.detectors.fast_rcnn import FastRCNN

__all__ = ["FastRCNN"]
