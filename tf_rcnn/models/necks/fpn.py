"""Feature Pyramid Network neck (Lin et al., 2017, "Feature Pyramid Networks for Object Detection").

Conventions:
    Feature maps are NHWC float32. Inputs are a dict backbone stage name -> map (e.g. ``"C2"``..
    ``"C5"``) with strides given explicitly; outputs are a dict ``"P<l>"`` -> map where ``l`` is
    ``log2(stride)`` (``"P2"`` stride 4 ... ``"P5"`` stride 32, ``"P6"`` stride 64), ordered fine
    to coarse, each with ``out_channels`` channels.

Shape shorthand:
    B batch, H_l/W_l height/width of level l, C_l backbone channels of level l, D out_channels.

Odd sizes: a coarse map of ``h`` rows upsampled by 2 has ``2h`` rows, while the finer lateral map
has ``H`` rows with ``H`` in {2h - 1, 2h} for "same"-padded stride-2 convs (``h = ceil(H / 2)``)
or ``H = 2h + 1`` for floor-style downsampling. The upsampled map is therefore cropped (or
padded by repeating its last row/column) to the lateral's dynamic shape, which keeps pixel
``(i, j)`` of the coarse map aligned with pixels ``(2i..2i+1, 2j..2j+1)`` of the fine one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.layers.normalization import check_norm, make_norm

_TOP_BLOCKS = ("maxpool", None)


def upsample_to(coarse: tf.Tensor, target_hw: tf.Tensor) -> tf.Tensor:
    """Nearest-neighbour 2x upsampling of ``coarse`` cropped/padded to ``target_hw``.

    Args:
        coarse: ``[B, h, w, C]`` float32 map.
        target_hw: ``[2]`` int32 ``(H, W)`` of the finer map, dynamic.

    Returns:
        ``[B, H, W, C]`` float32 where output pixel ``(y, x)`` is ``coarse[min(y // 2, h - 1),
        min(x // 2, w - 1)]``.
    """
    # [B, h, w, C] -> [B, 2h, w, C] -> [B, 2h, 2w, C]: each pixel becomes a 2x2 block.
    up = tf.repeat(tf.repeat(coarse, 2, axis=1), 2, axis=2)
    shape = tf.shape(up)
    pad_h = tf.maximum(target_hw[0] - shape[1], 0)
    pad_w = tf.maximum(target_hw[1] - shape[2], 0)
    # Extra rows/columns (only for floor-style sizes) repeat the last ones ("SYMMETRIC" pad of
    # width 1 copies the edge). No-op when the padding is zero.
    up = tf.pad(up, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="SYMMETRIC")
    return up[:, : target_hw[0], : target_hw[1], :]


@keras.saving.register_keras_serializable(package="tf_rcnn")
class FPN(keras.layers.Layer):
    """Lateral 1x1 convs, a nearest-neighbour top-down path and 3x3 output convs.

    ``P_l = conv3x3(lateral_l(C_l) + upsample(top-down_{l+1}))`` from the coarsest level down;
    with ``top_block="maxpool"`` an extra ``P_{L+1}`` is ``P_L`` subsampled with stride 2 (max
    pooling with a 1x1 window, as in the FPN paper's RPN), used only by the RPN.

    Convs use a fan-in uniform init (``lecun_uniform``, the "Xavier fill" of Caffe2/Detectron)
    and zero bias. With ``norm`` every conv is followed by a norm layer instead of a bias
    (torchvision's ``*_fpn_v2`` models: BatchNorm, no activation).

    Args:
        in_features: backbone stage names, fine to coarse (e.g. ``("C2", "C3", "C4", "C5")``).
        in_strides: stride of each input, fine to coarse, powers of two, each twice the previous.
        out_channels: channels D of every output.
        top_block: ``"maxpool"`` adds ``P_{L+1}`` (``P6`` for C2..C5); ``None`` adds nothing.
        norm: None, or ``"frozen_bn"`` / ``"bn"`` / ``"sync_bn"`` after every conv.
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments:
        features: dict containing at least ``in_features``, each ``[B, H_l, W_l, C_l]`` float32.

    Returns:
        dict ``{"P2": [B, H_2, W_2, D], ..., "P6": [B, ceil(H_5 / 2), ceil(W_5 / 2), D]}``
        in fine-to-coarse insertion order.
    """

    def __init__(
        self,
        in_features: Sequence[str] = ("C2", "C3", "C4", "C5"),
        in_strides: Sequence[int] = (4, 8, 16, 32),
        out_channels: int = 256,
        top_block: str | None = "maxpool",
        norm: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_norm(norm, "norm (model.neck.norm)")
        in_features = tuple(in_features)
        in_strides = tuple(int(s) for s in in_strides)
        if not in_features or len(in_features) != len(in_strides):
            raise ValueError(
                f"in_features {in_features} and in_strides {in_strides} must be non-empty and "
                "of equal length (one stride per input feature)."
            )
        for fine, coarse in zip(in_strides[:-1], in_strides[1:], strict=True):
            if coarse != 2 * fine:
                raise ValueError(
                    f"in_strides must double from level to level (fine to coarse), got "
                    f"{in_strides}."
                )
        if in_strides[0] < 1 or 2 ** round(math.log2(in_strides[0])) != in_strides[0]:
            raise ValueError(f"in_strides must be powers of two, got {in_strides}.")
        if top_block not in _TOP_BLOCKS:
            raise ValueError(f"top_block must be one of {_TOP_BLOCKS}, got {top_block!r}.")
        if out_channels <= 0:
            raise ValueError(f"out_channels must be positive, got {out_channels}.")
        self.in_features = in_features
        self.in_strides = in_strides
        self.out_channels = out_channels
        self.top_block = top_block
        self.norm = norm
        self._levels = [round(math.log2(s)) for s in in_strides]
        init = {"kernel_initializer": "lecun_uniform", "use_bias": norm is None}
        self.lateral_convs = [
            keras.layers.Conv2D(out_channels, 1, name=f"fpn_lateral{lvl}", **init)
            for lvl in self._levels
        ]
        self.output_convs = [
            keras.layers.Conv2D(out_channels, 3, padding="same", name=f"fpn_output{lvl}", **init)
            for lvl in self._levels
        ]
        # Without a norm these are identities (no layers, so no change to the weights).
        self.lateral_norms = [None] * len(self._levels)
        self.output_norms = [None] * len(self._levels)
        if norm is not None:
            self.lateral_norms = [make_norm(norm, f"fpn_lateral{lvl}_norm")
                                  for lvl in self._levels]
            self.output_norms = [make_norm(norm, f"fpn_output{lvl}_norm")
                                 for lvl in self._levels]

    @property
    def output_strides(self) -> dict[str, int]:
        """``"P<l>"`` -> stride, fine to coarse."""
        strides = {f"P{lvl}": s for lvl, s in zip(self._levels, self.in_strides, strict=True)}
        if self.top_block == "maxpool":
            strides[f"P{self._levels[-1] + 1}"] = 2 * self.in_strides[-1]
        return strides

    @property
    def output_channels(self) -> dict[str, int]:
        """``"P<l>"`` -> channels (all ``out_channels``)."""
        return dict.fromkeys(self.output_strides, self.out_channels)

    def build(self, input_shape: Mapping[str, tuple]) -> None:
        missing = [name for name in self.in_features if name not in input_shape]
        if missing:
            raise ValueError(
                f"FPN expects input features {self.in_features}; missing {missing} among "
                f"{sorted(input_shape)}. Check the backbone stages and FPN in_features."
            )
        for i, name in enumerate(self.in_features):
            channels = input_shape[name][-1]
            self.lateral_convs[i].build((None, None, None, channels))
            self.output_convs[i].build((None, None, None, self.out_channels))
            for norm in (self.lateral_norms[i], self.output_norms[i]):
                if norm is not None:
                    norm.build((None, None, None, self.out_channels))

    @staticmethod
    def _conv(conv: keras.layers.Layer, norm: keras.layers.Layer | None, x: tf.Tensor,
              training: bool | None) -> tf.Tensor:
        x = conv(x)
        return x if norm is None else norm(x, training=training)

    def call(self, features: Mapping[str, tf.Tensor],
             training: bool | None = None) -> dict[str, tf.Tensor]:
        inputs = [features[name] for name in self.in_features]
        results = [None] * len(inputs)
        last = len(inputs) - 1
        # Top-down: start at the coarsest level and add upsampled context level by level.
        top_down = self._conv(self.lateral_convs[last], self.lateral_norms[last], inputs[last],
                              training)
        results[last] = self._conv(self.output_convs[last], self.output_norms[last], top_down,
                                   training)
        for i in range(last - 1, -1, -1):
            lateral = self._conv(self.lateral_convs[i], self.lateral_norms[i], inputs[i],
                                 training)
            top_down = lateral + upsample_to(top_down, tf.shape(lateral)[1:3])
            results[i] = self._conv(self.output_convs[i], self.output_norms[i], top_down,
                                    training)
        outputs = {f"P{lvl}": r for lvl, r in zip(self._levels, results, strict=True)}
        if self.top_block == "maxpool":
            # Max pooling with a 1x1 window and stride 2 is plain subsampling: [B,H,W,D] ->
            # [B,ceil(H/2),ceil(W/2),D].
            outputs[f"P{self._levels[-1] + 1}"] = results[-1][:, ::2, ::2, :]
        return outputs

    def compute_output_shape(self, input_shape: Mapping[str, tuple]) -> dict[str, tuple]:
        shapes = {}
        for name, lvl in zip(self.in_features, self._levels, strict=True):
            s = input_shape[name]
            shapes[f"P{lvl}"] = (s[0], s[1], s[2], self.out_channels)
        if self.top_block == "maxpool":
            s = input_shape[self.in_features[-1]]
            half = lambda d: None if d is None else (d + 1) // 2
            shapes[f"P{self._levels[-1] + 1}"] = (s[0], half(s[1]), half(s[2]), self.out_channels)
        return shapes

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "in_features": list(self.in_features),
                "in_strides": list(self.in_strides),
                "out_channels": self.out_channels,
                "top_block": self.top_block,
                "norm": self.norm,
            }
        )
        return config
