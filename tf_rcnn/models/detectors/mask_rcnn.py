"""MaskRCNN: Faster R-CNN plus a per-RoI FCN mask branch (He et al., 2017).

The box path is Faster R-CNN's (``RegionProposalNetwork`` + ``MaskRoIHeads``' box branch); the
mask branch (``MaskHead`` on 14x14 RoIAlign features) trains on the positive sampled RoIs and
runs at inference on the final detections (details: ``tf_rcnn.models.roi_heads.mask_roi_heads``).
"""

from __future__ import annotations

import keras

from tf_rcnn.models.detectors.two_stage import TwoStageDetector


@keras.saving.register_keras_serializable(package="tf_rcnn")
class MaskRCNN(TwoStageDetector):
    """Mask R-CNN (FPN or C4) per the model contract in docs/design.md.

    Build it with ``tf_rcnn.models.builder.build_model(config)`` (``model.type = "mask_rcnn"``)
    or by keyword from parts.

    Args:
        backbone: images ``[B, H, W, 3]`` float32 normalised -> dict of feature maps.
        rpn: a ``RegionProposalNetwork``.
        roi_heads: a ``MaskRoIHeads`` (box and mask branches).
        num_classes: K object classes (background excluded).
        neck: optional ``FPN``.
        rpn_in_features / roi_in_features: feature names, e.g. ``("P2", ..., "P6")`` /
            ``("P2", ..., "P5")`` for FPN or ``("C4",)`` for C4.
        label_map: optional dataset class description saved with the model.

    Training: ``model.fit(dataset)`` where each element is ``(images, targets)`` with targets
    ``boxes [B, M, 4]`` (``[y1, x1, y2, x2]`` pixels, -1 padded), ``classes [B, M]`` int32
    (1..K, -1 padded), ``image_shape [B, 2]`` int32, ``masks [B, M, Hm, Wm]`` float32 in {0, 1}
    (each GT mask cropped to its box and resized to ``Hm x Wm``, padded rows 0) and optionally
    ``crowd_boxes [B, Mc, 4]``. Losses: ``rpn_objectness_loss``, ``rpn_box_loss``,
    ``rcnn_class_loss``, ``rcnn_box_loss``, ``mask_loss``, ``total_loss``.

    Inference: ``model.predict(images)`` or ``model(images)`` -> ``detection_boxes [B, D, 4]``,
    ``detection_scores [B, D]``, ``detection_classes [B, D]`` int32, ``num_detections [B]``,
    ``detection_masks [B, D, 28, 28]`` float32 probabilities of the detected class inside each
    box; ``tf_rcnn.ops.masks.paste_masks(masks, boxes, (H, W))`` turns them into binary
    full-image masks.

    Example:
        >>> from tf_rcnn.models import builder
        >>> from configs import shapes_mask_rcnn
        >>> model = builder.build_model(shapes_mask_rcnn.get_config())  # doctest: +SKIP
        >>> outputs = model.predict(images)  # doctest: +SKIP
        >>> masks = paste_masks(outputs["detection_masks"], outputs["detection_boxes"],
        ...                     images.shape[1:3])  # doctest: +SKIP
    """

    needs_rpn = True
    needs_masks = True
    default_rpn_in_features = ("P2", "P3", "P4", "P5", "P6")
    default_roi_in_features = ("P2", "P3", "P4", "P5")
