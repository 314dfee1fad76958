"""The one place that turns ``config.data`` into records and input pipelines.

What the model family needs from the data (instance masks, precomputed proposals) is passed in
by the caller, who asks the family (``tf_rcnn.models.builder.family_class(config)``); this
module never looks at ``model.type``.

Data that cannot be trained or evaluated on (a missing or empty annotation file, no readable
image, no box to train on) is a :class:`~tf_rcnn.config.ConfigError` naming the split and the
``--config.data.*`` flag that points at it, so the commands print it without a traceback.
"""

from __future__ import annotations

import math
import os

import ml_collections
import tensorflow as tf
from absl import logging

from tf_rcnn.config import ConfigError
from tf_rcnn.data.coco import load_coco
from tf_rcnn.data.custom import load_custom
from tf_rcnn.data.pipeline import InputPipeline, pixel_stats_for_backbone
from tf_rcnn.data.proposals import load_proposals
from tf_rcnn.data.records import DetectionRecord, LoadReport
from tf_rcnn.data.shapes import generate_shapes_dataset, variant_dir
from tf_rcnn.data.tfrecords import (
    SCANNED_LABEL_MAP,
    TFRecordFiles,
    TFRecordPipeline,
    check_first_records,
    list_shards,
    peek_records,
    read_tfrecord_records,
    resolve_label_map,
)
from tf_rcnn.data.voc import load_voc
from tf_rcnn.label_map import LabelMap, match_label_map

SPLITS = ("train", "val")


def split_flag(config: ml_collections.ConfigDict, split: str) -> str:
    """The ``--config.data.*`` setting that names the data of ``split``, with its value, for
    messages (e.g. ``--config.data.train_annotations=my_data/annotations.csv``)."""
    d = config.data
    if d.dataset == "shapes":
        return f"--config.data.shapes_dir={d.shapes_dir}"
    if d.dataset == "voc":
        return f"--config.data.voc_root={d.voc_root}"
    if d.dataset == "tfrecord":
        return f"--config.data.{split}_files={getattr(d, f'{split}_files')}"
    return f"--config.data.{split}_annotations={getattr(d, f'{split}_annotations')}"


def _where_images_are(config: ml_collections.ConfigDict, split: str, source: str) -> str:
    """How the reader of ``config.data.dataset`` turns the names in ``source`` into paths."""
    d = config.data
    if d.dataset == "custom":
        folder = os.path.dirname(os.path.abspath(source))
        return (f"Relative paths in the CSV's image column are resolved against the CSV's "
                f"folder ({folder}).")
    if d.dataset == "coco":
        return (f"The json's file_name entries are resolved against --config.data.{split}_images="
                f"{getattr(d, f'{split}_images')}.")
    if d.dataset == "voc":
        return "Images are read from VOC<year>/JPEGImages/<id>.jpg under --config.data.voc_root."
    return (f"Delete {variant_dir(d.shapes_dir, d.shapes_variant)} to have the shapes data "
            "generated again.")


def _no_images_error(config: ml_collections.ConfigDict, split: str, source: str,
                     report: LoadReport) -> ConfigError:
    """The error for a split without a single usable image."""
    flag = split_flag(config, split)
    failures = report.image_failures()
    if not failures:
        return ConfigError(f"The {split} split ({flag}) lists no images; point the flag at "
                           "annotations of your images.")
    examples = "; ".join(f"{file} ({detail or reason})" for reason, file, detail in failures[:2])
    return ConfigError(
        f"None of the {len(failures)} images listed in {flag} could be read, e.g. {examples}. "
        + _where_images_are(config, split, source))


