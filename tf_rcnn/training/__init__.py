"""tf_rcnn.training."""
