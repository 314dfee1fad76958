"""Optimisers: SGD with Detectron-style coupled L2 weight decay, and AdamW.

Conventions:
    Coupled (L2) weight decay adds ``weight_decay * var`` to the gradient before the optimizer
    update, so it passes through momentum exactly like the data gradient (Detectron, Caffe,
    ``torch.optim.SGD(weight_decay=...)``). Keras's own ``weight_decay`` argument is *decoupled*
    (``var -= lr * wd * var`` outside momentum); AdamW uses that one on purpose.

Which variables are decayed (the rule, by the last component of the variable path):
    - ``gamma`` / ``beta``: scale and offset of normalisation layers (Keras BatchNormalization,
      GroupNormalization, LayerNormalization and any tf_rcnn frozen-BN layer, which use these
      names). Decayed with ``weight_decay_norm`` (default 0, i.e. excluded).
    - ``bias``: decayed with ``weight_decay`` unless ``exclude_bias_from_decay``.
    - everything else (kernels, embeddings): decayed with ``weight_decay``.
    Variables without a gradient (frozen) are never touched.

Distribution:
    Under ``tf.distribute`` the optimizer SUMS per-replica gradients. Each replica therefore adds
    ``weight_decay * var / num_replicas_in_sync`` so that the summed decay is ``weight_decay *
    var``, independent of the replica count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from tf_rcnn.config import ConfigError
from tf_rcnn.training.schedules import build_schedule
from tf_rcnn.training.strategy import scale_learning_rate

OPTIMIZER_KINDS = ("sgd", "adamw")
NORM_VARIABLE_NAMES = ("gamma", "beta")
BIAS_VARIABLE_NAMES = ("bias",)


def variable_short_name(variable: Any) -> str:
    """Last path component of a Keras or TF variable, without the ``:0`` suffix."""
    path = getattr(variable, "path", None) or variable.name
    return path.split("/")[-1].split(":")[0]


def weight_decay_rate(
    variable: Any,
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    exclude_bias_from_decay: bool = False,
) -> float:
    """Decay coefficient for ``variable`` under the rule in the module docstring."""
    name = variable_short_name(variable)
    if name in NORM_VARIABLE_NAMES:
        return weight_decay_norm
    if name in BIAS_VARIABLE_NAMES and exclude_bias_from_decay:
        return 0.0
    return weight_decay


def apply_weight_decay(
    grads_and_vars: Iterable[tuple[tf.Tensor | None, Any]],
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    exclude_bias_from_decay: bool = False,
    scale: float | tf.Tensor = 1.0,
) -> list[tuple[tf.Tensor | None, Any]]:
    """Adds coupled L2 weight decay to gradients: ``grad + scale * rate(var) * var``.

    Args:
        grads_and_vars: pairs of gradient (any shape, float; ``None`` for no gradient) and the
            variable it belongs to (same shape).
        weight_decay: L2 coefficient for kernels (and biases unless excluded).
        weight_decay_norm: coefficient for normalisation ``gamma``/``beta``.
        exclude_bias_from_decay: if True, biases get no decay.
        scale: multiplier of the decay term, e.g. ``1 / num_replicas_in_sync`` when the
            gradients are later summed over replicas, or the loss scale for scaled gradients.

    Returns:
        New list of ``(grad, var)`` pairs; ``None`` gradients stay ``None``.
    """
    result = []
    for grad, var in grads_and_vars:
        rate = weight_decay_rate(var, weight_decay, weight_decay_norm, exclude_bias_from_decay)
        if grad is None or rate == 0.0:
            result.append((grad, var))
            continue
        grad = tf.convert_to_tensor(grad)  # IndexedSlices (embeddings) -> dense
        value = tf.cast(tf.convert_to_tensor(var), grad.dtype)
        result.append((grad + tf.cast(scale * rate, grad.dtype) * value, var))
    return result


@keras.saving.register_keras_serializable(package="tf_rcnn")
class CoupledWeightDecaySGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with Detectron-style coupled L2 weight decay.

    The decay is added to the gradients in :meth:`apply`, so it works with the tf_rcnn
    :class:`~tf_rcnn.training.trainer.Trainer`, with ``model.fit`` and inside a
    ``keras.optimizers.LossScaleOptimizer`` (which calls ``apply`` with unscaled gradients).

    Args:
        learning_rate: float or ``LearningRateSchedule``.
        momentum: SGD momentum.
        nesterov: use Nesterov momentum.
        l2_weight_decay: coupled L2 coefficient (see the module docstring for the rule).
        l2_weight_decay_norm: coefficient for normalisation ``gamma``/``beta``.
        exclude_bias_from_decay: if True, biases get no decay.
        **kwargs: forwarded to ``keras.optimizers.SGD`` (``clipnorm``, ``clipvalue``, ``name``).
            Passing Keras's decoupled ``weight_decay`` here is rejected.
    """

    def __init__(
        self,
        learning_rate: Any = 0.01,
        momentum: float = 0.9,
        nesterov: bool = False,
        l2_weight_decay: float = 1e-4,
        l2_weight_decay_norm: float = 0.0,
        exclude_bias_from_decay: bool = False,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("weight_decay"):
            raise ValueError(
                "CoupledWeightDecaySGD takes its decay as l2_weight_decay; Keras's "
                "weight_decay is decoupled and would decay twice. Drop weight_decay."
            )
        kwargs.pop("weight_decay", None)
        super().__init__(
            learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs
        )
        if l2_weight_decay < 0 or l2_weight_decay_norm < 0:
            raise ValueError(
                f"weight decay must be >= 0, got l2_weight_decay={l2_weight_decay}, "
                f"l2_weight_decay_norm={l2_weight_decay_norm}."
            )
        self.l2_weight_decay = float(l2_weight_decay)
        self.l2_weight_decay_norm = float(l2_weight_decay_norm)
        self.exclude_bias_from_decay = bool(exclude_bias_from_decay)

    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None):
        variables = (
            list(trainable_variables)
            if trainable_variables is not None
            else list(self._trainable_variables)
        )
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        pairs = apply_weight_decay(
            zip(grads, variables, strict=True),
            self.l2_weight_decay,
            self.l2_weight_decay_norm,
            self.exclude_bias_from_decay,
            scale=1.0 / replicas,
        )
        return super().apply([g for g, _ in pairs], trainable_variables)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "l2_weight_decay": self.l2_weight_decay,
                "l2_weight_decay_norm": self.l2_weight_decay_norm,
                "exclude_bias_from_decay": self.exclude_bias_from_decay,
            }
        )
        config.pop("weight_decay", None)
        return config


