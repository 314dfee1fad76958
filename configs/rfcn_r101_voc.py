"""R-FCN ResNet-101 on PASCAL VOC 07+12 trainval, evaluated on VOC 2007 test.

Sources: Dai et al. 2016, "R-FCN: Object Detection via Region-based Fully Convolutional Networks"
(NIPS 2016): Sec. 2.2 (backbone: ResNet-101 with conv5 at stride 16 by removing its stride and
dilating its 3x3 convs, a random 1x1 conv to 1024-d, k = 7, position-sensitive score maps),
"Training" (OHEM with B = 128 RoIs per image, 1 image per GPU on 8 GPUs, lr 0.001 for 20k then
0.0001 for 10k mini-batches on VOC, momentum 0.9, weight decay 0.0005, 600-pixel shorter side),
"Inference" (300 RoIs, NMS 0.3 post-processing); anchors and RPN sampling from Faster R-CNN
(Ren et al. 2015, Sec. 3.1). One deviation: the paper trains RPN and R-FCN by 4-step
alternating training; here both are trained jointly (approximate joint training, as in the
other recipes). Point ``data.voc_root`` at the folder holding ``VOC2007/`` and ``VOC2012/``.
"""

from tf_rcnn.config import default_config


def get_config():
    config = default_config()
    m = config.model
    m.type = "rfcn"
    m.backbone.name = "resnet101"
    m.backbone.weights = "imagenet"
    m.backbone.freeze_at = 2  # stem and res2 fixed (Detectron / py-faster-rcnn ResNet practice)
    m.backbone.dilate_c5 = True  # Sec. 2.2: conv5 stride 1, dilation 2 ("hole algorithm")
    m.neck.type = "none"
    m.rpn.in_features = ("C4",)  # RPN on the shared conv4 features, as Faster R-CNN ResNet
    m.rpn.anchor_sizes = ((128.0, 256.0, 512.0),)  # Faster R-CNN Sec. 3.1.1: 3 scales
    # The R-FCN authors' ResNet-101 code (Deformable-ConvNets rfcn, rpn_conv_3x3) uses a 512-d
    # 3x3 RPN conv on the 1024-d conv4 features; at 600x1000 that is 11 G multiply-adds
    # instead of 23 G for a 1024-d one, about 10% of the whole detector.
    m.rpn.head_channels = 512
    m.rpn.aspect_ratios = (0.5, 1.0, 2.0)  # and 3 aspect ratios
    m.rpn.pre_nms_topk_train = 6000
    m.rpn.post_nms_topk_train = 300  # OHEM evaluates the loss of all N = 300 proposals
    m.rpn.pre_nms_topk_test = 6000
    m.rpn.post_nms_topk_test = 300  # R-FCN "Inference": 300 RoIs
    m.rpn.nms_threshold = 0.7  # Faster R-CNN Sec. 3.3
    m.rpn.straddle_threshold = 0.0  # Faster R-CNN Sec. 3.3: cross-boundary anchors ignored
    m.roi_head.in_features = ("C5",)  # the dilated conv5, stride 16
    m.roi_head.fg_iou = 0.5  # R-FCN "Training": positive when IoU >= 0.5, else negative
    m.roi_head.bg_iou_low = 0.0
    m.roi_head.batch_size_per_image = 128  # plain sampling option (model.roi_head.ohem=False)
    m.roi_head.positive_fraction = 0.25
    m.roi_head.nms_threshold = 0.3  # R-FCN "Inference": NMS 0.3 IoU post-processing
    m.roi_head.detections_per_image = 100
    m.rfcn.k = 7  # Sec. 2.2: k x k = 7 x 7
    m.rfcn.channels = 1024  # Sec. 2.2: random 1x1 conv 2048 -> 1024
    m.rfcn.pool_mode = "pool"  # Eq. 1: average over each quantised bin
    m.roi_head.ohem = True  # "Training": OHEM
    m.roi_head.ohem_batch_size = 128  # B = 128
    m.roi_head.ohem_nms_threshold = 0.7  # OHEM paper (Shrivastava et al. 2016) Sec. 4

    d = config.data
    d.dataset = "voc"
    d.voc_train_sets = (("2007", "trainval"), ("2012", "trainval"))  # "07+12" (Table 3)
    d.voc_val_sets = (("2007", "test"),)
    d.scales = (600,)  # "Training": shorter side 600
    d.max_size = 1000  # Faster R-CNN / Fast R-CNN cap on the longer side
    d.size_divisor = 16  # the deepest map is stride 16
    d.train_batch_size = 8  # 8 GPUs x 1 image
    d.eval_batch_size = 1

    t = config.train
    t.base_learning_rate = 0.001  # "Training": 0.001 for 20k, then 0.0001 for 10k (VOC)
    t.base_batch_size = 8
    t.total_steps = 30000
    t.schedule = "step"
    t.decay_steps = (20000,)
    t.decay_gamma = 0.1
    t.warmup_steps = 0
    t.momentum = 0.9  # "Training"
    t.weight_decay = 5e-4  # "Training"
    t.checkpoint_every = 5000

    config.eval.metrics = ("voc",)
    return config
