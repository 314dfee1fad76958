"""Turning Mask R-CNN's box-relative masks into full original-image masks for evaluators.

The model returns ``detection_masks [B, D, Sm, Sm]`` probabilities inside each detection box;
the evaluation runner maps ``detection_boxes`` to ORIGINAL-image pixels. ``MaskPastingEvaluator``
wraps an evaluator that wants full-image masks (``COCOEvaluator`` with ``"segm"``): each image's
valid detections are pasted into its original ``(H, W)`` with
``tf_rcnn.ops.masks.paste_image_masks`` (the one paste rule of tf_rcnn, also used by prediction,
export clients and drawing) before being forwarded. The
pasted masks of a few chosen images are kept for drawing.

Shape shorthand: B batch, D detections per image, Sm mask resolution, H/W original image size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tf_rcnn.ops.masks import paste_image_masks


class MaskPastingEvaluator:
    """Pastes ``detection_masks`` into original-image size, then forwards to ``evaluator``.

    Args:
        evaluator: object with ``update(detections)`` expecting full-image masks
            (``COCOEvaluator(iou_types=("bbox", "segm"))``); ``evaluate``, ``results`` and any
            other attribute are delegated to it.
        image_sizes: ``{image_id: (H, W)}`` original size of every image that may be seen.
        keep_masks_for: image ids whose pasted masks are kept in ``kept_masks`` (for drawing).
        rule: the paste rule (``"tf_rcnn"`` or ``"torchvision"``, the model's
            ``roi_heads.paste_rule``).
    """

    def __init__(self, evaluator: Any, image_sizes: Mapping[int, tuple[int, int]],
                 keep_masks_for: Iterable[int] = (), rule: str = "tf_rcnn"):
        self.evaluator = evaluator
        self.image_sizes = {int(k): (int(v[0]), int(v[1])) for k, v in image_sizes.items()}
        self.keep_masks_for = {int(i) for i in keep_masks_for}
        self.kept_masks: dict[int, np.ndarray] = {}
        self.rule = rule

    def update(self, detections: Mapping[str, Any]) -> None:
        """``detections`` as for ``COCOEvaluator.update`` but with box-relative
        ``detection_masks [B, D, Sm, Sm]`` and boxes in original-image pixels."""
        if "detection_masks" not in detections:
            raise ValueError(
                "MaskPastingEvaluator needs detection_masks [B, D, Sm, Sm]; the model has no "
                "mask branch (evaluate a Mask R-CNN, or drop 'segm')."
            )
        image_ids = np.asarray(detections["image_id"]).reshape(-1).astype(np.int64)
        boxes = np.asarray(detections["detection_boxes"], np.float32)
        masks = np.asarray(detections["detection_masks"], np.float32)
        num = detections.get("num_detections")
        num = np.full([len(image_ids)], boxes.shape[1]) if num is None else np.asarray(num)
        pasted = []
        for b, image_id in enumerate(image_ids):
            if int(image_id) not in self.image_sizes:
                raise ValueError(f"image_id {int(image_id)} has no known original size.")
            n = int(num[b])
            full = paste_image_masks(masks[b, :n], boxes[b, :n],
                                     self.image_sizes[int(image_id)], rule=self.rule)
            pasted.append(full)
            if int(image_id) in self.keep_masks_for:
                self.kept_masks[int(image_id)] = full
        forwarded = dict(detections)
        forwarded["detection_masks"] = pasted  # B arrays [n_b, H_b, W_b]
        self.evaluator.update(forwarded)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not found on the wrapper itself.
        return getattr(self.__dict__["evaluator"], name)
