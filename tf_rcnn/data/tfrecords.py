"""TFRecords in the TensorFlow Object Detection API's ``tf.train.Example`` layout.

Format (one ``tf.train.Example`` per image; every key but ``image/encoded`` optional):

    image/encoded                  bytes  the image file as it was (JPEG, PNG, GIF, BMP)
    image/format                   bytes  "jpeg" / "png" (informational; the bytes decide)
    image/height, image/width      int64  checked against the decoded image when given
    image/filename                 bytes  written into eval.py's detections.json
    image/source_id                bytes  the image id: an integer string is used as it is,
                                          any other string (or the file name, or "<shard
                                          base name>#<record>" without either) is hashed
                                          into [2**62, 2**63)
    image/object/bbox/{xmin,ymin,xmax,ymax}   float  normalised to [0, 1] by the image size
    image/object/class/label       int64  dataset category ids (the label map's ``id``)
    image/object/class/text        bytes  class names (length-checked only)
    image/object/is_crowd          int64  1: a crowd region (an ignore region, any label)
    image/object/difficult         int64  1: VOC difficult (left out of training)
    image/object/area              float  (length-checked only)
    image/object/mask              bytes  one PNG per object, the size of the image,
                                          non-zero = object; or float  a flat list of
                                          objects x height x width values, > 0 = object

Class ids: ``label_map.pbtxt`` (``item { id: 3 name: 'cat' }``) names the dataset ids; the
:class:`~tf_rcnn.label_map.LabelMap` maps them to ``1..K`` (ascending ids) as for every reader.

Reading happens in the tf.data graph (no Python per record): shards are interleaved in blocks
of records, each block parsed at once (:meth:`ExampleDecoder.parse`: the image-bytes check, the
image size read from the image's own header and checked against the record's, the masks
checked against it, the object checks, the training filters and the problem vector of each
record, vectorised over the block; a block's problems counted at once into a
:class:`ProblemCounter`, a variable read at the end of a run), then each usable image decoded
(only damage inside the image data is left for decoding to find). Problems (see
``PROBLEMS``): a record that cannot be used is skipped, a bad object is skipped, a box partly
outside ``[0, 1]`` is clipped; the first few of each kind are printed with the shard and
record number, the run goes on. A truncated shard ends where the damage
starts (the rest of that shard is skipped, with a message naming it; the other shards are
read): each shard's size is taken once when the pipeline is built and compared with the bytes
its records used. Evaluation reads the validation records once in Python
(:func:`read_tfrecord_records`, through the same graph functions, without the training
filters) to build its ground truth.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image
from pycocotools import mask as mask_utils

from tf_rcnn.config import ConfigError
from tf_rcnn.data.pipeline import (
    AUTOTUNE,
    InputPipeline,
    decode_image,
    encoded_image_sizes,
    graph_fn,
    image_bytes_ok,
)
from tf_rcnn.data.records import DetectionRecord, LoadReport
from tf_rcnn.label_map import LabelMap

LABEL_MAP_PBTXT = "label_map.pbtxt"

ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
FILENAME = "image/filename"
SOURCE_ID = "image/source_id"
XMIN = "image/object/bbox/xmin"
YMIN = "image/object/bbox/ymin"
XMAX = "image/object/bbox/xmax"
YMAX = "image/object/bbox/ymax"
LABEL = "image/object/class/label"
TEXT = "image/object/class/text"
IS_CROWD = "image/object/is_crowd"
DIFFICULT = "image/object/difficult"
AREA = "image/object/area"
MASK = "image/object/mask"

# What the reader counts, (reason, action), in the order of the problem vector. The first
# NUM_NAMED are found per record by ExampleDecoder and printed (the first PRINT_LIMIT of each)
# with the shard and record number; the rest are the training filters, counted only.
PROBLEMS: tuple[tuple[str, str], ...] = (
    ("undecodable image bytes", "record skipped"),
    ("mismatched lengths of the per-object lists", "record skipped"),
    ("image size differs from image/height and image/width", "record skipped"),
    ("instance masks that are not PNGs or floats of the image size", "record skipped"),
    ("truncated shard", "the rest of the shard skipped"),
    ("non-finite box", "object skipped"),
    ("degenerate box (xmax<=xmin or ymax<=ymin)", "object skipped"),
    ("box outside [0, 1]", "object skipped"),
    ("box partly outside [0, 1]", "clipped"),
    ("class label not in the label map", "object skipped"),
    ("object without an instance mask", "filled box used as mask"),
    ("difficult boxes left out of training", ""),
    ("images without boxes left out of training", ""),
    ("instances beyond max_instances dropped", ""),
    ("crowd regions beyond max_crowd dropped", ""),
)
NUM_NAMED = 11
(UNDECODABLE, MISMATCHED, SIZE_DIFFERS, BAD_MASKS, TRUNCATED, NON_FINITE, DEGENERATE, OUTSIDE,
 CLIPPED, UNKNOWN_LABEL, NO_MASK, DIFFICULT_LEFT_OUT, EMPTY_LEFT_OUT, BEYOND_MAX,
 CROWD_BEYOND_MAX) = range(len(PROBLEMS))
PROBLEM_LABELS = tuple(f"{r} ({a})" for r, a in PROBLEMS)
RECORD_PROBLEMS = (UNDECODABLE, MISMATCHED, SIZE_DIFFERS, BAD_MASKS, TRUNCATED)
REPAIRS = (CLIPPED, NO_MASK)
PRINT_LIMIT = 10
# Shards read at once (interleave cycle); evaluation and its ground-truth pass use the same
# value, so both see the records in the same order.
CYCLE_LENGTH = 4
# Records read from a shard, and parsed, together (read_blocks, ExampleDecoder.stream): the
# parse's ~300 graph ops cost about as much per block whatever its size, so a larger block
# costs fewer microseconds per record (measured on 36 KB PNG records: 16 -> ~55, 64 -> ~35 us
# per record); still a quick first element.
READ_BLOCK = 64
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_HASHED_IDS = 2**62


# ------------------------------------------------------------------------ label_map.pbtxt

def parse_label_map_pbtxt(text: str, source: str = LABEL_MAP_PBTXT) -> LabelMap:
    """The ``item { id: N name: '...' }`` entries of a label-map text proto as a LabelMap
    (ids ascending -> ``1..K``). ``display_name`` is the name when ``name`` is absent; other
    fields are ignored; ``#`` comments are allowed.

    Raises:
        ValueError: no item, an item without an integer ``id`` or a name, an id below 1 (0 is
            the background), or a repeated id or name (the message names ``source``).
    """
    text = re.sub(r"#[^\n]*", "", text)
    items = re.findall(r"\bitem\s*:?\s*\{([^{}]*)\}", text)
    if not items:
        raise ValueError(f"{source}: no 'item {{ id: N name: \"...\" }}' entry found.")
    entries = []
    for body in items:
        fields = dict(re.findall(r"(\w+)\s*:\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s]+)",
                                 body))
        try:
            item_id = int(fields["id"])
        except (KeyError, ValueError):
            raise ValueError(f"{source}: item {{{body.strip()}}} has no integer id.") from None
        name = fields.get("name", fields.get("display_name"))
        if name is None:
            raise ValueError(f"{source}: item with id {item_id} has no name.")
        if name[:1] in "'\"":
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
        if item_id < 1:
            raise ValueError(f"{source}: id {item_id} ({name}) is not a class id; ids start at 1 "
                             "(0 is the background).")
        entries.append((item_id, name))
    entries.sort()
    try:
        return LabelMap([i for i, _ in entries], [n for _, n in entries])
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def label_map_to_pbtxt(label_map: LabelMap) -> str:
    """The label-map text proto of ``label_map`` (dataset ids and names)."""
    lines = []
    for dataset_id, name in zip(label_map.dataset_ids, label_map.names, strict=True):
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        lines.append(f"item {{\n  id: {dataset_id}\n  name: '{quoted}'\n}}\n")
    return "".join(lines)


def read_label_map_pbtxt(path: str) -> LabelMap:
    """:func:`parse_label_map_pbtxt` of a file (any ``tf.io.gfile`` path)."""
    if not tf.io.gfile.exists(path):
        raise ValueError(f"label map {path} does not exist.")
    with tf.io.gfile.GFile(path, "r") as f:
        return parse_label_map_pbtxt(f.read(), source=path)


# ---------------------------------------------------------------------------------- shards

def list_shards(patterns: str | Sequence[str]) -> list[str]:
    """The files matching ``patterns`` (comma-separated globs, any ``tf.io.gfile`` filesystem),
    sorted.

    Raises:
        ValueError: a pattern matches nothing (named).
    """
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    files: set[str] = set()
    for pattern in patterns:
        found = tf.io.gfile.glob(pattern)
        if not found:
            raise ValueError(f"no file matches {pattern}.")
        files.update(found)
    return sorted(files)


def _first_records(files: Sequence[str], count: int) -> list[tf.train.Example]:
    examples = []
    for path in files:
        try:
            for serialized in tf.data.TFRecordDataset(path).take(count - len(examples)):
                examples.append(tf.train.Example.FromString(serialized.numpy()))
        except (tf.errors.OpError, ValueError):
            continue
        if len(examples) >= count:
            break
    return examples


Peek = list[tuple[str, list[tf.train.Example]]]


def peek_records(files: Sequence[str], peek: int = 20) -> Peek:
    """``[(shard, its first records)]``: the first ``peek`` records of each of the first
    :data:`CYCLE_LENGTH` shards (those the stream starts with), and of the shards after them
    until ``peek`` records in all (small shards), read once in Python for the start-up checks
    (:func:`detect_mask_format`, :meth:`ExampleDecoder.check_types`)."""
    peeked: Peek = []
    total = 0
    for i, path in enumerate(files):
        if i >= CYCLE_LENGTH and total >= peek:
            break
        examples = _first_records([path], peek)
        peeked.append((path, examples))
        total += len(examples)
    return peeked


def detect_mask_format(peeked: Peek) -> str | None:
    """``"png"`` or ``"float"``: how the first records holding ``image/object/mask`` store it
    (the feature's type cannot change per record in the graph); None when none of the first
    records (``peeked``, from :func:`peek_records`) has masks."""
    for _, examples in peeked:
        for example in examples:
            feature = example.features.feature.get(MASK)
            if feature is None:
                continue
            if len(feature.bytes_list.value):
                return "png"
            if len(feature.float_list.value):
                return "float"
    return None


def scan_label_map(files: Sequence[str]) -> LabelMap:
    """A label map from the class labels (and texts, as names) of every record: a full pass
    over the data, for records that come without a ``label_map.pbtxt``."""
    spec = {LABEL: tf.io.VarLenFeature(tf.int64), TEXT: tf.io.VarLenFeature(tf.string),
            IS_CROWD: tf.io.VarLenFeature(tf.int64)}
    names: dict[int, str] = {}
    ds = tf.data.TFRecordDataset(list(files)).ignore_errors().batch(256)
    for batch in ds.map(graph_fn(lambda s: tf.io.parse_example(s, spec))):
        rows = zip(*(tf.RaggedTensor.from_sparse(batch[k]).to_list()
                     for k in (LABEL, TEXT, IS_CROWD)), strict=True)
        for labels, texts, crowd in rows:
            texts = texts if len(texts) == len(labels) else [b""] * len(labels)
            crowd = crowd if len(crowd) == len(labels) else [0] * len(labels)
            for label, text, is_crowd in zip(labels, texts, crowd, strict=True):
                if label > 0 and not is_crowd and int(label) not in names:
                    names[int(label)] = text.decode("utf-8", "replace") or str(int(label))
    if not names:
        raise ValueError("no class label in any record.")
    ids = sorted(names)
    seen: dict[str, int] = {}
    unique = []
    for i in ids:  # names must be unique: repeat ones get their id
        name = names[i] if names[i] not in seen else f"{names[i]} ({i})"
        seen[name] = i
        unique.append(name)
    return LabelMap(ids, unique)


# Where resolve_label_map says a label map came from when it read the records' class ids.
SCANNED_LABEL_MAP = "the records' class ids"


def resolve_label_map(label_map_path: str, files: Sequence[str]) -> tuple[LabelMap, str]:
    """The label map of TFRecord data: ``label_map_path`` when given, else a
    ``label_map.pbtxt`` beside the first shard (create_tfrecords writes one there), else the
    class ids found in the records. Returns ``(label_map, where it came from)``."""
    if label_map_path:
        return read_label_map_pbtxt(label_map_path), label_map_path
    beside = os.path.join(os.path.dirname(files[0]), LABEL_MAP_PBTXT)
    if tf.io.gfile.exists(beside):
        return read_label_map_pbtxt(beside), beside
    logging.warning("No label map given (--config.data.label_map) or found beside the shards "
                    "(%s): reading every record once for its class ids.", beside)
    return scan_label_map(files), SCANNED_LABEL_MAP


# ------------------------------------------------------------------------------- problems

class ProblemCounter:
    """Per-reason counts of :data:`PROBLEMS`, kept in a variable that the tf.data graph adds
    to; the first :data:`PRINT_LIMIT` records of each named reason are printed (stderr) with
    their shard and record number. :meth:`counts` reads the totals (each read of a record
    counts again: a training run that repeats the data counts per epoch)."""

    def __init__(self) -> None:
        with tf.init_scope():
            self.variable = tf.Variable(tf.zeros([len(PROBLEMS)], tf.int64), trainable=False,
                                        name="tfrecord_problems")

    def add(self, problems: tf.Tensor, shard: tf.Tensor, index: tf.Tensor) -> tf.Operation:
        """Graph op: count ``problems [B, len(PROBLEMS)]`` of the records ``shard [B]``,
        ``index [B]`` and print the first records of each named reason, one line per record.
        Nothing to count, the usual case, costs one comparison."""
        total = tf.reduce_sum(problems, axis=0)

        def count() -> tf.Operation:
            new = self.variable.assign_add(total)
            # What was counted before each record (records of a batch in order).
            before = new - total + tf.cumsum(problems, axis=0, exclusive=True)
            named = tf.range(len(PROBLEMS)) < NUM_NAMED
            show = (problems > 0) & (before < PRINT_LIMIT) & named[None]

            def message() -> tf.Operation:
                texts = tf.strings.join([tf.strings.as_string(problems), " ", tf.broadcast_to(
                    PROBLEM_LABELS, tf.shape(problems))])
                reasons = tf.strings.reduce_join(tf.ragged.boolean_mask(texts, show), axis=1,
                                                 separator="; ")
                lines = tf.strings.join([shard, " record ", tf.strings.as_string(index), ": ",
                                         reasons])
                shown = tf.boolean_mask(lines, tf.reduce_any(show, axis=1))
                return tf.print("TFRecord problem:", tf.strings.reduce_join(
                    shown, separator="\nTFRecord problem: "), output_stream=sys.stderr)

            return tf.cond(tf.reduce_any(show), message, tf.no_op)

        return tf.cond(tf.reduce_any(total != 0), count, tf.no_op)

    def counts(self) -> dict[str, int]:
        """``{"<reason> (<action>)": count}`` of every reason met so far."""
        values = self.variable.numpy()
        return {(f"{r} ({a})" if a else r): int(v)
                for (r, a), v in zip(PROBLEMS, values, strict=True) if v}


# ------------------------------------------------------------------------ graph reading

def read_blocks(files: Sequence[str], sizes: Sequence[int], *, shuffle: bool = False,
                repeat: bool = False, seed: int = 0, deterministic: bool = True
                ) -> tf.data.Dataset:
    """Blocks of up to :data:`READ_BLOCK` consecutive records of one shard,
    ``(shard [n], index [n], serialized [n], is_end [n], truncated [n])``, :data:`CYCLE_LENGTH`
    shards interleaved block by block, plus one end block of one row per shard (``is_end``;
    ``index`` = records read) that says whether the shard ended before its size
    (``truncated``: the records used fewer than ``sizes`` bytes). Blocks, not records, pass
    the interleave and :meth:`ExampleDecoder.stream`'s parse: each dataset stage costs a few
    microseconds per element, as much as parsing a record."""
    paths = tf.constant(list(files))
    files_ds = tf.data.Dataset.from_tensor_slices((paths, tf.constant(list(sizes), tf.int64)))
    if shuffle:
        files_ds = files_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        files_ds = files_ds.repeat()

    def one_shard(path: tf.Tensor, size: tf.Tensor) -> tf.data.Dataset:
        # A damaged record raises DataLossError, after which the shard's reader stops:
        # ignore_errors ends the shard there and the end block reports it.
        blocks = tf.data.TFRecordDataset(path).ignore_errors().batch(READ_BLOCK)
        end = tf.data.Dataset.from_tensors(tf.zeros([0], tf.string))  # the empty last block

        def step(state, serialized):
            consumed, count = state
            n = tf.shape(serialized, out_type=tf.int64)[0]
            is_end = tf.equal(n, 0)
            length = tf.reduce_sum(tf.cast(tf.strings.length(serialized), tf.int64) + 16)
            truncated = tf.logical_and(is_end, consumed < size)  # + 16: framing per record
            rows = tf.maximum(n, 1)  # the end block yields one row
            serialized = tf.cond(is_end, lambda: tf.constant([b""]), lambda: serialized)
            new_state = (consumed + length, count + n)
            return new_state, (tf.fill([rows], path), count + tf.range(rows, dtype=tf.int64),
                               serialized, tf.fill([rows], is_end), tf.fill([rows], truncated))

        zero = tf.constant(0, tf.int64)
        return blocks.concatenate(end).scan((zero, zero), graph_fn(step))

    return files_ds.interleave(graph_fn(one_shard),
                               cycle_length=max(1, min(len(files), CYCLE_LENGTH)),
                               num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def read_shards(files: Sequence[str], sizes: Sequence[int], **options: Any) -> tf.data.Dataset:
    """:func:`read_blocks` one record at a time: ``(shard, index, serialized, is_end,
    truncated)``."""
    return read_blocks(files, sizes, **options).unbatch()


def _png_sizes(masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(is_png [N], height [N], width [N])`` from the PNG headers (IHDR) of ``masks [N]``."""
    padded = tf.strings.join([masks, tf.constant(b"\0" * 24)])
    is_png = tf.strings.substr(padded, 0, 8) == _PNG_MAGIC

    def big_endian(offset: int) -> tf.Tensor:
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, offset, 4), tf.uint8), tf.int64)
        raw = tf.reshape(raw, [-1, 4])
        return raw[:, 0] * 2**24 + raw[:, 1] * 2**16 + raw[:, 2] * 2**8 + raw[:, 3]

    return is_png, big_endian(20), big_endian(16)


