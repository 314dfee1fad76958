"""CascadeRCNN and CascadeMaskRCNN: Faster / Mask R-CNN with a cascade of box stages (Cai &
Vasconcelos, "Cascade R-CNN: Delving into High Quality Object Detection", CVPR 2018; the mask
variant from their 2019 TPAMI extension).

The RPN and trunk are Faster R-CNN's; the second stage is a ``CascadeRoIHeads``: three box stages
trained at foreground IoU 0.5, 0.6 and 0.7, each on the previous stage's refined boxes; at test
time the class scores are the mean of the stages' and the boxes the last stage's (details:
``tf_rcnn.models.roi_heads.cascade_roi_heads``). Cascade Mask R-CNN adds Mask R-CNN's mask
branch, run on the final boxes.
"""

from __future__ import annotations

import keras

from tf_rcnn.models.detectors.two_stage import TwoStageDetector


@keras.saving.register_keras_serializable(package="tf_rcnn")
class CascadeRCNN(TwoStageDetector):
    """Cascade R-CNN per the model contract in docs/design.md.

    Build it with ``tf_rcnn.models.builder.build_model(config)`` (``model.type =
    "cascade_rcnn"``, the stages from ``config.model.cascade``) or by keyword from parts.

    Args:
        backbone: images ``[B, H, W, 3]`` float32 normalised -> dict of feature maps.
        rpn: a ``RegionProposalNetwork``.
        roi_heads: a ``CascadeRoIHeads``.
        num_classes: K object classes (background excluded).
        neck: optional ``FPN``.
        rpn_in_features / roi_in_features: feature names (FPN ``("P2", ..., "P6")`` /
            ``("P2", ..., "P5")``).
        label_map: optional dataset class description saved with the model.

    Training: as ``FasterRCNN``; losses ``rpn_objectness_loss``, ``rpn_box_loss``,
    ``rcnn_class_loss_stage<t>`` and ``rcnn_box_loss_stage<t>`` for each stage t (already
    multiplied by ``model.cascade.stage_loss_weights``), ``total_loss``.

    Inference: ``model(images)`` -> ``detection_boxes [B, D, 4]``, ``detection_scores [B, D]``,
    ``detection_classes [B, D]`` int32, ``num_detections [B]`` int32.
    """

    needs_rpn = True
    default_rpn_in_features = ("P2", "P3", "P4", "P5", "P6")
    default_roi_in_features = ("P2", "P3", "P4", "P5")

    def _check_parts(self) -> None:
        super()._check_parts()
        if not hasattr(self.roi_heads, "stages"):
            raise ValueError(f"{type(self).__name__} needs CascadeRoIHeads, got "
                             f"{type(self.roi_heads).__name__}.")


@keras.saving.register_keras_serializable(package="tf_rcnn")
class CascadeMaskRCNN(CascadeRCNN):
    """Cascade Mask R-CNN: ``CascadeRCNN`` whose ``CascadeRoIHeads`` has a mask branch (its
    first stage is a ``MaskRoIHeads``; ``model.type = "cascade_mask_rcnn"``, the mask branch
    from ``config.model.mask_head``).

    Training targets also carry ``masks [B, M, Hm, Wm]`` (as ``MaskRCNN``); the losses add
    ``mask_loss``. Detections add ``detection_masks [B, D, 28, 28]`` (box-relative
    probabilities, ``tf_rcnn.ops.masks.paste_masks`` pastes them), computed on the final boxes.
    """

    needs_masks = True