def build_optimizer(
    kind: str = "sgd",
    learning_rate: Any = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    weight_decay_norm: float = 0.0,
    exclude_bias_from_decay: bool = False,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
) -> keras.optimizers.Optimizer:
    """Builds the training optimizer.

    Args:
        kind: ``"sgd"`` (momentum SGD with coupled L2 decay, the R-CNN recipes) or ``"adamw"``
            (Keras AdamW with decoupled decay).
        learning_rate: float or ``LearningRateSchedule`` (see ``schedules.build_schedule``).
        momentum: SGD momentum (ignored by AdamW).
        weight_decay: decay coefficient for kernels (and biases unless excluded).
        weight_decay_norm: decay for normalisation ``gamma``/``beta``. SGD accepts any value;
            AdamW only 0 (excluded) or ``weight_decay`` (Keras has one decoupled rate).
        exclude_bias_from_decay: if True, biases are not decayed.
        clipnorm: per-variable gradient norm clip (Keras semantics, applied per replica before
            the cross-replica sum). For an exact global-norm clip use ``Trainer(clip_norm=...)``.
        clipvalue: per-element gradient clip (Keras semantics).

    Returns:
        A Keras optimizer. Create it under ``strategy.scope()`` when distributing.

    Raises:
        ValueError: unknown kind or an unsupported AdamW decay combination.
    """
    if kind not in OPTIMIZER_KINDS:
        raise ValueError(f"Unknown optimizer kind {kind!r}; use one of {OPTIMIZER_KINDS}.")
    clip_kwargs = {"clipnorm": clipnorm, "clipvalue": clipvalue}
    if kind == "sgd":
        return CoupledWeightDecaySGD(
            learning_rate=learning_rate,
            momentum=momentum,
            l2_weight_decay=weight_decay,
            l2_weight_decay_norm=weight_decay_norm,
            exclude_bias_from_decay=exclude_bias_from_decay,
            **clip_kwargs,
        )
    if weight_decay_norm not in (0.0, weight_decay):
        raise ValueError(
            f"adamw has a single decoupled decay rate: weight_decay_norm must be 0 (exclude "
            f"norm parameters) or equal weight_decay={weight_decay}, got {weight_decay_norm}."
        )
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate, weight_decay=weight_decay, **clip_kwargs
    )
    excluded = []
    if weight_decay_norm == 0.0:
        excluded += list(NORM_VARIABLE_NAMES)
    if exclude_bias_from_decay:
        excluded += list(BIAS_VARIABLE_NAMES)
    if excluded:
        # Keras matches these regexes against variable.name, which is the short name.
        optimizer.exclude_from_weight_decay(var_names=[f"^{name}$" for name in excluded])
    return optimizer