def _keep_largest(boxes: tf.Tensor, keep: tf.Tensor, limit: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``(keep, dropped)``: ``keep [B, m]`` reduced to each row's ``limit`` largest ``boxes
    [B, m, 4]`` by area (equal areas: the first ones), and how many were dropped ``[B]``
    int64, as the file pipeline keeps them. Within one image the order of the areas of
    normalised boxes is that of pixel boxes."""
    count = tf.reduce_sum(tf.cast(keep, tf.int64), axis=1)

    def largest() -> tf.Tensor:
        areas = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
        ranked = tf.where(keep, areas, -np.inf)
        top = tf.math.top_k(ranked, k=tf.minimum(limit, tf.shape(keep)[1]), sorted=True).indices
        chosen = tf.reduce_any(tf.equal(top[:, :, None], tf.range(tf.shape(keep)[1])[None, None]),
                               axis=1)
        return keep & chosen

    # Most batches are within the limit: then nothing is ranked.
    kept = tf.cond(tf.reduce_any(count > limit), largest, lambda: keep)
    return kept, tf.maximum(count - limit, 0)


def _kept_first(keep: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(order [B, m], count [B])``: per row, the indices of the kept objects in their order,
    then the others; and how many are kept."""
    order = tf.argsort(tf.cast(~keep, tf.int32), axis=1, stable=True)
    return order, tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)


