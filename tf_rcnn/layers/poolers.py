"""MultiLevelRoIAlign: FPN RoI pooling, each RoI from its pyramid level (FPN, Lin et al. 2017).

Conventions: ``rois [B, R, 4]`` float32 ``[y1, x1, y2, x2]`` in input-image pixels; pyramid
features are lists of NHWC maps ordered fine to coarse with an explicit ``strides`` list.
The layer keeps RoIs in float32 under mixed precision (``autocast=False`` by default).

Shape shorthand: B batch, R RoIs per image, C channels, L levels, S pooled size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.layers.roi_align import size_config
from tf_rcnn.ops import poolers
from tf_rcnn.ops import roi_align as roi_align_ops


@keras.saving.register_keras_serializable(package="tf_rcnn")
class MultiLevelRoIAlign(keras.layers.Layer):
    """FPN RoIAlign: each RoI is pooled from its level ``floor(k0 + log2(sqrt(wh) / 224))``.

    See :func:`tf_rcnn.ops.poolers.multilevel_roi_align` (FPN, Lin et al. 2017, Eq. 1).

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

    Attributes:
        multi_level: True: RoI heads pass the whole list of feature maps.
    """

    multi_level = True

    def __init__(
        self,
        output_size: int | Sequence[int],
        strides: Sequence[int],
        sampling_ratio: int = roi_align_ops.DEFAULT_SAMPLING_RATIO,
        aligned: bool = True,
        canonical_level: int = 4,
        canonical_size: float = 224.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        poolers.levels_from_strides(list(strides))  # validates
        roi_align_ops.check_spatial_scale(1.0, sampling_ratio)
        self.output_size = size_config(output_size)
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
        return poolers.multilevel_roi_align(
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
