"""torchvision's ``fasterrcnn_resnet50_fpn_v2`` (COCO_V1 weights, 46.7 box AP).

``configs/torchvision_fasterrcnn_resnet50_fpn.py`` with the v2 architecture (Li et al. 2021,
"Benchmarking Detection Transfer Learning with Vision Transformers"): ResNet-50 BatchNorm with
epsilon 1e-5 (frozen here: its statistics are fixed at inference), BatchNorm after every FPN
conv, an RPN head of two 3x3 convs, and a "4conv1fc" box head (four 3x3 convs of 256 with
BatchNorm and ReLU, then one fc of 1024). The BatchNorms of the FPN and heads are imported as
frozen BatchNorm (epsilon 1e-5): identical at inference, and steady when fine-tuning with small
batches.
"""

from tf_rcnn.config import base_recipe


def get_config():
    config = base_recipe("torchvision_fasterrcnn_resnet50_fpn")
    m = config.model
    m.backbone.norm_epsilon = 1e-5  # nn.BatchNorm2d default
    m.neck.norm = "frozen_bn"
    m.rpn.head_num_convs = 2
    m.roi_head.conv_dims = (256, 256, 256, 256)
    m.roi_head.norm = "frozen_bn"
    m.roi_head.fc_dims = (1024,)
    return config
