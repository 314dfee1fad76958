"""A strategy-aware custom training loop with checkpoints, resume, progress and NaN guard.

Conventions:
    The model is a ``keras.Model`` with ``compute_losses(images, targets, training=True)``
    returning a dict of scalar float losses that includes ``"total_loss"``, each a mean over
    the PER-REPLICA batch. Dataset elements are ``(images [B, H, W, 3] float32, targets dict)``
    with ``B`` the per-replica batch.

    One loop serves every strategy (default, one device, mirrored, multi-worker, TPU):
    ``strategy.run(step_fn)`` inside a ``tf.function``. Each replica differentiates
    ``total_loss / num_replicas_in_sync``; the optimizer SUMS gradients over replicas, which
    gives the gradient of the global-batch mean. Reported losses are ``strategy.reduce(MEAN)``
    of the per-replica values.

    Steps: ``trainer.step`` counts finished updates; the k-th update is "step k". Checkpoints
    are ``model_dir/ckpt-<step>``, TensorBoard summaries ``model_dir/train``.

Mixed precision:
    With the global Keras policy ``mixed_float16`` the optimizer is wrapped in
    ``keras.optimizers.LossScaleOptimizer``; the loss is scaled before differentiation and the
    optimizer unscales the gradients (and skips steps with non-finite gradients).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from tf_rcnn.training.checkpoints import CheckpointManager, export_best
from tf_rcnn.training.progress import ProgressLogger
from tf_rcnn.training.summaries import write_image_summary

NAN_POLICIES = ("stop", "warn")

DatasetLike = Any  # Callable[[tf.distribute.InputContext], tf.data.Dataset] | tf.data.Dataset
# | tf.distribute.DistributedDataset


class NonFiniteLossError(FloatingPointError):
    """Raised when ``total_loss`` becomes NaN or Inf under ``nan_policy="stop"``."""


def _next_multiple(step: int, every: int | None) -> int:
    if not every:
        return 1 << 62
    return (step // every + 1) * every


class Trainer:
    """Trains a tf_rcnn model under any ``tf.distribute`` strategy.

    Build the model (with variables) and the optimizer under ``strategy.scope()`` first, then::

        trainer = Trainer(model, optimizer, strategy, model_dir="runs/x")
        metrics = trainer.train(dataset_fn, total_steps=3000, global_batch=8)

    Running ``train`` again with the same ``model_dir`` resumes from the newest checkpoint:
    model weights, optimizer slots, the optimizer iteration counter (hence the learning-rate
    schedule position) and the step.

    Args:
        model: ``keras.Model`` with ``compute_losses`` (see module docstring).
        optimizer: Keras optimizer, e.g. from ``optimizers.build_optimizer`` (coupled L2 weight
            decay lives in the SGD optimizer itself).
        strategy: the distribution strategy; ``None`` means the current (default) one.
        model_dir: run directory for checkpoints, summaries and ``best/``.
        checkpoint_every: save every this many steps (and always at the end).
        keep: number of recent checkpoints kept.
        log_every: console progress interval in steps.
        summary_every: TensorBoard interval in steps.
        nan_policy: ``"stop"`` raises :class:`NonFiniteLossError` naming the step, every loss
            term and the last good checkpoint; ``"warn"`` logs and continues (only sensible
            with loss scaling, which skips the bad update).
        clip_norm: if set, clip the global-batch gradient to this global L2 norm (exact under
            distribution: the clip factor is computed from the all-reduced gradient).
        steps_per_loop: number of steps run inside one ``tf.function`` call. Logging,
            checkpoints and evaluation happen at loop boundaries; loops are shortened so that
            checkpoint and evaluation steps are boundaries.
        eval_fn: optional ``eval_fn(step) -> dict[str, float]`` called on the chief every
            ``eval_every`` steps (and at the end).
        eval_every: evaluation interval in steps.
        best_metric: key of ``eval_fn``'s result; the best checkpoint by it is copied to
            ``model_dir/best``.
        best_mode: ``"max"`` or ``"min"`` for ``best_metric``.
        image_fn: optional ``image_fn(step) -> uint8 [H, W, 3]`` (e.g. detections drawn on
            validation images, :func:`tf_rcnn.evaluation.watch.make_image_fn`) written to
            TensorBoard as ``detections`` every ``image_every`` steps, on the chief only.
        image_every: image summary interval in steps.
        loss_terms: optional names of the ``compute_losses`` terms to optimise; their sum then
            replaces ``total_loss`` (differentiated, logged and NaN-checked). Alternating training
            uses it to train the RPN on ``("rpn_objectness_loss", "rpn_box_loss")`` only.
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy | None,
        model_dir: str,
        checkpoint_every: int = 500,
        keep: int = 5,
        log_every: int = 20,
        summary_every: int = 20,
        nan_policy: str = "stop",
        clip_norm: float | None = None,
        steps_per_loop: int = 1,
        eval_fn: Callable[[int], Mapping[str, float]] | None = None,
        eval_every: int | None = None,
        best_metric: str | None = None,
        best_mode: str = "max",
        image_fn: Callable[[int], Any] | None = None,
        image_every: int | None = None,
        loss_terms: Sequence[str] | None = None,
    ) -> None:
        if not hasattr(model, "compute_losses"):
            raise ValueError(
                f"model {type(model).__name__} has no compute_losses(images, targets, "
                "training=True) method; the Trainer needs it to get the losses."
            )
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}.")
        if steps_per_loop < 1:
            raise ValueError(f"steps_per_loop must be >= 1, got {steps_per_loop}.")
        if clip_norm is not None and clip_norm <= 0:
            raise ValueError(f"clip_norm must be positive or None, got {clip_norm}.")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}.")
        if eval_fn is not None and not eval_every:
            raise ValueError("eval_fn needs eval_every (steps between evaluations).")
        if image_fn is not None and not image_every:
            raise ValueError("image_fn needs image_every (steps between image summaries).")
        self.model = model
        self.strategy = strategy or tf.distribute.get_strategy()
        self.model_dir = str(model_dir)
        self.checkpoint_every = checkpoint_every
        self.keep = keep
        self.log_every = log_every
        self.summary_every = summary_every
        self.nan_policy = nan_policy
        self.clip_norm = clip_norm
        self.steps_per_loop = steps_per_loop
        self.eval_fn = eval_fn
        self.eval_every = eval_every
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.image_fn = image_fn
        self.image_every = image_every
        self.loss_terms = tuple(loss_terms) if loss_terms else None
        self.best_value: float | None = None
        self.eval_history: list[dict[str, float]] = []

        policy = keras.mixed_precision.global_policy().name
        with self.strategy.scope():
            if policy == "mixed_float16" and not isinstance(
                optimizer, keras.optimizers.LossScaleOptimizer
            ):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        self.optimizer = optimizer
        self.checkpoints = CheckpointManager(
            self.model_dir,
            model,
            optimizer,
            step=self.step,
            keep=keep,
            checkpoint_every=checkpoint_every,
            strategy=self.strategy,
        )
        self._loop_fn = None

    # ----------------------------------------------------------------------------- step
    @property
    def _uses_loss_scale(self) -> bool:
        return isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)

    def _clip(self, grads: list[tf.Tensor | None]) -> list[tf.Tensor | None]:
        """Scales this replica's gradients so the cross-replica SUM has norm <= clip_norm."""
        present = [g for g in grads if g is not None]
        if not present:
            return grads
        present = [tf.convert_to_tensor(g) for g in present]
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # Sum of the per-replica gradients = the global gradient the optimizer will apply.
            total = context.all_reduce(tf.distribute.ReduceOp.SUM, present)
        else:
            total = present
        norm = tf.linalg.global_norm(total)
        factor = tf.minimum(1.0, self.clip_norm / tf.maximum(norm, 1e-12))
        return [None if g is None else tf.convert_to_tensor(g) * factor for g in grads]

    def _step_fn(self, batch: Any) -> dict[str, tf.Tensor]:
        """One update on one replica; returns this replica's float32 losses."""
        images, targets = batch
        replicas = self.strategy.num_replicas_in_sync
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            losses = self.model.compute_losses(images, targets, training=True)
            if "total_loss" not in losses:
                raise ValueError(
                    f"compute_losses returned {sorted(losses)} without 'total_loss'; the "
                    "trainer differentiates total_loss."
                )
            losses = {name: tf.cast(value, tf.float32) for name, value in losses.items()}
            if self.loss_terms is not None:
                unknown = [n for n in self.loss_terms if n not in losses]
                if unknown:
                    raise ValueError(
                        f"loss_terms {unknown} are not among the model's losses {sorted(losses)}."
                    )
                losses["total_loss"] = tf.add_n([losses[n] for n in self.loss_terms])
            loss = losses["total_loss"] / replicas
            if self._uses_loss_scale:
                loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(loss, variables)
        if self.clip_norm is not None:
            if self._uses_loss_scale:
                scale = tf.cast(self.optimizer.dynamic_scale, tf.float32)
                grads = [None if g is None else g / scale for g in grads]
                grads = [None if g is None else g * scale for g in self._clip(grads)]
            else:
                grads = self._clip(grads)
        self.optimizer.apply(grads, variables)
        return losses

    def _replicated_step(self, batch: Any) -> dict[str, tf.Tensor]:
        per_replica = self.strategy.run(self._step_fn, args=(batch,))
        return {
            name: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in per_replica.items()
        }

    def _make_loop_fn(self) -> Callable:
        @tf.function
        def loop_fn(iterator: Any, num_steps: tf.Tensor) -> tuple[dict[str, tf.Tensor], Any]:
            # First step outside the loop fixes the structure of the loop-carried losses.
            losses = self._replicated_step(next(iterator))
            self.step.assign_add(1)
            finite = tf.math.is_finite(losses["total_loss"])
            for _ in tf.range(num_steps - 1):
                if not finite:
                    break  # stop at the first bad step so the error names it
                losses = self._replicated_step(next(iterator))
                self.step.assign_add(1)
                finite = tf.math.is_finite(losses["total_loss"])
            return losses, finite

        return loop_fn

    # ----------------------------------------------------------------------------- data
    def _distribute(self, dataset: DatasetLike) -> Any:
        if isinstance(dataset, tf.distribute.DistributedDataset):
            return dataset
        if isinstance(dataset, tf.data.Dataset):
            # A plain dataset is batched with the GLOBAL batch and split over replicas.
            return self.strategy.experimental_distribute_dataset(dataset)
        if callable(dataset):
            return self.strategy.distribute_datasets_from_function(dataset)
        raise ValueError(
            f"dataset must be a function input_context -> tf.data.Dataset (per-replica batch), "
            f"a tf.data.Dataset (global batch) or a distributed dataset; got {type(dataset)}."
        )

    def _ensure_built(self, iterator: Any) -> None:
        """Creates model variables from one batch if the model has none yet."""
        if self.model.trainable_variables:
            return
        logging.info("Model has no variables yet: building it on one batch.")
        with self.strategy.scope():
            self.strategy.run(
                lambda batch: self.model.compute_losses(batch[0], batch[1], training=True),
                args=(next(iterator),),
            )

    def _resolve_batches(self, per_replica_batch: int | None, global_batch: int | None) -> int:
        replicas = self.strategy.num_replicas_in_sync
        if global_batch is None and per_replica_batch is None:
            raise ValueError("train() needs global_batch or per_replica_batch (for img/s).")
        if global_batch is None:
            global_batch = per_replica_batch * replicas
        if per_replica_batch is not None and per_replica_batch * replicas != global_batch:
            raise ValueError(
                f"global_batch={global_batch} != per_replica_batch={per_replica_batch} x "
                f"{replicas} replicas; pass consistent values."
            )
        if global_batch % replicas:
            raise ValueError(
                f"global_batch={global_batch} is not divisible by the {replicas} replicas."
            )
        logging.info(
            "Training with %d replica(s), global batch %d (%d per replica).",
            replicas,
            global_batch,
            global_batch // replicas,
        )
        return global_batch

    # ----------------------------------------------------------------------------- loop
    def _current_learning_rate(self) -> float:
        return float(tf.convert_to_tensor(self.optimizer.learning_rate))

    def _raise_non_finite(self, losses: Mapping[str, float], step: int) -> None:
        terms = ", ".join(f"{name}={value:.6g}" for name, value in sorted(losses.items()))
        last_good = self.checkpoints.latest_checkpoint or "none (no checkpoint written yet)"
        message = (
            f"Non-finite total_loss at step {step}: {terms}. Last good checkpoint: {last_good}. "
            "Lower the learning rate, lengthen the warmup or set clip_norm, then resume."
        )
        if self.nan_policy == "stop":
            raise NonFiniteLossError(message)
        logging.warning(message)

    def _evaluate(self, step: int) -> None:
        """Runs ``eval_fn`` on the chief and exports the best checkpoint (already saved)."""
        if not self.checkpoints.is_chief:
            return
        metrics = {name: float(value) for name, value in self.eval_fn(step).items()}
        self.eval_history.append({"step": step, **metrics})
        logging.info("Evaluation at step %d: %s", step, metrics)
        if self.best_metric is None:
            return
        if self.best_metric not in metrics:
            raise ValueError(
                f"best_metric {self.best_metric!r} is not among the eval metrics {sorted(metrics)}."
            )
        value = metrics[self.best_metric]
        better = (
            self.best_value is None
            or (self.best_mode == "max" and value > self.best_value)
            or (self.best_mode == "min" and value < self.best_value)
        )
        if better:
            self.best_value = value
            path = os.path.join(self.model_dir, f"ckpt-{step}")
            export_best(path, os.path.join(self.model_dir, "best"), metrics)
            logging.info("New best %s=%.4f at step %d.", self.best_metric, value, step)

    def _write_image(self, progress: ProgressLogger, step: int) -> None:
        """Writes ``image_fn(step)`` as the TensorBoard image ``detections`` (chief only)."""
        if progress.writer is None:
            return
        image = self.image_fn(step)
        with progress.writer.as_default():
            write_image_summary("detections", image, step)
        progress.writer.flush()

    def train(
        self,
        dataset: DatasetLike,
        total_steps: int,
        per_replica_batch: int | None = None,
        global_batch: int | None = None,
        after_restore: Callable[[int], None] | None = None,
    ) -> dict[str, float]:
        """Trains until ``total_steps`` updates are done, resuming from ``model_dir`` if possible.

        Args:
            dataset: ``input_context -> tf.data.Dataset`` yielding per-replica batches (used
                with ``distribute_datasets_from_function``), a ``tf.data.Dataset`` yielding
                global batches, or an already distributed dataset. It must not run out
                (``.repeat()``).
            total_steps: total number of updates of the run (including resumed ones).
            per_replica_batch: images per replica per step.
            global_batch: images per step over all replicas.
            after_restore: called with the start step once the newest checkpoint of
                ``model_dir`` has been checked and restored (or found absent), before the first
                update; ``run_training`` writes the run's config.json there.

        Returns:
            Final losses (mean over replicas of the last step) plus ``step`` and
            ``learning_rate``; empty losses if nothing was left to train.

        Raises:
            NonFiniteLossError: total loss became NaN/Inf and ``nan_policy="stop"``.
            ValueError: inconsistent batch sizes, a checkpoint that does not fit, or a dataset
                that runs out.
        """
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
        global_batch = self._resolve_batches(per_replica_batch, global_batch)
        iterator = iter(self._distribute(dataset))
        self._ensure_built(iterator)
        if not self.optimizer.built:
            with self.strategy.scope():
                self.optimizer.build(self.model.trainable_variables)

        step = self.checkpoints.restore_or_initialize()
        if after_restore is not None:
            after_restore(step)
        progress = ProgressLogger(
            total_steps,
            global_batch,
            self.model_dir if self.checkpoints.is_chief else None,
            log_every=self.log_every,
            summary_every=self.summary_every,
            start_step=step,
        )
        if self._loop_fn is None:
            self._loop_fn = self._make_loop_fn()
        values: dict[str, float] = {}
        try:
            while step < total_steps:
                num_steps = min(
                    self.steps_per_loop,
                    total_steps - step,
                    _next_multiple(step, self.checkpoint_every) - step,
                    _next_multiple(step, self.eval_every) - step,
                    _next_multiple(step, self.image_every) - step,
                )
                try:
                    losses, finite = self._loop_fn(iterator, tf.constant(num_steps, tf.int32))
                except (tf.errors.OutOfRangeError, StopIteration) as error:
                    raise ValueError(
                        f"The dataset ran out at step {int(self.step.numpy())}; make it infinite "
                        "with .repeat() (the trainer counts steps, not epochs)."
                    ) from error
                previous, step = step, int(self.step.numpy())
                values = {name: float(value) for name, value in losses.items()}
                if not bool(finite) or not math.isfinite(values["total_loss"]):
                    self._raise_non_finite(values, step)
                progress.update(step, previous, values, self._current_learning_rate())
                eval_due = self.eval_fn is not None and (
                    step % self.eval_every == 0 or step >= total_steps
                )
                # Every worker takes part in saving (collectives); evaluation is chief-only.
                saved = self.checkpoints.maybe_save(step, force=eval_due or step >= total_steps)
                if eval_due:
                    self._evaluate(step)
                image_due = self.image_fn is not None and step % self.image_every == 0
                if image_due:
                    self._write_image(progress, step)
                if saved or eval_due or image_due:
                    # Saving, evaluating and drawing are not training: restart the img/s clock.
                    progress.reset_timer(step)
        finally:
            progress.close()
        if not values:
            return {}
        return {**values, "step": float(step), "learning_rate": self._current_learning_rate()}
