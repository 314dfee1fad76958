"""The second stage: from proposals to detections.

``RoIHeadsBase`` (base.py) holds what every second stage shares: training RoIs (sampling, or
``OHEMSampler`` from ohem.py), the R-CNN losses and decoding. Subclasses say where predictions
come from:

- ``RoIHeads`` (standard.py): RoI pooling -> box head (box_head.py: ``FPNBoxHead``,
  ``ResNetC4BoxHead``, ``VGGBoxHead``) -> ``BoxPredictor``; Fast/Faster R-CNN.
- ``MaskRoIHeads`` (mask_roi_heads.py): ``RoIHeads`` plus the ``MaskHead`` network
  (mask_head.py); Mask R-CNN.
- ``CascadeRoIHeads`` (cascade_roi_heads.py): a chain of ``RoIHeads`` stages at rising IoU
  (the first may be a ``MaskRoIHeads``); Cascade (Mask) R-CNN.
- ``RFCNRoIHeads`` (rfcn_roi_heads.py): the ``RFCNHead`` network (rfcn_head.py), score maps once
  per image and PS-RoI pooling per RoI; R-FCN.
"""

from tf_rcnn.models.roi_heads.base import RoIHeadsBase, pool_features
from tf_rcnn.models.roi_heads.box_head import (
    BoxPredictor,
    FPNBoxHead,
    ResNetC4BoxHead,
    VGGBoxHead,
    copy_keras_vgg16_fc_weights,
)
from tf_rcnn.models.roi_heads.cascade_roi_heads import CascadeRoIHeads
from tf_rcnn.models.roi_heads.mask_head import MaskHead, select_class_masks
from tf_rcnn.models.roi_heads.mask_roi_heads import MaskRoIHeads
from tf_rcnn.models.roi_heads.ohem import OHEMSampler, ohem_select
from tf_rcnn.models.roi_heads.rfcn_head import RFCNHead
from tf_rcnn.models.roi_heads.rfcn_roi_heads import RFCNRoIHeads
from tf_rcnn.models.roi_heads.standard import RoIHeads

__all__ = [
    "BoxPredictor",
    "CascadeRoIHeads",
    "FPNBoxHead",
    "MaskHead",
    "MaskRoIHeads",
    "OHEMSampler",
    "RFCNHead",
    "RFCNRoIHeads",
    "ResNetC4BoxHead",
    "RoIHeadsBase",
    "RoIHeads",
    "VGGBoxHead",
    "copy_keras_vgg16_fc_weights",
    "ohem_select",
    "select_class_masks",
    "pool_features",
]
