"""RoIAlign layer on one feature map (C4 heads, Mask R-CNN C4, R-FCN's PS-RoIAlign aside).

Conventions: ``rois [B, R, 4]`` float32 ``[y1, x1, y2, x2]`` in input-image pixels; features
NHWC; ``spatial_scale = 1 / stride``. FPN pooling over several levels is
:class:`tf_rcnn.layers.poolers.MultiLevelRoIAlign`.

Shape shorthand: B batch, R RoIs per image, H/W feature size, C channels,
S pooled size (``S_h x S_w`` when not square).

The layers keep RoIs in float32 under mixed precision (``autocast=False`` by default): pixel
coordinates in float16 lose whole pixels beyond 2048.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.ops import roi_align as roi_align_ops


def size_config(output_size: int | Sequence[int]) -> int | list[int]:
    """Store an output size as an int or a ``[h, w]`` list (stable through JSON configs)."""
    roi_align_ops.pair_size(output_size)  # validates
    if isinstance(output_size, int):
        return output_size
    return [int(s) for s in output_size]


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RoIAlign(keras.layers.Layer):
    """RoIAlign (Mask R-CNN) on one feature map, see :func:`tf_rcnn.ops.roi_align.roi_align`.

    Args:
        output_size: ``S`` or ``(S_h, S_w)``.
        spatial_scale: ``1 / stride`` of the feature map.
        sampling_ratio: bilinear samples per bin axis (``>= 1``).
        aligned: ``True`` for ROIAlignV2 (half-pixel shift), ``False`` for the legacy variant.

    Call arguments:
        features: ``[B, H, W, C]`` feature map.
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.

    Returns:
        ``[B, R, S_h, S_w, C]`` pooled features.

    Attributes:
        multi_level: False: the layer pools ONE feature map (RoI heads pass ``features[0]``).

    Example:
        >>> layer = RoIAlign(7, spatial_scale=1 / 16)
        >>> layer(tf.zeros([2, 20, 20, 8]), tf.zeros([2, 5, 4])).shape
        TensorShape([2, 5, 7, 7, 8])
    """

    multi_level = False

    def __init__(
        self,
        output_size: int | Sequence[int],
        spatial_scale: float,
        sampling_ratio: int = roi_align_ops.DEFAULT_SAMPLING_RATIO,
        aligned: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        roi_align_ops.check_spatial_scale(spatial_scale, sampling_ratio)
        self.output_size = size_config(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def call(self, features: tf.Tensor, rois: tf.Tensor) -> tf.Tensor:
        return roi_align_ops.roi_align(
            features, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            output_size=self.output_size,
            spatial_scale=self.spatial_scale,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )
        return config
