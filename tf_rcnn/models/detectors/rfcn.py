"""RFCN: region-based fully convolutional network (Dai et al. 2016) on the two-stage base.

An RPN on the shared conv4 (C4, stride 16) features proposes RoIs as in Faster R-CNN; the
second stage is fully convolutional: ``RFCNRoIHeads`` computes ``k*k*(K+1)`` position-sensitive
class maps and ``k*k*4`` box maps once per image from the dilated conv5 (C5 kept at stride 16,
its 3x3 convs dilated by 2) and does only PS-RoI pooling + voting per RoI. Training uses OHEM
(the loss of all proposals, NMS 0.7 by loss, the 128 hardest back-propagated) or a plain sampled
mini-batch.
"""

from __future__ import annotations

import keras

from tf_rcnn.models.detectors.two_stage import TwoStageDetector


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RFCN(TwoStageDetector):
    """R-FCN per the model contract in docs/design.md.

    Build it with ``tf_rcnn.models.builder.build_model(config)`` (``model.type = "rfcn"``) or
    by keyword from parts.

    Args:
        backbone: images ``[B, H, W, 3]`` float32 normalised -> dict of feature maps with a
            stride-16 ``C4`` for the RPN and a stride-16 ``C5`` for the head (ResNet with
            ``dilate_c5=True``, or ``TinyBackbone(dilate_c5=True)`` for the demo).
        rpn: a ``RegionProposalNetwork``.
        roi_heads: an ``RFCNRoIHeads``.
        num_classes: K object classes (background excluded).
        neck: optional neck (R-FCN uses none).
        rpn_in_features: maps the RPN reads, ``("C4",)``.
        roi_in_features: the ONE map the R-FCN head reads, ``("C5",)``.
        label_map: optional dataset class description saved with the model.

    Training: ``model.fit(dataset)`` where each element is ``(images, targets)`` with targets
    ``boxes [B, M, 4]`` (``[y1, x1, y2, x2]`` pixels, -1 padded), ``classes [B, M]`` int32
    (1..K, -1 padded), ``image_shape [B, 2]`` int32 and optionally ``crowd_boxes [B, Mc, 4]``.
    Losses: ``rpn_objectness_loss``, ``rpn_box_loss``, ``rcnn_class_loss``, ``rcnn_box_loss``
    (over the OHEM-selected or sampled RoIs), ``total_loss``.

    Inference: ``model.predict(images)`` or ``model(images)`` -> ``detection_boxes [B, D, 4]``,
    ``detection_scores [B, D]``, ``detection_classes [B, D]`` int32, ``num_detections [B]``.
    Boxes are decoded from class-agnostic deltas.

    Example:
        >>> from tf_rcnn.models import builder
        >>> from configs import shapes_rfcn
        >>> model = builder.build_model(shapes_rfcn.get_config())  # doctest: +SKIP
        >>> outputs = model.predict(images)  # doctest: +SKIP
    """

    needs_rpn = True
    default_rpn_in_features = ("C4",)
    default_roi_in_features = ("C5",)

    def _check_parts(self) -> None:
        super()._check_parts()
        if len(self.roi_in_features) != 1:
            raise ValueError(
                f"RFCN's head reads one stride-16 map; got roi_in_features="
                f"{self.roi_in_features!r} (use ('C5',) with a dilated C5)."
            )
