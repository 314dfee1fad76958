"""Cascade R-CNN ResNet-50-FPN on COCO 2017, Detectron2 "1x" schedule.

Starts from ``configs/faster_rcnn_r50_fpn_coco.py`` (the same backbone, FPN, RPN, 2fc box head,
RoIAlign, sampling and 90k-iteration schedule as Detectron2's ``Base-RCNN-FPN.yaml``) and states
what Detectron2's ``Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml`` changes for the box path
(``ROI_HEADS.NAME: CascadeROIHeads``, ``ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG: True``,
``RPN.POST_NMS_TOPK_TRAIN: 2000``), with the cascade's stage values of Detectron2's defaults
(``ROI_BOX_CASCADE_HEAD``) = Cai & Vasconcelos 2018 Sec. 4.2. The data paths must be set:

    python train.py --config=configs/cascade_rcnn_r50_fpn_coco.py --model_dir=runs/cascade_r50 \
        --config.data.train_annotations=coco/annotations/instances_train2017.json \
        --config.data.train_images=coco/train2017 \
        --config.data.val_annotations=coco/annotations/instances_val2017.json \
        --config.data.val_images=coco/val2017
"""

from tf_rcnn.config import base_recipe


def get_config():
    config = base_recipe("faster_rcnn_r50_fpn_coco")
    m = config.model
    m.type = "cascade_rcnn"  # Detectron2 ROI_HEADS.NAME: CascadeROIHeads (box head class-agnostic)
    m.rpn.post_nms_topk_train = 2000  # Detectron2 cascade yaml RPN.POST_NMS_TOPK_TRAIN
    c = m.cascade
    c.fg_ious = (0.5, 0.6, 0.7)  # Detectron2 ROI_BOX_CASCADE_HEAD.IOUS
    # Detectron2 ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS
    c.box_weights = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))
    # Detectron2 CascadeROIHeads: the three stages' losses summed with weight 1, each stage's
    # gradient into the pooled features scaled by 1/3 (its _ScaleGradient); None means 1/stages.
    c.stage_loss_weights = (1.0, 1.0, 1.0)
    c.trunk_gradient_scale = None
    return config
