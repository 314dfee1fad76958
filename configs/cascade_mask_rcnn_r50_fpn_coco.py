"""Cascade Mask R-CNN ResNet-50-FPN on COCO 2017, Detectron2 "1x" schedule.

``configs/cascade_rcnn_r50_fpn_coco.py`` (Detectron2 ``Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml``
box path) plus ``MODEL.MASK_ON: True``: Mask R-CNN's mask branch with the values of
``configs/mask_rcnn_r50_fpn_coco.py`` (Detectron2's ``Base-RCNN-FPN.yaml`` mask head: four 3x3
convs of 256, a 2x deconv, 14x14 RoIAlign, 28x28 class-specific masks). As in Detectron2's
``CascadeROIHeads``, the mask branch trains on the first stage's positive RoIs and at test time
runs on the final (third-stage) boxes. ``eval.py`` reports ``segm/AP`` beside ``bbox/AP``:

    python train.py --config=configs/cascade_mask_rcnn_r50_fpn_coco.py \
        --model_dir=runs/cascade_mask_r50 \
        --config.data.train_annotations=coco/annotations/instances_train2017.json \
        --config.data.train_images=coco/train2017 \
        --config.data.val_annotations=coco/annotations/instances_val2017.json \
        --config.data.val_images=coco/val2017
"""

from tf_rcnn.config import base_recipe


def get_config():
    config = base_recipe("cascade_rcnn_r50_fpn_coco")
    mask = base_recipe("mask_rcnn_r50_fpn_coco")
    m = config.model
    m.type = "cascade_mask_rcnn"  # Detectron2 MODEL.MASK_ON: True with CascadeROIHeads
    m.roi_head.detections_per_image = mask.model.roi_head.detections_per_image  # 100
    m.mask_head = mask.model.mask_head  # Detectron2 ROI_MASK_HEAD (Mask R-CNN Fig. 4 right)
    config.data.mask_crop_size = mask.data.mask_crop_size  # 56 px stored GT crops
    return config
