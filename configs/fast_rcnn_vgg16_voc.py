"""Fast R-CNN VGG16 on PASCAL VOC 2007 trainval, evaluated on VOC 2007 test, on given proposals.

Sources: Girshick, "Fast R-CNN", ICCV 2015 (arXiv:1504.08083), cited per value as "FRCN Sec. x";
the test-time NMS threshold is the paper's released code default (``TEST.NMS = 0.3`` in
``lib/fast_rcnn/config.py`` of rbgirshick/fast-rcnn). Its box-target normalisation (means 0,
stds 0.1/0.1/0.2/0.2) is our R-CNN box coder weights (10, 10, 5, 5).

Proposals: point ``data.proposals_train`` / ``data.proposals_val`` at proposal files in the format
of ``tf_rcnn/data/proposals.py`` (``[y1, x1, y2, x2]`` original-image pixels, keyed by VOC image
id). The paper used Selective Search "quality" mode, about 2000 per image (FRCN Sec. 4.1 and
5.5); ``python -m tf_rcnn.tools.dump_proposals`` writes such files from our own RPN, e.g. from
``configs/faster_rcnn_vgg16_voc.py`` (step 2 of alternating training):

    python -m tf_rcnn.tools.dump_proposals --config=configs/faster_rcnn_vgg16_voc.py \
        --checkpoint=runs/voc_rpn --split=train --output=runs/voc_rpn/proposals_train.npz \
        --top_n=2000
    (same with --split=val, then)
    python train.py --config=configs/fast_rcnn_vgg16_voc.py --model_dir=runs/voc_fast_rcnn \
        --config.data.voc_root=/data/VOCdevkit \
        --config.data.proposals_train=runs/voc_rpn/proposals_train.npz \
        --config.data.proposals_val=runs/voc_rpn/proposals_val.npz
"""

from tf_rcnn.config import default_config


def get_config():
    config = default_config()
    m = config.model
    m.type = "fast_rcnn"
    m.backbone.name = "vgg16"
    m.backbone.weights = "imagenet"  # FRCN Sec. 2.2: initialised from ImageNet VGG16
    m.backbone.freeze_at = 2  # FRCN Sec. 4.5: conv1_1..conv2_2 fixed, conv3_1 and up trained
    m.neck.type = "none"
    m.roi_head.in_features = ("C4",)  # conv5_3 (pool5 replaced by RoI pooling), stride 16
    m.roi_head.pooler = "roi_pool"  # FRCN Sec. 2.1: RoI max pooling
    m.roi_head.pooler_resolution = 7  # FRCN Sec. 2.1: H = W = 7 for VGG16
    m.roi_head.spp_levels = (1, 2, 3, 6)  # only with pooler=spp: SPPnet's detection pyramid
    m.roi_head.box_head = "vgg_fc"  # FRCN Sec. 2.2: fc6, fc7 (4096-d, dropout) from VGG16
    m.roi_head.fc_dims = (4096, 4096)
    m.roi_head.batch_size_per_image = 64  # FRCN Sec. 2.3: R = 128 RoIs from N = 2 images
    m.roi_head.positive_fraction = 0.25  # FRCN Sec. 2.3: 25% of RoIs foreground
    m.roi_head.fg_iou = 0.5  # FRCN Sec. 2.3: foreground at IoU >= 0.5
    m.roi_head.bg_iou_low = 0.1  # FRCN Sec. 2.3: background IoU in [0.1, 0.5)
    m.roi_head.box_loss_beta = 1.0  # FRCN Eq. 3: smooth L1 with the transition at 1
    m.roi_head.nms_threshold = 0.3  # fast-rcnn code, TEST.NMS = 0.3 (per class)
    m.roi_head.score_threshold = 0.05  # not in the paper; Detectron's default
    m.roi_head.detections_per_image = 100

    d = config.data
    d.dataset = "voc"
    d.voc_train_sets = (("2007", "trainval"),)  # FRCN Table 1: VOC07 trainval -> VOC07 test
    d.voc_val_sets = (("2007", "test"),)
    d.scales = (600,)  # FRCN Sec. 2.4/5.2: single scale, shorter side 600
    d.max_size = 1000  # FRCN Sec. 5.2: longer side capped at 1000
    d.size_divisor = 16
    d.random_flip = True  # FRCN Sec. 2.3: horizontal flip with probability 0.5
    d.proposals_train = ""  # set to a proposal file (see the module docstring)
    d.proposals_val = ""
    d.max_proposals = 2000  # FRCN Sec. 4.1/5.5: ~2000 Selective Search proposals per image
    d.train_batch_size = 2  # FRCN Sec. 2.3: N = 2 images per mini-batch
    d.eval_batch_size = 1

    t = config.train
    t.optimizer = "sgd"
    t.base_learning_rate = 0.001  # FRCN Sec. 2.3: global learning rate 0.001 ...
    t.base_batch_size = 2
    t.total_steps = 40000  # ... for 30k mini-batches, then 0.0001 for 10k more (VOC07)
    t.schedule = "step"
    t.decay_steps = (30000,)
    t.decay_gamma = 0.1
    t.warmup_steps = 0  # the paper has no warmup
    t.momentum = 0.9  # FRCN Sec. 2.3
    t.weight_decay = 5e-4  # FRCN Sec. 2.3
    t.checkpoint_every = 5000

    config.eval.metrics = ("voc",)
    return config
