"""Faster R-CNN ResNet-50-C4 on COCO 2017, Detectron "1x" schedule.

Sources: He et al. 2016 (ResNet) Sec. A / Ren et al. 2015 for the C4 design (RPN and RoI pooling on
the stride-16 res4 output, res5 applied per RoI as the box head); Detectron's
``e2e_faster_rcnn_R-50-C4_1x.yaml`` for the numbers.

Starts from ``configs/faster_rcnn_r50_fpn_coco.py``, whose backbone, COCO data, 1x schedule and
RoI sampling it keeps, and replaces the FPN by the C4 design; the data paths are set as there.
"""

from tf_rcnn.config import base_recipe


def get_config():
    config = base_recipe("faster_rcnn_r50_fpn_coco")
    m = config.model
    m.neck.type = "none"  # no FPN: C4 features feed both stages
    m.rpn.in_features = ("C4",)
    m.rpn.anchor_sizes = ((32.0, 64.0, 128.0, 256.0, 512.0),)  # Detectron C4: 5 sizes
    m.rpn.pre_nms_topk_train = 12000  # Detectron RPN_PRE_NMS_TOP_N (train)
    m.rpn.post_nms_topk_train = 2000  # Detectron RPN_POST_NMS_TOP_N (train)
    m.rpn.pre_nms_topk_test = 6000  # Detectron RPN_PRE_NMS_TOP_N (test)
    m.rpn.straddle_threshold = 0.0  # Faster R-CNN Sec. 3.3: cross-boundary anchors ignored
    m.roi_head.in_features = ("C4",)
    m.roi_head.pooler_resolution = 14  # Detectron ROI_XFORM_RESOLUTION for C4
    m.roi_head.box_head = "res5"  # res5 on each RoI (stride 2 -> 7x7) + average pool

    config.data.size_divisor = 16  # the deepest map used is stride 16
    return config
