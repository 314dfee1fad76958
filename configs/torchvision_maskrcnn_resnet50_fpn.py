"""torchvision's ``maskrcnn_resnet50_fpn`` (COCO_V1 weights, 37.9 box / 34.6 mask AP).

``configs/torchvision_fasterrcnn_resnet50_fpn.py`` plus torchvision's mask branch:
MultiScaleRoIAlign 14x14 (sampling ratio 2, ``aligned=False``) on P2-P5, four 3x3 convs of 256
with ReLU, a 2x2 stride-2 transposed conv of 256 with ReLU and a 1x1 conv to one 28x28 mask per
class; masks are pasted with torchvision's ``paste_masks_in_image`` rule (a one-cell zero border,
the box widened by 30/28, integer box, bilinear resize) and binarised at > 0.5.
"""

from tf_rcnn.config import base_recipe


def get_config():
    config = base_recipe("torchvision_fasterrcnn_resnet50_fpn")
    m = config.model
    m.type = "mask_rcnn"
    k = m.mask_head
    k.head = "fpn_conv"
    k.conv_dims = (256, 256, 256, 256)
    k.deconv_dim = 256
    k.pooler_resolution = 14
    k.sampling_ratio = 2
    k.aligned = False
    k.class_agnostic = False
    k.paste_rule = "torchvision"
    config.data.mask_crop_size = 56
    return config
