"""tf_rcnn.models.detectors."""
