"""RoIPool layer: Fast R-CNN RoI max pooling over quantised bins.

Conventions: ``rois [B, R, 4]`` float32 ``[y1, x1, y2, x2]`` in input-image pixels;
features NHWC with static H and W; ``spatial_scale = 1 / stride``.

Shape shorthand: B batch, R RoIs per image, C channels, S pooled size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.layers.roi_align import size_config
from tf_rcnn.ops import roi_align as roi_align_ops
from tf_rcnn.ops import roi_pool as roi_pool_ops


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RoIPool(keras.layers.Layer):
    """Fast R-CNN RoI max pooling, see :func:`tf_rcnn.ops.roi_pool.roi_pool`.

    Args:
        output_size: ``S`` or ``(S_h, S_w)`` (7 for VGG16 Fast R-CNN).
        spatial_scale: ``1 / stride`` of the feature map (1/16 for VGG16 conv5).

    Call arguments:
        features: ``[B, H, W, C]`` feature map; ``H`` and ``W`` must be static.
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.

    Returns:
        ``[B, R, S_h, S_w, C]`` max-pooled features (0 for bins outside the map).
    """

    multi_level = False  # pools ONE feature map

    def __init__(
        self, output_size: int | Sequence[int], spatial_scale: float, **kwargs: Any
    ) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        roi_align_ops.check_spatial_scale(spatial_scale)
        self.output_size = size_config(output_size)
        self.spatial_scale = float(spatial_scale)

    def call(self, features: tf.Tensor, rois: tf.Tensor) -> tf.Tensor:
        return roi_pool_ops.roi_pool(features, rois, self.output_size, self.spatial_scale)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(output_size=self.output_size, spatial_scale=self.spatial_scale)
        return config
