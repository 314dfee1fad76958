"""Instance-mask resampling: Mask R-CNN training targets and pasting predictions into images.

The one mask paste rule of tf_rcnn: evaluation (``segm`` AP), ``predict`` pictures, export
clients and TensorBoard pictures all use :func:`paste_masks` (TF) or its NumPy wrapper
:func:`paste_image_masks`, so what is drawn is what is scored.

Conventions:
    Boxes are float32 ``[y1, x1, y2, x2]`` in pixels of the network input image.
    ``gt_masks [B, M, Hm, Wm]`` float32 in {0, 1} hold each instance's binary mask CROPPED TO
    ITS GT BOX and resized to ``Hm x Wm``; padded rows are all 0.

Pixel-centre convention (used by both functions, so they are inverse to each other):
    An ``n_h x n_w`` grid laid over a box ``[y1, x1, y2, x2]`` has cell ``(i, j)`` centred at
    ``(y1 + (i + 0.5) * h / n_h, x1 + (j + 0.5) * w / n_w)``; image pixel ``(py, px)`` is centred
    at ``(py + 0.5, px + 0.5)``. Resampling is bilinear between cell centres, with value 0
    outside the grid: half a cell beyond the last centre the value has fallen to half the edge
    value, so after thresholding at 0.5 a full mask ends exactly on its box border.

Shape shorthand:
    B batch, M GT instances per image, R RoIs per image, D detections per image,
    Hm/Wm stored GT mask size, S mask-head output size, H/W image height/width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

_EPS = 1e-6


def _resample(
    grids: tf.Tensor,
    grid_boxes: tf.Tensor,
    grid_indices: tf.Tensor,
    query_first: tf.Tensor,
    query_last: tf.Tensor,
    out_size: tf.Tensor | Sequence[int],
) -> tf.Tensor:
    """Bilinear samples of zero-extended grids at evenly spaced image positions.

    Args:
        grids: ``[N, gh, gw, 1]`` float32 grids (masks), each spread over a box.
        grid_boxes: ``[P, 4]`` the box each queried grid covers, ``[y1, x1, y2, x2]`` pixels.
        grid_indices: ``[P]`` int32 index into ``grids``.
        query_first: ``[P, 2]`` ``(y, x)`` image position of the first output sample.
        query_last: ``[P, 2]`` ``(y, x)`` image position of the last output sample.
        out_size: ``(n_h, n_w)`` output samples, evenly spaced from first to last.

    Returns:
        ``[P, n_h, n_w, 1]`` float32.
    """
    shape = tf.shape(grids)
    cells = tf.cast(tf.stack([shape[1], shape[2]]), tf.float32)  # (gh, gw)
    # Zero ring: positions within one cell outside the grid blend towards 0 (see module doc).
    padded = tf.pad(grids, [[0, 0], [1, 1], [1, 1], [0, 0]])
    box_lo = grid_boxes[:, :2]
    box_size = grid_boxes[:, 2:] - grid_boxes[:, :2]

    def to_normalised(position: tf.Tensor) -> tf.Tensor:
        # Image position -> cell-index coordinate -> padded index (+1) -> crop_and_resize's
        # corner-aligned normalised coordinate (divide by padded size - 1 = cells + 1).
        index = (position - box_lo) * cells / tf.maximum(box_size, _EPS) - 0.5
        return (index + 1.0) / (cells + 1.0)

    boxes = tf.concat([to_normalised(query_first), to_normalised(query_last)], axis=-1)
    return tf.image.crop_and_resize(
        padded, boxes, grid_indices, out_size, method="bilinear", extrapolation_value=0.0
    )


def mask_targets(
    gt_masks: tf.Tensor,
    gt_boxes: tf.Tensor,
    rois: tf.Tensor,
    matched_gt_indices: tf.Tensor,
    output_size: int = 28,
) -> tf.Tensor:
    """Mask R-CNN mask targets: each RoI's matched GT mask resampled into the RoI box.

    The stored mask covers its GT box; target cell ``(p, q)`` of a RoI reads the mask (bilinear,
    0 outside the GT box) at the cell's centre, then is thresholded at 0.5 (module docstring).

    Args:
        gt_masks: ``[B, M, Hm, Wm]`` float32 in {0, 1}, masks cropped to their GT boxes.
        gt_boxes: ``[B, M, 4]`` float32 ``[y1, x1, y2, x2]`` GT boxes in pixels (-1 padded).
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` RoIs in pixels.
        matched_gt_indices: ``[B, R]`` int32 index of each RoI's GT in ``[0, M)``; any other
            value (e.g. -1 for background RoIs) gives an all-zero target.
        output_size: ``S``, the mask head resolution (28 in Mask R-CNN).

    Returns:
        ``[B, R, S, S]`` float32 in {0, 1}.
    """
    if int(output_size) != output_size or output_size < 1:
        raise ValueError(f"output_size must be a positive int, got {output_size!r}.")
    gt_masks = tf.convert_to_tensor(gt_masks, tf.float32)
    gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
    rois = tf.convert_to_tensor(rois, tf.float32)
    matched_gt_indices = tf.cast(matched_gt_indices, tf.int32)
    if gt_masks.shape.rank is not None and gt_masks.shape.rank != 4:
        raise ValueError(
            f"gt_masks must be [B, M, Hm, Wm] (masks cropped to their GT boxes), got shape "
            f"{gt_masks.shape}."
        )
    size = int(output_size)
    shape = tf.shape(gt_masks)
    batch, num_gt, mask_h, mask_w = shape[0], shape[1], shape[2], shape[3]
    num_rois = tf.shape(rois)[1]

    # Append one all-zero mask per image (index M): unmatched RoIs and M = 0 read it safely.
    masks = tf.concat([gt_masks, tf.zeros([batch, 1, mask_h, mask_w])], axis=1)
    boxes = tf.concat([gt_boxes, tf.tile([[[0.0, 0.0, 1.0, 1.0]]], [batch, 1, 1])], axis=1)
    valid = tf.logical_and(matched_gt_indices >= 0, matched_gt_indices < num_gt)
    index = tf.where(valid, matched_gt_indices, num_gt)  # [B, R]
    matched_boxes = tf.gather(boxes, index, batch_dims=1)  # [B, R, 4]
    grid_indices = tf.range(batch)[:, None] * (num_gt + 1) + index  # into [B*(M+1)] masks

    roi_lo = rois[..., :2]
    roi_size = rois[..., 2:] - rois[..., :2]
    first = roi_lo + 0.5 * roi_size / size  # centre of cell (0, 0)
    last = roi_lo + (size - 0.5) * roi_size / size  # centre of cell (S-1, S-1)
    samples = _resample(
        tf.reshape(masks, [-1, mask_h, mask_w, 1]),  # [B*(M+1), Hm, Wm, 1]
        tf.reshape(matched_boxes, [-1, 4]),
        tf.reshape(grid_indices, [-1]),
        tf.reshape(first, [-1, 2]),
        tf.reshape(last, [-1, 2]),
        (size, size),
    )  # [B*R, S, S, 1]
    targets = tf.cast(samples >= 0.5, tf.float32)
    return tf.reshape(targets, [batch, num_rois, size, size])


PASTE_RULES = ("tf_rcnn", "torchvision")


def _torchvision_paste(masks: tf.Tensor, boxes: tf.Tensor, image_size: tf.Tensor) -> tf.Tensor:
    """torchvision's ``paste_masks_in_image`` for ``masks [N, S, S]``, ``boxes [N, 4]`` yxyx.

    The ``S x S`` mask is zero-padded to ``(S + 2) x (S + 2)`` and its box widened by
    ``(S + 2) / S`` about its centre; the widened box is truncated to integers ``(y1, x1, y2,
    x2)`` (towards zero), the padded mask resized bilinearly (half-pixel centres, edge values)
    onto the ``(y2 - y1 + 1) x (x2 - x1 + 1)`` pixels ``y1..y2, x1..x2`` and written there,
    clipped to the image; every other pixel is 0. Returns ``[N, H, W]`` float32 probabilities.
    """
    size = tf.cast(tf.shape(masks)[1], tf.float32)  # S (square masks)
    scale = (size + 2.0) / size
    center = (boxes[:, :2] + boxes[:, 2:]) * 0.5  # [N, 2] (y, x)
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
    lo = tf.cast(tf.cast(center - half, tf.int64), tf.float32)  # truncation, like .to(int64)
    hi = tf.cast(tf.cast(center + half, tf.int64), tf.float32)
    extent = tf.maximum(hi - lo + 1.0, 1.0)  # [N, 2] pixels covered (h, w)
    padded = tf.pad(masks[..., tf.newaxis], [[0, 0], [1, 1], [1, 1], [0, 0]])  # zero border
    cells = size + 2.0
    # Pixel p of the image reads the padded mask at (p - lo + 0.5) * cells / extent - 0.5 (a
    # linear function of p, so one crop_and_resize over the whole image). PyTorch clamps source
    # positions to the grid; the padded grid's border is 0, and an extra replicated ring gives
    # samples just past it that same 0 (farther ones get the extrapolation value 0).
    ring = tf.pad(padded, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    image_f = tf.cast(image_size, tf.float32)

    def index(position: tf.Tensor) -> tf.Tensor:
        grid = (position - lo + 0.5) * cells / extent - 0.5
        return (grid + 1.0) / (cells + 1.0)  # into the ring, corner-aligned normalised

    first = tf.zeros_like(lo)
    last = tf.broadcast_to(image_f - 1.0, tf.shape(lo))
    crop_boxes = tf.concat([index(first), index(last)], axis=-1)
    num = tf.shape(masks)[0]
    out = tf.image.crop_and_resize(ring, crop_boxes, tf.range(num), image_size,
                                   method="bilinear", extrapolation_value=0.0)[..., 0]
    rows = tf.range(image_size[0], dtype=tf.float32)
    cols = tf.range(image_size[1], dtype=tf.float32)
    inside_y = (rows[None, :] >= lo[:, :1]) & (rows[None, :] <= hi[:, :1])  # [N, H]
    inside_x = (cols[None, :] >= lo[:, 1:]) & (cols[None, :] <= hi[:, 1:])  # [N, W]
    inside = inside_y[:, :, None] & inside_x[:, None, :]
    return tf.where(inside, out, 0.0)


def paste_masks(
    masks: tf.Tensor,
    boxes: tf.Tensor,
    image_size: Sequence[int] | tf.Tensor,
    threshold: float | None = 0.5,
    rule: str = "tf_rcnn",
) -> tf.Tensor:
    """Paste box-relative mask predictions into full-image masks.

    ``rule="tf_rcnn"`` (the inverse of the training target crop): image pixel ``(py, px)``
    reads the box's ``S x S`` mask bilinearly at its own centre ``(py + 0.5, px + 0.5)``, with
    0 outside the box (module docstring), so a full mask covers exactly the pixels whose centres
    lie inside the box; binarised at ``>= threshold``. ``rule="torchvision"``: torchvision's
    ``paste_masks_in_image`` (:func:`_torchvision_paste`), binarised at ``> threshold`` as its
    COCO evaluation does.

    Args:
        masks: ``[B, D, S, S]`` float mask probabilities for each detection.
        boxes: ``[B, D, 4]`` float32 ``[y1, x1, y2, x2]`` detection boxes in image pixels.
        image_size: ``(H, W)`` of the output masks: Python ints or an int32 ``[2]`` tensor.
        threshold: binarise and return uint8 {0, 1} (the dtype COCO RLE encoding wants);
            ``None`` returns the float32 resampled probabilities.
        rule: ``"tf_rcnn"`` or ``"torchvision"`` (the model's ``mask_head.paste_rule``).

    Returns:
        ``[B, D, H, W]`` uint8 (with ``threshold``) or float32 (without).
    """
    if rule not in PASTE_RULES:
        raise ValueError(f"Unknown mask paste rule {rule!r} (model.mask_head.paste_rule); "
                         f"choose one of {PASTE_RULES}.")
    masks = tf.convert_to_tensor(masks, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    if masks.shape.rank is not None and masks.shape.rank != 4:
        raise ValueError(f"masks must be [B, D, S, S] probabilities, got shape {masks.shape}.")
    image_size = tf.cast(tf.convert_to_tensor(image_size), tf.int32)
    if image_size.shape.rank is not None and image_size.shape != (2,):
        raise ValueError(
            f"image_size must be (height, width) for the whole batch, got shape "
            f"{image_size.shape}. Paste per image size, then crop each image to its own shape."
        )
    shape = tf.shape(masks)
    batch, num_dets, mask_h, mask_w = shape[0], shape[1], shape[2], shape[3]
    flat_boxes = tf.reshape(boxes, [-1, 4])
    num = tf.shape(flat_boxes)[0]
    image_f = tf.cast(image_size, tf.float32)
    first = tf.fill([num, 2], 0.5)  # centre of pixel (0, 0)
    last = tf.broadcast_to(image_f - 0.5, [num, 2])  # centre of pixel (H-1, W-1)
    if rule == "torchvision":
        pasted = _torchvision_paste(tf.reshape(masks, [-1, mask_h, mask_w]), flat_boxes,
                                    image_size)  # [B*D, H, W]
    else:
        pasted = _resample(
            tf.reshape(masks, [-1, mask_h, mask_w, 1]),
            flat_boxes,
            tf.range(num),
            first,
            last,
            image_size,
        )  # [B*D, H, W, 1]
    pasted = tf.reshape(pasted, tf.concat([[batch, num_dets], image_size], axis=0))
    static_hw = tf.get_static_value(image_size)
    if static_hw is not None:
        pasted = tf.ensure_shape(pasted, [None, None, int(static_hw[0]), int(static_hw[1])])
    if threshold is None:
        return pasted
    keep = pasted > threshold if rule == "torchvision" else pasted >= threshold
    return tf.cast(keep, tf.uint8)


def paste_image_masks(masks: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int],
                      threshold: float = 0.5, rule: str = "tf_rcnn") -> np.ndarray:
    """One image's box-relative masks -> binary full-image masks (:func:`paste_masks`).

    Args:
        masks: ``[D, Sm, Sm]`` float probabilities (the model's ``detection_masks`` rows).
        boxes: ``[D, 4]`` float ``[y1, x1, y2, x2]`` in the pixels of the target image.
        image_size: ``(H, W)`` of the target image.
        threshold: foreground probability (see :func:`paste_masks` for the comparison).
        rule: ``"tf_rcnn"`` or ``"torchvision"``.

    Returns:
        ``[D, H, W]`` uint8 in {0, 1}.
    """
    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if masks.ndim != 3 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"masks must be [D, Sm, Sm] with D = {boxes.shape[0]} (rows of boxes); got "
            f"{masks.shape}."
        )
    height, width = int(image_size[0]), int(image_size[1])
    if boxes.shape[0] == 0:
        return np.zeros([0, height, width], np.uint8)
    pasted = paste_masks(masks[np.newaxis], boxes[np.newaxis], (height, width),
                         threshold=threshold, rule=rule)
    return pasted.numpy()[0]
