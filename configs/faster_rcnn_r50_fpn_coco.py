"""Faster R-CNN ResNet-50-FPN on COCO 2017, Detectron "1x" schedule.

Sources: Lin et al. 2017 (FPN) Sec. 4-5 for the pyramid, anchors and heads; Detectron's
``e2e_faster_rcnn_R-50-FPN_1x.yaml`` for the schedule and sampling numbers. The defaults in
``tf_rcnn.config.default_config`` already are this recipe; the data paths must be set:

    python train.py --config=configs/faster_rcnn_r50_fpn_coco.py --model_dir=runs/r50fpn \
        --config.data.train_annotations=coco/annotations/instances_train2017.json \
        --config.data.train_images=coco/train2017 \
        --config.data.val_annotations=coco/annotations/instances_val2017.json \
        --config.data.val_images=coco/val2017
"""

from tf_rcnn.config import default_config


def get_config():
    config = default_config()
    m = config.model
    m.backbone.name = "resnet50"
    m.backbone.weights = "imagenet"  # ImageNet init (Detectron); random init with a log line if
    # keras.applications weights are not available locally.
    m.backbone.freeze_at = 2  # Detectron FREEZE_AT: stem + res2 frozen
    m.neck.type = "fpn"
    m.neck.out_channels = 256  # FPN paper: d = 256
    m.rpn.in_features = ("P2", "P3", "P4", "P5", "P6")
    m.rpn.anchor_sizes = ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))  # FPN Sec. 4.1
    m.rpn.aspect_ratios = (0.5, 1.0, 2.0)  # FPN Sec. 4.1
    m.rpn.pre_nms_topk_train = 2000  # Detectron RPN_PRE_NMS_TOP_N (train), per level
    m.rpn.post_nms_topk_train = 1000  # detectron2 POST_NMS_TOPK_TRAIN (per image)
    m.rpn.pre_nms_topk_test = 1000  # Detectron RPN_PRE_NMS_TOP_N (test), per level
    m.rpn.post_nms_topk_test = 1000  # Detectron RPN_POST_NMS_TOP_N (test)
    m.rpn.straddle_threshold = -1.0  # Detectron FPN keeps cross-boundary anchors
    m.roi_head.in_features = ("P2", "P3", "P4", "P5")  # FPN Sec. 4.2 (k0 = 4, P2-P5)
    m.roi_head.pooler = "roi_align"  # Detectron ROIAlign
    m.roi_head.pooler_resolution = 7
    m.roi_head.box_head = "fpn_fc"  # FPN Sec. 4.2: two 1024-d fc layers
    m.roi_head.fc_dims = (1024, 1024)
    m.roi_head.batch_size_per_image = 512  # Detectron BATCH_SIZE_PER_IM
    m.roi_head.positive_fraction = 0.25  # Fast R-CNN Sec. 2.3
    m.roi_head.bg_iou_low = 0.0  # Detectron BG_THRESH_LO

    d = config.data
    d.dataset = "coco"
    d.scales = (800,)  # Detectron SCALES
    d.max_size = 1333  # Detectron MAX_SIZE
    d.train_batch_size = 16  # Detectron: 8 GPUs x 2 images
    d.eval_batch_size = 2

    t = config.train
    t.base_learning_rate = 0.02  # Detectron BASE_LR for 16 images
    t.base_batch_size = 16
    t.total_steps = 90000  # Detectron 1x MAX_ITER
    t.schedule = "step"
    t.decay_steps = (60000, 80000)  # Detectron STEPS
    t.warmup_steps = 500  # Detectron WARM_UP_ITERS
    t.warmup_factor = 1.0 / 3.0  # Detectron WARM_UP_FACTOR
    t.weight_decay = 1e-4  # Detectron WEIGHT_DECAY
    t.momentum = 0.9
    t.checkpoint_every = 5000
    return config
