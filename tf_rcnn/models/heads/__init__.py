"""tf_rcnn.models.heads."""
