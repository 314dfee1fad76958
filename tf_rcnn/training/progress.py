"""Progress logging: one console line every N steps and TensorBoard scalars.

Console format::

    step 120/3000 (4.0%) | 23.4 img/s | ETA 02:03 | total_loss 1.234 rpn_objectness_loss 0.321
    ... | lr 0.0200

``img/s`` counts global-batch images over the wall time since the previous log line; the ETA
extrapolates that speed to the remaining steps (``MM:SS``, or ``H:MM:SS`` past an hour). The
first update of a run also traced the step function, which takes far longer than a step: the
clock restarts after it, and a line printed at that first update shows ``-- img/s`` and
``ETA --:--``.
TensorBoard scalars go to ``model_dir/train`` under ``loss/<name>``, ``learning_rate`` and
``images_per_second``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping

import tensorflow as tf
from tensorflow.core.framework import summary_pb2


def format_duration(seconds: float) -> str:
    """``MM:SS`` below an hour, ``H:MM:SS`` above; ``--:--`` when unknown."""
    if seconds != seconds or seconds == float("inf") or seconds < 0:  # NaN, inf
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_progress(
    step: int,
    total_steps: int,
    images_per_second: float,
    eta_seconds: float,
    losses: Mapping[str, float],
    learning_rate: float,
) -> str:
    """The console line for one logging point (``total_loss`` first, then the other terms)."""
    names = sorted(losses, key=lambda name: (name != "total_loss", name))
    loss_text = " ".join(f"{name} {float(losses[name]):.3f}" for name in names)
    percent = 100.0 * step / max(total_steps, 1)
    speed = f"{images_per_second:.1f}" if math.isfinite(images_per_second) else "--"
    return (
        f"step {step}/{total_steps} ({percent:.1f}%) | {speed} img/s | "
        f"ETA {format_duration(eta_seconds)} | {loss_text} | lr {learning_rate:.4f}"
    )


def _scalar_metadata() -> summary_pb2.SummaryMetadata:
    # The "scalars" plugin tag that TensorBoard's own tf.summary.scalar attaches (its plugin
    # content, ScalarPluginData version 0, serialises to empty bytes).
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    return metadata


def write_scalar(name: str, value: float, step: int) -> None:
    """Writes one TensorBoard scalar to the default summary writer.

    ``tf.summary.scalar`` lives in the ``tensorboard`` package, which is not a dependency of
    tf_rcnn; ``tf.summary.write`` with the scalar plugin metadata is core TensorFlow and yields
    the same event records, readable by any TensorBoard.
    """
    tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=_scalar_metadata())


class ProgressLogger:
    """Prints progress every ``log_every`` steps and writes TensorBoard scalars.

    Args:
        total_steps: training length, for the percentage and the ETA.
        global_batch: images per step over all replicas.
        model_dir: the run directory; summaries go to ``model_dir/train``. ``None`` disables
            TensorBoard (e.g. on non-chief workers).
        log_every: console interval in steps.
        summary_every: TensorBoard interval in steps.
        start_step: step the run (re)starts from, so the first speed estimate is right.
    """

    def __init__(
        self,
        total_steps: int,
        global_batch: int,
        model_dir: str | None,
        log_every: int = 20,
        summary_every: int = 20,
        start_step: int = 0,
    ) -> None:
        self.total_steps = total_steps
        self.global_batch = global_batch
        self.model_dir = model_dir
        self.log_every = max(1, log_every)
        self.summary_every = max(1, summary_every)
        self.writer = (
            tf.summary.create_file_writer(os.path.join(model_dir, "train"))
            if model_dir is not None
            else None
        )
        self.reset_timer(start_step)
        # Until the first update, the clock runs over start-up (tracing the step function).
        self.timing_startup = True
        self.last_line = ""

    def reset_timer(self, step: int) -> None:
        """Restarts the speed measurement at ``step`` (after tracing, restore, eval or
        checkpointing)."""
        self._last_step = step
        self._last_time = time.perf_counter()
        self.images_per_second = 0.0
        self.timing_startup = False

    def _measure(self, step: int) -> float:
        """Images per second since the last measurement; NaN while that interval includes the
        start-up (tracing)."""
        now = time.perf_counter()
        steps = step - self._last_step
        if self.timing_startup:
            self.images_per_second = float("nan")
        elif steps > 0 and now > self._last_time:
            self.images_per_second = steps * self.global_batch / (now - self._last_time)
        self._last_step, self._last_time = step, now
        return self.images_per_second

    def should_log(self, step: int, previous_step: int) -> bool:
        """Whether an interval boundary lies in ``(previous_step, step]`` or training ended."""
        return step // self.log_every > previous_step // self.log_every or step >= self.total_steps

    def should_summarise(self, step: int, previous_step: int) -> bool:
        return step // self.summary_every > previous_step // self.summary_every

    def update(
        self,
        step: int,
        previous_step: int,
        losses: Mapping[str, float],
        learning_rate: float,
    ) -> str | None:
        """Logs/writes whatever falls due between ``previous_step`` and ``step``.

        Args:
            step: steps finished so far.
            previous_step: steps finished at the previous call (loops of several steps).
            losses: scalar losses of the latest step (Python floats or scalar tensors).
            learning_rate: the learning rate of the latest step.

        Returns:
            The console line if one was printed, else None.
        """
        try:
            return self._update(step, previous_step, losses, learning_rate)
        finally:
            if self.timing_startup:  # the first update: measure speed from here on
                self.reset_timer(step)

    def _update(self, step: int, previous_step: int, losses: Mapping[str, float],
                learning_rate: float) -> str | None:
        log = self.should_log(step, previous_step)
        summarise = self.writer is not None and self.should_summarise(step, previous_step)
        if not (log or summarise):
            return None
        speed = self._measure(step)
        values = {name: float(value) for name, value in losses.items()}
        if summarise:
            with self.writer.as_default():
                for name, value in values.items():
                    write_scalar(f"loss/{name}", value, step)
                write_scalar("learning_rate", float(learning_rate), step)
                if math.isfinite(speed):
                    write_scalar("images_per_second", speed, step)
            self.writer.flush()
        if not log:
            return None
        remaining = self.total_steps - step
        eta = remaining * self.global_batch / speed if speed > 0 else float("nan")  # NaN: --:--
        line = format_progress(step, self.total_steps, speed, eta, values, float(learning_rate))
        print(line, flush=True)
        self.last_line = line
        return line

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
