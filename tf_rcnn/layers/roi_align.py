"""RoIAlign layers: single feature map (C4 heads) and FPN multi-level pooling.

Conventions (DESIGN.md): ``rois [B, R, 4]`` float32 ``[y1, x1, y2, x2]`` in input-image pixels;
features NHWC; ``spatial_scale = 1 / stride``; pyramid features are lists ordered fine to coarse
with an explicit ``strides`` list.

Shape shorthand: B batch, R RoIs per image, H/W feature size, C channels, L levels,
S pooled size (``S_h x S_w`` when not square).

The layers keep RoIs in float32 under mixed precision (``autocast=False`` by default): pixel
coordinates in float16 lose whole pixels beyond 2048.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.ops import roi_ops


def _size_config(output_size: int | Sequence[int]) -> int | list[int]:
    """Store an output size as an int or a ``[h, w]`` list (stable through JSON configs)."""
    roi_ops._pair(output_size)  # validates
    if isinstance(output_size, int):
        return output_size
    return [int(s) for s in output_size]


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RoIAlign(keras.layers.Layer):
    """RoIAlign (Mask R-CNN) on one feature map, see :func:`tf_rcnn.ops.roi_ops.roi_align`.

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

    Example:
        >>> layer = RoIAlign(7, spatial_scale=1 / 16)
        >>> layer(tf.zeros([2, 20, 20, 8]), tf.zeros([2, 5, 4])).shape
        TensorShape([2, 5, 7, 7, 8])
    """

    def __init__(
        self,
        output_size: int | Sequence[int],
        spatial_scale: float,
        sampling_ratio: int = roi_ops.DEFAULT_SAMPLING_RATIO,
        aligned: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        roi_ops._check_scale(spatial_scale, sampling_ratio)
        self.output_size = _size_config(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def call(self, features: tf.Tensor, rois: tf.Tensor) -> tf.Tensor:
        return roi_ops.roi_align(
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


@keras.saving.register_keras_serializable(package="tf_rcnn")
class MultiLevelRoIAlign(keras.layers.Layer):
    """FPN RoIAlign: each RoI is pooled from its level ``floor(k0 + log2(sqrt(wh) / 224))``.

    See :func:`tf_rcnn.ops.roi_ops.multilevel_roi_align` (FPN, Lin et al. 2017, Eq. 1).

    Args:
        output_size: ``S`` or ``(S_h, S_w)``.
        strides: strides of the pyramid maps, fine to coarse, consecutive powers of two
            (e.g. ``[4, 8, 16, 32]`` for P2-P5).
        sampling_ratio: bilinear samples per bin axis (``>= 1``).
        aligned: ``True`` for ROIAlignV2, ``False`` for the legacy variant.
        canonical_level: ``k0``, the level a ``canonical_size`` box maps to (4).
        canonical_size: 224 (ImageNet pre-training size).

    Call arguments:
        features: list of ``L`` maps ``[B, H_l, W_l, C]`` ordered like ``strides``.
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.

    Returns:
        ``[B, R, S_h, S_w, C]`` pooled features.
    """

    def __init__(
        self,
        output_size: int | Sequence[int],
        strides: Sequence[int],
        sampling_ratio: int = roi_ops.DEFAULT_SAMPLING_RATIO,
        aligned: bool = True,
        canonical_level: int = 4,
        canonical_size: float = 224.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        roi_ops._levels_from_strides(list(strides))  # validates
        roi_ops._check_scale(1.0, sampling_ratio)
        self.output_size = _size_config(output_size)
        self.strides = [int(s) for s in strides]
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.canonical_level = int(canonical_level)
        self.canonical_size = float(canonical_size)

    def call(self, features: Sequence[tf.Tensor], rois: tf.Tensor) -> tf.Tensor:
        features = list(features)
        if len(features) != len(self.strides):
            raise ValueError(
                f"{self.name}: got {len(features)} feature maps for strides {self.strides}; pass "
                f"one map per stride, ordered fine to coarse."
            )
        return roi_ops.multilevel_roi_align(
            features,
            rois,
            self.output_size,
            self.strides,
            self.sampling_ratio,
            self.aligned,
            self.canonical_level,
            self.canonical_size,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            output_size=self.output_size,
            strides=list(self.strides),
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
            canonical_level=self.canonical_level,
            canonical_size=self.canonical_size,
        )
        return config
