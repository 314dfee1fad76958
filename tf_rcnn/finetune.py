"""Fine-tuning a trained detector on new classes with the ordinary Keras API.

``load_detector`` -> ``finetune_model`` (new class count, every weight that fits kept) ->
``model.compile()`` -> ``model.fit(dataset, callbacks=[COCOEvalCallback(...)])`` ->
``model.predict`` -> ``model.save("x.keras")`` / ``keras.models.load_model``.

Which weights are kept: the new model is the source's architecture (its Keras config) with
``num_classes`` replaced; a weight is copied when its Keras path and shape match AND its shape
does not depend on the class count. Class-dependent weights (the box predictor's logits and
deltas, R-FCN's position-sensitive score/box maps, Mask R-CNN's per-class mask logits, ...) are
found generically: they are the weights whose shape changes between two builds with different
class counts. Everything else (backbone, neck, RPN, shared box/mask head layers) is kept.

Conventions: boxes ``[y1, x1, y2, x2]`` pixels of the network input; classes 0
background, 1..K; label maps as ``tf_rcnn.data.LabelMap``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_rcnn.data.coco import load_coco
from tf_rcnn.data.records import DetectionRecord, records_to_coco
from tf_rcnn.evaluation.coco_evaluator import COCOEvaluator
from tf_rcnn.evaluation.runner import run_evaluation
from tf_rcnn.label_map import LabelMap
from tf_rcnn.models.checkpoint import restore_detector, weight_key


def load_detector(path: str, config: Any = None) -> keras.Model:
    """Loads a trained detector from a ``.keras`` file or a trained run.

    Args:
        path: a ``.keras`` file, a checkpoint prefix (``runs/x/ckpt-3000``) or a run directory
            (its newest checkpoint).
        config: for runs: the recipe (``ml_collections.ConfigDict`` or a path such as
            ``"configs/shapes_faster_rcnn.py"``); default: the run's ``config.json``.

    Returns:
        The built ``TwoStageDetector`` with its weights (and the run's label map, if saved).
    """
    if path.endswith(".keras"):
        return keras.models.load_model(path)
    model, _, _ = restore_detector(path, config)
    return model


def _with_num_classes(config: Any, num_classes: int) -> Any:
    """A copy of a Keras config tree with every ``num_classes`` entry replaced."""
    if isinstance(config, dict):
        return {k: (num_classes if k == "num_classes" and isinstance(v, int)
                    else _with_num_classes(v, num_classes)) for k, v in config.items()}
    if isinstance(config, list):
        return [_with_num_classes(v, num_classes) for v in config]
    return config


def _build_like(source: keras.Model, num_classes: int, label_map: dict | None) -> keras.Model:
    config = _with_num_classes(copy.deepcopy(source.get_config()), num_classes)
    config["label_map"] = label_map
    model = type(source).from_config(config)
    model.build_with_dummy_inputs()
    return model


def paired_weights(a: keras.Model, b: keras.Model) -> list[tuple[Any, Any]]:
    """Pairs the weights of two models of the same architecture by checkpoint key
    (``tf_rcnn.models.checkpoint.weight_key``: the same on every construction route).

    Raises:
        ValueError: the models are not the same architecture (weight count or names differ).
    """
    wa, wb = list(a.weights), list(b.weights)
    if len(wa) != len(wb) or any(weight_key(x) != weight_key(y)
                                 for x, y in zip(wa, wb, strict=True)):
        raise ValueError(f"{a.name} and {b.name} are not the same architecture: "
                         f"{len(wa)} vs {len(wb)} weights; build the target from the source's "
                         "config (finetune_model does).")
    return list(zip(wa, wb, strict=True))


def transfer_weights(source: keras.Model, target: keras.Model,
                     class_dependent: Sequence[bool]) -> tuple[list[str], list[str]]:
    """Copies every weight of ``source`` into ``target`` (same architecture) whose shape fits,
    except those flagged in ``class_dependent`` (one flag per weight, creation order).

    Returns:
        ``(kept, reinitialized)`` weight names of ``target``.
    """
    kept, fresh = [], []
    for (src, dst), is_class in zip(paired_weights(source, target), class_dependent,
                                    strict=True):
        if is_class or tuple(src.shape) != tuple(dst.shape):
            fresh.append(weight_key(dst))
            continue
        dst.assign(src)
        kept.append(weight_key(dst))
    return kept, fresh


def freeze_backbone(model: keras.Model, stages: Sequence[str] | None = None) -> list[str]:
    """Freezes the whole backbone, or only its layers whose names start with ``stages``.

    Args:
        model: a ``TwoStageDetector``.
        stages: name prefixes of backbone layers to freeze, e.g. ``("stem", "c2")`` for the
            tiny backbone or ``("conv1", "conv2")`` for ResNet; ``None`` freezes everything.

    Returns:
        The names of the frozen layers.

    Raises:
        ValueError: a prefix matches no backbone layer (the message lists the names).
    """
    backbone = model.backbone
    if stages is None:
        backbone.trainable = False
        return [backbone.name]
    layers = list(backbone._flatten_layers(include_self=False))
    frozen = []
    for prefix in stages:
        hits = [layer for layer in layers if layer.name.startswith(prefix)]
        if not hits:
            names = sorted({layer.name for layer in layers})
            raise ValueError(f"No backbone layer name starts with {prefix!r}; backbone layers: "
                             f"{names[:40]}.")
        for layer in hits:
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def finetune_model(
    source: keras.Model,
    classes: LabelMap | int,
    freeze: str | Sequence[str] | None = "backbone",
) -> keras.Model:
    """A detector for new classes initialised from a trained one.

    Args:
        source: a trained ``TwoStageDetector`` (``load_detector``).
        classes: the new classes, a ``LabelMap`` (stored with the model, so exports report
            dataset ids) or a class count K.
        freeze: ``"backbone"`` (default), ``None`` (train everything) or backbone layer-name
            prefixes (see ``freeze_backbone``).

    Returns:
        The new, built model of the same type; class-dependent layers are freshly initialised,
        every other weight is the source's.
    """
    if isinstance(classes, LabelMap):
        num_classes, label_map = classes.num_classes, classes.to_dict()
    else:
        num_classes, label_map = int(classes), None
    if num_classes < 1:
        raise ValueError(f"classes must give K >= 1 object classes, got {num_classes}.")
    if not source.built or not source.weights:
        raise ValueError("source has no weights; load or build it first (load_detector).")
    target = _build_like(source, num_classes, label_map)
    # Weights whose shape depends on K: compare with a build for another class count.
    other_k = source.num_classes if source.num_classes != num_classes else num_classes + 1
    probe = source if other_k == source.num_classes else _build_like(source, other_k, None)
    class_dependent = [tuple(p.shape) != tuple(t.shape)
                       for p, t in paired_weights(probe, target)]
    kept, fresh = transfer_weights(source, target, class_dependent)
    logging.info("finetune_model: kept %d weights, re-initialised %d: %s", len(kept), len(fresh),
                 ", ".join(fresh))
    if freeze == "backbone":
        freeze_backbone(target)
    elif freeze is not None:
        if isinstance(freeze, str):
            raise ValueError(f"freeze must be 'backbone', None or a list of layer-name "
                             f"prefixes; got {freeze!r}.")
        freeze_backbone(target, freeze)
    return target


class COCOEvalCallback(keras.callbacks.Callback):
    """Computes COCO box AP on validation data at the end of every ``every`` epochs.

    The metrics (``bbox/AP``, ``bbox/AP50``, ...) are added to the epoch logs with a ``val_``
    prefix (so ``History`` and other callbacks see ``val_bbox/AP50``) and appended to
    ``self.history``.

    The ground truth is the reader's records (``records_to_coco``), so what the reader skipped
    is not scored and what it repaired is scored as repaired, as in ``eval.py``.

    Args:
        dataset: evaluation ``tf.data.Dataset`` from ``InputPipeline(..., training=False)``.
        ground_truth: the records the dataset was built from (read with ``label_map``), or
            the path of their COCO json (then read here with ``label_map``, annotations only).
        label_map: the model's ``LabelMap``; a json is read through it by the rule of
            :func:`tf_rcnn.label_map.match_label_map` (same ids, else same names, else an
            error); ground truth of categories outside it is left out.
        every: evaluate every this many epochs.
        num_images: evaluate only this many images.

    Raises:
        ValueError: the model's classes are not in the json, or no usable box is left.
    """

    def __init__(self, dataset: tf.data.Dataset,
                 ground_truth: str | Sequence[DetectionRecord], label_map: LabelMap,
                 every: int = 1, num_images: int | None = None) -> None:
        super().__init__()
        self.dataset = dataset
        if isinstance(ground_truth, str):
            records, label_map, _ = load_coco(ground_truth, None, label_map=label_map,
                                              include_masks=False)
        else:
            records = list(ground_truth)
        if not any(r.num_usable for r in records):
            raise ValueError(
                f"COCOEvalCallback: the {len(records)} validation images have no usable "
                "ground-truth box (the reader's log line says what was skipped); a metric "
                "over no ground truth is no number.")
        self.label_map = label_map
        self.gt = records_to_coco(records, label_map)
        self.every = int(every)
        self.num_images = num_images
        self.history: list[dict[str, float]] = []

    def evaluate(self) -> dict[str, float]:
        """COCO metrics of the current model on the validation data."""
        evaluator = COCOEvaluator(gt_dataset=self.gt, label_map=self.label_map)
        run_evaluation(self.model, self.dataset, [evaluator], num_images=self.num_images,
                       log_every=0)
        return {k: float(v) for k, v in evaluator.evaluate().items()}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        metrics = self.evaluate()
        self.history.append(metrics)
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in metrics.items() if "/" in k
                         and k.count("/") == 1})
        logging.info("epoch %d: bbox/AP %.4f, bbox/AP50 %.4f", epoch + 1,
                     metrics.get("bbox/AP", np.nan), metrics.get("bbox/AP50", np.nan))
