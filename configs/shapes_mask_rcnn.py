"""Mask R-CNN demo: the shapes Faster R-CNN recipe plus a narrow FPN mask head.

128x128 images with squares, circles and triangles (``tf_rcnn.data.shapes``) with exact instance
masks, trained from random initialisation on CPU. Everything but the mask branch equals
``configs/shapes_faster_rcnn.py``; values that differ from the paper (Mask R-CNN, He et al. 2017,
with Detectron's FPN settings) say why.

    python train.py --config=configs/shapes_mask_rcnn.py --model_dir=runs/shapes_mask
    python eval.py --config=configs/shapes_mask_rcnn.py --checkpoint=runs/shapes_mask \\
        --output_dir=runs/shapes_mask/eval
"""

from tf_rcnn.config import default_config


def get_config():
    config = default_config()
    m = config.model
    m.type = "mask_rcnn"
    m.num_classes = 3  # square, circle, triangle
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
    # Keep anchors that straddle the border of the small images (Detectron2's choice), so objects
    # touching it get positive anchors.
    m.rpn.straddle_threshold = -1.0
    m.roi_head.fc_dims = (256, 256)
    m.roi_head.batch_size_per_image = 128  # <= 32 positives per image feed the mask head
    m.roi_head.detections_per_image = 50
    # The paper's head shape (four 3x3 convs, 2x deconv, 14x14 -> 28x28) but 16 channels instead
    # of 256: the head runs on up to 32 positives x 8 images per step at 14x14/28x28, and its
    # cost grows with the square of the width (measured train step on 2 CPU cores, same load:
    # Faster R-CNN 0.43 s, + mask head of 64 channels 3.1 s, of 32 channels 1.5 s, of 16
    # channels 0.5 s). Squares, circles and triangles need no wider head.
    m.mask_head.head = "fpn_conv"
    m.mask_head.conv_dims = (16, 16, 16, 16)
    m.mask_head.deconv_dim = 16
    m.mask_head.pooler_resolution = 14
    m.mask_head.class_agnostic = False

    d = config.data
    d.dataset = "shapes"
    d.shapes_dir = "data_cache/shapes"
    d.shapes_train_images = 1000
    d.shapes_val_images = 200
    d.shapes_image_size = 128
    d.scales = (128,)
    d.max_size = 128
    d.max_instances = 16
    d.mask_crop_size = 56  # GT masks stored at 2x the 28x28 target resolution
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
