"""Watching a training run: periodic validation metrics and pictures of detections.

``train.py`` hands these factories to ``tf_rcnn.training.run.run_training`` (training never
imports evaluation). Both hooks run on the chief only, between training loops, with the live
(possibly mirrored) model in inference mode; they never touch the optimizer or the step.

- :func:`make_eval_fn` -> ``eval_fn(step) -> {"bbox/AP": ..., "bbox/AP50": ..., ...}`` over the
  recipe's validation split (COCO metrics; ``train.eval_num_images`` images), for
  ``Trainer(eval_fn=..., eval_every=...)``.
- :func:`make_image_fn` -> ``image_fn(step) -> uint8 [H, W, 3]``: the first
  ``train.image_summary_count`` validation images with their detections drawn by
  :mod:`tf_rcnn.visualize`, tiled into one picture (``tf_rcnn.training.summaries`` writes it).

Boxes in the pictures are ``[y1, x1, y2, x2]`` in original-image pixels (the evaluation runner
maps them back from the network input).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import keras
import ml_collections
import numpy as np

from tf_rcnn import visualize as vis
from tf_rcnn.config import ConfigError
from tf_rcnn.data.builder import build_input_pipeline, load_split
from tf_rcnn.data.records import records_to_coco
from tf_rcnn.data.tfrecords import load_image
from tf_rcnn.evaluation.coco_evaluator import COCOEvaluator
from tf_rcnn.evaluation.runner import run_evaluation
from tf_rcnn.label_map import LabelMap


def make_eval_fn(
    config: ml_collections.ConfigDict,
    model: keras.Model,
    label_map: LabelMap,
) -> Callable[[int], dict[str, float]]:
    """Builds ``eval_fn(step)`` computing COCO box metrics on the validation split.

    Args:
        config: the recipe (``data`` gives the split and the eval batch,
            ``train.eval_num_images`` how many images; None: all).
        model: the detector being trained (evaluated in inference mode, weights as they are).
        label_map: the training ``LabelMap`` (dataset ids of the detections).

    Raises:
        ConfigError: the model's classes are not in the validation data, or it has no usable
            ground-truth box (the message names the flag).
    """
    records, label_map, _ = load_split(config, "val", label_map=label_map,
                                       num_images=config.train.eval_num_images,
                                       require_boxes=True)
    pipeline = build_input_pipeline(config, records, label_map, training=False,
                                    needs_proposals=model.needs_proposals)
    # The reader's records are the ground truth (as in eval.py), for every dataset kind.
    ground_truth = records_to_coco(records, label_map)

    def eval_fn(step: int) -> dict[str, float]:
        del step
        evaluator = COCOEvaluator(gt_dataset=ground_truth, iou_types=("bbox",),
                                  label_map=label_map)
        run_evaluation(model, pipeline.dataset(), [evaluator], log_every=0)
        # pycocotools prints its tables; the trainer logs the numbers it needs.
        with contextlib.redirect_stdout(io.StringIO()):
            return {k: float(v) for k, v in evaluator.evaluate().items()}

    return eval_fn


def make_image_fn(
    config: ml_collections.ConfigDict,
    model: keras.Model,
    label_map: LabelMap,
) -> Callable[[int], np.ndarray]:
    """Builds ``image_fn(step) -> uint8 [H, W, 3]``: the first ``train.image_summary_count``
    validation images with the detections scoring at least ``eval.score_threshold_visualize``.

    Raises:
        ConfigError: ``train.image_summary_count < 1``.
    """
    count = config.train.image_summary_count
    score_threshold = config.eval.score_threshold_visualize
    if count < 1:
        raise ConfigError(f"train.image_summary_count must be >= 1, got {count}.")
    records, label_map, _ = load_split(config, "val", label_map=label_map)
    records = records[:count]
    pipeline = build_input_pipeline(config, records, label_map, training=False,
                                    batch_size=len(records),
                                    needs_proposals=model.needs_proposals)
    names = {i: label_map.name(i) for i in range(1, label_map.num_classes + 1)}
    originals = {int(r.image_id): load_image(r) for r in records}

    def image_fn(step: int) -> np.ndarray:
        del step
        per_image = run_evaluation(model, pipeline.dataset(), [], num_images=len(records),
                                   log_every=0)
        drawn = []
        for image_id, image in originals.items():
            det = per_image.get(image_id)
            if det is None:
                drawn.append(image)
                continue
            drawn.append(vis.draw_detections(image, det["boxes"], det["classes"], det["scores"],
                                             names, score_threshold=score_threshold))
        return vis.draw_grid(drawn)

    return image_fn
