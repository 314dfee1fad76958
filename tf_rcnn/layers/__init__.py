"""tf_rcnn.layers."""
