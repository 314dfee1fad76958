"""The demo recipe: Faster R-CNN with a tiny FPN backbone on the synthetic shapes dataset.

128x128 images with squares, circles and triangles (``tf_rcnn.data.shapes``), trained from random
initialisation on CPU within minutes. Values differ from the paper only where the tiny images and
backbone demand it; each such value says why.
"""

from tf_rcnn.config import default_config


def get_config():
    config = default_config()
    m = config.model
    m.backbone.name = "tiny"
    m.backbone.widths = (16, 32, 64, 128)
    m.backbone.freeze_at = 0  # random init: nothing to keep frozen
    m.neck.out_channels = 64
    # Shapes are 8-64 px on 128 px images: anchors 4x the stride (FPN uses 8x on COCO).
    m.rpn.anchor_sizes = ((16.0,), (32.0,), (64.0,), (128.0,), (256.0,))
    m.rpn.pre_nms_topk_train = 512
    m.rpn.post_nms_topk_train = 256
    m.rpn.pre_nms_topk_test = 256
    m.rpn.post_nms_topk_test = 100
    # Anchors of 16-64 px near the border of a 128 px image straddle it often; keeping them
    # (Detectron2's choice) lets objects that touch the border get positive anchors.
    m.rpn.straddle_threshold = -1.0
    m.roi_head.fc_dims = (256, 256)
    m.roi_head.batch_size_per_image = 128
    m.roi_head.detections_per_image = 50

    d = config.data
    d.dataset = "shapes"
    d.shapes_dir = "data_cache/shapes"
    d.shapes_train_images = 1000
    d.shapes_val_images = 200
    d.shapes_image_size = 128
    d.scales = (128,)
    d.max_size = 128
    d.max_instances = 16
    d.train_batch_size = 8
    d.eval_batch_size = 16

    t = config.train
    t.total_steps = 3000
    t.base_learning_rate = 0.02
    t.base_batch_size = 8
    t.schedule = "cosine"
    t.warmup_steps = 100
    t.warmup_factor = 0.01
    t.checkpoint_every = 500
    t.log_every = 50
    t.steps_per_loop = 10
    return config
