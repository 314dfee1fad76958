"""Faster R-CNN VGG16 on PASCAL VOC 2007 trainval, evaluated on VOC 2007 test.

Sources: Ren et al. 2015 (Faster R-CNN), Sec. 3.1-3.3 and 4.1; the paper's end-to-end training
code defaults for the sampling thresholds. Point ``data.voc_root`` at the folder holding
``VOC2007/`` (and ``VOC2012/`` for 07+12).
"""

from tf_rcnn.config import default_config


def get_config():
    config = default_config()
    m = config.model
    m.backbone.name = "vgg16"
    m.backbone.weights = "imagenet"
    m.backbone.freeze_at = 2  # conv1 and conv2 fixed (Fast R-CNN Sec. 4.5)
    m.neck.type = "none"
    m.rpn.in_features = ("C4",)  # conv5_3, stride 16
    m.rpn.anchor_sizes = ((128.0, 256.0, 512.0),)  # Sec. 3.1.1: 3 scales
    m.rpn.aspect_ratios = (0.5, 1.0, 2.0)  # Sec. 3.1.1: 3 aspect ratios
    m.rpn.head_channels = 512  # the 3x3 "intermediate layer" is 512-d for VGG16
    m.rpn.pre_nms_topk_train = 12000
    m.rpn.post_nms_topk_train = 2000  # Sec. 3.3: top-2000 for training
    m.rpn.pre_nms_topk_test = 6000
    m.rpn.post_nms_topk_test = 300  # Sec. 4.1: 300 proposals at test time
    m.rpn.nms_threshold = 0.7  # Sec. 3.3
    m.rpn.straddle_threshold = 0.0  # Sec. 3.3: cross-boundary anchors ignored in training
    m.rpn.batch_size_per_image = 256  # Sec. 3.1.3
    m.roi_head.in_features = ("C4",)
    m.roi_head.pooler = "roi_pool"  # Fast R-CNN RoI max pooling
    m.roi_head.pooler_resolution = 7
    m.roi_head.box_head = "vgg_fc"  # fc6 / fc7
    m.roi_head.fc_dims = (4096, 4096)
    m.roi_head.batch_size_per_image = 128  # end-to-end training: 128 RoIs per image
    m.roi_head.positive_fraction = 0.25
    m.roi_head.bg_iou_low = 0.0
    m.roi_head.detections_per_image = 100

    d = config.data
    d.dataset = "voc"
    d.voc_train_sets = (("2007", "trainval"),)
    d.voc_val_sets = (("2007", "test"),)
    d.scales = (600,)  # Sec. 3.3: shorter side 600
    d.max_size = 1000
    d.size_divisor = 16
    d.train_batch_size = 1  # Sec. 3.1.3: each mini-batch from a single image
    d.eval_batch_size = 1

    t = config.train
    t.base_learning_rate = 0.001  # Sec. 3.1.3: 0.001 for 60k mini-batches, then 0.0001 for 20k
    t.base_batch_size = 1
    t.total_steps = 80000
    t.schedule = "step"
    t.decay_steps = (60000,)
    t.warmup_steps = 0
    t.momentum = 0.9  # Sec. 3.1.3
    t.weight_decay = 5e-4  # Sec. 3.1.3
    t.checkpoint_every = 5000

    config.eval.metrics = ("voc",)
    return config
