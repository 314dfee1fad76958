"""tf_rcnn.ops."""
