"""Online hard example mining (Shrivastava, Gupta and Girshick, CVPR 2016) for any RoI head.

Instead of a sampled mini-batch, OHEM evaluates the loss of EVERY candidate RoI of an image (all
proposals plus the GT boxes, labelled by ``RoISampler.label``: foreground at IoU >= ``fg_iou``,
background in ``[bg_iou_low, fg_iou)``), suppresses near-duplicates by NMS on the loss
(``nms_threshold`` 0.7, Sec. 4 of the paper: overlapping hard RoIs would count one region
twice) and keeps the ``batch_size_per_image`` (128) with the highest loss. Only those enter the
loss, so every other RoI gets an exactly zero gradient. R-FCN trains this way (Dai et al. 2016,
Sec. 2, "Training"); ``RoIHeadsBase`` makes it available to every second stage
(``--config.model.roi_head.ohem=True``).

Losses keep the project normalisation (``ops.losses.rcnn_losses``): the class loss is the mean
over the selected RoIs, the box loss the foreground smooth-L1 sum divided by the selected count.

Conventions: boxes ``[y1, x1, y2, x2]`` float32 pixels; labels 0 background, 1..K, -1 ignored.
Shape shorthand: B batch, N candidates per image, S selected RoIs per image, K classes.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.ops import losses as loss_lib
from tf_rcnn.ops import nms as nms_ops


def _check_batch_size(batch_size: Any) -> int:
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size (model.roi_head.ohem_batch_size) must be an int >= 1, got "
                         f"{batch_size!r}.")
    return int(batch_size)


def ohem_select(
    rois: tf.Tensor,
    roi_losses: tf.Tensor,
    valid: tf.Tensor,
    batch_size: int,
    nms_threshold: float = 0.7,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The ``batch_size`` highest-loss RoIs per image after NMS by loss.

    RoIs are visited by decreasing loss; one is dropped when its IoU with an already kept RoI is
    above ``nms_threshold``; the first ``batch_size`` kept are selected. ``nms_threshold >= 1``
    is plain top-k by loss.

    Args:
        rois: ``[B, N, 4]`` float32 ``[y1, x1, y2, x2]`` pixels.
        roi_losses: ``[B, N]`` float32 per-RoI losses (no gradient is taken through them).
        valid: ``[B, N]`` bool, the RoIs that may be selected.
        batch_size: S, RoIs selected per image (128 in R-FCN).
        nms_threshold: IoU above which a lower-loss RoI is suppressed (0.7).

    Returns:
        ``(indices [B, S] int32 into N (0 on padding rows), selected [B, S] bool)``; an image
        with fewer than S candidates surviving NMS gets padding rows.
    """
    batch_size = _check_batch_size(batch_size)
    scores = tf.where(tf.cast(valid, tf.bool), tf.stop_gradient(roi_losses), float("-inf"))
    result = nms_ops.batched_nms(
        tf.stop_gradient(tf.cast(rois, tf.float32)), scores, max_output_size=batch_size,
        iou_threshold=min(float(nms_threshold), 1.0),
    )
    selected = result.indices >= 0
    return tf.where(selected, result.indices, 0), selected


@keras.saving.register_keras_serializable(package="tf_rcnn")
class OHEMSampler(keras.layers.Layer):
    """Selects the hardest labelled candidates and computes the R-CNN losses on them.

    Args:
        batch_size_per_image: RoIs back-propagated per image (128).
        nms_threshold: NMS IoU among RoIs sorted by loss before the selection (0.7; >= 1
            disables the NMS).
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments:
        class_logits: ``[B, N, K+1]`` predictions for ALL candidates.
        pred_deltas: ``[B, N, K+1|1, 4]``.
        labeled: ``RoISampler.label`` output for the same N rows (``rois``, ``labels``,
            ``valid``, ``matched_gt_indices``, ``box_targets``).
        box_beta: smooth-L1 beta of the box loss.

    Returns:
        ``(losses, training_rois)``: the ``rcnn_class_loss`` / ``rcnn_box_loss`` dict, and the
        selected rows of ``labeled`` (``[B, S, ...]``; ``labels`` -1 and ``valid`` False on
        padding rows), the same structure as ``RoISampler``'s output.
    """

    def __init__(self, batch_size_per_image: int = 128, nms_threshold: float = 0.7,
                 **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not nms_threshold >= 0.0:  # also rejects NaN
            raise ValueError(f"nms_threshold (model.roi_head.ohem_nms_threshold) must be >= 0 "
                             f"(>= 1 disables the NMS), got {nms_threshold!r}.")
        self.batch_size_per_image = _check_batch_size(batch_size_per_image)
        self.nms_threshold = float(nms_threshold)

    def call(self, class_logits, pred_deltas, labeled, box_beta=1.0):
        roi_losses = loss_lib.rcnn_per_roi_losses(class_logits, pred_deltas, labeled["labels"],
                                                  labeled["box_targets"], box_beta)
        indices, selected = ohem_select(labeled["rois"], roi_losses, labeled["valid"],
                                        self.batch_size_per_image, self.nms_threshold)
        rows = {key: tf.gather(value, indices, batch_dims=1)
                for key, value in labeled.items() if key != "valid"}
        rows["labels"] = tf.where(selected, rows["labels"], -1)
        rows["valid"] = selected
        # Only the selected rows enter the loss, so only they get a gradient.
        losses = loss_lib.rcnn_losses(
            tf.gather(class_logits, indices, batch_dims=1),
            tf.gather(pred_deltas, indices, batch_dims=1),
            rows["labels"], rows["box_targets"], selected, box_beta=box_beta,
        )
        return losses, rows

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(batch_size_per_image=self.batch_size_per_image,
                      nms_threshold=self.nms_threshold)
        return config