def optimizer_from_config(config: ml_collections.ConfigDict,
                          global_batch: int) -> keras.optimizers.Optimizer:
    """``config.train`` -> a Keras optimizer with its warmup/decay schedule.

    The learning rate follows the linear scaling rule from ``train.base_batch_size``.

    Raises:
        ConfigError: schedule values that cannot work together (the message names the
            ``--config.train.*`` flags to change).
    """
    t = config.train
    lr = scale_learning_rate(t.base_learning_rate, t.base_batch_size, global_batch)
    if lr != t.base_learning_rate:
        logging.info("Linear scaling rule: lr %.5f for batch %d -> %.5f for batch %d",
                     t.base_learning_rate, t.base_batch_size, lr, global_batch)
    # Every schedule value that does not fit total_steps is reported at once, with flags that
    # fix all of them (a shortened run usually trips the warmup and the decay steps together).
    problems, fixes = [], []
    if t.warmup_steps > t.total_steps:
        problems.append(f"train.warmup_steps={t.warmup_steps} exceeds train.total_steps="
                        f"{t.total_steps}")
        fixes.append(f"--config.train.warmup_steps={t.total_steps // 10} (or fewer)")
    if t.schedule == "step" and any(s > t.total_steps for s in t.decay_steps):
        problems.append(f"train.decay_steps={tuple(t.decay_steps)} must not exceed "
                        f"train.total_steps={t.total_steps}")
        fixes.append(f"--config.train.decay_steps='({int(t.total_steps * 2 / 3)}, "
                     f"{int(t.total_steps * 8 / 9)})' (or --config.train.schedule=cosine)")
    if problems:
        raise ConfigError("; ".join(problems) + ". With this many steps pass "
                          + " and ".join(fixes) + ".")
    try:
        schedule = build_schedule(
            t.schedule,
            base_lr=lr,
            total_steps=t.total_steps,
            warmup_steps=t.warmup_steps,
            warmup_factor=t.warmup_factor,
            steps=tuple(t.decay_steps),
            gamma=t.decay_gamma,
        )
        return build_optimizer(
            t.optimizer,
            learning_rate=schedule,
            momentum=t.momentum,
            weight_decay=t.weight_decay,
            weight_decay_norm=t.weight_decay_norm,
            exclude_bias_from_decay=t.exclude_bias_from_decay,
        )
    except ValueError as error:
        raise ConfigError(f"{error} (set in the recipe's train section; override with "
                          "--config.train.KEY=VALUE)") from None
