"""Running a detector over an evaluation dataset and feeding the evaluators.

Detections come out of the model in pixels of the resized network input; evaluators want the
original image: boxes are divided by the per-image ``scale`` the input pipeline applied, then
clipped to the original size. Images the pipeline padded into the last batch (``image_id < 0``)
and repeated ids are skipped, so every image is counted exactly once.

Shape shorthand: B batch, D detections per image, P proposals per image, M GT per image.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tf_rcnn.data.pipeline import to_original_pixels


def make_predict_fn(model: Any, with_proposals: bool = False):
    """A ``tf.function`` running the model on ``(images, image_shape[, proposals])``; traced
    once per input signature (batch and image size are left dynamic).

    ``proposals [B, P, 4]`` (network-input pixels, -1 padded) are given to detectors without an
    RPN (Fast R-CNN); ``with_proposals`` also returns the proposals the detections came from.
    """

    # autograph=False: inference has no Python control flow on tensors (the SavedModel
    # signatures trace the same calls without it), and converting it cost ~0.25 s per trace.
    @tf.function(reduce_retracing=True, autograph=False)
    def predict(images, image_shape, proposals=None):
        inputs = {"images": images, "image_shape": image_shape}
        if proposals is not None:
            inputs["proposals"] = proposals
        if with_proposals:
            return model.detect_with_proposals(inputs)
        return dict(model(inputs, training=False))

    return predict


def run_evaluation(
    model: Any,
    dataset: Iterable,
    evaluators: Sequence[Any] = (),
    proposal_evaluator: Any = None,
    num_images: int | None = None,
    log_every: int = 50,
) -> dict[int, dict[str, np.ndarray]]:
    """Runs ``model`` over ``dataset`` and updates every evaluator.

    Args:
        model: a ``TwoStageDetector``.
        dataset: evaluation elements ``(images, targets)`` from ``InputPipeline(training=False)``.
        evaluators: objects with ``update(detections_dict)`` (COCOEvaluator, VOCEvaluator),
            fed boxes in original-image pixels.
        proposal_evaluator: optional ``ProposalRecallEvaluator`` fed RPN proposals and GT in the
            network-input frame.
        num_images: stop after this many images.
        log_every: progress line every this many batches.

    Returns:
        ``{image_id: per-image detections}`` (boxes in original pixels), for drawing.
    """
    predict = make_predict_fn(model, with_proposals=proposal_evaluator is not None)
    seen: set[int] = set()
    per_image: dict[int, dict[str, np.ndarray]] = {}
    start = time.time()
    for batch_index, (images, targets) in enumerate(dataset):
        # External proposals (Fast R-CNN) travel with the batch; RPN models ignore them.
        given = targets.get("proposals") if getattr(model, "rpn", None) is None else None
        outputs = predict(images, targets["image_shape"], given)
        outputs = {k: v.numpy() for k, v in outputs.items()}
        image_ids = targets["image_id"].numpy().astype(np.int64)
        keep = np.array([int(i) >= 0 and int(i) not in seen for i in image_ids], dtype=bool)
        if num_images is not None:
            room = num_images - len(seen)
            keep &= np.cumsum(keep) <= room
        if not keep.any():
            if num_images is not None and len(seen) >= num_images:
                break
            continue
        seen.update(int(i) for i in image_ids[keep])
        boxes = to_original_pixels(
            outputs["detection_boxes"],
            targets["scale"].numpy(),
            targets["original_shape"].numpy(),
            targets.get("flipped").numpy() if "flipped" in targets else None,
            targets["image_shape"].numpy()[:, 1],
        )
        detections = {
            "image_id": image_ids[keep],
            "detection_boxes": boxes[keep],
            "detection_scores": outputs["detection_scores"][keep],
            "detection_classes": outputs["detection_classes"][keep],
            "num_detections": outputs["num_detections"][keep],
        }
        if "detection_masks" in outputs:
            detections["detection_masks"] = outputs["detection_masks"][keep]
        for evaluator in evaluators:
            evaluator.update(detections)
        if proposal_evaluator is not None:
            proposal_evaluator.update(
                outputs["proposals"][keep],
                targets["boxes"].numpy()[keep],
                num_proposals=outputs["proposal_valid"][keep].sum(axis=1),
            )
        for j, image_id in enumerate(detections["image_id"]):
            n = int(detections["num_detections"][j])
            per_image[int(image_id)] = {
                "boxes": detections["detection_boxes"][j, :n],
                "scores": detections["detection_scores"][j, :n],
                "classes": detections["detection_classes"][j, :n],
            }
        if log_every and (batch_index + 1) % log_every == 0:
            rate = len(seen) / max(time.time() - start, 1e-6)
            logging.info("eval: %d images, %.1f img/s", len(seen), rate)
        if num_images is not None and len(seen) >= num_images:
            break
    elapsed = time.time() - start
    logging.info(
        "eval: %d images in %.1f s (%.1f img/s)", len(seen), elapsed, len(seen) / max(elapsed, 1e-6)
    )
    return per_image
