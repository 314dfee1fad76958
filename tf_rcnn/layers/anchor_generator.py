"""AnchorGenerator: the anchors of every FPN/C4 level, computed from the feature map shapes.

Conventions (docs/design.md):
    Boxes are float32 ``[y1, x1, y2, x2]`` in pixels of the network input image. Anchors are
    shared by every image of a padded batch; per-image validity (inside the true image) is the
    target assigner's job (``ops.anchors.inside_image_mask``).

Shape shorthand:
    B batch, L levels, H_l/W_l feature size of level l, C channels, A anchors per cell,
    N = sum_l H_l * W_l * A anchors. Order: row ``(y * W_l + x) * A + a`` within a level,
    levels fine to coarse (the RPN head output order).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tf_rcnn.ops import anchors as anchor_ops


@keras.saving.register_keras_serializable(package="tf_rcnn")
class AnchorGenerator(keras.layers.Layer):
    """Anchors for a list of feature maps ordered fine to coarse.

    Args:
        sizes: anchor sizes (square root of the area, pixels) per level, e.g.
            ``[[32], [64], [128], [256], [512]]`` for FPN P2-P6 or ``[[128, 256, 512]]`` for C4.
            Every level needs the same number of sizes (heads predict A per cell).
        aspect_ratios: ratios ``h / w`` shared by all levels, e.g. ``[0.5, 1.0, 2.0]``.
        strides: stride of each level in input pixels, e.g. ``[4, 8, 16, 32, 64]``.
        offset: cell-centre offset in units of the stride (0.5 = centre of the cell; see
            ``tf_rcnn.ops.anchors``).
        round_coordinates: round the base anchors to integers (torchvision's anchors).

    Call arguments:
        features: list of L tensors ``[B, H_l, W_l, C_l]`` (only their dynamic shapes are read).

    Returns:
        ``[N, 4]`` float32 anchors ``[y1, x1, y2, x2]``.

    Example:
        >>> gen = AnchorGenerator([[32], [64]], [0.5, 1.0, 2.0], [8, 16])
        >>> gen([tf.zeros([1, 4, 4, 8]), tf.zeros([1, 2, 2, 8])]).shape
        TensorShape([60, 4])
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[float],
        strides: Sequence[int],
        offset: float = 0.5,
        round_coordinates: bool = False,
        **kwargs,
    ) -> None:
        # Mixed precision: anchors stay float32 (float16: ~0.5 px steps at 1000 px).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        sizes = [[float(s) for s in level] for level in sizes]
        aspect_ratios = [float(r) for r in aspect_ratios]
        strides = [int(s) for s in strides]
        if not sizes or len(sizes) != len(strides):
            raise ValueError(
                f"sizes needs one list per level matching strides; got {len(sizes)} size lists "
                f"for {len(strides)} strides."
            )
        if len({len(level) for level in sizes}) != 1:
            raise ValueError(
                f"Every level needs the same number of sizes (A must be constant), got {sizes}."
            )
        if any(s <= 0 for s in strides):
            raise ValueError(f"strides must be positive ints, got {strides}.")
        # Validates sizes and ratios early (raises ValueError with the offending values).
        for level in sizes:
            anchor_ops.generate_base_anchors(level, aspect_ratios)
        self.sizes = sizes
        self.aspect_ratios = aspect_ratios
        self.strides = strides
        self.offset = float(offset)
        self.round_coordinates = bool(round_coordinates)

    @property
    def num_anchors_per_location(self) -> int:
        """A: anchors per feature-map cell (``len(sizes[l]) * len(aspect_ratios)``)."""
        return len(self.sizes[0]) * len(self.aspect_ratios)

    def call(self, features: Sequence[tf.Tensor]) -> tf.Tensor:
        features = list(features)
        if len(features) != len(self.strides):
            raise ValueError(
                f"AnchorGenerator was built for {len(self.strides)} levels (strides "
                f"{self.strides}) but got {len(features)} feature maps; pass them fine to coarse."
            )
        shapes = []
        for feature in features:
            shape = tf.shape(feature)  # [B, H_l, W_l, C_l]
            shapes.append((shape[1], shape[2]))
        return anchor_ops.multilevel_anchors(
            shapes, self.strides, self.sizes, self.aspect_ratios, self.offset,
            self.round_coordinates,
        )

    def compute_output_shape(self, input_shape) -> tuple:
        total = 0
        for shape in input_shape:
            if shape[1] is None or shape[2] is None:
                return (None, 4)
            total += shape[1] * shape[2] * self.num_anchors_per_location
        return (total, 4)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "sizes": self.sizes,
                "aspect_ratios": self.aspect_ratios,
                "strides": self.strides,
                "offset": self.offset,
                "round_coordinates": self.round_coordinates,
            }
        )
        return config
