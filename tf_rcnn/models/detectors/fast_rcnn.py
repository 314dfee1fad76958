"""FastRCNN: RoI heads on precomputed proposals, no RPN (Girshick, "Fast R-CNN", ICCV 2015).

One convolutional pass per image; each external proposal is pooled from the shared feature map
(RoIPool as in the paper, RoIAlign, or SPPnet's spatial pyramid pooling) and a multi-task head
gives (K+1)-way softmax scores and class-specific box deltas (smooth L1, lambda = 1).

Conventions: boxes ``[y1, x1, y2, x2]`` float32 in pixels of the network input (the data pipeline
reads proposal files in original-image pixels and applies the image's resize and flip); classes
0 background, 1..K. Proposal rows with zero area (the pipeline pads with -1) are padding and are
never sampled, pooled into detections, or counted.

Shape shorthand: B batch, P proposals per image, M GT per image, D detections per image,
K classes.
"""

from __future__ import annotations

import keras

from tf_rcnn.models.detectors.two_stage import TwoStageDetector


@keras.saving.register_keras_serializable(package="tf_rcnn")
class FastRCNN(TwoStageDetector):
    """Fast R-CNN on proposals given with the input, per the model contract in docs/design.md.

    Build it with ``tf_rcnn.models.builder.build_model(config)`` (``model.type = "fast_rcnn"``)
    or by keyword from parts.

    Args:
        backbone: images ``[B, H, W, 3]`` float32 normalised -> dict of feature maps.
        roi_heads: an ``RoIHeads`` whose sampler follows the paper (64 RoIs per image, 25%
            foreground at IoU >= 0.5, background IoU in [0.1, 0.5), GT boxes appended).
        num_classes: K object classes (background excluded).
        neck: optional neck (e.g. ``FPN``) whose maps ``roi_in_features`` may name.
        roi_in_features: names of the feature maps the pooler reads, e.g. ``("C4",)``; RoIPool
            and SPP read exactly one map.
        label_map: optional dataset class description saved with the model.

    Training: ``model.fit(dataset)`` where each element is ``(images, targets)`` with targets
    ``boxes [B, M, 4]`` (``[y1, x1, y2, x2]`` pixels, -1 padded), ``classes [B, M]`` int32
    (1..K, -1 padded), ``image_shape [B, 2]`` int32, ``proposals [B, P, 4]`` float32
    (network-input pixels, -1 padded) and optionally ``crowd_boxes [B, Mc, 4]``.
    Losses: ``rcnn_class_loss``, ``rcnn_box_loss``, ``total_loss``.

    Inference: ``model.predict({"images": images, "proposals": proposals})`` (optionally with
    ``image_shape [B, 2]``) -> ``detection_boxes [B, D, 4]``, ``detection_scores [B, D]``,
    ``detection_classes [B, D]`` int32, ``num_detections [B]`` int32. Calling it without
    proposals raises a ``ValueError`` saying how to pass them.

    Example:
        >>> from tf_rcnn.models import builder
        >>> from configs import shapes_fast_rcnn
        >>> model = builder.build_model(shapes_fast_rcnn.get_config())  # doctest: +SKIP
        >>> outputs = model.predict({"images": images, "proposals": boxes})  # doctest: +SKIP
    """

    needs_rpn = False
    needs_proposals = True
    default_roi_in_features = ("C4",)
