"""Progress line format and TensorBoard scalars."""

from __future__ import annotations

import glob
import os

import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from tf_rcnn.training.progress import ProgressLogger, format_duration, format_progress


def test_format_progress_line():
    line = format_progress(
        120, 3000, 23.4, 123.0, {"rpn_objectness_loss": 0.3211, "total_loss": 1.2344}, 0.02
    )
    # 120 / 3000 = 4.0 %; 123 s = 02:03; total_loss is listed first.
    assert line == (
        "step 120/3000 (4.0%) | 23.4 img/s | ETA 02:03 | total_loss 1.234 "
        "rpn_objectness_loss 0.321 | lr 0.0200"
    )
    assert format_duration(3725) == "1:02:05"  # 1 h 2 min 5 s
    assert format_duration(float("nan")) == "--:--"


def _scalars(directory: str) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                number = float(tf.make_ndarray(value.tensor))
                found.setdefault(value.tag, []).append((event.step, number))
    return found


def test_logger_intervals_and_tensorboard_scalars(tmp_path, capsys):
    logger = ProgressLogger(
        10, global_batch=2, model_dir=str(tmp_path), log_every=4, summary_every=5
    )
    printed = [logger.update(s, s - 1, {"total_loss": 1.0 / s}, 0.1) for s in range(1, 11)]
    logger.close()
    # Console at 4, 8 and the last step 10; summaries at 5 and 10.
    assert [s for s, line in zip(range(1, 11), printed, strict=True) if line] == [4, 8, 10]
    assert "step 10/10 (100.0%)" in capsys.readouterr().out
    scalars = _scalars(os.path.join(tmp_path, "train"))
    assert [step for step, _ in scalars["loss/total_loss"]] == [5, 10]
    assert scalars["loss/total_loss"][1][1] == pytest.approx(0.1)  # 1 / 10
    assert {"learning_rate", "images_per_second"} <= set(scalars)


def test_first_line_does_not_count_tracing_in_speed_or_eta(capsys):
    logger = ProgressLogger(10, global_batch=2, model_dir=None, log_every=1)
    # The first update's interval held the tracing of the step function: no speed, no ETA.
    first = logger.update(1, 0, {"total_loss": 1.0}, 0.1)
    assert "| -- img/s | ETA --:-- |" in first
    # From then on the clock runs from the end of the first update.
    second = logger.update(2, 1, {"total_loss": 1.0}, 0.1)
    assert "-- img/s" not in second and "ETA --:--" not in second
    assert "step 2/10" in capsys.readouterr().out
