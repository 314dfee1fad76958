"""FasterRCNN: an RPN and Fast R-CNN RoI heads sharing one backbone (Ren et al. 2015).

C4 form: RPN and RoI pooling on the stride-16 C4 map, res5 as the box head. FPN form: the RPN on
P2-P6 with one anchor size per level, ``MultiLevelRoIAlign`` over P2-P5 and a two-fc box head.
Trained end to end with approximate joint training: the RoI head's gradient does not flow into
the proposal coordinates (Sec. 3.2 of the paper).
"""

from __future__ import annotations

import keras

from tf_rcnn.models.detectors.two_stage import TwoStageDetector


@keras.saving.register_keras_serializable(package="tf_rcnn")
class FasterRCNN(TwoStageDetector):
    """Faster R-CNN (C4 or FPN) per the model contract in docs/design.md.

    Build it with ``tf_rcnn.models.builder.build_model(config)`` or by keyword from parts.

    Args:
        backbone: images ``[B, H, W, 3]`` float32 normalised -> dict of feature maps.
        rpn: a ``RegionProposalNetwork``.
        roi_heads: an ``RoIHeads``.
        num_classes: K object classes (background excluded).
        neck: optional ``FPN``.
        rpn_in_features / roi_in_features: feature names, e.g. ``("C4",)`` for C4 or
            ``("P2", ..., "P6")`` / ``("P2", ..., "P5")`` for FPN.
        label_map: optional dataset class description saved with the model.

    Training: ``model.fit(dataset)`` where each element is ``(images, targets)`` with targets
    ``boxes [B, M, 4]`` (``[y1, x1, y2, x2]`` pixels, -1 padded), ``classes [B, M]`` int32
    (1..K, -1 padded), ``image_shape [B, 2]`` int32 and optionally ``crowd_boxes [B, Mc, 4]``.
    Losses: ``rpn_objectness_loss``, ``rpn_box_loss``, ``rcnn_class_loss``, ``rcnn_box_loss``,
    ``total_loss``.

    Inference: ``model.predict(images)`` or ``model(images)`` -> ``detection_boxes [B, D, 4]``,
    ``detection_scores [B, D]``, ``detection_classes [B, D]`` int32, ``num_detections [B]``.

    Example:
        >>> from tf_rcnn.models import builder
        >>> from configs import shapes_faster_rcnn
        >>> model = builder.build_model(shapes_faster_rcnn.get_config())  # doctest: +SKIP
        >>> outputs = model.predict(images)  # doctest: +SKIP
    """

    needs_rpn = True
    default_rpn_in_features = ("C4",)
    default_roi_in_features = ("C4",)
