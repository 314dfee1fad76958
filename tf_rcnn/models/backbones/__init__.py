"""tf_rcnn.models.backbones."""