def filled_box_masks(boxes: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """``[M, H, W]`` uint8 masks filling ``boxes [M, 4]`` (pixels, rounded like
    :func:`tf_rcnn.data.masks.decode_segmentation` does for a missing mask)."""
    r = tf.cast(tf.round(boxes), tf.int32)
    ys = tf.range(height)[None, :, None]
    xs = tf.range(width)[None, None, :]
    inside = ((ys >= r[:, 0, None, None]) & (ys < r[:, 2, None, None])
              & (xs >= r[:, 1, None, None]) & (xs < r[:, 3, None, None]))
    return tf.cast(inside, tf.uint8)


def crop_masks_to_boxes(masks: tf.Tensor, boxes: tf.Tensor, size: int) -> tf.Tensor:
    """Graph version of :func:`tf_rcnn.data.masks.crop_masks_to_boxes` (the same cells: the
    mask pixel under each cell centre of an ``S x S`` grid over the box).

    Args:
        masks: ``[M, H, W]`` uint8 full-image masks.
        boxes: ``[M, 4]`` float32 ``[y1, x1, y2, x2]`` pixels.
        size: S.

    Returns:
        ``[M, S, S]`` uint8 in {0, 1}.
    """
    b = tf.cast(boxes, tf.float64)
    shape = tf.shape(masks)
    frac = (tf.range(size, dtype=tf.float64) + 0.5) / size
    ys = b[:, 0:1] + frac[None] * (b[:, 2:3] - b[:, 0:1])
    xs = b[:, 1:2] + frac[None] * (b[:, 3:4] - b[:, 1:2])
    yi = tf.clip_by_value(tf.cast(tf.floor(ys), tf.int32), 0, shape[1] - 1)
    xi = tf.clip_by_value(tf.cast(tf.floor(xs), tf.int32), 0, shape[2] - 1)
    rows = tf.gather(masks, yi, axis=1, batch_dims=1)  # [M, S, W]
    cells = tf.gather(rows, xi, axis=2, batch_dims=1)  # [M, S, S]
    return tf.cast(cells > 0, tf.uint8)


class ExampleDecoder:
    """Parses, decodes and checks OD API records in the graph, in two steps:

    :meth:`parse` takes a batch of serialized records and does everything that does not need
    the decoded image, vectorised over the batch: one ``parse_example``, the image-bytes check
    (``pipeline.image_bytes_ok``), the per-object checks, class ids, image ids, the training
    filters when asked for, the kept objects moved to the front of each row in their order, and
    each record's problem vector: every check but the image data itself (the image size is read
    from the image's header, ``pipeline.encoded_image_sizes``, and checked against the record's
    size and masks). :meth:`finish` takes one parsed record and decodes its image (and masks);
    the rest is slicing. :meth:`stream` parses each block of :func:`read_blocks`;
    calling the decoder on one :func:`read_shards` record does the same for that record
    alone. The result is the same either way; batching only spends fewer graph ops per
    record.

    Args:
        label_map: dataset class ids -> ``1..K`` (labels not in it are skipped; crowd
            regions excepted: they are class-less ignore regions).
        mask_format: ``"png"``, ``"float"`` or None (masks not read).
        exclude_difficult, skip_empty, max_instances, max_crowd: the training filters
            (:class:`~tf_rcnn.data.pipeline.InputPipeline`'s options of those names: difficult
            objects left out, a record without a kept object unusable, the ``max_instances``
            / ``max_crowd`` largest objects / crowd regions kept in their order), each counted
            in :data:`PROBLEMS`. Off by default: the ground-truth pass reads everything.
    """

    def __init__(self, label_map: LabelMap, mask_format: str | None = None, *,
                 exclude_difficult: bool = False, skip_empty: bool = False,
                 max_instances: int | None = None, max_crowd: int | None = None) -> None:
        if mask_format not in (None, "png", "float"):
            raise ValueError(f"mask_format must be 'png', 'float' or None, got {mask_format!r}.")
        for name, limit in (("max_instances", max_instances), ("max_crowd", max_crowd)):
            if limit is not None and limit < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {limit}.")
        self.label_map = label_map
        self.mask_format = mask_format
        self.exclude_difficult = bool(exclude_difficult)
        self.skip_empty = bool(skip_empty)
        self.max_instances = max_instances
        self.max_crowd = max_crowd
        self._ids = tf.constant(label_map.dataset_ids, tf.int64)
        self.spec: dict[str, Any] = {
            ENCODED: tf.io.FixedLenFeature([], tf.string, default_value=""),
            HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
            WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
            FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
            SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        }
        for key in (XMIN, YMIN, XMAX, YMAX, AREA):
            self.spec[key] = tf.io.RaggedFeature(tf.float32)
        for key in (LABEL, IS_CROWD, DIFFICULT):
            self.spec[key] = tf.io.RaggedFeature(tf.int64)
        self.spec[TEXT] = tf.io.RaggedFeature(tf.string)
        if mask_format is not None:
            self.spec[MASK] = tf.io.RaggedFeature(tf.string if mask_format == "png"
                                                  else tf.float32)

    def check_types(self, peeked: Peek) -> None:
        """Raises ValueError naming the key and shard when one of the first records of the
        first shards (``peeked``, from :func:`peek_records`) stores a key with another type
        than the format's: the graph parses records in batches, and a batch it cannot parse
        would be lost as a whole (and logged)."""
        kinds = {tf.string: "bytes_list", tf.int64: "int64_list", tf.float32: "float_list"}
        for path, examples in peeked:
            for example in examples:
                for key, spec in self.spec.items():
                    feature = example.features.feature.get(key)
                    kind = None if feature is None else feature.WhichOneof("kind")
                    if kind in (None, kinds[spec.dtype]):
                        continue
                    raise ValueError(
                        f"{path}: {key} is stored as {kind}; the OD API format stores it as "
                        f"{kinds[spec.dtype]}. Rewrite the records (python -m "
                        "tf_rcnn.tools.create_tfrecords writes this format).")

    def parse(self, shard: tf.Tensor, index: tf.Tensor, serialized: tf.Tensor,
              is_end: tf.Tensor, truncated: tf.Tensor) -> dict[str, tf.Tensor]:
        """A batch of records ``[B]`` -> their image-independent fields, ``[B, ...]`` with the
        per-object ones padded to the batch's largest object count ``m``: ``boxes [B, m, 4]``
        (normalised, clipped), ``classes``, ``difficult`` and ``kept_index`` (the record's
        object numbers) with each row's ``num_kept`` kept objects first, in their order;
        ``crowd [B, m, 4]`` with ``num_crowd`` kept crowd regions first; ``decodable`` (the
        bytes look whole, the lists agree, the image header's size is the record's and the
        masks fit it); ``usable`` (decodable and not left out by a filter); ``problems [B,
        len(PROBLEMS)]``."""
        f = tf.io.parse_example(serialized, self.spec)
        ragged = [k for k, v in f.items() if isinstance(v, tf.RaggedTensor)]
        splits = tf.stack([tf.cast(f[k].row_splits, tf.int64) for k in ragged])
        lengths = splits[:, 1:] - splits[:, :-1]  # [keys, B]
        rows = {k: lengths[i] for i, k in enumerate(ragged)}
        n = rows[XMIN]
        required = [rows[k] == n for k in (YMIN, XMAX, YMAX, LABEL)]
        optional = [(rows[k] == n) | (rows[k] == 0) for k in (IS_CROWD, DIFFICULT, AREA, TEXT)]
        if self.mask_format == "png":
            optional.append((rows[MASK] == n) | (rows[MASK] == 0))
        lengths_ok = tf.reduce_all(tf.stack(required + optional, 1), axis=1)
        bytes_ok = image_bytes_ok(f[ENCODED]) & ~is_end
        m = tf.where(lengths_ok, n, 0)
        # At least one column: tf.data's unbatch crashes the process (TF 2.21) on a component
        # with rows but no elements, as a batch of records without objects would give.
        batch = tf.size(n, out_type=tf.int64)
        shape = tf.stack([batch, tf.maximum(tf.reduce_max(m), 1)])
        valid = tf.range(shape[1])[None, :] < m[:, None]

        def padded(key: str, default: Any = None) -> tf.Tensor:
            # [B, max m]: a list cut at m, zeros (``default``) past its end or when absent.
            return f[key].to_tensor(default_value=default, shape=shape)

        # The image size from the image's own header (what decoding will give): the record's
        # size and masks are checked here, so the per-record decoding has nothing to check.
        # Where the header cannot be read (-1), decoding fails or gives the size; the boxes
        # are normalised, so they follow the decoded image either way.
        height, width = encoded_image_sizes(f[ENCODED])
        known = bytes_ok & lengths_ok & (height > 0)
        header = tf.stack([f[HEIGHT], f[WIDTH]], 1)
        size_differs = known & tf.reduce_any(
            (header > 0) & (header != tf.stack([height, width], 1)), axis=1)
        bad_masks = tf.zeros_like(size_differs)
        masks = None
        if self.mask_format == "png":
            masks = padded(MASK, "")
            is_png, mask_h, mask_w = (tf.reshape(v, tf.shape(masks))
                                      for v in _png_sizes(tf.reshape(masks, [-1])))
            fits = is_png & (mask_h == height[:, None]) & (mask_w == width[:, None])
            bad_masks = tf.reduce_any(valid & ~fits, axis=1)
        elif self.mask_format == "float":
            longest = tf.maximum(tf.reduce_max(rows[MASK]), 1)
            masks = f[MASK].to_tensor(shape=tf.stack([batch, longest]))
            bad_masks = rows[MASK] != m * height * width
        if masks is not None:
            bad_masks = known & ~size_differs & (rows[MASK] > 0) & bad_masks
        decodable = bytes_ok & lengths_ok & ~size_differs & ~bad_masks

        normalised = tf.stack([padded(k) for k in (YMIN, XMIN, YMAX, XMAX)], 2)
        finite = tf.reduce_all(tf.math.is_finite(normalised), axis=2)
        safe = tf.where(finite[..., None], normalised, 0.0)
        degenerate = (safe[..., 2] <= safe[..., 0]) | (safe[..., 3] <= safe[..., 1])
        outside = ((safe[..., 2] <= 0) | (safe[..., 0] >= 1) | (safe[..., 3] <= 0)
                   | (safe[..., 1] >= 1))
        clipped = tf.clip_by_value(safe, 0.0, 1.0)
        changed = tf.reduce_any(tf.abs(clipped - safe) > 1e-6, axis=2)
        good_box = finite & ~degenerate & ~outside
        crowd = padded(IS_CROWD) > 0
        match = tf.equal(padded(LABEL)[..., None], self._ids)
        known = tf.reduce_any(match, axis=2)
        keep = good_box & ~crowd & known & valid
        keep_crowd = good_box & crowd & valid
        difficult = padded(DIFFICULT) > 0
        no_mask = tf.zeros_like(keep)
        if self.mask_format is not None:
            no_mask = keep & ((rows[MASK] == 0) & (m > 0))[:, None]
        object_problems = [~finite & valid, finite & degenerate & valid,
                           finite & ~degenerate & outside & valid, good_box & changed & valid,
                           good_box & ~crowd & ~known & valid, no_mask]

        # The training filters, in the file pipeline's order.
        zero = tf.zeros_like(m)
        left_out, empty, beyond, crowd_beyond = zero, tf.zeros_like(lengths_ok), zero, zero
        if self.exclude_difficult:
            left_out = self._count(keep & difficult)
            keep &= ~difficult
        if self.skip_empty:
            empty = ~tf.reduce_any(keep, axis=1)
        if self.max_instances is not None:
            keep, beyond = _keep_largest(clipped, keep, self.max_instances)
        if self.max_crowd is not None:
            keep_crowd, crowd_beyond = _keep_largest(clipped, keep_crowd, self.max_crowd)

        # Record-level problems, then object-level and filter counts of decodable records.
        record_level = tf.stack([~bytes_ok & ~is_end, ~lengths_ok, size_differs,
                                 bad_masks, truncated], 1)
        objects = self._count(tf.stack(object_problems, 1)) * tf.cast(decodable, tf.int64)[:, None]
        filtered = tf.stack([left_out, tf.cast(empty, tf.int64), beyond, crowd_beyond], 1)
        problems = tf.concat([tf.cast(record_level, tf.int64), objects,
                              filtered * tf.cast(decodable, tf.int64)[:, None]], 1)
        order, num_kept = _kept_first(keep)
        crowd_order, num_crowd = _kept_first(keep_crowd)
        classes = tf.cast(tf.argmax(tf.cast(match, tf.int32), axis=2), tf.int32) + 1
        out = {
            "encoded": f[ENCODED],
            "filename": f[FILENAME], "image_id": _image_ids(f[SOURCE_ID], f[FILENAME], shard,
                                                              index),
            "shard": shard, "index": index,
            "decodable": decodable, "usable": decodable & ~empty, "problems": problems,
            "height": height, "width": width,
            "num_objects": m, "num_kept": num_kept, "kept_index": order,
            "boxes": tf.gather(clipped, order, batch_dims=1),
            "classes": tf.gather(classes, order, batch_dims=1),
            "difficult": tf.gather(difficult, order, batch_dims=1),
            "num_crowd": num_crowd, "crowd": tf.gather(clipped, crowd_order, batch_dims=1),
        }
        if masks is not None:
            # PNG: one string per object (cut at m); float: the record's whole flat list.
            out["masks"] = masks
            out["mask_count"] = rows[MASK]
        return out

    @staticmethod
    def _count(mask: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.cast(mask, tf.int64), axis=-1)

    # A parsed record passes tf.data's per-record stages (unbatch, shuffle, the map's
    # arguments) packed into four tensors (five with masks) instead of one per field: each
    # stage costs a microsecond or two per tensor per record. The record-level integers in one
    # int64 row (then the problem vector), the per-object values in one float32 row each
    # (class ids, flags and object numbers are small integers, exact in float32).
    _INT_FIELDS = ("image_id", "index", "num_objects", "num_kept", "num_crowd", "mask_count",
                   "decodable", "usable", "height", "width")
    _OBJECT_COLUMNS = (("boxes", 4), ("crowd", 4), ("classes", 1), ("difficult", 1),
                       ("kept_index", 1))

    def pack(self, p: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """:meth:`parse`'s batch -> the same records packed (``encoded [B]``, ``names [B, 2]``
        filename and shard, ``ints [B, F + len(PROBLEMS)]``, ``objects [B, m, 11]``, and the
        ``masks`` as parsed); :meth:`unpack` undoes it for one row."""
        mask_count = p.get("mask_count", tf.zeros_like(p["num_objects"]))
        scalars = [p["image_id"], p["index"], p["num_objects"], p["num_kept"], p["num_crowd"],
                   mask_count, p["decodable"], p["usable"], p["height"], p["width"]]
        ints = tf.concat([tf.stack([tf.cast(v, tf.int64) for v in scalars], 1),
                          p["problems"]], 1)
        objects = tf.concat([tf.cast(p[k] if width > 1 else p[k][..., None], tf.float32)
                             for k, width in self._OBJECT_COLUMNS], 2)
        out = {"encoded": p["encoded"], "names": tf.stack([p["filename"], p["shard"]], 1),
               "ints": ints, "objects": objects}
        if self.mask_format is not None:
            out["masks"] = p["masks"]
        return out

    def unpack(self, row: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """One row of :meth:`pack` -> the fields of a :meth:`parse` row."""
        n = len(self._INT_FIELDS)
        scalars = dict(zip(self._INT_FIELDS, tf.unstack(row["ints"][:n]), strict=True))
        widths = [width for _, width in self._OBJECT_COLUMNS]
        columns = dict(zip([k for k, _ in self._OBJECT_COLUMNS],
                           tf.split(row["objects"], widths, axis=1), strict=True))
        names = tf.unstack(row["names"])
        p = {
            "encoded": row["encoded"], "filename": names[0], "shard": names[1],
            "image_id": scalars["image_id"], "index": scalars["index"],
            "num_objects": scalars["num_objects"],
            "num_kept": tf.cast(scalars["num_kept"], tf.int32),
            "num_crowd": tf.cast(scalars["num_crowd"], tf.int32),
            "decodable": tf.cast(scalars["decodable"], tf.bool),
            "usable": tf.cast(scalars["usable"], tf.bool),
            "problems": row["ints"][n:],
            "boxes": columns["boxes"], "crowd": columns["crowd"],
            "classes": tf.cast(columns["classes"][:, 0], tf.int32),
            "difficult": columns["difficult"][:, 0] > 0,
            "kept_index": tf.cast(columns["kept_index"][:, 0], tf.int32),
        }
        if self.mask_format is not None:
            p["masks"] = row["masks"]
            p["mask_count"] = scalars["mask_count"]
        return p

    def finish(self, row: Mapping[str, tf.Tensor],
               decodable_only: bool = False) -> dict[str, tf.Tensor]:
        """One parsed record (a row of :meth:`stream`, packed) -> ``image [H, W, 3]`` uint8,
        ``image_id`` int64, ``hw [2]`` int32, ``boxes [M, 4]`` float32 pixels (checked,
        clipped), ``classes [M]`` int32 (1..K), ``difficult [M]`` bool, ``crowd [Mc, 4]``,
        ``masks [M, H, W]`` uint8 (with a mask format), ``filename``, ``shard``, ``index``,
        ``problems [len(PROBLEMS)]`` int64 and ``ok`` (the record can be used): :meth:`parse`'s,
        which checked everything but the pixels, so that decoding an image is the only work
        here. ``decodable_only``: the caller passes only ``decodable`` rows (:meth:`stream` with
        a counter), so the image is decoded without a branch (a branch is a function call per
        record)."""
        p = self.unpack(row)
        decodable = p["decodable"]
        if decodable_only:
            image = decode_image(p["encoded"])
        else:
            image = tf.cond(decodable, lambda: decode_image(p["encoded"]),
                            lambda: tf.zeros([1, 1, 3], tf.uint8))
        shape = tf.shape(image)
        h, w = shape[0], shape[1]
        scale = tf.cast(tf.stack([h, w, h, w]), tf.float32)
        kept = p["num_kept"]
        boxes = p["boxes"][:kept] * scale

        out: dict[str, tf.Tensor] = {}
        if self.mask_format is not None:
            values = p["masks"][:p["mask_count"]]
            out["masks"] = self._masks(values, p["num_objects"], p["kept_index"][:kept], h, w,
                                       boxes, decodable)
        out.update({
            "image": image,
            "image_id": p["image_id"],
            "hw": tf.stack([h, w]),
            "boxes": boxes,
            "classes": p["classes"][:kept],
            "difficult": p["difficult"][:kept],
            "crowd": p["crowd"][:p["num_crowd"]] * scale,
            "filename": p["filename"],
            "shard": p["shard"],
            "index": p["index"],
            "problems": p["problems"],
            "ok": p["usable"],
        })
        return out

    def stream(self, ds: tf.data.Dataset, deterministic: bool = True,
               counter: ProblemCounter | None = None) -> tf.data.Dataset:
        """:func:`read_blocks` blocks -> parsed records (rows of :meth:`parse`, packed), in
        order; :meth:`finish` each of them. With a ``counter``, each block's problems are
        counted into it there and only the ``usable`` rows go on (the rest need no decoding).
        """

        def parse(*batch: tf.Tensor) -> dict[str, tf.Tensor]:
            p = self.parse(*batch)
            packed = self.pack(p)
            if counter is None:
                return packed
            with tf.control_dependencies([counter.add(p["problems"], p["shard"], p["index"])]):
                all_usable = tf.reduce_all(p["usable"])

            def usable_rows() -> dict[str, tf.Tensor]:
                rows = tf.where(p["usable"])[:, 0]
                return {k: tf.gather(v, rows) for k, v in packed.items()}

            # Most batches are all usable: then nothing is copied (gather copies strings).
            return tf.cond(all_usable, lambda: dict(packed), usable_rows)

        return ds.map(graph_fn(parse), num_parallel_calls=AUTOTUNE,
                      deterministic=deterministic).unbatch()

    def __call__(self, shard: tf.Tensor, index: tf.Tensor, serialized: tf.Tensor,
                 is_end: tf.Tensor, truncated: tf.Tensor) -> dict[str, tf.Tensor]:
        """One record: :meth:`finish` of :meth:`parse` of a batch of one."""
        batch = self.pack(self.parse(*(tf.expand_dims(x, 0) for x in (
            shard, index, serialized, is_end, truncated))))
        return self.finish({k: v[0] for k, v in batch.items()})

    def _masks(self, values: tf.Tensor, m: tf.Tensor, kept: tf.Tensor, h: tf.Tensor,
               w: tf.Tensor, boxes: tf.Tensor, decodable: tf.Tensor) -> tf.Tensor:
        """``masks [M, H, W]`` uint8: the decoded masks of the ``kept [M]`` objects (of the
        record's ``m``; the kept ``boxes`` filled when the record has none). :meth:`parse`
        checked that the masks of a ``decodable`` record fit its image."""
        if self.mask_format == "png":
            def decode() -> tf.Tensor:
                return tf.map_fn(lambda s: tf.io.decode_png(s, channels=1)[:, :, 0],
                                 tf.gather(values, kept),
                                 fn_output_signature=tf.TensorSpec([None, None], tf.uint8))
        else:
            def decode() -> tf.Tensor:
                return tf.gather(tf.reshape(values, tf.stack([tf.cast(m, tf.int32), h, w])),
                                 kept)
        return tf.cond(decodable & (tf.size(values) > 0),
                       lambda: tf.cast(decode() > 0, tf.uint8),
                       lambda: filled_box_masks(boxes, h, w))


def _image_ids(source_id: tf.Tensor, filename: tf.Tensor, shard: tf.Tensor,
               index: tf.Tensor) -> tf.Tensor:
    """int64 image ids ``[B]`` (module docstring): the source id if it is an integer, else a
    hash."""
    fallback = tf.strings.join([tf.strings.regex_replace(shard, ".*/", ""), "#",
                                tf.strings.as_string(index)])
    key = tf.where(source_id != "", source_id, tf.where(filename != "", filename, fallback))
    numeric = tf.strings.regex_full_match(key, "[0-9]{1,18}")
    number = tf.strings.to_number(tf.where(numeric, key, "0"), tf.int64)
    hashed = tf.strings.to_hash_bucket_fast(key, _HASHED_IDS) + _HASHED_IDS
    return tf.where(numeric, number, hashed)


# ------------------------------------------------------------------------------ pipeline

@dataclasses.dataclass
class TFRecordFiles:
    """A TFRecord split for training: its shards, not read in Python (the pipeline streams
    them). ``flag`` is the setting that named them, for messages; ``peeked`` the first records
    :func:`peek_records` read at start-up, for the pipeline's own checks (read once)."""

    files: list[str]
    flag: str = ""
    peeked: Peek | None = None


def _shard_sizes(files: Sequence[str]) -> list[int]:
    return [int(tf.io.gfile.stat(path).length) for path in files]


class TFRecordPipeline(InputPipeline):
    """:class:`~tf_rcnn.data.pipeline.InputPipeline` reading OD API TFRecords as a stream.

    Everything after reading is the file pipeline's graph (``group_runs``, ``_load_batch``
    and ``_augment``): the same aspect grouping, scale choice, flip, resize and padding.
    Reading: the shards (each input pipeline takes every n-th shard: file-level sharding per
    worker), shuffled in training and interleaved in blocks of :data:`READ_BLOCK` records,
    each block parsed at once with the training filters (difficult boxes, images without
    boxes, ``max_instances``/``max_crowd`` keeping the largest) and its problems counted in
    :attr:`counter` (:meth:`ExampleDecoder.stream`; unusable records stop there, undecoded),
    a ``shuffle_buffer`` of parsed (still encoded) records, batches formed from them by the
    image headers' sizes, then one parallel map call per batch: each record decoded by
    :meth:`ExampleDecoder.finish`, masks cropped to their boxes, ``_augment``, stacked. A
    record whose image data is damaged fails decoding and its batch, which ``ignore_errors``
    skips.

    Args:
        files: shards (a list, or comma-separated globs).
        label_map: dataset class ids -> ``1..K``.
        num_images: only the first N usable records (evaluation of ``records[:N]`` of
            :func:`read_tfrecord_records`); None: all.
        source_flag: the setting that names the files, for messages.
        peeked: :func:`peek_records` of ``files`` when the caller has read them already.
        **options: :class:`InputPipeline` options; ``shuffle_buffer`` defaults to 1024 here
            and ``proposals`` are not supported.
    """

    def __init__(self, files: str | Sequence[str], label_map: LabelMap, *,
                 num_images: int | None = None, source_flag: str = "",
                 peeked: Peek | None = None, **options: Any) -> None:
        self._files_arg = files
        self._num_images = num_images
        self._peeked = peeked
        self.source_flag = source_flag
        super().__init__([], label_map, **options)

    def _init_source(self, records: Sequence[DetectionRecord],
                     proposals: Mapping[int, Any] | str | None) -> None:
        del records
        if proposals is not None:
            raise ValueError("TFRecordPipeline reads no proposals (Fast R-CNN needs records "
                             "in memory: use COCO, VOC or CSV data).")
        self.with_proposals = False
        self.files = (list_shards(self._files_arg) if isinstance(self._files_arg, str)
                      else list(self._files_arg))
        if not self.files:
            raise ValueError("TFRecordPipeline got no files.")
        self.sizes = _shard_sizes(self.files)
        peeked = self._peeked if self._peeked is not None else peek_records(self.files)
        self._peeked = peeked
        self.mask_format = detect_mask_format(peeked) if self.with_masks else None
        if self.with_masks and self.mask_format is None:
            raise ConfigError(
                f"This model predicts instance masks, but the records of "
                f"{self.source_flag or self.files[0]} have none (no {MASK} in the first records "
                f"of {self.files[0]}). Write the records with masks (python -m "
                "tf_rcnn.tools.create_tfrecords keeps them), or use a recipe without masks.")
        self.decoder = ExampleDecoder(
            self.label_map, self.mask_format,
            exclude_difficult=self.training and self.exclude_difficult,
            skip_empty=self.skip_empty, max_instances=self.max_instances,
            max_crowd=self.max_crowd)
        self.decoder.check_types(peeked)
        self.counter = ProblemCounter()
        if self.shuffle_buffer is None:
            self.shuffle_buffer = 1024

    @property
    def num_images(self) -> int | None:
        """Images per epoch when known (``num_images``), else None (a stream)."""
        return self._num_images

    def _static_image_size(self) -> tuple[int, int] | None:
        return self.fixed_image_size

    def worker_files(self, input_context: tf.distribute.InputContext | None) -> list[str]:
        """The shards input pipeline ``input_context.input_pipeline_id`` reads: every n-th,
        starting at its id (all of them without a context or with one pipeline).

        Raises:
            ConfigError: fewer shards than input pipelines (workers).
        """
        if input_context is None or input_context.num_input_pipelines <= 1:
            return list(self.files)
        n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(self.files) < n:
            where = f" ({self.source_flag})" if self.source_flag else ""
            raise ConfigError(
                f"{len(self.files)} TFRecord shard(s){where} cannot be split over {n} workers: "
                f"each worker reads its own shards. Write at least {n} shards (python -m "
                f"tf_rcnn.tools.create_tfrecords ... --num_shards={n} or more).")
        return self.files[i::n]

    def dataset(self, input_context: tf.distribute.InputContext | None = None
                ) -> tf.data.Dataset:
        """The batched dataset (see :meth:`InputPipeline.dataset`); with an input context,
        this pipeline reads only its own shards (:meth:`worker_files`)."""
        batch = self.batch_size
        pipeline_id = 0
        if input_context is not None:
            batch = input_context.get_per_replica_batch_size(self.batch_size)
            pipeline_id = input_context.input_pipeline_id
        files = self.worker_files(input_context)
        if input_context is not None and input_context.num_input_pipelines > 1:
            logging.info("Input pipeline %d of %d reads %d of the %d shards: %s", pipeline_id,
                         input_context.num_input_pipelines, len(files), len(self.files),
                         ", ".join(files))
        sizes = [self.sizes[self.files.index(f)] for f in files]
        # Evaluation takes the first N usable records, which must be those the ground-truth
        # pass read: the reading order is then fixed.
        ordered = self.deterministic or not self.training
        ds = read_blocks(files, sizes, shuffle=self.shuffle, repeat=self.repeat,
                         seed=self.seed + pipeline_id, deterministic=ordered)
        # Each block's problems are counted as it is parsed; records that cannot be used
        # (bad bytes or lists, training filters) stop there, before decoding.
        ds = self.decoder.stream(ds, deterministic=ordered, counter=self.counter)
        if self.shuffle:
            # The buffer holds parsed records with their images still encoded.
            ds = ds.shuffle(self.shuffle_records(sizes), seed=self.seed + pipeline_id,
                            reshuffle_each_iteration=True)
        if self._num_images is not None:
            ds = ds.take(self._num_images)
        # Grouped into batches before decoding; damage inside image data, which only
        # decoding finds, fails its batch: skipped and logged by ignore_errors.
        return self._batches(ds, batch, pipeline_id)

    def shuffle_records(self, sizes: Sequence[int]) -> int:
        """The shuffle buffer for shards of ``sizes`` bytes: ``shuffle_buffer``, or fewer when
        the shards hold fewer records, estimated from the mean size of the records read at
        start-up. The stream repeats before it shuffles, so a larger buffer would hold
        several copies of each record (the same image twice in a batch) and read the data
        that many times before the first batch."""
        lengths = [example.ByteSize() + 16 for _, examples in self._peeked or []
                   for example in examples]  # + 16: the TFRecord framing of each record
        if not lengths:
            return self.shuffle_buffer
        records = max(1, round(sum(sizes) * len(lengths) / sum(lengths)))
        if records >= self.shuffle_buffer:
            return self.shuffle_buffer
        logging.info("The shards hold about %d records: the shuffle buffer holds that many, "
                     "not data.shuffle_buffer=%d.", records, self.shuffle_buffer)
        return records

    def _landscape(self, items: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """``[n]`` packed rows -> ``[n]`` bool, the image is landscape (w >= h) by its header
        (landscape where the header could not be read)."""
        at = ExampleDecoder._INT_FIELDS.index("height")
        return items["ints"][:, at + 1] >= items["ints"][:, at]

    def _read_run(self, run: Mapping[str, tf.Tensor], batch: int) -> tuple[
            list[tuple[tf.Tensor, dict[str, tf.Tensor]]], None, None]:
        """``batch`` usable parsed rows -> each decoded (:meth:`ExampleDecoder.finish`), with
        its masks cropped to their boxes. The parse checked and counted everything but damage
        inside the image data, so nothing is checked here. Nothing here counts or asserts
        either: a map with a variable in it costs tens of microseconds per call more
        (measured)."""
        read = []
        for i in range(batch):
            e = self.decoder.finish({k: v[i] for k, v in run.items()}, decodable_only=True)
            fields = {"boxes": e["boxes"], "classes": e["classes"], "crowd": e["crowd"],
                      "image_id": e["image_id"]}
            if self.with_masks:
                fields["masks"] = crop_masks_to_boxes(e["masks"], e["boxes"],
                                                      self.mask_crop_size)
            read.append((e["image"], fields))
        return read, None, None

    def read_problems(self) -> dict[str, int]:
        """Problems counted so far, by reason (each read of a record counts)."""
        return self.counter.counts()


# ---------------------------------------------------------------- one pass for evaluation

def _report_problems(report: LoadReport, problems: np.ndarray, where: str) -> None:
    for reason in np.flatnonzero(problems[:NUM_NAMED]):
        text, action = PROBLEMS[reason]
        label = f"{text} ({action})"
        if reason in REPAIRS:
            report.repair(label, where, count=int(problems[reason]))
        else:
            report.skip(label, where, count=int(problems[reason]))


def read_tfrecord_records(
    files: str | Sequence[str],
    label_map: LabelMap,
    *,
    with_masks: bool = False,
    source: str = "",
) -> tuple[list[DetectionRecord], LoadReport]:
    """Every usable record of ``files`` as a :class:`DetectionRecord`, in the order an
    evaluation :class:`TFRecordPipeline` over the same files reads them: one pass in Python
    over the graph's :class:`ExampleDecoder` (for ground truth, not the training path).

    Records keep boxes, classes, crowd regions, difficult flags and, ``with_masks``, the masks
    as COCO RLE; ``image_path`` is the shard and ``tfrecord_index`` the record number
    (:func:`load_image` reads the image). Every problem is in the report with its shard and
    record number.

    Raises:
        ValueError: two records with the same image id (named).
    """
    files = list_shards(files) if isinstance(files, str) else list(files)
    peeked = peek_records(files)
    mask_format = detect_mask_format(peeked) if with_masks else None
    if with_masks and mask_format is None:
        logging.warning("%s: the first records have no %s: reading boxes only.", files[0], MASK)
    decoder = ExampleDecoder(label_map, mask_format)
    report = LoadReport(f"TFRecords {source or ', '.join(files[:2])}")
    decoder.check_types(peeked)
    ds = decoder.stream(read_blocks(files, _shard_sizes(files))).map(graph_fn(decoder.finish))
    ds = ds.ignore_errors(log_warning=True)
    records: list[DetectionRecord] = []
    seen: dict[int, str] = {}
    for e in ds:
        shard = e["shard"].numpy().decode()
        index = int(e["index"].numpy())
        where = f"{shard} record {index}"
        _report_problems(report, e["problems"].numpy(), where)
        if not bool(e["ok"].numpy()):
            continue
        image_id = int(e["image_id"].numpy())
        if image_id in seen:
            raise ValueError(f"{where} has the image id {image_id} of {seen[image_id]} "
                             f"(from {SOURCE_ID} or {FILENAME}); evaluation needs one id per "
                             "image.")
        seen[image_id] = where
        h, w = (int(v) for v in e["hw"].numpy())
        segmentations = None
        if mask_format is not None:
            segmentations = []
            for mask in e["masks"].numpy():
                rle = mask_utils.encode(np.asfortranarray(mask))
                segmentations.append({"size": [h, w], "counts": rle["counts"].decode("ascii")})
        filename = e["filename"].numpy().decode("utf-8", "replace")
        name = filename or f"{os.path.basename(shard)}#{index}"
        records.append(DetectionRecord(
            image_path=shard, image_id=image_id, height=h, width=w,
            boxes=e["boxes"].numpy(), classes=e["classes"].numpy(),
            crowd_boxes=e["crowd"].numpy(), difficult=e["difficult"].numpy(),
            segmentations=segmentations, source_name=name, file_name=name,
            tfrecord_index=index))
    report.finish(records)
    return records, report


def check_first_records(files: Sequence[str], label_map: LabelMap,
                        peeked: Peek | None = None) -> tuple[int, LoadReport]:
    """Decodes the records :func:`peek_records` read (``peeked``, else read here: the first
    records of the first shards) and returns how many have a box to train on, with the report
    of their problems: a cheap start-up check that the records, label map and format fit,
    since a training stream with no usable record would otherwise read forever. Raises
    ValueError for a key of the wrong type (:meth:`ExampleDecoder.check_types`)."""
    peeked = peek_records(files) if peeked is None else peeked
    decoder = ExampleDecoder(label_map)
    decoder.check_types(peeked)
    report = LoadReport(f"the first records of {files[0]}")
    rows = [(path, i, example.SerializeToString())
            for path, examples in peeked for i, example in enumerate(examples)]
    if not rows:
        return 0, report
    shards, indices, serialized = (list(column) for column in zip(*rows, strict=True))
    none = [False] * len(rows)
    blocks = tf.data.Dataset.from_tensor_slices(
        (shards, tf.constant(indices, tf.int64), serialized, none, none)).batch(READ_BLOCK)
    usable = 0
    for e in decoder.stream(blocks).map(graph_fn(decoder.finish)).ignore_errors():
        _report_problems(report, e["problems"].numpy(),
                         f"{e['shard'].numpy().decode()} record {int(e['index'].numpy())}")
        usable += int(bool(e["ok"].numpy()) and e["classes"].shape[0] > 0)
    return usable, report


def image_bytes(record: DetectionRecord) -> bytes:
    """The encoded image of a record: its file's bytes, or its TFRecord's ``image/encoded``."""
    if record.tfrecord_index is None:
        with tf.io.gfile.GFile(record.image_path, "rb") as f:
            return f.read()
    ds = tf.data.TFRecordDataset(record.image_path).skip(record.tfrecord_index).take(1)
    serialized = next(iter(ds)).numpy()
    return tf.train.Example.FromString(serialized).features.feature[ENCODED].bytes_list.value[0]


def load_image(record: DetectionRecord) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of a record: its image file, or its TFRecord's image bytes."""
    with Image.open(io.BytesIO(image_bytes(record))) as image:
        return np.asarray(image.convert("RGB"))


# --------------------------------------------------------------------------------- writer

def _image_format(data: bytes) -> str:
    if data[:2] == b"\xff\xd8":
        return "jpeg"
    if data[:8] == _PNG_MAGIC:
        return "png"
    if data[:3] == b"GIF":
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    return ""


def _png(mask: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.asarray(mask, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def example_from_record(record: DetectionRecord, label_map: LabelMap, image_bytes: bytes,
                        with_masks: bool = True) -> tf.train.Example:
    """The OD API Example of one record (module docstring): boxes normalised by the record's
    size, dataset class ids, crowd regions as ``is_crowd`` objects with label 0 (records keep
    no class for them), masks (when the record has them and ``with_masks``) as PNGs."""
    h, w = float(record.height), float(record.width)
    n = record.num_instances
    boxes = np.concatenate([record.boxes, record.crowd_boxes]).astype(np.float64)
    crowd = [0] * n + [1] * len(record.crowd_boxes)
    labels = [int(label_map.to_dataset_id(int(c))) for c in record.classes]
    labels += [0] * len(record.crowd_boxes)
    texts = [label_map.name(int(c)).encode() for c in record.classes]
    texts += [b""] * len(record.crowd_boxes)
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist()
    feature: dict[str, tf.train.Feature] = {}

    def put(key: str, values: Iterable[Any], kind: str) -> None:
        values = list(values)
        if kind == "bytes":
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif kind == "int":
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))

    put(ENCODED, [image_bytes], "bytes")
    put(FORMAT, [_image_format(image_bytes).encode()], "bytes")
    put(HEIGHT, [record.height], "int")
    put(WIDTH, [record.width], "int")
    put(FILENAME, [record.file_name.encode()], "bytes")
    put(SOURCE_ID, [str(record.image_id).encode()], "bytes")
    put(YMIN, (boxes[:, 0] / h).tolist(), "float")
    put(XMIN, (boxes[:, 1] / w).tolist(), "float")
    put(YMAX, (boxes[:, 2] / h).tolist(), "float")
    put(XMAX, (boxes[:, 3] / w).tolist(), "float")
    put(LABEL, labels, "int")
    put(TEXT, texts, "bytes")
    put(IS_CROWD, crowd, "int")
    put(DIFFICULT, np.asarray(record.difficult, np.int64).tolist() + [0] * len(crowd[n:]),
        "int")
    if with_masks and record.has_masks:
        full = record.instance_masks()
        areas[:n] = full.sum(axis=(1, 2)).astype(float).tolist()
        pngs = [_png(m) for m in full]
        pngs += [_png(m) for m in filled_box_masks(
            tf.constant(record.crowd_boxes, tf.float32), record.height, record.width).numpy()]
        put(MASK, pngs, "bytes")
    put(AREA, areas, "float")
    return tf.train.Example(features=tf.train.Features(feature=feature))


def shard_names(output: str, num_shards: int) -> list[str]:
    """``OUTPUT-00000-of-0000N.tfrecord`` ... for ``num_shards`` shards."""
    return [f"{output}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def write_tfrecords(
    records: Sequence[DetectionRecord],
    label_map: LabelMap,
    output: str,
    num_shards: int = 1,
    *,
    with_masks: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Writes ``records`` as OD API TFRecords (image files kept as their bytes), record ``i``
    into shard ``i % num_shards``, and ``label_map.pbtxt`` into ``output``'s folder; every path
    goes through ``tf.io.gfile``. ``progress(done, total)`` is called after each record.

    Returns:
        The shard paths.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
    folder = os.path.dirname(output)
    if folder:
        tf.io.gfile.makedirs(folder)
    paths = shard_names(output, num_shards)
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    try:
        for i, record in enumerate(records):
            example = example_from_record(record, label_map, image_bytes(record), with_masks)
            writers[i % num_shards].write(example.SerializeToString())
            if progress is not None:
                progress(i + 1, len(records))
    finally:
        for writer in writers:
            writer.close()
    with tf.io.gfile.GFile(os.path.join(folder, LABEL_MAP_PBTXT), "w") as f:
        f.write(label_map_to_pbtxt(label_map))
    return paths
