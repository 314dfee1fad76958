"""tf_rcnn.models.necks."""
