"""RFCNHead: position-sensitive score maps and PS-RoI pooling with voting (Dai et al. 2016).

R-FCN moves almost all of the second stage's computation before the RoIs: a 1x1 conv (ReLU)
reduces the stride-16 features to ``channels`` (1024 in the paper), and two sibling 1x1 convs give
``k*k*(K+1)`` position-sensitive class score maps and ``k*k*4`` class-agnostic box maps (Sec. 2,
"Backbone architecture" and "Position-sensitive score maps"). Per RoI only ``PSRoIPooling``
(each bin of the ``k x k`` grid reads its own group of maps, Eq. 1) and voting (mean over the
bins, Eq. 2) remain, giving K+1 class logits and 4 box deltas.

Conventions (docs/design.md):
    Boxes ``[y1, x1, y2, x2]`` float32 in input-image pixels; classes 0 background, 1..K.
    Channel of bin ``(i, j)`` for output ``c`` is ``(c*k + i)*k + j`` in each map group (the
    R-FCN / torchvision layout of ``ops.ps_roi_pool``). Concatenating the class maps and
    the box maps along channels keeps that layout with ``c`` running over K+1 classes and then
    the 4 deltas, so one pooling call serves both.
    Deltas ``(dy, dx, dh, dw)`` use the R-CNN coder weights (10, 10, 5, 5).

Shape shorthand: B batch, H/W feature height/width, R RoIs per image, K classes,
k position-sensitive grid, D reduced channels.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.layers.ps_roi_pooling import PSRoIPooling
from tf_rcnn.ops import roi_align as roi_align_ops

NUM_BOX_DELTAS = 4


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RFCNHead(keras.layers.Layer):
    """R-FCN head: reduce conv, sibling PS score/box convs, PS-RoI pooling and voting.

    Use :meth:`score_maps` once per image batch and :meth:`pool` for any number of RoI sets
    (the RoI heads do both so the maps are never recomputed); ``call`` chains them.

    Args:
        num_classes: K object classes (background excluded).
        k: position-sensitive grid size (7 in the paper, 3 in its illustrations).
        channels: output channels of the 1x1 reduce conv (1024 in the paper).
        spatial_scale: ``1 / stride`` of the input features (1/16 for dilated ResNet C5).
        mode: ``"pool"`` averages quantised bins (the paper's Eq. 1); ``"align"`` averages
            bilinear samples (PS-RoIAlign).
        sampling_ratio: samples per bin axis for ``mode="align"``.
        **kwargs: forwarded to ``keras.layers.Layer`` (e.g. ``name="rfcn_head"``).

    Call arguments:
        features: ``[B, H, W, Cin]`` float32 feature map at ``1 / spatial_scale`` stride.
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.

    Returns:
        ``(class_logits [B, R, K+1], pred_deltas [B, R, 1, 4])``; the deltas are
        class-agnostic (one group), which ``rcnn_losses`` and ``DetectionDecoder`` accept.

    Example:
        >>> head = RFCNHead(num_classes=3, k=3, channels=32, spatial_scale=1 / 16)
        >>> features = tf.zeros([2, 8, 8, 64])
        >>> rois = tf.constant([[[0.0, 0.0, 64.0, 64.0]]] * 2)
        >>> logits, deltas = head(features, rois)
        >>> tuple(logits.shape), tuple(deltas.shape)
        ((2, 1, 4), (2, 1, 1, 4))
    """

    def __init__(
        self,
        num_classes: int,
        k: int = 7,
        channels: int = 1024,
        spatial_scale: float = 1.0 / 16.0,
        mode: str = "pool",
        sampling_ratio: int = roi_align_ops.DEFAULT_SAMPLING_RATIO,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1 (background excluded), got "
                             f"{num_classes!r}.")
        if int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a positive int (1024 in R-FCN), got {channels!r}.")
        # PSRoIPooling validates k, mode, spatial_scale and sampling_ratio.
        self.ps_pool = PSRoIPooling(
            k=k, spatial_scale=spatial_scale, mode=mode, sampling_ratio=sampling_ratio,
            vote=True, name="ps_roi_pooling",
        )
        self.num_classes = int(num_classes)
        self.k = int(k)
        self.channels = int(channels)
        self.spatial_scale = float(spatial_scale)
        self.mode = mode
        self.sampling_ratio = int(sampling_ratio)
        kk = self.k * self.k
        self.reduce_conv = keras.layers.Conv2D(
            self.channels, 1, activation="relu", kernel_initializer="he_normal",
            name="reduce_conv",
        )
        # Small initial scores/deltas (Fast R-CNN's std 0.01 / 0.001 for its new fc layers).
        self.cls_conv = keras.layers.Conv2D(
            kk * (self.num_classes + 1), 1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="cls_score_maps",
        )
        self.box_conv = keras.layers.Conv2D(
            kk * NUM_BOX_DELTAS, 1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="box_score_maps",
        )

    def build(self, input_shape: tuple) -> None:
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError("RFCNHead needs the channel count of its input features to build.")
        self.reduce_conv.build((None, None, None, in_channels))
        self.cls_conv.build((None, None, None, self.channels))
        self.box_conv.build((None, None, None, self.channels))
        self.built = True

    def score_maps(self, features: tf.Tensor) -> tf.Tensor:
        """Per-image work: ``[B, H, W, Cin]`` -> ``[B, H, W, k*k*(K+1+4)]`` (class maps, then
        box maps)."""
        if not self.built:
            self.build(tuple(features.shape))
        reduced = self.reduce_conv(features)
        # One 1x1 convolution with the two kernels side by side instead of two convolutions
        # and a concat of their (large) outputs: same numbers, one pass over ``reduced``.
        cls, box = self.cls_conv, self.box_conv
        kernel = tf.concat([cls.kernel, box.kernel], axis=-1)
        bias = tf.concat([cls.bias, box.bias], axis=-1)
        dtype = reduced.dtype
        # The scope names the prediction layer in exported graphs (the LiteRT int8 export
        # keeps it float: tf_rcnn.export.tflite.FLOAT_LAYERS).
        with tf.name_scope("score_maps"):
            maps = tf.nn.conv2d(reduced, tf.cast(kernel, dtype), strides=1, padding="VALID")
            return tf.nn.bias_add(maps, tf.cast(bias, dtype))

    def pool(self, score_maps: tf.Tensor, rois: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-RoI work: PS-RoI pooling + voting of :meth:`score_maps` output.

        Args:
            score_maps: ``[B, H, W, k*k*(K+1+4)]`` from :meth:`score_maps`.
            rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` input-image pixels.

        Returns:
            ``(class_logits [B, R, K+1], pred_deltas [B, R, 1, 4])``.
        """
        voted = self.ps_pool(score_maps, rois)  # [B, R, K+1+4]
        class_logits = voted[..., : self.num_classes + 1]
        # [B, R, 4] -> [B, R, 1, 4]: one class-agnostic group.
        pred_deltas = tf.expand_dims(voted[..., self.num_classes + 1:], axis=2)
        return class_logits, pred_deltas

    def call(self, features: tf.Tensor, rois: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.pool(self.score_maps(features), rois)

    def compute_output_shape(self, features_shape: tuple, rois_shape: tuple) -> tuple:
        batch, num_rois = rois_shape[0], rois_shape[1]
        return (batch, num_rois, self.num_classes + 1), (batch, num_rois, 1, NUM_BOX_DELTAS)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            k=self.k,
            channels=self.channels,
            spatial_scale=self.spatial_scale,
            mode=self.mode,
            sampling_ratio=self.sampling_ratio,
        )
        return config
