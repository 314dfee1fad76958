"""Second-stage box heads: per-RoI feature extractors and the class/box predictor.

Conventions:
    Per-RoI tensors are batched ``[B, R, ...]`` (R RoIs per image, padded, possibly 0). Pooled
    features are NHWC ``[B, R, S, S, C]`` float32. Internally heads fold ``[B, R, ...]`` into
    ``[B*R, ...]`` and unfold the result, so B and R are dynamic and R = 0 gives empty outputs.
    Class 0 is background, 1..K are objects. Box deltas are encoded ``(dy, dx, dh, dw)``
    relative to the RoI with R-CNN weights (10, 10, 5, 5) and laid out ``[B, R, K + 1, 4]``
    (group 0, background, is unused) so the GT class indexes them directly.

Shape shorthand:
    B batch, R RoIs per image, S pooled size, C channels, K object classes, D head width.

Naming:
    ``class_logits``: ``[B, R, K + 1]`` softmax logits; ``box_deltas``: ``[B, R, K + 1, 4]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from tf_rcnn.layers.normalization import check_norm, make_norm
from tf_rcnn.models.serialization import deserialize_keys, serialize_optional


def fold_rois(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``[B, R, ...] -> [B*R, ...]``; also returns ``[B, R]`` to unfold with ``unfold_rois``."""
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0)), shape[:2]


def unfold_rois(x: tf.Tensor, batch_rois: tf.Tensor) -> tf.Tensor:
    """``[B*R, ...] -> [B, R, ...]`` with ``batch_rois = [B, R]`` from ``fold_rois``."""
    return tf.reshape(x, tf.concat([batch_rois, tf.shape(x)[1:]], axis=0))


def _check_pooled_shape(layer: keras.layers.Layer, input_shape: tuple,
                        allow_flat: bool = False) -> None:
    flat_ok = allow_flat and len(input_shape) == 3 and input_shape[2] is not None
    if flat_ok:
        return
    if len(input_shape) != 5 or any(d is None for d in input_shape[2:]):
        flat = " or already flat [B, R, D] (SpatialPyramidPooling)" if allow_flat else ""
        raise ValueError(
            f"{layer.name} expects pooled RoI features [B, R, S, S, C] with known S and C{flat}, "
            f"got shape {input_shape}."
        )


def _flat_size(input_shape: tuple) -> int:
    """Per-RoI feature size: ``S*S*C`` for ``[B, R, S, S, C]``, ``D`` for ``[B, R, D]``."""
    size = 1
    for d in input_shape[2:]:
        size *= int(d)
    return size


def _dense_stack(fc_dims: Sequence[int], prefix: str) -> list[keras.layers.Dense]:
    # Caffe2/Detectron "Xavier fill" = uniform with limit sqrt(3 / fan_in) = lecun_uniform.
    return [
        keras.layers.Dense(d, activation="relu", kernel_initializer="lecun_uniform",
                           name=f"{prefix}{i + 1}")
        for i, d in enumerate(fc_dims)
    ]


def _check_fc_dims(fc_dims: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(d) for d in fc_dims)
    if not dims or min(dims) <= 0:
        raise ValueError(f"fc_dims must be a non-empty sequence of positive ints, got {fc_dims}.")
    return dims


