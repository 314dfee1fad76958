"""tf_rcnn.models."""
