"""tf_rcnn.data."""
