"""The one place that turns ``config.data`` into records and input pipelines.

What the model family needs from the data (instance masks, precomputed proposals) is passed in
by the caller, who asks the family (``tf_rcnn.models.builder.family_class(config)``); this
module never looks at ``model.type``.
"""

from __future__ import annotations

import os

import ml_collections
from absl import logging

from tf_rcnn.config import ConfigError
from tf_rcnn.data.coco import load_coco
from tf_rcnn.data.custom import load_custom
from tf_rcnn.data.pipeline import InputPipeline, pixel_stats_for_backbone
from tf_rcnn.data.proposals import load_proposals
from tf_rcnn.data.records import DetectionRecord
from tf_rcnn.data.shapes import generate_shapes_dataset
from tf_rcnn.data.voc import load_voc
from tf_rcnn.label_map import LabelMap

SPLITS = ("train", "val")


def load_split(
    config: ml_collections.ConfigDict,
    split: str,
    label_map: LabelMap | None = None,
    with_masks: bool = False,
) -> tuple[list[DetectionRecord], LabelMap, str | None]:
    """Reads the records of ``split`` ("train" or "val") of the recipe's dataset.

    The shapes dataset is generated (deterministically, once) under ``data.shapes_dir``.

    Args:
        config: the full recipe.
        split: ``"train"`` or ``"val"``.
        label_map: the model's classes (dataset ids are mapped through it); default: the
            dataset's own categories.
        with_masks: also read instance masks (Mask R-CNN).

    Returns:
        ``(records, label_map, annotation_file)``; ``annotation_file`` is the COCO json the
        COCO evaluator compares against (``None`` for VOC and custom data).
    """
    d = config.data
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
    if d.dataset == "shapes":
        out = os.path.join(d.shapes_dir, split)
        annotation_file = generate_shapes_dataset(
            out,
            num_images=d.shapes_train_images if split == "train" else d.shapes_val_images,
            image_size=d.shapes_image_size,
            seed=d.shapes_train_seed if split == "train" else d.shapes_val_seed,
        )
        records, label_map, report = load_coco(
            annotation_file, os.path.join(out, "images"), label_map=label_map,
            include_masks=with_masks,
        )
    elif d.dataset == "coco":
        annotation_file = d.train_annotations if split == "train" else d.val_annotations
        image_dir = d.train_images if split == "train" else d.val_images
        if not annotation_file or not image_dir:
            raise ConfigError(
                f"data.{split}_annotations and data.{split}_images must point at the COCO json "
                f"and image folder (e.g. --config.data.{split}_annotations=.../instances_"
                f"{split}2017.json --config.data.{split}_images=.../{split}2017)."
            )
        records, label_map, report = load_coco(annotation_file, image_dir, label_map=label_map,
                                               include_masks=with_masks)
    elif d.dataset == "voc":
        sets = d.voc_train_sets if split == "train" else d.voc_val_sets
        records, label_map, report = load_voc(
            d.voc_root, image_sets=[tuple(s) for s in sets], training=split == "train"
        )
        annotation_file = None
    elif d.dataset == "custom":
        path = d.train_annotations if split == "train" else d.val_annotations
        records, label_map, report = load_custom(path, label_map=label_map)
        annotation_file = None
    else:
        raise ConfigError(f"Unknown data.dataset {d.dataset!r}; choose shapes, coco, voc or "
                          "custom.")
    logging.info("%s split: %s", split, report.summary())
    return records, label_map, annotation_file


def pixel_stats(config: ml_collections.ConfigDict) -> tuple[tuple, tuple]:
    """``(pixel_mean, pixel_std)`` (RGB, 0-255 inputs): ``data.pixel_mean/pixel_std`` when set,
    else the backbone family's statistics. Training, evaluation and export all use this."""
    mean, std = pixel_stats_for_backbone(config.model.backbone.name)
    d = config.data
    return (tuple(d.pixel_mean) if d.pixel_mean is not None else mean,
            tuple(d.pixel_std) if d.pixel_std is not None else std)


def build_input_pipeline(
    config: ml_collections.ConfigDict,
    records: list[DetectionRecord],
    label_map: LabelMap,
    training: bool,
    batch_size: int | None = None,
    with_masks: bool = False,
    needs_proposals: bool = False,
) -> InputPipeline:
    """``config.data`` -> ``InputPipeline`` for the given records.

    Args:
        config: the full recipe.
        records: from :func:`load_split`.
        label_map: the classes of ``records``.
        training: training (shuffle, flip, jitter, repeat) or evaluation order.
        batch_size: GLOBAL batch (each replica gets its share through the input context);
            defaults to the recipe's train / eval batch.
        with_masks: add box-cropped GT masks to the targets (Mask R-CNN).
        needs_proposals: the model reads proposals from ``data.proposals_train`` /
            ``data.proposals_val`` (Fast R-CNN); they must exist.

    Raises:
        ConfigError: a needed proposal file is unset or missing (the message names the flag).
    """
    d = config.data
    mean, std = pixel_stats(config)
    if batch_size is None:
        batch_size = d.train_batch_size if training else d.eval_batch_size
    proposal_file = d.proposals_train if training else d.proposals_val
    key = "data.proposals_train" if training else "data.proposals_val"
    if needs_proposals and not (proposal_file and os.path.exists(proposal_file)):
        raise ConfigError(
            f"This model reads its proposals from {key}, which is "
            f"{'unset' if not proposal_file else 'missing: ' + repr(proposal_file)}; write one "
            "with python -m tf_rcnn.tools.dump_proposals (or by hand, format in "
            f"tf_rcnn/data/proposals.py) and pass --config.{key}=FILE."
        )
    return InputPipeline(
        records,
        label_map,
        training=training,
        batch_size=batch_size,
        scales=tuple(d.scales),
        max_size=d.max_size,
        resize_rule=d.resize_rule,
        scale_jitter=d.scale_jitter if training else None,
        random_flip=bool(d.random_flip) and training,
        size_divisor=d.size_divisor,
        max_instances=d.max_instances,
        pixel_mean=mean,
        pixel_std=std,
        with_masks=with_masks,
        mask_crop_size=d.mask_crop_size,
        proposals=load_proposals(proposal_file) if proposal_file else None,
        max_proposals=d.max_proposals,
        seed=d.seed,
        deterministic=d.deterministic,
    )
