"""Learning-rate schedules: linear warmup combined with step decay or cosine decay.

Conventions:
    ``step`` is the optimizer's iteration counter (0 for the first update), so a schedule is
    resumed exactly by restoring ``optimizer.iterations`` from a checkpoint.
    The warmup factor multiplies the main schedule (as in Goyal et al. 2017 and Detectron):
    ``lr(step) = base_lr * warmup(step) * decay(step)`` with
    ``warmup(step) = warmup_factor + (1 - warmup_factor) * step / warmup_steps`` for
    ``step < warmup_steps`` and 1 afterwards.
    Step decay: ``decay(step) = gamma ** (number of boundaries b with step >= b)``.
    Cosine decay: ``decay(step) = final_factor + (1 - final_factor) * 0.5 * (1 + cos(pi *
    min(step, total_steps) / total_steps))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

SCHEDULE_KINDS = ("step", "cosine", "constant")


def _warmup_factor(step: tf.Tensor, warmup_steps: int, warmup_factor: float) -> tf.Tensor:
    """Linear ramp from ``warmup_factor`` at step 0 to 1 at ``warmup_steps`` (float32 scalar)."""
    if warmup_steps <= 0:
        return tf.constant(1.0, tf.float32)
    alpha = tf.minimum(step / float(warmup_steps), 1.0)
    return warmup_factor + (1.0 - warmup_factor) * alpha


def _check_warmup(warmup_steps: int, warmup_factor: float) -> None:
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    if not 0.0 <= warmup_factor <= 1.0:
        raise ValueError(f"warmup_factor must be in [0, 1], got {warmup_factor}.")


@keras.saving.register_keras_serializable(package="tf_rcnn")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup followed by piecewise-constant decay by ``gamma`` at each boundary.

    Example (Detectron 1x schedule on 16 images):
        ``WarmupStepDecay(0.02, boundaries=(60000, 80000), warmup_steps=1000,
        warmup_factor=0.001)``.

    Args:
        base_lr: learning rate after warmup and before the first boundary.
        boundaries: strictly increasing steps at which the rate is multiplied by ``gamma``.
        gamma: decay factor per boundary.
        warmup_steps: length of the linear warmup, 0 for none.
        warmup_factor: warmup multiplier at step 0.
    """

    def __init__(
        self,
        base_lr: float,
        boundaries: Sequence[int] = (),
        gamma: float = 0.1,
        warmup_steps: int = 0,
        warmup_factor: float = 0.001,
        name: str | None = None,
    ) -> None:
        super().__init__()
        boundaries = [int(b) for b in boundaries]
        if any(b2 <= b1 for b1, b2 in zip(boundaries[:-1], boundaries[1:], strict=True)):
            raise ValueError(f"boundaries must be strictly increasing, got {boundaries}.")
        if any(b <= 0 for b in boundaries):
            raise ValueError(f"boundaries must be positive steps, got {boundaries}.")
        _check_warmup(warmup_steps, warmup_factor)
        self.base_lr = float(base_lr)
        self.boundaries = boundaries
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.name = name

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        num_passed = tf.zeros([], tf.float32)
        for boundary in self.boundaries:
            num_passed += tf.cast(step >= boundary, tf.float32)
        decay = tf.pow(tf.constant(self.gamma, tf.float32), num_passed)
        return self.base_lr * _warmup_factor(step, self.warmup_steps, self.warmup_factor) * decay

    def get_config(self) -> dict[str, Any]:
        return {
            "base_lr": self.base_lr,
            "boundaries": list(self.boundaries),
            "gamma": self.gamma,
            "warmup_steps": self.warmup_steps,
            "warmup_factor": self.warmup_factor,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="tf_rcnn")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup multiplied by a half-cosine from ``base_lr`` to ``final_factor * base_lr``.

    Args:
        base_lr: peak learning rate.
        total_steps: step at which the cosine reaches its end; the rate stays there afterwards.
        warmup_steps: length of the linear warmup, 0 for none.
        warmup_factor: warmup multiplier at step 0.
        final_factor: fraction of ``base_lr`` left at ``total_steps``.
    """

    def __init__(
        self,
        base_lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_factor: float = 0.001,
        final_factor: float = 0.0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}.")
        _check_warmup(warmup_steps, warmup_factor)
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.final_factor = float(final_factor)
        self.name = name

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        progress = tf.minimum(step, float(self.total_steps)) / float(self.total_steps)
        cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
        decay = self.final_factor + (1.0 - self.final_factor) * cosine
        return self.base_lr * _warmup_factor(step, self.warmup_steps, self.warmup_factor) * decay

    def get_config(self) -> dict[str, Any]:
        return {
            "base_lr": self.base_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_factor": self.warmup_factor,
            "final_factor": self.final_factor,
            "name": self.name,
        }


def build_schedule(
    kind: str,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_factor: float = 0.001,
    steps: Sequence[int] = (),
    gamma: float = 0.1,
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Builds a warmup + decay schedule.

    Args:
        kind: ``"step"`` (decay by ``gamma`` at each of ``steps``), ``"cosine"`` (cosine to 0
            at ``total_steps``) or ``"constant"`` (warmup only).
        base_lr: learning rate after warmup.
        total_steps: length of training; every decay step must be below it.
        warmup_steps: length of the linear warmup.
        warmup_factor: warmup multiplier at step 0.
        steps: decay boundaries for ``"step"``.
        gamma: decay factor for ``"step"``.

    Returns:
        A serialisable ``LearningRateSchedule``.

    Raises:
        ValueError: unknown kind, or warmup/decay steps outside ``(0, total_steps]``.
    """
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"Unknown schedule kind {kind!r}; use one of {SCHEDULE_KINDS}.")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}.")
    if warmup_steps > total_steps:
        raise ValueError(
            f"warmup_steps={warmup_steps} exceeds total_steps={total_steps}; shorten the warmup."
        )
    if kind == "cosine":
        return WarmupCosineDecay(base_lr, total_steps, warmup_steps, warmup_factor)
    boundaries = list(steps) if kind == "step" else []
    if any(s > total_steps for s in boundaries):
        raise ValueError(
            f"decay steps {boundaries} must not exceed total_steps={total_steps}; scale the "
            "steps together with total_steps."
        )
    return WarmupStepDecay(base_lr, boundaries, gamma, warmup_steps, warmup_factor)
