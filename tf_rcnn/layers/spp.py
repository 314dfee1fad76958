"""SpatialPyramidPooling layer: SPPnet RoI pooling over several grid sizes.

Conventions: ``rois [B, R, 4]`` float32 ``[y1, x1, y2, x2]`` in input-image pixels;
features NHWC with static H and W; ``spatial_scale = 1 / stride``.

Shape shorthand: B batch, R RoIs per image, C channels, n one pyramid grid size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.ops import roi_align as roi_align_ops
from tf_rcnn.ops import roi_pool as roi_pool_ops


@keras.saving.register_keras_serializable(package="tf_rcnn")
class SpatialPyramidPooling(keras.layers.Layer):
    """SPPnet (He et al. 2014) spatial pyramid pooling of each RoI.

    Each RoI is max pooled over an ``n x n`` grid for every ``n`` in ``pyramid_levels``, with the
    bins of :func:`tf_rcnn.ops.roi_pool.roi_pool`; each grid is flattened row-major with channels
    last (``[n, n, C] -> [n*n*C]``) and the grids are concatenated in ``pyramid_levels`` order.
    All grids share one range-maximum table of the feature map.

    Args:
        pyramid_levels: grid sizes, e.g. ``(1, 2, 4)`` (SPPnet detection uses ``(1, 2, 3, 6)``).
        spatial_scale: ``1 / stride`` of the feature map (1/16 for conv5).

    Call arguments:
        features: ``[B, H, W, C]`` feature map; ``H`` and ``W`` must be static.
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.

    Returns:
        ``[B, R, C * sum(n * n)]`` pooled features.
    """

    multi_level = False  # pools ONE feature map

    def __init__(
        self,
        pyramid_levels: Sequence[int] = (1, 2, 4),
        spatial_scale: float = 1.0 / 16.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        levels = [int(n) for n in pyramid_levels]
        if not levels or min(levels) < 1:
            raise ValueError(
                f"pyramid_levels must be a non-empty list of grid sizes >= 1, got "
                f"{pyramid_levels!r}."
            )
        roi_align_ops.check_spatial_scale(spatial_scale)
        self.pyramid_levels = levels
        self.spatial_scale = float(spatial_scale)

    def call(self, features: tf.Tensor, rois: tf.Tensor) -> tf.Tensor:
        pooled = roi_pool_ops.roi_pool_pyramid(
            features, rois, self.pyramid_levels, self.spatial_scale
        )
        channels = tf.shape(features)[3]
        batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
        # Each [B, R, n, n, C] -> [B, R, n*n*C]; then concatenate along the last axis.
        flat = [
            tf.reshape(p, [batch, num_rois, n * n * channels])
            for p, n in zip(pooled, self.pyramid_levels, strict=True)
        ]
        out = tf.concat(flat, axis=-1)
        static_c = features.shape[-1]
        if static_c is not None:
            total = int(static_c) * sum(n * n for n in self.pyramid_levels)
            out = tf.ensure_shape(out, [None, None, total])
        return out

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(pyramid_levels=list(self.pyramid_levels), spatial_scale=self.spatial_scale)
        return config
