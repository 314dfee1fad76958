"""PSRoIPooling layer: R-FCN position-sensitive RoI pooling with optional voting.

Conventions: ``rois [B, R, 4]`` float32 ``[y1, x1, y2, x2]`` in input-image pixels;
score maps NHWC with ``k*k*C`` channels, bin ``(i, j)`` of output channel ``c`` reading channel
``(c*k + i)*k + j`` (R-FCN / torchvision layout); ``spatial_scale = 1 / stride``.

Shape shorthand: B batch, R RoIs per image, k position-sensitive grid, C output channels
(e.g. K + 1 classes, or 4 box deltas).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.ops import ps_roi_pool as ps_ops
from tf_rcnn.ops import roi_align as roi_align_ops

_MODES = ("pool", "align")


@keras.saving.register_keras_serializable(package="tf_rcnn")
class PSRoIPooling(keras.layers.Layer):
    """Position-sensitive RoI pooling (R-FCN, Dai et al. 2016, Eq. 1) and voting.

    Args:
        k: position-sensitive grid size (7 in R-FCN).
        spatial_scale: ``1 / stride`` of the score maps.
        mode: ``"pool"`` averages quantised bins (:func:`~tf_rcnn.ops.ps_roi_pool.ps_roi_pool`, the
            paper); ``"align"`` averages bilinear samples
            (:func:`~tf_rcnn.ops.ps_roi_pool.ps_roi_align`).
        sampling_ratio: samples per bin axis for ``mode="align"``.
        vote: average the ``k x k`` bins into one score per channel (R-FCN voting).

    Call arguments:
        score_maps: ``[B, H, W, k*k*C]`` position-sensitive score maps.
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.

    Returns:
        ``[B, R, C]`` when ``vote`` else ``[B, R, k, k, C]``.
    """

    def __init__(
        self,
        k: int,
        spatial_scale: float,
        mode: str = "pool",
        sampling_ratio: int = roi_align_ops.DEFAULT_SAMPLING_RATIO,
        vote: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
        if int(k) != k or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}.")
        roi_align_ops.check_spatial_scale(spatial_scale, sampling_ratio)
        self.k = int(k)
        self.spatial_scale = float(spatial_scale)
        self.mode = mode
        self.sampling_ratio = int(sampling_ratio)
        self.vote = bool(vote)

    def call(self, score_maps: tf.Tensor, rois: tf.Tensor) -> tf.Tensor:
        if self.mode == "align":
            pooled = ps_ops.ps_roi_align(
                score_maps, rois, self.k, self.spatial_scale, self.sampling_ratio
            )
        else:
            pooled = ps_ops.ps_roi_pool(score_maps, rois, self.k, self.spatial_scale)
        return ps_ops.vote(pooled) if self.vote else pooled

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            k=self.k,
            spatial_scale=self.spatial_scale,
            mode=self.mode,
            sampling_ratio=self.sampling_ratio,
            vote=self.vote,
        )
        return config