def load_split(
    config: ml_collections.ConfigDict,
    split: str,
    label_map: LabelMap | None = None,
    with_masks: bool = False,
    num_images: int | None = None,
    require_boxes: bool = False,
) -> tuple[list[DetectionRecord], LabelMap, str | None]:
    """Reads the records of ``split`` ("train" or "val") of the recipe's dataset.

    The shapes dataset is generated (deterministically, once) under ``data.shapes_dir``.

    Args:
        config: the full recipe.
        split: ``"train"`` or ``"val"``.
        label_map: the model's classes; the data is read through it by the rule of
            :func:`tf_rcnn.label_map.match_label_map` (the same ids, else the same names);
            default: the dataset's own categories.
        with_masks: also read instance masks (Mask R-CNN).
        num_images: keep only the first N images.
        require_boxes: the records are ground truth for a metric: at least one box must be
            left after the reader's skips (evaluation).

    Returns:
        ``(records, label_map, annotation_file)``; ``label_map`` maps the model's classes to
        the data's category ids; ``annotation_file`` is the COCO json of the split (``None``
        for VOC and custom data).

    Raises:
        ConfigError: the split's annotations cannot be read, the model's classes are not in
            them, none of its images can be read, or (``require_boxes``) not one usable box is
            left; the message names the ``--config.data`` flag (and shows example paths).
    """
    d = config.data
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
    if d.dataset == "shapes":
        try:
            out = os.path.join(variant_dir(d.shapes_dir, d.shapes_variant), split)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        annotation_file = generate_shapes_dataset(
            out,
            num_images=d.shapes_train_images if split == "train" else d.shapes_val_images,
            image_size=d.shapes_image_size,
            seed=d.shapes_train_seed if split == "train" else d.shapes_val_seed,
            variant=d.shapes_variant,
        )
        try:
            records, label_map, report = load_coco(
                annotation_file, os.path.join(out, "images"), label_map=label_map,
                include_masks=with_masks,
            )
        except ValueError as error:
            raise ConfigError(f"{split_flag(config, split)}: {error}") from error
        source = annotation_file
    elif d.dataset in ("coco", "voc", "custom"):
        records, label_map, report, source = _read_split(config, split, label_map, with_masks)
        annotation_file = source if d.dataset == "coco" else None
    elif d.dataset == "tfrecord":
        records, label_map, report = _tfrecord_split(config, split, label_map, with_masks)
        if isinstance(records, TFRecordFiles):  # training data stays a stream
            return records, label_map, None
        source, annotation_file = split_flag(config, split), None
    else:
        raise ConfigError(f"Unknown data.dataset {d.dataset!r}; choose shapes, coco, voc, "
                          "custom or tfrecord.")
    if not records:
        raise _no_images_error(config, split, source, report)
    if num_images is not None:
        records = records[:num_images]
    if require_boxes:
        _require_ground_truth(config, split, records, report)
    return records, label_map, annotation_file


def _require_ground_truth(config: ml_collections.ConfigDict, split: str,
                          records: list[DetectionRecord], report: LoadReport) -> None:
    """A metric over no ground truth is no number: at least one box that is not VOC
    ``difficult`` must be left, else a ConfigError with the reader's summary."""
    if any(r.num_usable for r in records):
        return
    raise ConfigError(
        f"The {split} split ({split_flag(config, split)}) has no usable ground-truth box in "
        f"the {len(records)} image(s) evaluated, so there is nothing to measure the model "
        f"against (the reader: {report.summary()}). Fix the annotations (the reasons above), "
        "or point the flag at annotated data for the model's classes.")
def _tfrecord_split(config: ml_collections.ConfigDict, split: str, label_map: LabelMap | None,
                    with_masks: bool
                    ) -> tuple[list[DetectionRecord] | TFRecordFiles, LabelMap, LoadReport | None]:
    """The shards of a TFRecord split and its label map. Training data stays a stream
    (:class:`TFRecordFiles`); validation data is read once into records for the ground truth."""
    d = config.data
    pattern = getattr(d, f"{split}_files")
    flag = split_flag(config, split)
    if not pattern:
        raise ConfigError(f"--config.data.{split}_files is unset; point it at the TFRecord shards "
                          f"of the split (globs, e.g. --config.data.{split}_files="
                          f"'gs://bucket/{split}-*.tfrecord').")
    try:
        files = list_shards(pattern)
    except (ValueError, tf.errors.OpError) as error:
        raise ConfigError(f"{flag}: {error}") from error
    try:
        data_map, origin = resolve_label_map(d.label_map, files)
    except (ValueError, tf.errors.OpError) as error:
        raise ConfigError(f"--config.data.label_map={d.label_map}: {error}") from error
    if label_map is None:
        label_map = data_map
        logging.info("Classes of %s from %s: %s", flag, origin, label_map)
    else:
        # The model's classes in the data by the one rule (same id and name, else same name);
        # a map scanned from bare class ids knows no names, so only its ids can agree.
        try:
            label_map = match_label_map(label_map, data_map.dataset_ids, data_map.names,
                                        source=f"{flag} ({origin})",
                                        complete=origin != SCANNED_LABEL_MAP)
        except ValueError as error:
            raise ConfigError(str(error)) from error
    if split == "train":
        peeked = peek_records(files)  # read once: here and by the pipeline
        usable, report = check_first_records(files, label_map, peeked)
        if not usable:
            problems = "; ".join(f"{n} {reason}" for reason, n in sorted(
                {**report.skipped, **report.repaired}.items())) or "no objects"
            example = next((file for _, _, file, _ in report.items), files[0])
            raise ConfigError(
                f"None of the first records of {flag} has a box to train on ({problems}; e.g. "
                f"{example}). Check the records' class ids against the label map "
                f"(--config.data.label_map={d.label_map}) and their format (docs/data.md, "
                "TFRecords).")
        return TFRecordFiles(files, flag, peeked), label_map, None
    try:
        records, report = read_tfrecord_records(files, label_map, with_masks=with_masks,
                                                source=flag)
    except ValueError as error:
        raise ConfigError(f"{flag}: {error}") from error
    if not records:
        examples = "; ".join(f"{file}: {reason}" for _, reason, file, _ in report.items[:2])
        raise ConfigError(f"None of the records of {flag} could be used"
                          + (f", e.g. {examples}." if examples else " (no record found)."))
    return records, label_map, report


