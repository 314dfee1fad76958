"""Mask R-CNN's mask head: a small FCN predicting one binary mask per class for each RoI.

(He et al., 2017, "Mask R-CNN", Fig. 4.) FPN form: four 3x3 convs (256, ReLU) on the 14x14
RoIAlign features, a 2x2 stride-2 transposed conv (256, ReLU) to 28x28, and a 1x1 conv to K mask
logits. C4 form: ResNet res5 on the 14x14 RoI features (to 7x7x2048), the transposed conv back
to 14x14 and the 1x1 conv; the convs before it are then usually empty (``conv_dims=()``).

Conventions:
    Per-RoI tensors are batched ``[B, R, ...]`` (R RoIs per image, padded, possibly 0). Pooled
    features are NHWC ``[B, R, S, S, C]`` float32; the head folds them into ``[B*R, S, S, C]``
    and unfolds its result. Mask channel ``k`` is object class ``k + 1`` (there is no background
    mask); a class-agnostic head has one channel used for every class.

Shape shorthand:
    B batch, R RoIs per image, S pooled size (14), C channels, K object classes,
    Sm = 2 * S' mask resolution (28 for FPN, 14 for C4), K' = K or 1 (class agnostic).

Naming:
    ``mask_logits``: ``[B, R, Sm, Sm, K']`` per-pixel sigmoid logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.layers.normalization import check_norm, make_norm
from tf_rcnn.models.roi_heads.box_head import fold_rois, unfold_rois
from tf_rcnn.models.serialization import deserialize_keys, serialize_optional


def _msra_fill() -> keras.initializers.Initializer:
    # Detectron's "MSRAFill" for the mask FCN: He normal with fan_out.
    return keras.initializers.VarianceScaling(2.0, mode="fan_out",
                                              distribution="untruncated_normal")


@keras.saving.register_keras_serializable(package="tf_rcnn")
class MaskHead(keras.layers.Layer):
    """Mask FCN: [res5] -> 3x3 convs -> 2x transposed conv -> 1x1 conv to per-class logits.

    Init (Detectron): convs and transposed conv He normal (fan out), zero bias; the 1x1
    predictor normal with std 0.001, zero bias.

    Empty batches: TensorFlow 2.21's CPU convolution returns its *input* unchanged for an empty
    batch, so with ``B * R = 0`` the output would have the wrong channels; one zero RoI is
    appended before the convs and dropped afterwards (as in ``ResNetC4BoxHead``).

    Args:
        num_classes: K, object classes excluding background.
        conv_dims: widths of the 3x3 convs (four of 256 for FPN; ``()`` for C4).
        deconv_dim: channels of the 2x2 stride-2 transposed conv (256).
        class_agnostic: predict one mask per RoI instead of one per class.
        res5: optional res5 stage run on the pooled RoI features first (the C4 head, e.g.
            ``make_res5_head(...)``: ``[N, 14, 14, 1024] -> [N, 7, 7, 2048]``).
        norm: None, or ``"frozen_bn"`` / ``"bn"`` / ``"sync_bn"`` after each 3x3 conv (the
            convs then have no bias; torchvision's ``maskrcnn_resnet50_fpn_v2``).
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments:
        pooled_features: ``[B, R, S, S, C]`` float32 RoI features (S = 14).
        training: forwarded to res5 (matters for ``norm="bn"``).

    Returns:
        ``mask_logits [B, R, Sm, Sm, K']`` float32; ``Sm = 2 S`` (FPN) or ``S`` (C4, res5
        halves S first); ``K' = 1`` when class agnostic.

    Example:
        >>> head = MaskHead(num_classes=3, conv_dims=(8, 8))
        >>> head(tf.zeros([2, 5, 14, 14, 16])).shape
        TensorShape([2, 5, 28, 28, 3])
    """

    def __init__(
        self,
        num_classes: int,
        conv_dims: Sequence[int] = (256, 256, 256, 256),
        deconv_dim: int = 256,
        class_agnostic: bool = False,
        res5: keras.layers.Layer | None = None,
        norm: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_classes) <= 0:
            raise ValueError(
                f"num_classes is the number of object classes K (>= 1, background excluded), "
                f"got {num_classes}."
            )
        dims = tuple(int(d) for d in conv_dims)
        if any(d <= 0 for d in dims):
            raise ValueError(f"conv_dims must be positive ints (or empty), got {conv_dims}.")
        if int(deconv_dim) <= 0:
            raise ValueError(f"deconv_dim must be a positive int, got {deconv_dim}.")
        if res5 is not None and not isinstance(res5, keras.layers.Layer):
            raise ValueError(
                f"res5 must be a Keras layer (e.g. make_res5_head()), got {type(res5).__name__}."
            )
        self.num_classes = int(num_classes)
        self.conv_dims = dims
        self.deconv_dim = int(deconv_dim)
        self.class_agnostic = bool(class_agnostic)
        self.res5 = res5
        self.norm = check_norm(norm, "norm (model.mask_head.norm)")
        self.convs = [
            keras.layers.Conv2D(d, 3, padding="same", activation="relu" if norm is None else None,
                                use_bias=norm is None, kernel_initializer=_msra_fill(),
                                name=f"mask_fcn{i + 1}")
            for i, d in enumerate(self.conv_dims)
        ]
        self.conv_norms = [make_norm(norm, f"mask_fcn{i + 1}_norm") if norm else None
                           for i in range(len(self.conv_dims))]
        self.deconv = keras.layers.Conv2DTranspose(
            self.deconv_dim, 2, strides=2, activation="relu", kernel_initializer=_msra_fill(),
            name="deconv",
        )
        self.predictor = keras.layers.Conv2D(
            1 if self.class_agnostic else self.num_classes, 1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="mask_logits",
        )

    def build(self, input_shape: tuple) -> None:
        if len(input_shape) != 5 or any(d is None for d in input_shape[2:]):
            raise ValueError(
                f"{self.name} expects pooled RoI features [B, R, S, S, C] with known S and C, "
                f"got shape {input_shape}."
            )
        shape = (None, *input_shape[2:])
        if self.res5 is not None:
            if not self.res5.built:
                self.res5.build(shape)
            shape = self.res5.compute_output_shape(shape)
        for conv, norm in zip(self.convs, self.conv_norms, strict=True):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            if norm is not None:
                norm.build(shape)
        self.deconv.build(shape)
        shape = self.deconv.compute_output_shape(shape)
        self.predictor.build(shape)

    def call(self, pooled_features: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x, batch_rois = fold_rois(pooled_features)
        num = tf.shape(x)[0]
        # [B*R, S, S, C] -> [B*R + 1, S, S, C]: one dummy RoI so the conv batch is never empty.
        x = tf.concat([x, tf.zeros(tf.concat([[1], tf.shape(x)[1:]], axis=0), x.dtype)], axis=0)
        if self.res5 is not None:
            x = self.res5(x, training=training)  # [N, S, S, 1024] -> [N, S/2, S/2, 2048]
        for conv, norm in zip(self.convs, self.conv_norms, strict=True):
            x = conv(x)
            if norm is not None:
                x = tf.nn.relu(norm(x, training=training))
        x = self.deconv(x)  # [N, S', S', C'] -> [N, 2 S', 2 S', deconv_dim]
        x = tf.cast(self.predictor(x), tf.float32)[:num]  # [B*R, Sm, Sm, K']
        return unfold_rois(x, batch_rois)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        size = input_shape[2] if self.res5 is None else (input_shape[2] + 1) // 2
        channels = 1 if self.class_agnostic else self.num_classes
        return (input_shape[0], input_shape[1], 2 * size, 2 * size, channels)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            conv_dims=list(self.conv_dims),
            deconv_dim=self.deconv_dim,
            class_agnostic=self.class_agnostic,
            norm=self.norm,
            res5=serialize_optional(self.res5),
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MaskHead:
        return cls(**deserialize_keys(config, ("res5",)))


def select_class_masks(mask_logits: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
    """Picks each RoI's mask channel of its class (channel ``class - 1``; agnostic: channel 0).

    Args:
        mask_logits: ``[B, R, Sm, Sm, K']`` float32 from ``MaskHead``.
        classes: ``[B, R]`` int32 class ids ``1..K``; other values (0 background/padding) read
            channel 0 and are meant to be masked out by the caller.

    Returns:
        ``[B, R, Sm, Sm]`` float32, the selected logits.
    """
    classes = tf.cast(classes, tf.int32)
    channels = tf.shape(mask_logits)[-1]
    index = tf.clip_by_value(classes - 1, 0, channels - 1)  # agnostic: channels = 1 -> 0
    # [B, R, Sm, Sm, K'] -> [B, R, K', Sm, Sm] so the class axis sits after the batch dims.
    per_class = tf.transpose(mask_logits, [0, 1, 4, 2, 3])
    return tf.gather(per_class, index[..., tf.newaxis], axis=2, batch_dims=2)[:, :, 0]
