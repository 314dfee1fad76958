"""Faster R-CNN ResNet-50-C4 on COCO 2017, Detectron "1x" schedule.

Sources: He et al. 2016 (ResNet) Sec. A / Ren et al. 2015 for the C4 design (RPN and RoI pooling on
the stride-16 res4 output, res5 applied per RoI as the box head); Detectron's
``e2e_faster_rcnn_R-50-C4_1x.yaml`` for the numbers.
"""

from tf_rcnn.config import default_config


def get_config():
    config = default_config()
    m = config.model
    m.num_classes = 80
    m.backbone.name = "resnet50"
    m.backbone.weights = "imagenet"
    m.backbone.freeze_at = 2  # Detectron FREEZE_AT
    m.neck.type = "none"  # no FPN: C4 features feed both stages
    m.rpn.in_features = ("C4",)
    m.rpn.anchor_sizes = ((32.0, 64.0, 128.0, 256.0, 512.0),)  # Detectron C4: 5 sizes
    m.rpn.aspect_ratios = (0.5, 1.0, 2.0)
    m.rpn.pre_nms_topk_train = 12000  # Detectron RPN_PRE_NMS_TOP_N (train)
    m.rpn.post_nms_topk_train = 2000  # Detectron RPN_POST_NMS_TOP_N (train)
    m.rpn.pre_nms_topk_test = 6000  # Detectron RPN_PRE_NMS_TOP_N (test)
    m.rpn.post_nms_topk_test = 1000  # Detectron RPN_POST_NMS_TOP_N (test)
    m.rpn.straddle_threshold = 0.0  # Faster R-CNN Sec. 3.3: cross-boundary anchors ignored
    m.roi_head.in_features = ("C4",)
    m.roi_head.pooler = "roi_align"
    m.roi_head.pooler_resolution = 14  # Detectron ROI_XFORM_RESOLUTION for C4
    m.roi_head.box_head = "res5"  # res5 on each RoI (stride 2 -> 7x7) + average pool
    m.roi_head.batch_size_per_image = 512
    m.roi_head.positive_fraction = 0.25
    m.roi_head.bg_iou_low = 0.0

    d = config.data
    d.dataset = "coco"
    d.scales = (800,)
    d.max_size = 1333
    d.size_divisor = 16  # the deepest map used is stride 16
    d.train_batch_size = 16
    d.eval_batch_size = 2

    t = config.train
    t.base_learning_rate = 0.02
    t.base_batch_size = 16
    t.total_steps = 90000
    t.schedule = "step"
    t.decay_steps = (60000, 80000)
    t.warmup_steps = 500
    t.warmup_factor = 1.0 / 3.0
    t.weight_decay = 1e-4
    t.checkpoint_every = 5000
    return config
