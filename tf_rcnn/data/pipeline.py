"""tf.data input pipeline: decode, resize, flip, normalise, pad and batch detection data.

Conventions (docs/design.md):
    Boxes are float32 ``[y1, x1, y2, x2]`` in pixels of the RESIZED image (what the network
    sees); padded rows are -1 (zero area). Classes ``1..K``, padded -1. Images are RGB float32
    ``(pixel - mean) / std`` with 0-255 inputs, padded with 0 at the bottom/right.

Shape shorthand:
    B images per batch (per replica), H/W padded batch height/width, M ``max_instances``,
    Mc ``max_crowd``, P ``max_proposals``, S ``mask_crop_size``.

Geometry, exactly (the tests check it to 1e-3 px):
    ``s = min(target / min(h, w), max_size / max(h, w))`` with ``target`` drawn uniformly
    from ``scales`` in training (the largest entry in evaluation), times a factor drawn from
    ``scale_jitter=(lo, hi)`` when given (training only). Two resize rules
    (``resize_rule``, :func:`resize_geometry`):

    - ``"tf_rcnn"``: the content is scaled by exactly ``s`` (bilinear, half-pixel centres; see
      :func:`resize_image`) onto a canvas of ``ceil(h * s), ceil(w * s)`` pixels; the last
      row/column may be part-filled (edge values), never cut. ``scale = (s, s)``.
    - ``"torchvision"``: torchvision's detection transform: ``s`` in float64, a canvas of
      ``floor(h * s), floor(w * s)`` pixels, the content stretched onto it (bilinear, half-pixel
      centres, no antialiasing), so each axis has its own factor ``scale = (H'/h, W'/w)``.

    ``scale`` is ``[2]`` (y, x) and a box maps as ``[y1, x1, y2, x2] * (sy, sx, sy, sx)``.
    A horizontal flip mirrors the original image: ``x' = (w - x) * sx`` with ``w`` the
    original width; box-cropped masks are flipped left-right; proposals and crowd boxes follow
    the same formulas. Detections map back to original pixels by dividing by ``scale`` (and
    un-flipping with ``w``).

Batches (``dataset()`` elements): ``(images [B, H, W, 3] float32, targets)`` with targets
    ``boxes [B, M, 4]``, ``classes [B, M]`` int32, ``crowd_boxes [B, Mc, 4]``,
    ``image_shape [B, 2]`` int32, ``image_id [B]`` int64, ``scale [B, 2]`` float32 (y, x),
    ``original_shape [B, 2]`` int32, ``flipped [B]`` bool, and when enabled
    ``masks [B, M, S, S]`` float32 (each GT mask cropped to its box, padded 0) and
    ``proposals [B, P, 4]`` / ``proposal_scores [B, P]`` (padded -1).
    H and W are multiples of ``size_divisor``; they are static when every image gets the same
    size (e.g. the shapes demo) or when ``fixed_image_size`` is given, dynamic otherwise.

Training vs evaluation:
    Training repeats, shuffles, flips, drops images without (non-difficult) boxes and uses
    ``drop_remainder=True`` so B is static. Evaluation keeps every image exactly once in a
    final, possibly smaller batch (``drop_remainder=False``); B is then dynamic.

Bad data handled here (counted and logged once when the pipeline is built): instances beyond
``max_instances`` / crowd regions beyond ``max_crowd`` are dropped (the smallest boxes first),
training images without boxes are left out, VOC ``difficult`` boxes are left out of training
(``exclude_difficult``), and images without proposals get none. A file damaged or replaced
after the load-time check (bytes not a whole image, or another size than its record) is
named on stderr when it is read and left out: from its batch in evaluation, with its batch in
training (whose batch size is static). Damage only decoding finds fails the batch, which
``Dataset.ignore_errors(log_warning=True)`` skips, so a long run never dies on one image.

Batching: items (record indices here, parsed records in :class:`TFRecordPipeline`) are put
into batches before any image is decoded (:func:`group_runs`: landscape and portrait apart),
and one map call reads, augments, pads and stacks a whole batch (``_load_batch``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tf_rcnn.data import masks as masks_lib
from tf_rcnn.data.proposals import read_proposals
from tf_rcnn.data.records import DetectionRecord
from tf_rcnn.label_map import LabelMap
from tf_rcnn.ops.crop_and_resize import crop_and_resize

AUTOTUNE = tf.data.AUTOTUNE

# tf.data functions here use no Python control flow on tensors (branches are tf.cond): they
# are traced as written. AutoGraph's conversion of them took most of the time `dataset()`
# spent building a pipeline (6 of 7 s measured, every start of a command).
graph_fn = tf.autograph.experimental.do_not_convert

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
CAFFE_MEAN = (123.68, 116.779, 103.939)

# Pixel statistics per backbone family, RGB order, for 0-255 inputs.
#   resnet*, vgg*: the Caffe convention of the built-in ImageNet weights (keras.applications
#                  ResNet50/101 and VGG16): mean subtraction only, std 1. Their BGR stems are
#                  turned to RGB when the weights are copied. Weights trained with other
#                  statistics (e.g. torchvision's mean/std) need data.pixel_mean/pixel_std.
#   tiny:          trains from scratch; ImageNet mean/std keep its inputs near unit scale.
PIXEL_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "resnet": (CAFFE_MEAN, (1.0, 1.0, 1.0)),
    "tiny": (IMAGENET_MEAN, IMAGENET_STD),
    "vgg": (CAFFE_MEAN, (1.0, 1.0, 1.0)),
}


def pixel_stats_for_backbone(
    name: str,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``(pixel_mean, pixel_std)`` for a backbone name such as ``"resnet50"`` or ``"vgg16"``.

    Matched on the family prefix in :data:`PIXEL_STATS`; unknown names raise ValueError.
    """
    key = name.lower()
    for family, stats in PIXEL_STATS.items():
        if key.startswith(family):
            return stats
    raise ValueError(
        f"No pixel statistics for backbone {name!r}; known families: {sorted(PIXEL_STATS)}. "
        "Pass pixel_mean/pixel_std explicitly."
    )


