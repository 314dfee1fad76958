"""Mask R-CNN demo: the shapes Faster R-CNN recipe plus a narrow FPN mask head.

128x128 images with squares, circles and triangles (``tf_rcnn.data.shapes``) with exact instance
masks, trained from random initialisation on CPU. Starts from ``configs/shapes_faster_rcnn.py``
and adds only the mask branch; values that differ from the paper (Mask R-CNN, He et al. 2017,
with Detectron's FPN settings) say why.

    python train.py --config=configs/shapes_mask_rcnn.py --model_dir=runs/shapes_mask
    python eval.py --config=configs/shapes_mask_rcnn.py --checkpoint=runs/shapes_mask \\
        --output_dir=runs/shapes_mask/eval
"""

from tf_rcnn.config import base_recipe


def get_config():
    config = base_recipe("shapes_faster_rcnn")
    m = config.model
    m.type = "mask_rcnn"
    m.roi_head.batch_size_per_image = 128  # <= 32 positives per image feed the mask head
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

    config.data.mask_crop_size = 56  # GT masks stored at 2x the 28x28 target resolution
    return config
