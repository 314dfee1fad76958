"""tf_rcnn.evaluation."""
