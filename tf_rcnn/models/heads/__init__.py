"""tf_rcnn.models.heads: RPN head (``rpn``), second-stage box heads and predictor (``box``).

Other heads (R-FCN, mask) live in their own modules and are imported from there.
"""

from tf_rcnn.models.heads.box import (
    BoxPredictor,
    FPNBoxHead,
    ResNetC4BoxHead,
    VGGBoxHead,
    copy_keras_vgg16_fc_weights,
)
from tf_rcnn.models.heads.rpn import RPNHead

__all__ = [
    "BoxPredictor",
    "FPNBoxHead",
    "RPNHead",
    "ResNetC4BoxHead",
    "VGGBoxHead",
    "copy_keras_vgg16_fc_weights",
]
