"""torchvision's ``maskrcnn_resnet50_fpn_v2`` (COCO_V1 weights, 47.4 box / 41.8 mask AP).

``configs/torchvision_fasterrcnn_resnet50_fpn_v2.py`` plus the mask branch of
``configs/torchvision_maskrcnn_resnet50_fpn.py`` with BatchNorm (frozen here) after each of its
four 3x3 convs.
"""

from tf_rcnn.config import base_recipe


def get_config():
    config = base_recipe("torchvision_fasterrcnn_resnet50_fpn_v2")
    mask = base_recipe("torchvision_maskrcnn_resnet50_fpn")
    config.model.type = "mask_rcnn"
    config.model.mask_head = mask.model.mask_head
    config.model.mask_head.norm = "frozen_bn"
    config.data.mask_crop_size = mask.data.mask_crop_size
    return config