@keras.saving.register_keras_serializable(package="tf_rcnn")
class FPNBoxHead(keras.layers.Layer):
    """The FPN paper's "2fc" head: flatten, then fully connected + ReLU layers; optionally
    3x3 convs first ("4conv1fc", Detectron2's and torchvision's ``*_fpn_v2`` box head).

    Args:
        fc_dims: widths of the fully connected layers (default two of 1024).
        conv_dims: widths of 3x3 conv + [norm] + ReLU layers run on the pooled map before the
            fully connected ones (default none).
        norm: None, or ``"frozen_bn"`` / ``"bn"`` / ``"sync_bn"`` after each conv (the convs
            then have no bias).
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments:
        pooled_features: ``[B, R, S, S, C]`` float32 RoI features, or already flat
            ``[B, R, D]`` (``SpatialPyramidPooling``, without convs).
        training: forwarded to the norm layers.

    Returns:
        ``[B, R, fc_dims[-1]]`` float32 box features.
    """

    def __init__(self, fc_dims: Sequence[int] = (1024, 1024), conv_dims: Sequence[int] = (),
                 norm: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fc_dims = _check_fc_dims(fc_dims)
        self.conv_dims = tuple(int(d) for d in conv_dims)
        if any(d <= 0 for d in self.conv_dims):
            raise ValueError(f"conv_dims must be positive ints, got {conv_dims}.")
        self.norm = check_norm(norm, "norm (model.roi_head.norm)")
        self.convs = [
            keras.layers.Conv2D(d, 3, padding="same", use_bias=norm is None,
                                activation="relu" if norm is None else None,
                                kernel_initializer="he_normal", name=f"conv{i + 1}")
            for i, d in enumerate(self.conv_dims)
        ]
        self.conv_norms = [make_norm(norm, f"conv{i + 1}_norm") if norm else None
                           for i in range(len(self.conv_dims))]
        self.fcs = _dense_stack(self.fc_dims, "fc")

    def build(self, input_shape: tuple) -> None:
        _check_pooled_shape(self, input_shape, allow_flat=not self.conv_dims)
        shape = (None, *input_shape[2:])
        for conv, norm in zip(self.convs, self.conv_norms, strict=True):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            if norm is not None:
                norm.build(shape)
        size = _flat_size((None, None, *shape[1:]))
        for fc in self.fcs:
            fc.build((None, size))
            size = fc.units

    def call(self, pooled_features: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x, batch_rois = fold_rois(pooled_features)
        if self.convs:
            # [B*R, S, S, C] -> [B*R + 1, ...]: TF's CPU conv returns its input unchanged for an
            # empty batch (see ResNetC4BoxHead), so one zero RoI is added and dropped after.
            num = tf.shape(x)[0]
            x = tf.concat([x, tf.zeros(tf.concat([[1], tf.shape(x)[1:]], axis=0), x.dtype)], 0)
            for conv, norm in zip(self.convs, self.conv_norms, strict=True):
                x = conv(x)
                if norm is not None:
                    x = tf.nn.relu(norm(x, training=training))
            x = x[:num]
        # [B*R, S, S, C] -> [B*R, S*S*C] (row-major y, x, c; a no-op for flat [B*R, D] input).
        # Static size so that R = 0 works.
        x = tf.reshape(x, [tf.shape(x)[0], self.fcs[0].kernel.shape[0]])
        for fc in self.fcs:
            x = fc(x)
        return unfold_rois(x, batch_rois)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[1], self.fc_dims[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"fc_dims": list(self.fc_dims), "conv_dims": list(self.conv_dims),
                       "norm": self.norm})
        return config


@keras.saving.register_keras_serializable(package="tf_rcnn")
class VGGBoxHead(keras.layers.Layer):
    """VGG16's fc6/fc7 (+ dropout) as the Fast R-CNN RoI head (Girshick, 2015, Sec. 2).

    Flatten ``[S, S, C]`` (row-major y, x, c, the order of ``keras.layers.Flatten`` in
    ``keras.applications.VGG16``) then ``fc6``, ReLU, dropout, ``fc7``, ReLU, dropout.
    ``copy_keras_vgg16_fc_weights`` loads ImageNet fc1/fc2 into it when the pooled input is
    7x7x512 and ``fc_dims == (4096, 4096)``.

    Args:
        fc_dims: widths of fc6, fc7, ... (default VGG16's (4096, 4096)).
        dropout: dropout rate after each fc during training (0 disables it).
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments:
        pooled_features: ``[B, R, S, S, C]`` float32 RoI features (7x7x512 for VGG16), or
            already flat ``[B, R, D]`` (``SpatialPyramidPooling``).
        training: applies dropout when True.

    Returns:
        ``[B, R, fc_dims[-1]]`` float32 box features.
    """

    def __init__(
        self, fc_dims: Sequence[int] = (4096, 4096), dropout: float = 0.5, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.fc_dims = _check_fc_dims(fc_dims)
        self.dropout = float(dropout)
        self.fcs = _dense_stack(self.fc_dims, "fc")
        self.dropouts = [keras.layers.Dropout(self.dropout) for _ in self.fc_dims]

    def build(self, input_shape: tuple) -> None:
        _check_pooled_shape(self, input_shape, allow_flat=True)
        size = _flat_size(input_shape)
        for fc in self.fcs:
            fc.build((None, size))
            size = fc.units

    def call(self, pooled_features: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x, batch_rois = fold_rois(pooled_features)
        # [B*R, S, S, C] -> [B*R, S*S*C] (row-major y, x, c like keras' Flatten; a no-op for
        # flat [B*R, D] input).
        x = tf.reshape(x, [tf.shape(x)[0], self.fcs[0].kernel.shape[0]])
        for fc, drop in zip(self.fcs, self.dropouts, strict=True):
            x = drop(fc(x), training=training)
        return unfold_rois(x, batch_rois)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[1], self.fc_dims[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"fc_dims": list(self.fc_dims), "dropout": self.dropout})
        return config


def copy_keras_vgg16_fc_weights(head: VGGBoxHead, source: keras.Model | None = None) -> None:
    """Copy ImageNet fc1/fc2 of ``keras.applications.VGG16`` into ``head``'s fc6/fc7.

    Args:
        head: a ``VGGBoxHead``; built here for 7x7x512 input if not built yet.
        source: a model with Dense layers named ``"fc1"``, ``"fc2"``; ``None`` builds
            ``keras.applications.VGG16(include_top=True, weights="imagenet")`` (downloads).

    Raises:
        ValueError: if the head's fc shapes differ from the source's (e.g. pooled size not 7x7x512
            or ``fc_dims != (4096, 4096)``).
    """
    if source is None:
        source = keras.applications.VGG16(include_top=True, weights="imagenet")
        logging.info("VGG16 box head: fc6/fc7 copied from keras.applications.VGG16 "
                     "(ImageNet fc1/fc2)")
    if not head.built:
        head.build((None, None, 7, 7, 512))
    for fc, src_name in zip(head.fcs, ("fc1", "fc2"), strict=False):
        src = source.get_layer(src_name)
        src_weights = src.get_weights()
        own = [tuple(w.shape) for w in fc.weights]
        theirs = [tuple(w.shape) for w in src_weights]
        if own != theirs:
            raise ValueError(
                f"Cannot copy {src_name} into {head.name}/{fc.name}: shapes {theirs} vs {own}. "
                "ImageNet fc6/fc7 need pooled features 7x7x512 and fc_dims=(4096, 4096)."
            )
        fc.set_weights(src_weights)


@keras.saving.register_keras_serializable(package="tf_rcnn")
class ResNetC4BoxHead(keras.layers.Layer):
    """The C4 detector's RoI head: ResNet res5 on each pooled RoI, then global average pooling.

    (He et al., 2016, "Deep Residual Learning", Faster R-CNN on ResNet: conv5 is applied per RoI
    after RoI pooling on C4.)

    Empty batches: TensorFlow 2.21's CPU convolution returns its *input* unchanged when the batch
    is empty (``conv2d`` of ``[0, 14, 14, 1024]`` gives ``[0, 14, 14, 1024]``), so with R = 0 the
    res5 convs would produce the wrong channel count. One zero RoI is appended before res5 and
    dropped afterwards, which costs one RoI and keeps the graph branch-free.

    Args:
        res5: the res5 stage, e.g. ``make_res5_head(...)`` from ``tf_rcnn.models.backbones.resnet``
            (maps ``[N, 14, 14, 1024]`` to ``[N, 7, 7, 2048]``).
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments:
        pooled_features: ``[B, R, S, S, C]`` float32 (``S = 14``, ``C = 1024`` for ResNet C4).
        training: forwarded to res5 (matters for ``norm="bn"``).

    Returns:
        ``[B, R, C5]`` float32 (``C5 = 2048`` for ResNet), the spatial mean of res5's output.
    """

    def __init__(self, res5: keras.layers.Layer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(res5, keras.layers.Layer):
            raise ValueError(
                f"res5 must be a Keras layer (e.g. make_res5_head()), got {type(res5).__name__}."
            )
        self.res5 = res5

    def build(self, input_shape: tuple) -> None:
        _check_pooled_shape(self, input_shape)
        if not self.res5.built:
            self.res5.build((None, *input_shape[2:]))

    def call(self, pooled_features: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x, batch_rois = fold_rois(pooled_features)
        num = tf.shape(x)[0]
        # [B*R, S, S, C] -> [B*R + 1, S, S, C]: one dummy RoI so the conv batch is never empty.
        x = tf.concat([x, tf.zeros(tf.concat([[1], tf.shape(x)[1:]], axis=0), x.dtype)], axis=0)
        x = self.res5(x, training=training)[:num]
        # [B*R, S', S', C5] -> [B*R, C5]: global average pooling.
        x = tf.reduce_mean(x, axis=[1, 2])
        return unfold_rois(x, batch_rois)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        out = self.res5.compute_output_shape((None, *input_shape[2:]))
        return (input_shape[0], input_shape[1], out[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"res5": serialize_optional(self.res5)})
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ResNetC4BoxHead:
        return cls(**deserialize_keys(config, ("res5",)))


@keras.saving.register_keras_serializable(package="tf_rcnn")
class BoxPredictor(keras.layers.Layer):
    """Sibling classification and box regression layers over per-RoI features.

    Init (Fast R-CNN, Sec. 3.1): class weights normal std 0.01, box weights normal std 0.001,
    zero biases.

    Args:
        num_classes: K, object classes excluding background (logits have K + 1 columns).
        class_agnostic: predict one delta per RoI and repeat it for every class group, so the
            output layout stays ``[B, R, K + 1, 4]`` for every consumer.
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments:
        box_features: ``[B, R, D]`` float32 per-RoI features.

    Returns:
        ``(class_logits [B, R, K + 1] float32, box_deltas [B, R, K + 1, 4] float32)``.
    """

    def __init__(self, num_classes: int, class_agnostic: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(num_classes) <= 0:
            raise ValueError(
                f"num_classes is the number of object classes K (>= 1, background excluded), "
                f"got {num_classes}."
            )
        self.num_classes = int(num_classes)
        self.class_agnostic = bool(class_agnostic)
        self.class_dense = keras.layers.Dense(
            self.num_classes + 1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="class_logits",
        )
        box_groups = 1 if self.class_agnostic else self.num_classes + 1
        self.box_dense = keras.layers.Dense(
            box_groups * 4,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="box_deltas",
        )

    def build(self, input_shape: tuple) -> None:
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name} expects box features [B, R, D] with known D, got {input_shape}."
            )
        self.class_dense.build((None, input_shape[-1]))
        self.box_dense.build((None, input_shape[-1]))

    def call(self, box_features: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, batch_rois = fold_rois(box_features)
        class_logits = unfold_rois(self.class_dense(x), batch_rois)
        # [B*R, G*4] -> [B*R, G, 4], G = K + 1 groups (or 1 when class agnostic); channel
        # g*4 + j is coordinate j of class g.
        groups = 1 if self.class_agnostic else self.num_classes + 1
        deltas = tf.reshape(self.box_dense(x), [tf.shape(x)[0], groups, 4])
        if self.class_agnostic:
            deltas = tf.tile(deltas, [1, self.num_classes + 1, 1])
        return class_logits, unfold_rois(deltas, batch_rois)

    def compute_output_shape(self, input_shape: tuple) -> tuple[tuple, tuple]:
        b, r = input_shape[0], input_shape[1]
        return (b, r, self.num_classes + 1), (b, r, self.num_classes + 1, 4)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "class_agnostic": self.class_agnostic})
        return config
