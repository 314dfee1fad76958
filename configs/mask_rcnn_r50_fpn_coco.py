"""Mask R-CNN ResNet-50-FPN on COCO 2017, Detectron "1x" schedule.

Starts from ``configs/faster_rcnn_r50_fpn_coco.py`` and states only the mask branch: Detectron's
``e2e_mask_rcnn_R-50-FPN_1x.yaml`` has the same backbone, FPN, RPN, box head with RoIAlign (Mask
R-CNN Sec. 3), sampling and schedule as its Faster R-CNN R50-FPN 1x. Sources: He et al. 2017
(Mask R-CNN) Sec. 3-4 and Fig. 4 for the mask branch; Detectron's yaml for the head
(``mask_rcnn_fcn_head_v1up4convs``: four 3x3 convs of 256, one 2x up-sampling deconv, RoIAlign
14x14 with sampling ratio 2, 28x28 masks). The data paths must be set; the COCO reader loads the
polygon/RLE segmentations because ``model.type`` is ``mask_rcnn``, and ``eval.py`` reports
``segm/AP`` beside ``bbox/AP``:

    python train.py --config=configs/mask_rcnn_r50_fpn_coco.py --model_dir=runs/mask_r50fpn \
        --config.data.train_annotations=coco/annotations/instances_train2017.json \
        --config.data.train_images=coco/train2017 \
        --config.data.val_annotations=coco/annotations/instances_val2017.json \
        --config.data.val_images=coco/val2017
"""

from tf_rcnn.config import base_recipe


def get_config():
    config = base_recipe("faster_rcnn_r50_fpn_coco")
    m = config.model
    m.type = "mask_rcnn"
    m.roi_head.detections_per_image = 100  # Mask R-CNN Sec. 3.1: masks for the top 100
    m.mask_head.head = "fpn_conv"  # Detectron mask_rcnn_fcn_head_v1up4convs
    m.mask_head.conv_dims = (256, 256, 256, 256)  # Mask R-CNN Fig. 4 (right)
    m.mask_head.deconv_dim = 256  # Detectron MRCNN.DIM_REDUCED
    m.mask_head.pooler_resolution = 14  # Detectron MRCNN.ROI_XFORM_RESOLUTION
    m.mask_head.sampling_ratio = 2  # Detectron MRCNN.ROI_XFORM_SAMPLING_RATIO
    m.mask_head.class_agnostic = False  # Detectron CLS_SPECIFIC_MASK: True
    m.mask_head.loss_weight = 1.0  # Detectron MRCNN.WEIGHT_LOSS_MASK

    config.data.mask_crop_size = 56  # stored GT crops, 2x the 28x28 targets cut from them
    return config
