"""ResNet-50/101/152 bottleneck backbones (He et al., 2016) for detection, and the res5 RoI head.

Conventions:
    Input images are ``[B, H, W, 3]`` float32, already normalised by the data pipeline (for
    ImageNet weights copied from ``keras.applications`` that is Caffe-style BGR mean
    subtraction, see ``keras.applications.resnet.preprocess_input``), NHWC. H and W are dynamic;
    the data pipeline pads images to a multiple of the coarsest stride (32) so every stride
    divides the input. Other sizes work: every stride-2 op here yields ``ceil(H / 2)`` rows.
    Outputs are a dict ``"C2".."C5"`` (``C_l`` = output of stage ``conv<l>``) at strides 4, 8, 16,
    32 (C5 at 16 with ``dilate_c5``), channels 256, 512, 1024, 2048.

Shape shorthand:
    B batch, H/W input size, C channels, N = B * R pooled RoIs (res5 head).

Naming: layers are named like ``keras.applications.ResNet50`` (``conv1_conv``, ``conv1_bn``,
``conv<s>_block<b>_<i>_conv`` / ``_bn`` with i = 0 shortcut, 1 first 1x1, 2 3x3, 3 last 1x1) so
ImageNet weights copy by name. Convs have no bias: the Keras convs' biases are folded into the
following norm's moving mean (``bn(conv(x) + b)`` == ``bn'(conv(x))`` with ``mean' = mean - b``,
exact in inference and irrelevant under batch statistics).

Padding is explicit and symmetric (``pad k // 2 * dilation`` then a "valid" conv; 7x7 stem pad
3; max pool pad 1), which matches ``keras.applications`` and torchvision at any input size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from tf_rcnn.layers.normalization import NORMS, check_norm, make_norm
from tf_rcnn.models.backbones.torchvision_resnet import load_torchvision_resnet50

_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_STAGE_NAMES = ("C2", "C3", "C4", "C5")
_STAGE_FILTERS = (64, 128, 256, 512)  # bottleneck widths; outputs are 4x these
# keras.applications ResNet BatchNorm epsilon, the default; torchvision's is 1e-5 (0 for its
# v1 COCO detection weights).
DEFAULT_NORM_EPSILON = 1.001e-5
# He init with fan_out (Detectron's "MSRA fill") for random initialisation.
_CONV_INIT = {"class_name": "VarianceScaling",
              "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}


def _check_norm(norm: str) -> None:
    if norm is None:
        raise ValueError(f"norm must be one of {NORMS}, got None.")
    check_norm(norm)


def _conv(filters: int, kernel: int, stride: int, name: str, dilation: int = 1):
    return keras.layers.Conv2D(filters, kernel, strides=stride, dilation_rate=dilation,
                               padding="valid", use_bias=False,
                               kernel_initializer=keras.initializers.get(_CONV_INIT), name=name)


def _pad(x: tf.Tensor, amount: int) -> tf.Tensor:
    if amount == 0:
        return x
    return tf.pad(x, [[0, 0], [amount, amount], [amount, amount], [0, 0]])


@keras.saving.register_keras_serializable(package="tf_rcnn")
class Bottleneck(keras.layers.Layer):
    """Bottleneck residual block: 1x1 -> 3x3 -> 1x1 (4x wider) plus a shortcut.

    Args:
        filters: bottleneck width F; the block outputs 4F channels.
        stride: spatial stride of the block (1 or 2).
        dilation: dilation of the 3x3 conv (2 for the dilated C5 of R-FCN).
        projection: use a 1x1 conv + norm shortcut (first block of a stage); identity otherwise.
        stride_in_1x1: put the stride in the first 1x1 conv (MSRA/Caffe and keras.applications)
            instead of the 3x3 conv (torchvision, "ResNet v1.5").
        norm: ``"frozen_bn"``, ``"bn"`` or ``"sync_bn"``.
        norm_epsilon: epsilon of the norm layers.
        **kwargs: forwarded to ``keras.layers.Layer``; ``name`` prefixes the inner layer names.

    Call arguments:
        inputs: ``[B, H, W, C]`` float32.
        training: forwarded to the norm layers.

    Returns:
        ``[B, ceil(H / stride), ceil(W / stride), 4F]`` float32.
    """

    def __init__(
        self,
        filters: int,
        stride: int = 1,
        dilation: int = 1,
        projection: bool = False,
        stride_in_1x1: bool = True,
        norm: str = "frozen_bn",
        norm_epsilon: float = DEFAULT_NORM_EPSILON,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_norm(norm)
        if stride not in (1, 2) or dilation < 1:
            raise ValueError(f"stride must be 1 or 2 and dilation >= 1, got {stride}, {dilation}.")
        if stride != 1 and not projection:
            raise ValueError("A strided bottleneck needs projection=True for its shortcut.")
        self.filters = filters
        self.stride = stride
        self.dilation = dilation
        self.projection = projection
        self.stride_in_1x1 = stride_in_1x1
        self.norm = norm
        self.norm_epsilon = float(norm_epsilon)
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        p = self.name
        eps = self.norm_epsilon
        self.conv_a = _conv(filters, 1, s1, f"{p}_1_conv")
        self.norm_a = make_norm(norm, f"{p}_1_bn", eps)
        self.conv_b = _conv(filters, 3, s3, f"{p}_2_conv", dilation=dilation)
        self.norm_b = make_norm(norm, f"{p}_2_bn", eps)
        self.conv_c = _conv(4 * filters, 1, 1, f"{p}_3_conv")
        self.norm_c = make_norm(norm, f"{p}_3_bn", eps)
        if projection:
            self.conv_shortcut = _conv(4 * filters, 1, stride, f"{p}_0_conv")
            self.norm_shortcut = make_norm(norm, f"{p}_0_bn", eps)

    def conv_norm_pairs(self) -> list[tuple[keras.layers.Layer, keras.layers.Layer]]:
        """(conv, norm) pairs in keras.applications order, for weight copying."""
        pairs = [(self.conv_a, self.norm_a), (self.conv_b, self.norm_b),
                 (self.conv_c, self.norm_c)]
        if self.projection:
            pairs.insert(0, (self.conv_shortcut, self.norm_shortcut))
        return pairs

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        f = self.filters
        for conv, norm, cin, cout in [
            (self.conv_a, self.norm_a, channels, f),
            (self.conv_b, self.norm_b, f, f),
            (self.conv_c, self.norm_c, f, 4 * f),
        ] + ([(self.conv_shortcut, self.norm_shortcut, channels, 4 * f)]
             if self.projection else []):
            conv.build((None, None, None, cin))
            norm.build((None, None, None, cout))

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = tf.nn.relu(self.norm_a(self.conv_a(inputs), training=training))
        x = tf.nn.relu(self.norm_b(self.conv_b(_pad(x, self.dilation)), training=training))
        x = self.norm_c(self.conv_c(x), training=training)
        if self.projection:
            shortcut = self.norm_shortcut(self.conv_shortcut(inputs), training=training)
        else:
            shortcut = inputs
        return tf.nn.relu(x + shortcut)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        ceil = lambda d: None if d is None else -(-d // self.stride)
        return (input_shape[0], ceil(input_shape[1]), ceil(input_shape[2]), 4 * self.filters)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"filters": self.filters, "stride": self.stride,
                       "dilation": self.dilation, "projection": self.projection,
                       "stride_in_1x1": self.stride_in_1x1, "norm": self.norm,
                       "norm_epsilon": self.norm_epsilon})
        return config


@keras.saving.register_keras_serializable(package="tf_rcnn")
class ResNetStage(keras.layers.Layer):
    """A ResNet stage: ``num_blocks`` bottlenecks, the first with a projection shortcut.

    Args:
        num_blocks: number of bottleneck blocks.
        filters: bottleneck width F (outputs 4F channels).
        stride: stride of the first block.
        dilation: dilation of every 3x3 conv in the stage.
        stride_in_1x1: see ``Bottleneck``.
        norm: ``"frozen_bn"``, ``"bn"`` or ``"sync_bn"``.
        norm_epsilon: epsilon of the norm layers.
        **kwargs: forwarded to ``keras.layers.Layer``; ``name`` (e.g. ``"conv5"``) prefixes the
            block names ``<name>_block<i>``.

    Call arguments:
        inputs: ``[B, H, W, C]`` float32.
        training: forwarded to the norm layers.

    Returns:
        ``[B, ceil(H / stride), ceil(W / stride), 4F]`` float32.
    """

    def __init__(
        self,
        num_blocks: int,
        filters: int,
        stride: int = 2,
        dilation: int = 1,
        stride_in_1x1: bool = True,
        norm: str = "frozen_bn",
        norm_epsilon: float = DEFAULT_NORM_EPSILON,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}.")
        self.num_blocks = num_blocks
        self.filters = filters
        self.stride = stride
        self.dilation = dilation
        self.stride_in_1x1 = stride_in_1x1
        self.norm = norm
        self.norm_epsilon = float(norm_epsilon)
        self.blocks = [
            Bottleneck(filters, stride=stride if i == 0 else 1, dilation=dilation,
                       projection=i == 0, stride_in_1x1=stride_in_1x1, norm=norm,
                       norm_epsilon=norm_epsilon, name=f"{self.name}_block{i + 1}")
            for i in range(num_blocks)
        ]

    def conv_norm_pairs(self) -> Iterator[tuple[keras.layers.Layer, keras.layers.Layer]]:
        """(conv, norm) pairs of every block, for weight copying."""
        for block in self.blocks:
            yield from block.conv_norm_pairs()

    def build(self, input_shape: tuple) -> None:
        shape = tuple(input_shape)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = inputs
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return self.blocks[0].compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"num_blocks": self.num_blocks, "filters": self.filters,
                       "stride": self.stride, "dilation": self.dilation,
                       "stride_in_1x1": self.stride_in_1x1, "norm": self.norm,
                       "norm_epsilon": self.norm_epsilon})
        return config


# keras.applications' name of each stage, by its bottleneck width.
KERAS_STAGE_NAMES = {64: "conv2", 128: "conv3", 256: "conv4", 512: "conv5"}


def keras_stage_name(stage: ResNetStage) -> str:
    """``conv2`` ... ``conv5``: the name keras.applications (and our trunk) give ``stage``,
    whatever its own name (the C4 heads' res5 is ``res5`` or ``mask_res5``)."""
    return KERAS_STAGE_NAMES[int(stage.filters)]


def _keras_layer_names(target: keras.layers.Layer) -> Callable[[str], str]:
    """Our layer name -> keras.applications' (``res5_block1_1_conv`` -> ``conv5_block1_1_conv``
    in a stage named ``res5``; the trunk's names are keras.applications' already)."""
    if not isinstance(target, ResNetStage) or target.name == keras_stage_name(target):
        return lambda name: name
    ours, theirs = f"{target.name}_", f"{keras_stage_name(target)}_"
    return lambda name: theirs + name[len(ours):] if name.startswith(ours) else name


# The stem conv: the one whose input channels are image colours.
RGB_INPUT_CONV = "conv1_conv"


def copy_keras_resnet_weights(
    target: keras.layers.Layer, source: keras.Model
) -> int:
    """Copy a ``keras.applications`` ResNet's weights into a ``ResNet`` or ``ResNetStage``.

    Layers are matched by name (``conv1_conv``, ``conv4_block2_3_bn``...). Each Keras conv bias
    is folded into the following norm's moving mean, since our convs have no bias.
    ``keras.applications`` ResNets take Caffe-style BGR input; the stem kernel's input channels
    are reversed here, so tf_rcnn backbones always take RGB (minus the Caffe mean, std 1: see
    ``tf_rcnn.data.pipeline.PIXEL_STATS``).

    Args:
        target: a built ``ResNet`` or ``ResNetStage`` with ``stride_in_1x1=True``.
        source: e.g. ``keras.applications.ResNet50(include_top=False, weights="imagenet")``.

    Returns:
        The number of (conv, norm) pairs copied.

    Raises:
        ValueError: if a layer is missing in ``source`` or shapes differ.
    """
    rename = _keras_layer_names(target)
    count = 0
    for conv, norm in target.conv_norm_pairs():
        try:
            src_conv, src_norm = (source.get_layer(rename(conv.name)),
                                  source.get_layer(rename(norm.name)))
        except ValueError as err:
            raise ValueError(
                f"Source model {source.name!r} has no layer {conv.name!r}/{norm.name!r}; "
                "pass a keras.applications ResNet of the same depth."
            ) from err
        kernel, *bias = src_conv.get_weights()
        if tuple(kernel.shape) != tuple(conv.kernel.shape):
            raise ValueError(
                f"Shape mismatch copying {conv.name}: {kernel.shape} vs {conv.kernel.shape}."
            )
        gamma, beta, mean, var = src_norm.get_weights()
        if bias:
            mean = mean - bias[0]
        if conv.name == RGB_INPUT_CONV:
            kernel = kernel[:, :, ::-1, :]  # BGR -> RGB input channels
        conv.set_weights([kernel])
        norm.set_weights([gamma, beta, mean, var])
        count += 1
    return count


# torchvision ImageNet ResNet files (tf_rcnn.models.backbones.torchvision_resnet).
TORCHVISION_EXTENSIONS = (".pth", ".pt", ".safetensors", ".npz")


def is_torchvision_file(weights: Any) -> bool:
    """Whether ``model.backbone.weights`` names a torchvision ResNet file (by its extension)."""
    return isinstance(weights, str) and weights.endswith(TORCHVISION_EXTENSIONS)


def _check_weights_arg(weights: str | None, label: str, stride_in_1x1: bool,
                       depth: int = 50) -> None:
    """Fail fast (before building anything) on an unusable ``weights`` argument."""
    if weights == "imagenet" and not stride_in_1x1:
        raise ValueError(
            f"{label}: weights='imagenet' copies keras.applications weights, which put the "
            "stride in the first 1x1 conv; use stride_in_1x1=True (or weights=None / a "
            "checkpoint path for torchvision-style blocks)."
        )
    torchvision = is_torchvision_file(weights)
    if torchvision and (stride_in_1x1 or depth != 50):
        raise ValueError(
            f"{label}: {weights} is a torchvision ResNet-50 file; it needs a ResNet-50 with "
            "the stride in the 3x3 conv: --config.model.backbone.name=resnet50 "
            "--config.model.backbone.stride_in_1x1=False (and ImageNet mean/std pixel "
            "statistics, --config.data.pixel_mean/pixel_std)."
        )
    if weights not in (None, "imagenet") and not torchvision and not (
        isinstance(weights, str) and weights.endswith((".weights.h5", ".keras"))
    ):
        raise ValueError(
            f"{label}: weights (model.backbone.weights) must be None, 'imagenet', a torchvision "
            f"ResNet-50 file ({'/'.join(TORCHVISION_EXTENSIONS)}) or a path ending in "
            f".weights.h5/.keras; got {weights!r}."
        )


def _load_weights(model: keras.layers.Layer, weights: str | None, label: str,
                  keras_source: Any, stride_in_1x1: bool) -> None:
    _check_weights_arg(weights, label, stride_in_1x1)
    if weights is None:
        logging.debug("%s: random initialisation (no model.backbone.weights)", label)
    elif weights == "imagenet":
        source = keras_source()
        copy_keras_resnet_weights(model, source)
        logging.info("%s: ImageNet weights copied from keras.applications.%s", label,
                     source.name)
    elif is_torchvision_file(weights):
        stage = (model.name, keras_stage_name(model)) if isinstance(model, ResNetStage) else None
        copied = load_torchvision_resnet50(model, weights, stage=stage)
        logging.info("%s: %d tensors copied from the torchvision ResNet-50 file %s", label,
                     copied, weights)
    else:
        model.load_weights(weights)
        logging.info("%s: weights loaded from %s", label, weights)


@keras.saving.register_keras_serializable(package="tf_rcnn")
class ResNet(keras.Model):
    """ResNet trunk returning C2..C5 (or a prefix of them) for detection.

    Args:
        depth: 50, 101 or 152.
        freeze_at: 0 trains everything; 1 freezes the stem (conv1); 2 the stem and res2
            (Detectron default); k freezes the stem and stages conv2..conv<k> (up to 5).
            Frozen layers are ``trainable=False`` (their BatchNorms then run in inference mode).
        norm: ``"frozen_bn"`` (Detectron default), ``"bn"`` or ``"sync_bn"`` (cross-replica).
        norm_epsilon: epsilon of the norm layers (keras.applications' 1.001e-5 by default;
            torchvision 1e-5, its v1 COCO detection weights 0).
        stride_in_1x1: True (MSRA/Caffe, keras.applications) puts a block's stride in its first
            1x1 conv; False (torchvision) in its 3x3 conv.
        dilate_c5: C5 keeps stride 16: its first block has stride 1 and its 3x3 convs dilation 2
            (R-FCN).
        weights: ``None`` random init; ``"imagenet"`` copies ``keras.applications.ResNet<depth>``
            (needs ``stride_in_1x1=True`` and a download); a torchvision ImageNet ResNet-50 file
            (``.pth``, ``.safetensors``, ``.npz``; needs ``stride_in_1x1=False`` and ImageNet
            mean/std inputs); or a ``.weights.h5``/``.keras`` path saved from an identically
            configured ResNet. Not kept in ``get_config`` (a saved model already carries its
            weights).
        stages: which of ``"C2".."C5"`` to output; the trunk stops after the last one (the C4
            detector uses ``("C2", "C3", "C4")`` or just ``("C4",)`` and runs res5 per RoI).
        include_c5: False drops ``"C5"`` from ``stages`` (shorthand for the C4 detector).
        **kwargs: forwarded to ``keras.Model`` (default name ``"resnet<depth>"``).

    Call arguments:
        images: ``[B, H, W, 3]`` float32 normalised images.
        training: forwarded to the norm layers.

    Returns:
        dict ``{"C2": [B, H/4, W/4, 256], "C3": [.., 512], "C4": [.., 1024],
        "C5": [B, H/32, W/32, 2048]}`` restricted to ``stages``.
    """

    def __init__(
        self,
        depth: int = 50,
        freeze_at: int = 2,
        norm: str = "frozen_bn",
        stride_in_1x1: bool = True,
        dilate_c5: bool = False,
        weights: str | None = None,
        stages: Sequence[str] = _STAGE_NAMES,
        include_c5: bool = True,
        norm_epsilon: float = DEFAULT_NORM_EPSILON,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", f"resnet{depth}")
        super().__init__(**kwargs)
        if depth not in _BLOCKS:
            raise ValueError(f"depth must be one of {sorted(_BLOCKS)}, got {depth}.")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in 0..5 (0 = train everything), got {freeze_at}.")
        _check_norm(norm)
        _check_weights_arg(weights, f"ResNet-{depth} backbone", stride_in_1x1, depth)
        stages = tuple(stages)
        unknown = [s for s in stages if s not in _STAGE_NAMES]
        if not stages or unknown:
            raise ValueError(f"stages must be a non-empty subset of {_STAGE_NAMES}, got {stages}.")
        self.depth = depth
        self.freeze_at = freeze_at
        self.norm = norm
        self.norm_epsilon = float(norm_epsilon)
        self.stride_in_1x1 = stride_in_1x1
        self.dilate_c5 = dilate_c5
        self.weights_source = weights
        self.stages = tuple(s for s in _STAGE_NAMES if s in stages)
        self.include_c5 = include_c5
        self._outputs = tuple(s for s in self.stages if include_c5 or s != "C5")
        if not self._outputs:
            raise ValueError("include_c5=False leaves no output stage; add C2..C4 to stages.")

        self.stem_conv = _conv(64, 7, 2, "conv1_conv")
        self.stem_norm = make_norm(norm, "conv1_bn", self.norm_epsilon)
        num_stages = _STAGE_NAMES.index(self._outputs[-1]) + 1
        self.res_stages = []
        for i in range(num_stages):
            dilated = dilate_c5 and i == 3
            self.res_stages.append(
                ResNetStage(_BLOCKS[depth][i], _STAGE_FILTERS[i],
                            stride=1 if i == 0 or dilated else 2,
                            dilation=2 if dilated else 1, stride_in_1x1=stride_in_1x1,
                            norm=norm, norm_epsilon=self.norm_epsilon, name=f"conv{i + 2}")
            )
        # Freeze: stem at freeze_at >= 1, stage conv<k> at freeze_at >= k.
        if freeze_at >= 1:
            self.stem_conv.trainable = False
            self.stem_norm.trainable = False
        for i, stage in enumerate(self.res_stages):
            if freeze_at >= i + 2:
                stage.trainable = False
        self.build((None, None, None, 3))
        _load_weights(self, weights, f"ResNet-{depth} backbone",
                      lambda: getattr(keras.applications, f"ResNet{depth}")(
                          include_top=False, weights="imagenet"),
                      stride_in_1x1)

    @property
    def output_strides(self) -> dict[str, int]:
        """Stride of each output (C5 is 16 with ``dilate_c5``)."""
        strides = {"C2": 4, "C3": 8, "C4": 16, "C5": 16 if self.dilate_c5 else 32}
        return {k: strides[k] for k in self._outputs}

    @property
    def output_channels(self) -> dict[str, int]:
        """Channels of each output."""
        channels = {"C2": 256, "C3": 512, "C4": 1024, "C5": 2048}
        return {k: channels[k] for k in self._outputs}

    def conv_norm_pairs(self) -> Iterator[tuple[keras.layers.Layer, keras.layers.Layer]]:
        """(conv, norm) pairs of the stem and every stage, for weight copying."""
        yield self.stem_conv, self.stem_norm
        for stage in self.res_stages:
            yield from stage.conv_norm_pairs()

    def build(self, input_shape: tuple) -> None:
        self.stem_conv.build((None, None, None, input_shape[-1]))
        self.stem_norm.build((None, None, None, 64))
        channels = 64
        for stage in self.res_stages:
            stage.build((None, None, None, channels))
            channels = 4 * stage.filters
        self.built = True

    def call(self, images: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        # Stem: 7x7/2 conv (pad 3) and 3x3/2 max pool (pad 1; zero padding is safe after ReLU).
        x = tf.nn.relu(self.stem_norm(self.stem_conv(_pad(images, 3)), training=training))
        x = tf.nn.max_pool2d(_pad(x, 1), 3, 2, "VALID")
        outputs = {}
        for name, stage in zip(_STAGE_NAMES, self.res_stages, strict=False):
            x = stage(x, training=training)
            if name in self._outputs:
                outputs[name] = x
        return outputs

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "trainable": self.trainable, "depth": self.depth,
                "freeze_at": self.freeze_at, "norm": self.norm,
                "stride_in_1x1": self.stride_in_1x1, "dilate_c5": self.dilate_c5,
                "weights": None, "stages": list(self.stages), "include_c5": self.include_c5,
                "norm_epsilon": self.norm_epsilon}


def make_res5_head(
    depth: int = 50,
    norm: str = "frozen_bn",
    stride_in_1x1: bool = True,
    weights: str | None = None,
    name: str = "conv5",
    norm_epsilon: float = DEFAULT_NORM_EPSILON,
) -> ResNetStage:
    """Build ResNet's res5 stage on its own, the per-RoI head of the C4 detector.

    Args:
        depth: 50, 101 or 152 (res5 has 3 blocks for all; the argument picks the ImageNet source).
        norm: ``"frozen_bn"``, ``"bn"`` or ``"sync_bn"``.
        stride_in_1x1: see ``ResNet``.
        weights: ``None``, ``"imagenet"`` (copies ``conv5_*`` of keras.applications), a
            torchvision ResNet-50 file (its ``layer4``) or a ``.weights.h5``/``.keras`` path for
            this stage.
        name: layer name; inner layers are ``<name>_block<i>_...`` ("conv5" matches Keras).
        norm_epsilon: epsilon of the norm layers.

    Returns:
        A ``ResNetStage`` mapping pooled RoI features ``[N, 14, 14, 1024]`` to
        ``[N, 7, 7, 2048]`` (first block stride 2).
    """
    if depth not in _BLOCKS:
        raise ValueError(f"depth must be one of {sorted(_BLOCKS)}, got {depth}.")
    _check_weights_arg(weights, f"ResNet-{depth} res5 head", stride_in_1x1)
    stage = ResNetStage(_BLOCKS[depth][3], _STAGE_FILTERS[3], stride=2,
                        stride_in_1x1=stride_in_1x1, norm=norm, norm_epsilon=norm_epsilon,
                        name=name)
    stage.build((None, None, None, 1024))
    _load_weights(stage, weights, f"ResNet-{depth} res5 head",
                  lambda: getattr(keras.applications, f"ResNet{depth}")(
                      include_top=False, weights="imagenet"),
                  stride_in_1x1)
    return stage