def _read_split(config: ml_collections.ConfigDict, split: str, label_map: LabelMap | None,
                with_masks: bool) -> tuple[list[DetectionRecord], LabelMap, LoadReport, str]:
    """COCO, VOC or CSV data of ``split``; a reader's ValueError (missing file, bad format)
    becomes a ConfigError naming the flag. The last value returned is the annotation file (the
    VOC root for VOC data)."""
    d = config.data
    annotation_file = getattr(d, f"{split}_annotations")
    flag = split_flag(config, split)
    if d.dataset == "coco" and (not annotation_file or not getattr(d, f"{split}_images")):
        raise ConfigError(
            f"data.{split}_annotations and data.{split}_images must point at the COCO json "
            f"and image folder (e.g. --config.data.{split}_annotations=.../instances_"
            f"{split}2017.json --config.data.{split}_images=.../{split}2017)."
        )
    if d.dataset == "custom" and not annotation_file:
        raise ConfigError(f"--config.data.{split}_annotations is unset; point it at the CSV "
                          "of the split (image,x1,y1,x2,y2,class).")
    try:
        if d.dataset == "coco":
            records, label_map, report = load_coco(
                annotation_file, getattr(d, f"{split}_images"), label_map=label_map,
                include_masks=with_masks)
        elif d.dataset == "voc":
            sets = d.voc_train_sets if split == "train" else d.voc_val_sets
            records, label_map, report = load_voc(
                d.voc_root, image_sets=[tuple(s) for s in sets], label_map=label_map,
                training=split == "train")
            annotation_file = d.voc_root
        else:
            records, label_map, report = load_custom(annotation_file, label_map=label_map)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"{flag}: {error}") from error
    return records, label_map, report, annotation_file


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
        ConfigError: a needed proposal file is unset or missing, deterministic order without a
            seed, training records without a single box, or records without the masks the
            model needs (the message names the flag to change).
    """
    d = config.data
    if d.deterministic and d.seed is None:
        raise ConfigError("--config.data.deterministic=True needs a seed: add "
                          "--config.data.seed=N (any integer).")
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
    scale_jitter = _scale_jitter(d)
    fixed_image_size = _fixed_image_size(d, scale_jitter)
    split = "train" if training else "val"
    if d.dataset == "tfrecord":
        return _tfrecord_pipeline(config, records, label_map, training, batch_size, with_masks,
                                  needs_proposals, mean, std, fixed_image_size, scale_jitter)
    if training and not any(r.num_usable for r in records):
        # The pipeline leaves images without (non-difficult) boxes out of training.
        raise ConfigError(
            f"The {split} split ({split_flag(config, split)}) has no box to train on: none of "
            f"its {len(records)} image(s) has one (images without boxes are left out of "
            "training). Give the images their boxes, or point the flag at annotated data.")
    if with_masks:
        lacking = [r for r in records if not r.has_masks]
        if lacking:
            raise ConfigError(
                f"This model predicts instance masks, but {len(lacking)} of the "
                f"{len(records)} images of the {split} split ({split_flag(config, split)}) "
                f"have none, e.g. {lacking[0].image_path}. Give the data masks (a mask column "
                "naming a binary PNG per box in a CSV, segmentations in a COCO json), or use "
                "a recipe without masks.")
    return InputPipeline(
        records,
        label_map,
        training=training,
        batch_size=batch_size,
        scales=tuple(d.scales),
        max_size=d.max_size,
        resize_rule=d.resize_rule,
        scale_jitter=scale_jitter if training else None,
        random_flip=bool(d.random_flip) and training,
        size_divisor=d.size_divisor,
        fixed_image_size=fixed_image_size,
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


def _scale_jitter(d: ml_collections.ConfigDict) -> tuple[float, float] | None:
    """``data.scale_jitter`` checked: ``(lo, hi)`` with ``0 < lo <= hi``, else None."""
    value = d.get("scale_jitter")
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = -1.0
    if not 0 < lo <= hi:
        raise ConfigError(
            f"--config.data.scale_jitter={value!r} must be two factors (lo, hi) with "
            "0 < lo <= hi, each image's scale multiplied by one drawn from [lo, hi]: e.g. "
            "--config.data.scale_jitter='(0.8, 1.2)'.")
    return lo, hi


def _fixed_image_size(d: ml_collections.ConfigDict,
                      scale_jitter: tuple[float, float] | None) -> tuple[int, int] | None:
    """``data.fixed_image_size`` checked: two multiples of ``size_divisor``, each at least
    ``max_size`` (times the largest ``scale_jitter`` factor above 1, as :func:`_scale_jitter`
    returned it) rounded up to one (the largest canvas the resize can give), else None."""
    size = d.get("fixed_image_size")
    if size is None:
        return None
    divisor = int(d.size_divisor)
    jitter = max(1.0, scale_jitter[1]) if scale_jitter else 1.0
    longest = math.ceil(float(d.max_size) * jitter - 1e-6)
    need = -(-longest // divisor) * divisor
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        h = w = -1
    if h < need or w < need or h % divisor or w % divisor:
        raise ConfigError(
            f"--config.data.fixed_image_size={size!r} must be two sizes (H, W), each a "
            f"multiple of data.size_divisor={divisor} and at least data.max_size={d.max_size} "
            f"{f'times the scale jitter {jitter:g} ' if jitter > 1 else ''}rounded up to one "
            f"({need}), so that every resized image fits: e.g. "
            f"--config.data.fixed_image_size='({need}, {need})'.")
    return h, w


def _tfrecord_pipeline(config: ml_collections.ConfigDict,
                       records: list[DetectionRecord] | TFRecordFiles, label_map: LabelMap,
                       training: bool, batch_size: int, with_masks: bool, needs_proposals: bool,
                       mean: tuple, std: tuple, fixed_image_size: tuple[int, int] | None,
                       scale_jitter: tuple[float, float] | None) -> TFRecordPipeline:
    """The streaming pipeline over a split's shards. Evaluation reads the first
    ``len(records)`` usable records, which are ``records`` when they are (a prefix of) what
    :func:`load_split` returned for the split."""
    d = config.data
    split = "train" if training else "val"
    flag = split_flag(config, split)
    if needs_proposals:
        raise ConfigError("This model reads precomputed proposals, which TFRecord data does not "
                          "carry; train it on COCO, VOC or CSV data (--config.data.dataset).")
    files = records.files if isinstance(records, TFRecordFiles) else list_shards(
        getattr(d, f"{split}_files"))
    try:  # a mask model on records without masks: TFRecordPipeline's error names the flag
        return TFRecordPipeline(
            files, label_map, source_flag=flag,
            peeked=records.peeked if isinstance(records, TFRecordFiles) else None,
            num_images=None if isinstance(records, TFRecordFiles) else len(records),
            training=training, batch_size=batch_size, scales=tuple(d.scales),
            max_size=d.max_size, resize_rule=d.resize_rule,
            scale_jitter=scale_jitter if training else None,
            random_flip=bool(d.random_flip) and training, size_divisor=d.size_divisor,
            fixed_image_size=fixed_image_size, max_instances=d.max_instances,
            pixel_mean=mean, pixel_std=std,
            with_masks=with_masks, mask_crop_size=d.mask_crop_size, seed=d.seed,
            deterministic=d.deterministic, shuffle_buffer=d.shuffle_buffer)
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{flag}: {error}") from error
