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

Conventions (DESIGN.md): boxes ``[y1, x1, y2, x2]`` pixels of the network input; classes 0
background, 1..K; label maps as ``tf_rcnn.data.LabelMap``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_rcnn.data.records import LabelMap
from tf_rcnn.training.checkpoints import weight_key


def load_detector(path: str, config: Any = None) -> keras.Model:
    """Loads a trained detector from a ``.keras`` file or a training checkpoint.

    Args:
        path: a ``.keras`` file, a checkpoint prefix (``runs/x/ckpt-3000``) or a run directory
            (its newest checkpoint).
        config: for checkpoints: the recipe (``ml_collections.ConfigDict`` or a path such as
            ``"configs/shapes_faster_rcnn.py"``); default: ``config.json`` of the run directory.

    Returns:
        The built ``TwoStageDetector`` with its weights (and the run's label map, if saved).
    """
    import ml_collections

    from tf_rcnn.config import load_config_file
    from tf_rcnn.models import builder
    from tf_rcnn.training.checkpoints import load_weights_partial, resolve_checkpoint_path

    if path.endswith(".keras"):
        return keras.models.load_model(path)
    checkpoint = resolve_checkpoint_path(path)
    run_dir = os.path.dirname(checkpoint)
    if config is None:
        config_file = os.path.join(run_dir, "config.json")
        if not os.path.exists(config_file):
            raise ValueError(f"No config.json in {run_dir}; pass config= (the recipe file or "
                             "ConfigDict the checkpoint was trained with).")
        with open(config_file) as f:
            config = ml_collections.ConfigDict(json.load(f))
    elif isinstance(config, str):
        config = load_config_file(config)
    label_map = None
    label_map_file = os.path.join(run_dir, "label_map.json")
    if os.path.exists(label_map_file):
        label_map = LabelMap.from_json(label_map_file).to_dict()
    model = builder.build_model(config, label_map=label_map)
    builder.initialize_model(model, config)
    load_weights_partial(model, checkpoint, skip_mismatch=False)
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
    side = 128  # every pyramid level of the demo and ResNet/VGG backbones exists at 128 px
    inputs = {"images": tf.zeros([1, side, side, 3], tf.float32)}
    if getattr(model, "rpn", None) is None:
        inputs["proposals"] = tf.constant([[[0.0, 0.0, side / 2, side / 2]]], tf.float32)
    model(inputs, training=False)
    return model


def _short(variable: Any) -> str:
    """``layer/variable`` - the part of a weight path that does not depend on how the model was
    built (a model deserialised from a config builds sub-layers outside its name scope, so the
    full paths of two identical models can differ)."""
    path = getattr(variable, "path", None) or variable.name
    return "/".join(path.split("/")[-2:])


def paired_weights(a: keras.Model, b: keras.Model) -> list[tuple[Any, Any]]:
    """Pairs the weights of two models of the same architecture (creation order).

    Raises:
        ValueError: the models are not the same architecture (weight count or names differ).
    """
    wa, wb = list(a.weights), list(b.weights)
    if len(wa) != len(wb) or any(_short(x) != _short(y) for x, y in zip(wa, wb, strict=True)):
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


def _subset_ground_truth(annotation_file: str, label_map: LabelMap) -> dict:
    """The COCO ground truth restricted to the label map's categories (the others cannot be
    predicted by the fine-tuned model, so they are left out of the evaluation)."""
    with open(annotation_file) as f:
        gt = json.load(f)
    ids = set(label_map.dataset_ids)
    dropped = sum(1 for a in gt["annotations"] if a["category_id"] not in ids)
    if dropped:
        logging.info("COCOEvalCallback: %d ground-truth boxes of categories outside the label "
                     "map are not evaluated.", dropped)
    gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] in ids]
    gt["categories"] = [c for c in gt["categories"] if c["id"] in ids]
    return gt


class COCOEvalCallback(keras.callbacks.Callback):
    """Computes COCO box AP on validation data at the end of every ``every`` epochs.

    The metrics (``bbox/AP``, ``bbox/AP50``, ...) are added to the epoch logs with a ``val_``
    prefix (so ``History`` and other callbacks see ``val_bbox/AP50``) and appended to
    ``self.history``.

    Args:
        dataset: evaluation ``tf.data.Dataset`` from ``InputPipeline(..., training=False)``.
        annotation_file: the COCO json of the validation images.
        label_map: the model's ``LabelMap`` (contiguous ids -> dataset category ids); ground
            truth of categories outside it is left out.
        every: evaluate every this many epochs.
        num_images: evaluate only this many images.
    """

    def __init__(self, dataset: tf.data.Dataset, annotation_file: str, label_map: LabelMap,
                 every: int = 1, num_images: int | None = None) -> None:
        super().__init__()
        self.dataset = dataset
        self.label_map = label_map
        self.gt = _subset_ground_truth(annotation_file, label_map)
        self.every = int(every)
        self.num_images = num_images
        self.history: list[dict[str, float]] = []

    def evaluate(self) -> dict[str, float]:
        """COCO metrics of the current model on the validation data."""
        from tf_rcnn.evaluation.coco_evaluator import COCOEvaluator
        from tf_rcnn.evaluation.runner import run_evaluation

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