def compute_scale(
    height: tf.Tensor, width: tf.Tensor, target: tf.Tensor, max_size: float
) -> tf.Tensor:
    """``min(target / min(h, w), max_size / max(h, w))`` as float32 (graph-friendly)."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    target = tf.cast(target, tf.float32)
    return tf.minimum(target / tf.minimum(h, w), float(max_size) / tf.maximum(h, w))


def resized_shape(height: tf.Tensor, width: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """``[2]`` int32 canvas ``ceil(h * scale), ceil(w * scale)`` (1e-3 tolerance for rounding)."""
    hw = tf.cast(tf.stack([height, width]), tf.float32) * scale
    return tf.maximum(tf.cast(tf.math.ceil(hw - 1e-3), tf.int32), 1)


RESIZE_RULES = ("tf_rcnn", "torchvision")


def check_resize_rule(rule: str) -> str:
    if rule not in RESIZE_RULES:
        raise ValueError(f"Unknown resize rule {rule!r} (data.resize_rule); choose one of "
                         f"{RESIZE_RULES}.")
    return rule


def resize_geometry(height: tf.Tensor, width: tf.Tensor, target: tf.Tensor, max_size: float,
                    rule: str = "tf_rcnn", jitter: tf.Tensor | None = None
                    ) -> tuple[tf.Tensor, tf.Tensor]:
    """Canvas size and per-axis scale of an ``h x w`` image (module docstring, "Geometry").

    Args:
        height, width: original size (int scalars).
        target: shorter-side target.
        max_size: cap on the longer side.
        rule: ``"tf_rcnn"`` or ``"torchvision"``.
        jitter: optional factor multiplying the scale (training scale jitter).

    Returns:
        ``(out_shape [2] int32, scale [2] float32 (y, x))``.
    """
    check_resize_rule(rule)
    if rule == "tf_rcnn":
        s = compute_scale(height, width, target, max_size)
        if jitter is not None:
            s *= jitter
        return resized_shape(height, width, s), tf.stack([s, s])
    # torchvision (GeneralizedRCNNTransform): the factor in float64, floor of the products.
    hw = tf.cast(tf.stack([height, width]), tf.float64)
    s = tf.minimum(tf.cast(target, tf.float64) / tf.reduce_min(hw),
                   float(max_size) / tf.reduce_max(hw))
    if jitter is not None:
        s *= tf.cast(jitter, tf.float64)
    out_shape = tf.maximum(tf.cast(tf.floor(hw * s), tf.int32), 1)
    return out_shape, tf.cast(out_shape, tf.float32) / tf.cast(hw, tf.float32)


def mirror_pad(image: tf.Tensor, pad: tf.Tensor | int) -> tf.Tensor:
    """``tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="SYMMETRIC")`` for ``image [H, W,
    C]`` and ``1 <= pad <= min(H, W)``: the same values, built from slices, reversals and two
    concatenations, which copy whole rows. ``MirrorPad`` works value by value: 2.7 ms of CPU
    for a 640x480 float image here, against 1.4 ms this way."""
    rows = tf.concat([tf.reverse(image[:pad], [0]), image, tf.reverse(image[-pad:], [0])], 0)
    return tf.concat([tf.reverse(rows[:, :pad], [1]), rows, tf.reverse(rows[:, -pad:], [1])], 1)


def resize_image(image: tf.Tensor, scale: tf.Tensor, out_shape: tf.Tensor,
                 rule: str = "tf_rcnn") -> tf.Tensor:
    """Resize ``image [H, W, C]`` onto an ``out_shape`` canvas by the per-axis ``scale [2]``.

    Output pixel ``c`` samples the input bilinearly at ``(c + 0.5) / scale - 0.5`` (half-pixel
    centres) with edge values past the border, so a point ``x`` of the input lands at
    ``x * scale``.

    ``rule="tf_rcnn"``: ``tf.image.crop_and_resize`` (corner-aligned, evenly spaced samples)
    on an edge-mirrored copy of the image, which allows a canvas larger than the scaled
    content. Measured on 640x480 -> 800x1067 JPEGs here: 64 images/s against 33 for
    ``tf.raw_ops.ScaleAndTranslate`` (same numbers inside the image to 2e-2 on 0-255 values).
    ``rule="torchvision"``: the canvas is exactly the scaled content (``scale = out / in``),
    which is ``tf.image.resize`` (bilinear, half-pixel centres, no antialiasing): the same
    samples as PyTorch's ``interpolate(mode="bilinear", align_corners=False)``.
    """
    image = tf.cast(image, tf.float32)
    out_shape = tf.cast(out_shape, tf.int32)
    if check_resize_rule(rule) == "torchvision":
        return tf.image.resize(image, out_shape, method="bilinear", antialias=False)
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    scale = tf.cast(scale, tf.float32)[0]  # the tf_rcnn rule scales both axes alike
    # Mirror-pad enough that the outermost samples (up to 0.5 / scale px outside) stay inside.
    pad = tf.maximum(tf.cast(tf.math.ceil(0.5 / scale), tf.int32), 1)
    pad = tf.minimum(pad, tf.minimum(shape[0], shape[1]))
    padded = mirror_pad(image, pad)
    p = tf.cast(pad, tf.float32)
    oh = tf.cast(out_shape[0], tf.float32)
    ow = tf.cast(out_shape[1], tf.float32)
    # crop_and_resize samples y1*(Hp-1) + i*(y2-y1)*(Hp-1)/(oh-1): choose y1, y2 so that
    # sample i sits at (i + 0.5) / scale - 0.5 (+ pad) in padded pixel indices.
    first = 0.5 / scale - 0.5 + p
    box = tf.stack([
        first / (h + 2 * p - 1),
        first / (w + 2 * p - 1),
        ((oh - 0.5) / scale - 0.5 + p) / (h + 2 * p - 1),
        ((ow - 0.5) / scale - 0.5 + p) / (w + 2 * p - 1),
    ])
    # tf.image.crop_and_resize, or its builtin-only twin for a LiteRT export.
    out = crop_and_resize(padded[tf.newaxis], box[tf.newaxis], tf.zeros([1], tf.int32),
                          out_shape)
    return out[0]


def scale_boxes(boxes: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """``boxes [..., 4]`` yxyx times the per-axis ``scale [..., 2]`` (y, x): ``(sy, sx, sy, sx)``.

    ``scale`` broadcasts against ``boxes[..., :2]`` (e.g. ``[2]`` for one image, or
    ``[B, 1, 2]`` for ``[B, N, 4]`` boxes).
    """
    scale = tf.cast(scale, tf.float32)
    return tf.cast(boxes, tf.float32) * tf.concat([scale, scale], axis=-1)


def transform_boxes(
    boxes: tf.Tensor, scale: tf.Tensor, original_width: tf.Tensor, flip: tf.Tensor
) -> tf.Tensor:
    """Original-pixel ``boxes [..., 4]`` yxyx to resized (and optionally flipped) pixels.

    ``flip`` (bool scalar) mirrors first: ``x' = w - x`` with ``w = original_width``; then the
    coordinates are multiplied by ``scale [2]`` (y, x).
    """
    boxes = tf.cast(boxes, tf.float32)
    w = tf.cast(original_width, tf.float32)
    y1, x1, y2, x2 = tf.unstack(boxes, 4, axis=-1)
    fx1 = tf.where(flip, w - x2, x1)
    fx2 = tf.where(flip, w - x1, x2)
    return scale_boxes(tf.stack([y1, fx1, y2, fx2], axis=-1), scale)


def normalize_pixels(image: tf.Tensor, pixel_mean: Sequence[float],
                     pixel_std: Sequence[float]) -> tf.Tensor:
    """``(image - mean) / std`` per channel of ``image [..., W, C]`` float32 (``C`` =
    ``len(pixel_mean)``), the same numbers as broadcasting the ``[C]`` vectors; the identity
    statistics (mean 0, std 1) return ``image`` as it is.

    The image is viewed as rows of ``W * C`` values and the statistics are tiled to one such
    row. TF's CPU kernels broadcast a short trailing vector slowly: on an 800x1067 image here
    ``image - mean`` then ``/ std`` took 19 ms of CPU, against 3.8 ms along rows (and 455 us
    against 125 us at 128x128).
    """
    mean = [float(v) for v in pixel_mean]
    std = [float(v) for v in pixel_std]
    if len(mean) != len(std):
        raise ValueError(f"pixel_mean and pixel_std differ in length: {mean} and {std}.")
    if all(v == 0.0 for v in mean) and all(v == 1.0 for v in std):
        return image
    if image.shape.rank is not None:  # a view by rows needs C channels (checked)
        image = tf.ensure_shape(image, image.shape[:-1].concatenate([len(mean)]))
    shape = tf.shape(image)
    width = shape[-2]
    rows = tf.reshape(image, [-1, width * len(mean)])
    if any(v != 0.0 for v in mean):
        rows = rows - tf.tile(tf.constant(mean, tf.float32), [width])
    if any(v != 1.0 for v in std):
        rows = rows / tf.tile(tf.constant(std, tf.float32), [width])
    return tf.reshape(rows, shape)


def pad_image(image: tf.Tensor, size_divisor: int, canvas: tf.Tensor | None = None
              ) -> tf.Tensor:
    """Zero-pad ``image [H, W, C]`` bottom/right to multiples of ``size_divisor``, or to
    ``canvas [2]`` (H, W) when given (a batch's common size)."""
    shape = tf.shape(image)
    if canvas is not None:
        image = tf.pad(image, [[0, canvas[0] - shape[0]], [0, canvas[1] - shape[1]], [0, 0]])
    elif size_divisor > 1:
        pad_h = (-shape[0]) % size_divisor
        pad_w = (-shape[1]) % size_divisor
        image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
    return image


def resize_normalize_pad(
    image: tf.Tensor,
    scale: tf.Tensor,
    out_shape: tf.Tensor,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    size_divisor: int,
    rule: str = "tf_rcnn",
    canvas: tf.Tensor | None = None,
) -> tf.Tensor:
    """Normalise, resize by ``scale [2]`` onto ``out_shape`` (:func:`resize_image` with
    ``rule``) and zero-pad to ``size_divisor`` (or to ``canvas``, see :func:`pad_image`).

    Normalising is affine and bilinear weights sum to 1, so normalising before resizing gives
    the same numbers as after it; it is done on the (usually smaller) input, which measured
    1.4x faster for 640x480 -> 800x1067 here.

    An image that keeps its size (``scale`` 1 and ``out_shape`` its own, as data resized
    beforehand to the training scale gets) is not resampled: both rules would sample each
    pixel at its centre, and resampling is most of the per-image work.
    """
    image = normalize_pixels(tf.cast(image, tf.float32), pixel_mean, pixel_std)
    shape = tf.shape(image)
    same = tf.reduce_all(tf.equal(tf.cast(scale, tf.float32), 1.0)) & tf.reduce_all(
        tf.equal(tf.cast(out_shape, tf.int32), shape[:2]))
    resized = tf.cond(same, lambda: image, lambda: resize_image(image, scale, out_shape, rule))
    return pad_image(resized, size_divisor, canvas)


def preprocess_image_for_inference(
    image_uint8: tf.Tensor,
    scales: Sequence[int] = (600,),
    max_size: float = 1000,
    size_divisor: int = 32,
    *,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    resize_rule: str = "tf_rcnn",
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Evaluation-mode preprocessing of one image in pure TF (usable in an exported graph).

    Args:
        image_uint8: ``[H, W, 3]`` uint8 RGB (a 1- or 4-channel image is converted to RGB).
        scales: shorter-side targets; inference uses the largest, like evaluation.
        max_size: cap on the longer side.
        size_divisor: pad height/width up to multiples of this.
        pixel_mean: RGB mean, 0-255 units: the model's backbone's
            (:func:`pixel_stats_for_backbone`), no default.
        pixel_std: RGB std, 0-255 units, likewise.
        resize_rule: ``"tf_rcnn"`` or ``"torchvision"`` (module docstring, "Geometry").

    Returns:
        ``image [H', W', 3]`` float32 normalised and padded, ``image_shape [2]`` int32
        (resized size before padding) and ``scale [2]`` float32 (y, x; resized = original *
        scale).
    """
    image = _to_rgb(tf.convert_to_tensor(image_uint8))
    shape = tf.shape(image)
    out_shape, scale = resize_geometry(shape[0], shape[1], float(max(scales)), max_size,
                                       resize_rule)
    image = resize_normalize_pad(image, scale, out_shape, pixel_mean, pixel_std, size_divisor,
                                 resize_rule)
    return image, out_shape, scale


def _to_rgb(image: tf.Tensor) -> tf.Tensor:
    """``[H, W, C]`` with C in {1, 2, 3, 4} -> ``[H, W, 3]`` (gray replicated, alpha dropped)."""
    channels = tf.shape(image)[-1]
    image = tf.cond(channels < 3, lambda: tf.repeat(image[..., :1], 3, axis=-1),
                    lambda: image[..., :3])
    image.set_shape([None, None, 3])
    return image


def decode_image(data: tf.Tensor) -> tf.Tensor:
    """Decode JPEG/PNG/GIF/BMP bytes to ``[H, W, 3]`` uint8 RGB in the graph.

    Grayscale is replicated to RGB and alpha is dropped (``channels=3``); 16-bit PNGs are
    decoded at 16 bits and scaled to 0-255 (``x // 257``) rather than truncated. Safe on any
    bytes: the header is read from a zero-padded copy, so bytes shorter than a PNG header fail
    in the decoder with a plain ``InvalidArgumentError`` instead of an out-of-range error that
    quotes the raw bytes (serving relies on this).
    """
    header = tf.strings.substr(tf.strings.join([data, tf.constant(b"\0" * 32)]), 0, 32)
    is_png = tf.strings.substr(header, 0, 8) == b"\x89PNG\r\n\x1a\n"
    # PNG IHDR bit depth is byte 24.
    bit_depth = tf.strings.substr(header, 24, 1)

    def png16():
        image = tf.io.decode_png(data, channels=3, dtype=tf.uint16)
        return tf.cast(tf.cast(image, tf.int32) // 257, tf.uint8)

    def other():
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)

    image = tf.cond(tf.logical_and(is_png, tf.equal(bit_depth, b"\x10")), png16, other)
    image.set_shape([None, None, 3])
    return image


def _contains_rows(haystack: tf.Tensor, needle: bytes) -> tf.Tensor:
    """``[B]``: whether each row of the uint8 ``haystack [B, L]`` contains ``needle``."""
    span = haystack.shape[1] - len(needle) + 1
    found = tf.ones_like(haystack[:, :span], tf.bool)
    for k, byte in enumerate(needle):
        found &= tf.equal(haystack[:, k:k + span], byte)
    return tf.reduce_any(found, axis=1)


def image_bytes_ok(data: tf.Tensor) -> tf.Tensor:
    """Bool of ``data``'s shape (one image's bytes, or a batch of them, checked in a few ops
    for the whole batch): the bytes start like a JPEG/PNG/GIF/BMP and a JPEG/PNG has its end
    marker in its last 1024 bytes (not truncated; read zero-padded to 1024: the markers hold
    no zero byte, so the padding finds none). Cheap; decoding is what finds damage inside the
    data."""
    data = tf.convert_to_tensor(data, tf.string)
    flat = tf.reshape(data, [-1])
    head = tf.strings.substr(flat, 0, 8)
    is_jpeg = tf.strings.substr(head, 0, 2) == b"\xff\xd8"
    is_png = head == b"\x89PNG\r\n\x1a\n"
    is_other = (tf.strings.substr(head, 0, 3) == b"GIF") | (tf.strings.substr(head, 0, 2) == b"BM")
    start = tf.maximum(tf.strings.length(flat) - 1024, 0)
    tail = tf.io.decode_raw(tf.strings.substr(flat, start, tf.fill(tf.shape(start), 1024)),
                            tf.uint8, fixed_length=1024)
    tail = tf.reshape(tail, [-1, 1024])
    ok = ((is_jpeg & _contains_rows(tail, b"\xff\xd9")) | (is_png & _contains_rows(tail, b"IEND"))
          | is_other)
    return tf.reshape(ok, tf.shape(data))


# JPEG start-of-frame markers (the frame header holds the size): C0-CF but C4 (Huffman
# tables), C8 (reserved) and CC (arithmetic coding conditioning).
_JPEG_SOF = [m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC)]
# Markers without a length field: TEM, RST0-7, SOI (EOI ends the walk).
_JPEG_STANDALONE = [0x01, *range(0xD0, 0xD9)]
# Segments walked before giving up on finding a JPEG's frame header (real files have a dozen
# or so: APPn metadata, tables); each step advances every image of the batch at once.
_JPEG_MAX_SEGMENTS = 128


def encoded_image_sizes(data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(height [N], width [N])`` int64 of encoded images ``data [N]`` read from their
    headers, without decoding: the sizes ``decode_image`` gives them. PNG: IHDR; GIF: the
    logical screen; BMP: the DIB header (a negative height is a top-down image); JPEG: the
    frame header, found by walking the marker segments by their lengths, as a decoder does.
    ``-1`` where the header cannot be read (not an image, cut short, no frame header within
    ``_JPEG_MAX_SEGMENTS`` segments)."""
    data = tf.reshape(tf.convert_to_tensor(data, tf.string), [-1])
    length = tf.strings.length(data)

    def read(offset: tf.Tensor | int, size: int) -> tf.Tensor:
        # [N, size] bytes at each image's offset, zeros past its end.
        offset = tf.broadcast_to(tf.cast(offset, tf.int32), tf.shape(length))
        raw = tf.io.decode_raw(tf.strings.substr(data, tf.minimum(offset, length),
                                                 tf.fill(tf.shape(length), size)),
                               tf.uint8, fixed_length=size)
        return tf.cast(tf.reshape(raw, [-1, size]), tf.int64)

    def big(raw: tf.Tensor, i: int, n: int) -> tf.Tensor:
        value = tf.zeros_like(raw[:, 0])
        for k in range(n):
            value = value * 256 + raw[:, i + k]
        return value

    def little(raw: tf.Tensor, i: int, n: int) -> tf.Tensor:
        value = tf.zeros_like(raw[:, 0])
        for k in reversed(range(n)):
            value = value * 256 + raw[:, i + k]
        return value

    head = read(0, 26)
    magic = tf.strings.substr(data, 0, 8)
    is_png = (magic == b"\x89PNG\r\n\x1a\n") & (length >= 24)
    is_gif = (tf.strings.substr(magic, 0, 3) == b"GIF") & (length >= 10)
    is_bmp = (tf.strings.substr(magic, 0, 2) == b"BM") & (length >= 26)
    is_jpeg = tf.strings.substr(magic, 0, 2) == b"\xff\xd8"
    dib = little(head, 14, 4)
    core = dib == 12  # the old BMP core header: 16-bit sizes
    signed = little(head, 22, 4)
    bmp_h = tf.where(core, little(head, 20, 2),
                     tf.abs(tf.where(signed >= 2**31, signed - 2**32, signed)))
    bmp_w = tf.where(core, little(head, 18, 2), little(head, 18, 4))
    unknown = tf.fill(tf.shape(length), tf.constant(-1, tf.int64))
    height = tf.where(is_png, big(head, 20, 4), tf.where(
        is_gif, little(head, 8, 2), tf.where(is_bmp, bmp_h, unknown)))
    width = tf.where(is_png, big(head, 16, 4), tf.where(
        is_gif, little(head, 6, 2), tf.where(is_bmp, bmp_w, unknown)))

    sof = tf.constant(_JPEG_SOF, tf.int64)
    standalone = tf.constant(_JPEG_STANDALONE, tf.int64)
    one, two = tf.constant(1, tf.int64), tf.constant(2, tf.int64)

    def more(step, offset, h, w, active):
        del offset, h, w
        return (step < _JPEG_MAX_SEGMENTS) & tf.reduce_any(active)

    def walk(step, offset, h, w, active):
        seg = read(offset, 9)  # FF, marker, length (2), precision, height (2), width (2)
        marker = seg[:, 1]
        fill = (seg[:, 0] == 0xFF) & (marker == 0xFF)  # padding before a marker
        valid = (seg[:, 0] == 0xFF) & (offset + 2 <= tf.cast(length, tf.int64))
        is_sof = valid & ~fill & tf.reduce_any(marker[:, None] == sof[None], axis=1)
        lone = valid & ~fill & tf.reduce_any(marker[:, None] == standalone[None], axis=1)
        found = active & is_sof
        h = tf.where(found, big(seg, 5, 2), h)
        w = tf.where(found, big(seg, 7, 2), w)
        step_size = tf.where(fill, one, tf.where(lone, two, two + big(seg, 2, 2)))
        # A segment that is no marker, the end of image, or a cut file ends the walk.
        stop = ~valid | (~fill & (marker == 0xD9)) | (~fill & ~lone & (big(seg, 2, 2) < 2))
        active = active & ~found & ~stop
        return step + 1, tf.where(active, offset + step_size, offset), h, w, active

    offset = tf.fill(tf.shape(length), tf.constant(2, tf.int64))
    _, _, jpeg_h, jpeg_w, _ = tf.while_loop(
        more, walk, (tf.constant(0), offset, unknown, unknown, is_jpeg & (length >= 4)))
    height = tf.where(is_jpeg, jpeg_h, height)
    width = tf.where(is_jpeg, jpeg_w, width)
    known = (height > 0) & (width > 0)
    return tf.where(known, height, -1), tf.where(known, width, -1)


def to_original_pixels(
    boxes: np.ndarray,
    scale: np.ndarray,
    original_shape: np.ndarray,
    flipped: np.ndarray | None = None,
    input_width: np.ndarray | None = None,
) -> np.ndarray:
    """Map ``boxes [B, D, 4]`` from the network input back to original-image pixels.

    Args:
        boxes: ``[B, D, 4]`` ``[y1, x1, y2, x2]`` in resized-image pixels.
        scale: ``[B, 2]`` per-axis resize factors (y, x; resized = original * scale); a
            ``[B]`` factor (both axes alike) is accepted too.
        original_shape: ``[B, 2]`` original (height, width).
        flipped: optional ``[B]`` bool; flipped images are un-flipped using ``input_width``.
        input_width: ``[B]`` resized widths (before padding), needed with ``flipped``.
    """
    boxes = np.asarray(boxes, np.float32).copy()
    if flipped is not None and np.any(flipped):
        width = np.asarray(input_width, np.float32)[:, None]
        x1 = boxes[..., 1].copy()
        boxes[..., 1] = np.where(flipped[:, None], width - boxes[..., 3], x1)
        boxes[..., 3] = np.where(flipped[:, None], width - x1, boxes[..., 3])
    scale = np.asarray(scale, np.float32)
    if scale.ndim == 1:
        scale = np.stack([scale, scale], axis=-1)
    boxes /= np.concatenate([scale, scale], axis=-1)[:, None, :]  # (sy, sx, sy, sx)
    h = np.asarray(original_shape, np.float32)[:, 0][:, None]
    w = np.asarray(original_shape, np.float32)[:, 1][:, None]
    boxes[..., 0] = np.clip(boxes[..., 0], 0, h)
    boxes[..., 2] = np.clip(boxes[..., 2], 0, h)
    boxes[..., 1] = np.clip(boxes[..., 1], 0, w)
    boxes[..., 3] = np.clip(boxes[..., 3], 0, w)
    return boxes


# A valid 1x1 PNG, decoded in place of a file found damaged at run time (then left out).
_STAND_IN_PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08"
                 b"\x02\x00\x00\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc```\x00\x00\x00\x04"
                 b"\x00\x01\xf6\x178U\x00\x00\x00\x00IEND\xaeB`\x82")

# Items pass group_runs in blocks of this many: its per-block work replaces a per-item stage.
GROUP_BLOCK = 64


def _concat_rows(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """``a [n, ...]`` and ``b [k, ...]`` -> ``[n + k, ...]``, the trailing sizes padded (zeros,
    empty strings) to the larger of the two (parsed TFRecord rows have a per-block object
    count)."""
    if a.shape.rank > 1:
        sa, sb = tf.shape(a)[1:], tf.shape(b)[1:]
        top = tf.maximum(sa, sb)
        zero = tf.zeros([1, 2], tf.int32)  # the row axis is not padded
        a = tf.pad(a, tf.concat([zero, tf.stack([tf.zeros_like(sa), top - sa], 1)], 0))
        b = tf.pad(b, tf.concat([zero, tf.stack([tf.zeros_like(sb), top - sb], 1)], 0))
    return tf.concat([a, b], 0)


def group_runs(items: tf.data.Dataset, batch: int,
               landscape: Callable[[Any], tf.Tensor] | None = None,
               drop_remainder: bool = True) -> tf.data.Dataset:
    """Items (any nest of tensors, not yet decoded) -> runs of ``batch`` items of one
    orientation, ``(run [batch, ...], count)``, before any image is decoded.

    ``landscape`` maps a ``[n, ...]`` block of items to ``[n]`` bool (w >= h); without it
    every item is alike. Items wait, at most ``batch - 1`` of each orientation, until their
    run is full; runs leave in the order they fill. A finite dataset's last, short runs
    (``count < batch``) are filled up with copies of their first item, or left out with
    ``drop_remainder``. The work is per block of :data:`GROUP_BLOCK` items (a ``scan``), which
    costs far less per item than grouping decoded images: ``group_by_window`` builds a window
    dataset per batch, and on 800x800 float images at batch 2 it added about 250 us per image
    to batching's 1.6 ms (here); the COCO case of ``benchmarks/data.py`` ran about 3% slower
    with it than without grouping.
    """
    # Padded: parsed TFRecord rows have their block's object count.
    blocks = items.padded_batch(GROUP_BLOCK).map(
        graph_fn(lambda *b: (b[0] if len(b) == 1 else b, False)))
    spec = blocks.element_spec[0]
    empty = tf.nest.map_structure(
        lambda sp: tf.zeros([0] + [d or 0 for d in sp.shape[1:]], sp.dtype), spec)
    blocks = blocks.concatenate(tf.data.Dataset.from_tensors((empty, True)))

    def step(pending: Any, block_end: tuple[Any, tf.Tensor]) -> tuple[Any, Any]:
        block, is_end = block_end
        rows = tf.nest.map_structure(_concat_rows, pending, block)
        n = tf.shape(tf.nest.flatten(rows)[0])[0]
        key = landscape(rows) if landscape is not None else tf.ones([n], tf.bool)
        take, counts, keep = [], [], []
        for value in (True, False):
            index = tf.cast(tf.where(tf.equal(key, value))[:, 0], tf.int32)
            size = tf.size(index)
            full = tf.where(is_end, size, size // batch * batch)
            num_runs = (full + batch - 1) // batch
            chosen = index[:full]
            # A short last run repeats its first item up to ``batch``.
            fill = tf.gather(chosen, tf.zeros([num_runs * batch - full], tf.int32))
            take.append(tf.concat([chosen, fill], 0))
            counts.append(tf.minimum(batch, full - tf.range(num_runs) * batch))
            keep.append(index[full:])
        take, keep, counts = tf.concat(take, 0), tf.concat(keep, 0), tf.concat(counts, 0)
        num = tf.size(counts)

        def runs(v: tf.Tensor, sp: tf.TensorSpec) -> tf.Tensor:
            out = tf.gather(v, take)
            out = tf.reshape(out, tf.concat([[num, batch], tf.shape(out)[1:]], 0))
            return tf.ensure_shape(out, [None, batch] + sp.shape[1:].as_list())

        waiting = tf.nest.map_structure(lambda v: tf.gather(v, keep), rows)
        return waiting, (tf.nest.map_structure(runs, rows, spec), counts)

    out = blocks.scan(empty, graph_fn(step)).unbatch()
    if drop_remainder:
        out = out.filter(graph_fn(lambda run, count: count == batch))
    return out


class InputPipeline:
    """Build the training or evaluation ``tf.data.Dataset`` from :class:`DetectionRecord` s.

    Args:
        records: from ``load_coco`` / ``load_voc`` / ``load_custom`` / ``records_from_list``.
        label_map: the dataset's :class:`LabelMap` (kept for ``num_classes`` and saving).
        training: training mode (flip, shuffle, repeat, static batch) or evaluation mode.
        batch_size: GLOBAL batch size; with ``dataset(input_context)`` each replica gets
            ``input_context.get_per_replica_batch_size(batch_size)``.
        scales: shorter-side targets (one drawn per training image; max used in evaluation).
        max_size: cap on the longer side.
        resize_rule: ``"tf_rcnn"`` or ``"torchvision"`` (module docstring, "Geometry").
        scale_jitter: ``(lo, hi)`` multiplicative factor on the scale, training only.
        random_flip: random horizontal flips (default: ``training``).
        size_divisor: pad images to multiples of this (the coarsest feature stride).
        max_instances: M, the fixed number of GT rows per image.
        max_crowd: Mc, the fixed number of crowd rows per image.
        backbone: the model's backbone name (``"resnet50"``, ``"vgg16"``, ``"tiny"``, ...): the
            pixel statistics are then its family's (:data:`PIXEL_STATS` through
            :func:`pixel_stats_for_backbone`). Give this or ``pixel_mean`` and ``pixel_std``;
            there is no default, since the families differ (ResNet/VGG: Caffe mean, std 1;
            tiny: ImageNet mean and std).
        pixel_mean: RGB mean (0-255 units); overrides the backbone's.
        pixel_std: RGB std (0-255 units); overrides the backbone's.
        with_masks: emit ``masks [B, M, S, S]`` (records need segmentations).
        mask_crop_size: S. Masks are cropped to their boxes at load time and held in memory as
            uint8: ``S * S`` bytes per instance (COCO train2017 at S = 56 is about 2.7 GB;
            use S = 28 to quarter it).
        proposals: ``{image_id: (boxes [P, 4] yxyx original pixels, scores [P] or None)}`` or a
            path read by :func:`tf_rcnn.data.proposals.read_proposals`.
        max_proposals: P, keep the top-P proposals by score (file order without scores).
        seed: seed of shuffling, scale choice and flips. ``None`` draws one.
        deterministic: same batches, same order on every run with the same seed (needs
            ``seed``); turns off tf.data's out-of-order parallelism.
        shuffle: shuffle records (default: ``training``).
        repeat: repeat forever (default: ``training``).
        group_by_aspect_ratio: batch landscape (w >= h) and portrait images separately.
        num_parallel: parallel calls for decoding/resizing.
        exclude_difficult: leave VOC ``difficult`` boxes out in training (evaluation keeps
            them in the records; the evaluator reads the flags from the records).
        skip_empty: leave out images without boxes (default: ``training``).
        fixed_image_size: ``(H, W)`` pad every image to this static size (multiples of
            ``size_divisor``); an image resized larger than it fails its batch, which is
            skipped (the commands check the size against ``max_size`` and ``scale_jitter``).
        shuffle_buffer: records in the shuffle buffer (default: all of them).
        flip_probability: probability of a flip when ``random_flip`` (1.0 flips every image).
    """

    def __init__(
        self,
        records: Sequence[DetectionRecord],
        label_map: LabelMap,
        *,
        training: bool,
        batch_size: int,
        scales: Sequence[int] = (600,),
        max_size: float = 1000,
        resize_rule: str = "tf_rcnn",
        scale_jitter: tuple[float, float] | None = None,
        random_flip: bool | None = None,
        size_divisor: int = 32,
        max_instances: int = 100,
        max_crowd: int = 20,
        backbone: str | None = None,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
        with_masks: bool = False,
        mask_crop_size: int = 56,
        proposals: Mapping[int, Any] | str | None = None,
        max_proposals: int = 2000,
        seed: int | None = None,
        deterministic: bool = False,
        shuffle: bool | None = None,
        repeat: bool | None = None,
        group_by_aspect_ratio: bool = True,
        num_parallel: int = AUTOTUNE,
        exclude_difficult: bool = True,
        skip_empty: bool | None = None,
        fixed_image_size: tuple[int, int] | None = None,
        shuffle_buffer: int | None = None,
        flip_probability: float = 0.5,
    ) -> None:
        self.training = bool(training)
        self.batch_size = int(batch_size)
        self.scales = tuple(int(s) for s in scales)
        self.max_size = float(max_size)
        self.resize_rule = check_resize_rule(resize_rule)
        self.scale_jitter = tuple(scale_jitter) if scale_jitter is not None else None
        self.random_flip = self.training if random_flip is None else bool(random_flip)
        self.size_divisor = int(size_divisor)
        self.max_instances = int(max_instances)
        self.max_crowd = int(max_crowd)
        if pixel_mean is None or pixel_std is None:
            if backbone is None:
                raise ValueError(
                    "InputPipeline needs the pixel statistics of the model's backbone: pass "
                    "backbone=NAME (e.g. 'resnet50', 'vgg16', 'tiny'; see PIXEL_STATS) or "
                    "pixel_mean and pixel_std.")
            mean, std = pixel_stats_for_backbone(backbone)
            pixel_mean = mean if pixel_mean is None else pixel_mean
            pixel_std = std if pixel_std is None else pixel_std
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_std = tuple(float(v) for v in pixel_std)
        self.with_masks = bool(with_masks)
        self.mask_crop_size = int(mask_crop_size)
        self.max_proposals = int(max_proposals)
        self.deterministic = bool(deterministic)
        self.shuffle = self.training if shuffle is None else bool(shuffle)
        self.repeat = self.training if repeat is None else bool(repeat)
        self.group_by_aspect_ratio = bool(group_by_aspect_ratio)
        self.num_parallel = num_parallel
        self.exclude_difficult = bool(exclude_difficult)
        self.skip_empty = self.training if skip_empty is None else bool(skip_empty)
        self.fixed_image_size = tuple(fixed_image_size) if fixed_image_size else None
        self.label_map = label_map
        self._validate_args()
        if seed is None:
            if deterministic:
                raise ValueError("deterministic=True needs a seed; pass seed=<int>.")
            seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        self.seed = int(seed)
        self.shuffle_buffer = shuffle_buffer
        self.flip_probability = float(flip_probability)

        self.stats: dict[str, int] = {}
        self._init_source(records, proposals)

    # ------------------------------------------------------------------ set-up (NumPy)

    def _init_source(self, records: Sequence[DetectionRecord],
                     proposals: Mapping[int, Any] | str | None) -> None:
        """Checks the records and holds them as tensors (TFRecordPipeline reads files)."""
        self._validate_records(records)
        if isinstance(proposals, str):
            proposals = read_proposals(proposals)
        self.with_proposals = proposals is not None
        self.records = self._prepare(list(records), proposals)
        self._tensors = self._to_tensors()

    def _validate_args(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if not self.scales or min(self.scales) < 1:
            raise ValueError(
                f"scales must be a non-empty list of positive ints, got {self.scales}."
            )
        if self.max_size < max(self.scales) and self.max_size < 1:
            raise ValueError(f"max_size must be positive, got {self.max_size}.")
        if self.scale_jitter is not None and not 0 < self.scale_jitter[0] <= self.scale_jitter[1]:
            raise ValueError(f"scale_jitter must be (lo, hi) with 0 < lo <= hi, got "
                             f"{self.scale_jitter}.")
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or min(self.pixel_std) <= 0:
            raise ValueError("pixel_mean and pixel_std need 3 RGB values, std > 0.")
        if self.max_instances < 1 or self.max_crowd < 0 or self.max_proposals < 1:
            raise ValueError("max_instances and max_proposals must be >= 1, max_crowd >= 0.")
        if self.fixed_image_size is not None and any(
            s % self.size_divisor for s in self.fixed_image_size
        ):
            raise ValueError(f"fixed_image_size {self.fixed_image_size} must be multiples of "
                             f"size_divisor={self.size_divisor}.")

    def _validate_records(self, records: Sequence[DetectionRecord]) -> None:
        if not records:
            raise ValueError(
                "InputPipeline got no records: the reader kept no image. Its report (the third "
                "value load_coco / load_voc / load_custom return) says why: "
                "print(report.details()).")
        if self.with_masks and any(not r.has_masks for r in records):
            bad = next(r for r in records if not r.has_masks)
            raise ValueError(
                f"with_masks=True but {bad.image_path} has no segmentations; load a dataset "
                "with masks or set with_masks=False."
            )

    def _count(self, reason: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.stats[reason] = self.stats.get(reason, 0) + n

    def _prepare(
        self, records: list[DetectionRecord], proposals: Mapping[int, Any] | None
    ) -> list[dict[str, Any]]:
        """Per-record arrays after the training filters, truncation and mask cropping."""
        out = []
        for rec in records:
            keep = np.ones(rec.num_instances, bool)
            if self.training and self.exclude_difficult:
                keep &= ~rec.difficult
                self._count("difficult boxes left out of training", int(rec.difficult.sum()))
            if self.skip_empty and not keep.any():
                self._count("images without boxes left out")
                continue
            idx = np.flatnonzero(keep)
            if len(idx) > self.max_instances:
                # Keep the largest boxes: tiny instances are the least informative to drop.
                areas = (rec.boxes[idx, 2] - rec.boxes[idx, 0]) * (
                    rec.boxes[idx, 3] - rec.boxes[idx, 1])
                order = np.argsort(-areas, kind="stable")[: self.max_instances]
                self._count(f"instances beyond max_instances={self.max_instances} dropped",
                            len(idx) - self.max_instances)
                logging.log_first_n(logging.WARNING, "%s: %d instances > max_instances=%d; "
                                    "the smallest are dropped (raise max_instances to keep "
                                    "them).", 10, rec.image_path, len(idx), self.max_instances)
                idx = np.sort(idx[order])
            crowd = rec.crowd_boxes
            if len(crowd) > self.max_crowd:
                areas = (crowd[:, 2] - crowd[:, 0]) * (crowd[:, 3] - crowd[:, 1])
                crowd = crowd[np.sort(np.argsort(-areas, kind="stable")[: self.max_crowd])]
                self._count(f"crowd regions beyond max_crowd={self.max_crowd} dropped",
                            len(rec.crowd_boxes) - self.max_crowd)
            item = {
                "path": rec.image_path, "image_id": rec.image_id,
                "hw": (rec.height, rec.width), "boxes": rec.boxes[idx],
                "classes": rec.classes[idx], "crowd": crowd,
            }
            if self.with_masks:
                full = rec.instance_masks()[idx]
                item["masks"] = masks_lib.crop_masks_to_boxes(full, rec.boxes[idx],
                                                              self.mask_crop_size)
            if proposals is not None:
                item["proposals"], item["proposal_scores"] = self._proposals_for(rec, proposals)
            out.append(item)
        if not out:
            raise ValueError(
                f"No images left for the pipeline: none of the {len(records)} images has a box "
                "to train on (difficult boxes are left out too) and skip_empty is on (the "
                "training default). Give the images boxes, or pass skip_empty=False."
            )
        if self.stats:
            logging.warning("InputPipeline(training=%s): %d images; %s", self.training, len(out),
                            ", ".join(f"{n} {r}" for r, n in sorted(self.stats.items())))
        else:
            logging.info("InputPipeline(training=%s): %d images", self.training, len(out))
        return out

    def _proposals_for(
        self, rec: DetectionRecord, proposals: Mapping[int, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        entry = proposals.get(rec.image_id)
        if entry is None:
            self._count("images without proposals")
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        boxes, scores = entry
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = (np.zeros(len(boxes), np.float32) if scores is None
                  else np.asarray(scores, np.float32).reshape(-1))
        finite = np.all(np.isfinite(boxes), axis=1) & np.isfinite(scores)
        boxes = np.clip(np.where(finite[:, None], boxes, 0), 0,
                        [rec.height, rec.width, rec.height, rec.width]).astype(np.float32)
        keep = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        self._count("NaN or empty proposals dropped", int((~keep).sum()))
        boxes, scores = boxes[keep], scores[keep]
        if entry[1] is not None and len(boxes) > self.max_proposals:
            order = np.argsort(-scores, kind="stable")[: self.max_proposals]
            boxes, scores = boxes[order], scores[order]
        return boxes[: self.max_proposals], scores[: self.max_proposals]

    def _to_tensors(self) -> dict[str, Any]:
        """Flat values + row splits per field, so the map function slices one record."""
        items = self.records

        def ragged(key: str, inner: tuple[int, ...], dtype: Any) -> tuple[tf.Tensor, tf.Tensor]:
            lengths = [len(it[key]) for it in items]
            splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            values = (np.concatenate([it[key] for it in items]) if sum(lengths)
                      else np.zeros((0, *inner), dtype))
            return tf.constant(values.astype(dtype)), tf.constant(splits)

        t: dict[str, Any] = {
            "path": tf.constant([it["path"] for it in items]),
            "image_id": tf.constant([it["image_id"] for it in items], tf.int64),
            "hw": tf.constant([it["hw"] for it in items], tf.int32),
            "boxes": ragged("boxes", (4,), np.float32),
            "classes": ragged("classes", (), np.int32),
            "crowd": ragged("crowd", (4,), np.float32),
        }
        s = self.mask_crop_size
        if self.with_masks:
            t["masks"] = ragged("masks", (s, s), np.uint8)
        if self.with_proposals:
            t["proposals"] = ragged("proposals", (4,), np.float32)
            t["proposal_scores"] = ragged("proposal_scores", (), np.float32)
        return t

    @property
    def num_images(self) -> int:
        """Images the pipeline serves per epoch (after training filters)."""
        return len(self.records)

    def _static_image_size(self) -> tuple[int, int] | None:
        """Padded (H, W) when it is the same for every image, else None."""
        if self.fixed_image_size is not None:
            return self.fixed_image_size
        sizes = {it["hw"] for it in self.records}
        if len(sizes) != 1 or self.scale_jitter is not None:
            return None
        h, w = next(iter(sizes))
        targets = self.scales if self.training else (max(self.scales),)
        out = set()
        for target in targets:
            if self.resize_rule == "torchvision":
                scale = min(target / min(h, w), self.max_size / max(h, w))
                rh, rw = max(math.floor(h * scale), 1), max(math.floor(w * scale), 1)
            else:
                scale = np.float32(min(np.float32(target) / np.float32(min(h, w)),
                                       np.float32(self.max_size) / np.float32(max(h, w))))
                rh = max(math.ceil(np.float32(h) * scale - 1e-3), 1)
                rw = max(math.ceil(np.float32(w) * scale - 1e-3), 1)
            d = self.size_divisor
            out.add((-(-rh // d) * d, -(-rw // d) * d))
        return next(iter(out)) if len(out) == 1 else None

    # ------------------------------------------------------------------ graph part

    def _read_run(self, run: tf.Tensor, batch: int) -> tuple[
            list[tuple[tf.Tensor, dict[str, tf.Tensor]]], tf.Tensor | None, tf.Tensor | None]:
        """Records ``run [batch]`` (indices) -> ``(read, ok, names)``: each record's decoded
        image ``[H, W, 3]`` uint8 and the fields :meth:`_augment` takes; ``ok [batch]`` bool,
        the file was whole and of its recorded size when read (it was checked at load time:
        this finds a file replaced or damaged since; a bad one is decoded as a 1x1 stand-in);
        ``names [batch]`` the files. (``ok`` and ``names`` are None where nothing can be bad:
        :class:`TFRecordPipeline` checks records as it parses them.)"""
        t = self._tensors

        def rows(key: str, index: tf.Tensor) -> tf.Tensor:
            values, splits = t[key]
            return values[splits[index]:splits[index + 1]]

        paths = tf.gather(t["path"], run)
        data = tf.stack([tf.io.read_file(paths[i]) for i in range(batch)])
        whole = image_bytes_ok(data)
        data = tf.where(whole, data, tf.constant(_STAND_IN_PNG))
        images = [decode_image(data[i]) for i in range(batch)]
        sizes = tf.stack([tf.shape(image)[:2] for image in images])
        ok = whole & tf.reduce_all(tf.equal(sizes, tf.gather(t["hw"], run)), axis=1)
        read = []
        for i, image in enumerate(images):
            index = run[i]
            fields = {"boxes": rows("boxes", index), "classes": rows("classes", index),
                      "crowd": rows("crowd", index), "image_id": t["image_id"][index]}
            if self.with_masks:
                fields["masks"] = rows("masks", index)
            if self.with_proposals:
                fields["proposals"] = rows("proposals", index)
                fields["proposal_scores"] = rows("proposal_scores", index)
            read.append((image, fields))
        return read, ok, paths

    def _landscape(self, items: tf.Tensor) -> tf.Tensor:
        """``[n]`` record indices -> ``[n]`` bool, the image is landscape (w >= h)."""
        hw = tf.gather(self._tensors["hw"], items)
        return hw[:, 1] >= hw[:, 0]

    def _element_seed(self, counter: tf.Tensor, pipeline_id: int) -> tf.Tensor:
        """``[2]`` stateless seed of element ``counter`` of input pipeline ``pipeline_id``."""
        return tf.stack([tf.constant(self.seed, tf.int64),
                         tf.cast(counter, tf.int64) * 1000 + pipeline_id])

    def _geometry(self, height: tf.Tensor, width: tf.Tensor,
                  seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Scale choice, jitter and flip of one ``height x width`` image: ``(out_shape [2]
        int32, scale [2] float32, flip bool)``."""
        if self.training and len(self.scales) > 1:
            pick = tf.random.stateless_uniform([], seed, 0, len(self.scales), dtype=tf.int32)
            target = tf.gather(tf.constant(self.scales, tf.float32), pick)
        else:
            target = tf.constant(float(max(self.scales)))
        jitter = None
        if self.training and self.scale_jitter is not None:
            lo, hi = self.scale_jitter
            jitter = tf.random.stateless_uniform([], seed + 1, lo, hi)
        out_shape, scale = resize_geometry(height, width, target, self.max_size,
                                           self.resize_rule, jitter)
        if self.random_flip:
            flip = tf.random.stateless_uniform([], seed + 2) < self.flip_probability
        else:
            flip = tf.constant(False)
        return out_shape, scale, flip

    def _augment(self, image: tf.Tensor, fields: Mapping[str, tf.Tensor],
                 geometry: tuple[tf.Tensor, tf.Tensor, tf.Tensor],
                 canvas: tf.Tensor) -> tuple[Any, Any]:
        """One decoded image and its annotations -> the network input and its targets.

        The one graph function of both pipelines (records in memory and TFRecords): flip,
        resize, normalise and pad to the batch's ``canvas``, and the boxes, masks and
        proposals moved with the image.

        Args:
            image: ``[H, W, 3]`` uint8, the original image.
            fields: ``boxes [M, 4]`` and ``crowd [Mc, 4]`` float32 original pixels,
                ``classes [M]`` int32, ``image_id`` int64; with masks ``masks [M, S, S]`` uint8
                box crops; with proposals ``proposals [P, 4]`` and ``proposal_scores [P]``.
            geometry: :meth:`_geometry` of this image.
            canvas: ``[2]`` int32, the padded size of the batch.
        """
        shape = tf.shape(image)
        orig_h, orig_w = shape[0], shape[1]
        out_shape, scale, flip = geometry
        image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        image = resize_normalize_pad(image, scale, out_shape, self.pixel_mean, self.pixel_std,
                                     self.size_divisor, self.resize_rule, canvas)
        targets = {
            "boxes": transform_boxes(fields["boxes"], scale, orig_w, flip),
            "classes": fields["classes"],
            "crowd_boxes": transform_boxes(fields["crowd"], scale, orig_w, flip),
            "image_shape": out_shape,
            "image_id": fields["image_id"],
            "scale": scale,
            "original_shape": tf.stack([orig_h, orig_w]),
            "flipped": flip,
        }
        if self.with_masks:
            masks = tf.cast(fields["masks"], tf.float32)
            targets["masks"] = tf.cond(flip, lambda: tf.reverse(masks, axis=[2]), lambda: masks)
        if self.with_proposals:
            targets["proposals"] = transform_boxes(fields["proposals"], scale, orig_w, flip)
            targets["proposal_scores"] = fields["proposal_scores"]
        return image, targets

    def _padded_shapes(self) -> tuple[dict[str, list[int]], dict[str, Any]]:
        """Per-image target shapes in a batch and their padding values."""
        m, s = self.max_instances, self.mask_crop_size
        shapes: dict[str, list[int]] = {
            "boxes": [m, 4], "classes": [m], "crowd_boxes": [self.max_crowd, 4],
            "image_shape": [2], "image_id": [], "scale": [2], "original_shape": [2],
            "flipped": [],
        }
        values: dict[str, Any] = {
            "boxes": -1.0, "classes": -1, "crowd_boxes": -1.0, "image_shape": 0,
            "image_id": 0, "scale": 0.0, "original_shape": 0, "flipped": False,
        }
        if self.with_masks:
            shapes["masks"] = [m, s, s]
            values["masks"] = 0.0
        if self.with_proposals:
            shapes["proposals"] = [self.max_proposals, 4]
            shapes["proposal_scores"] = [self.max_proposals]
            values["proposals"] = -1.0
            values["proposal_scores"] = -1.0
        return shapes, values

    def _load_batch(self, counter: tf.Tensor, run: Any, count: tf.Tensor, batch: int,
                    pipeline_id: int, static: tuple[int, int] | None
                    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """One run of :func:`group_runs` (``batch`` items, the first ``count`` real) -> the
        batch: every image read and augmented, padded to one canvas (the ``static`` size,
        :meth:`_static_image_size`, or the largest of the run rounded up to ``size_divisor``)
        and stacked; the targets padded to
        their fixed row counts. Element ``i`` of run ``counter`` draws its scale and flip from
        seed ``counter * batch + i``."""
        read, ok, names = self._read_run(run, batch)
        geometry = []
        for i, (image, _) in enumerate(read):
            shape = tf.shape(image)
            seed = self._element_seed(tf.cast(counter, tf.int64) * batch + i, pipeline_id)
            geometry.append(self._geometry(shape[0], shape[1], seed))
        if static is not None:
            canvas = tf.constant(static, tf.int32)
        else:
            d = self.size_divisor
            largest = tf.reduce_max(tf.stack([g[0] for g in geometry]), axis=0)
            canvas = (largest + d - 1) // d * d
        out = [self._augment(image, fields, g, canvas)
               for (image, fields), g in zip(read, geometry, strict=True)]
        images = tf.stack([image for image, _ in out])
        if static is not None:
            images = tf.ensure_shape(images, [batch, static[0], static[1], 3])
        shapes, values = self._padded_shapes()
        targets = {}
        for key, shape in shapes.items():
            rows = []
            for _, t in out:
                value = t[key]
                if shape:
                    pad = [[0, size - tf.shape(value)[d]] for d, size in enumerate(shape)]
                    value = tf.pad(value, pad,
                                   constant_values=tf.constant(values[key], value.dtype))
                rows.append(tf.ensure_shape(value, shape))
            targets[key] = tf.stack(rows)

        def all_good() -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
            if self.training:
                return images, targets
            # An evaluation's last run may be short.
            return images[:count], {k: v[:count] for k, v in targets.items()}

        if ok is None:
            return all_good()
        # A file damaged or replaced since loading: printed (to stderr, which the commands keep
        # when they hide TensorFlow's log lines), then left out of the batch in evaluation.
        # A training batch keeps its static size: the whole batch fails, and ignore_errors
        # skips it.
        real = tf.range(batch) < count  # not the copies that fill a short last run

        def drop_bad() -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
            message = tf.print(
                "WARNING: image file(s) unreadable, truncated or not of their recorded size "
                "since the dataset was loaded, skipped" + (" with their batch" if self.training
                                                           else "")
                + " (fix or remove them and reload the dataset):",
                tf.boolean_mask(names, ~ok & real),
                output_stream=sys.stderr)
            with tf.control_dependencies([message]):
                if self.training:
                    fail = tf.debugging.Assert(False, ["damaged image file in the batch"])
                    with tf.control_dependencies([fail]):
                        return tf.identity(images), targets
                keep = ok & real
                return (tf.boolean_mask(images, keep),
                        {k: tf.boolean_mask(v, keep) for k, v in targets.items()})

        return tf.cond(tf.reduce_all(ok), all_good, drop_bad)

    def dataset(
        self, input_context: tf.distribute.InputContext | None = None
    ) -> tf.data.Dataset:
        """The batched dataset; pass it to ``strategy.distribute_datasets_from_function``.

        Args:
            input_context: given by ``distribute_datasets_from_function``: records are sharded
                by ``input_pipeline_id`` and batches hold the per-replica batch size.

        Returns:
            A dataset of ``(images, targets)`` as described in the module docstring.
        """
        batch = self.batch_size
        pipeline_id, num_pipelines = 0, 1
        if input_context is not None:
            batch = input_context.get_per_replica_batch_size(self.batch_size)
            pipeline_id = input_context.input_pipeline_id
            num_pipelines = input_context.num_input_pipelines
        n = self.num_images
        ds = tf.data.Dataset.range(n)
        if num_pipelines > 1:
            if n < num_pipelines:
                raise ValueError(f"{n} images cannot be sharded over {num_pipelines} pipelines.")
            ds = ds.shard(num_pipelines, pipeline_id)
        if self.shuffle:
            buffer = self.shuffle_buffer or n
            ds = ds.shuffle(buffer, seed=self.seed + pipeline_id, reshuffle_each_iteration=True)
        if self.repeat:
            ds = ds.repeat()
        return self._batches(ds, batch, pipeline_id)

    def _batches(self, items: tf.data.Dataset, batch: int,
                 pipeline_id: int) -> tf.data.Dataset:
        """Items (what :meth:`_read_run` takes, not yet decoded) -> batches, prefetched; shared
        by both pipelines. Items are grouped into runs of ``batch`` (landscape and portrait
        apart, :func:`group_runs`) before anything is decoded, and each run is read,
        augmented and stacked by one map call. A run whose graph failed (an image corrupt
        inside its data, found only by decoding) is skipped and logged by ``ignore_errors``
        with the reason."""
        # Computed once here (for records in memory it goes over every record's size).
        static = self._static_image_size()
        grouped = self.group_by_aspect_ratio and static is None
        runs = group_runs(items, batch, self._landscape if grouped else None,
                          drop_remainder=self.training)
        # Evaluation keeps its order (its short batch last); training only with deterministic.
        ordered = self.deterministic or not self.training
        ds = runs.enumerate().map(
            graph_fn(lambda c, run: self._load_batch(c, run[0], run[1], batch, pipeline_id,
                                                     static)),
            num_parallel_calls=self.num_parallel, deterministic=ordered)
        ds = ds.ignore_errors(log_warning=True)
        options = tf.data.Options()
        options.deterministic = self.deterministic
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
        ds = ds.with_options(options)
        return ds.prefetch(AUTOTUNE)

    def read_problems(self) -> dict[str, int]:
        """Problems met while reading at run time, by reason (none for records in memory:
        their files were checked at load time; TFRecordPipeline counts its own)."""
        return {}
