"""train.py with the real detector in subprocesses: mirrored, multi-worker, kill -9 + resume
(4-step alternating training of every family: tests/training/test_alternating.py). Tiny configs
(64 px shapes, 8-16 channel backbone) keep each run to a few training steps; most of the time is
TensorFlow start-up and tracing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tf_rcnn.training import local_cluster_tf_configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_args(data_dir: str, steps: int = 6, **overrides: object) -> list[str]:
    values = {
        "data.shapes_dir": data_dir,
        "data.shapes_train_images": 16,
        "data.shapes_val_images": 8,
        "data.shapes_image_size": 64,
        "data.scales": "(64,)",
        "data.max_size": 64,
        "data.train_batch_size": 4,
        "data.seed": 0,
        "train.total_steps": steps,
        "train.schedule": "constant",
        "train.warmup_steps": 0,
        "train.checkpoint_every": steps,
        "train.log_every": 1,
        "train.steps_per_loop": 1,
        "model.backbone.widths": "(8,8,16,16)",
        "model.neck.out_channels": 16,
        "model.roi_head.fc_dims": "(32,32)",
        "model.roi_head.batch_size_per_image": 32,
        "model.rpn.pre_nms_topk_train": 128,
        "model.rpn.post_nms_topk_train": 32,
    }
    values.update(overrides)
    return [f"--config={os.path.join(REPO, 'configs', 'shapes_faster_rcnn.py')}"] + [
        f"--config.{k}={v}" for k, v in values.items()
    ]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _train(args: list[str], model_dir: str, *flags: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train.py"), *args, f"--model_dir={model_dir}",
         *flags],
        cwd=REPO, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    return out, err


def _logged(out: str, name: str) -> list[float]:
    return [float(v) for v in re.findall(rf"{name} ([-0-9.naif]+)", out)]


def _final_metrics(err: str) -> dict:
    match = re.search(r"Training finished: (\{.*\})", err)
    assert match, err[-3000:]
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from tf_rcnn.data.shapes import generate_shapes_dataset

    root = tmp_path_factory.mktemp("shapes")
    # Generated here once: two multi-worker processes must not both write it.
    generate_shapes_dataset(str(root / "train"), num_images=16, image_size=64, seed=0)
    generate_shapes_dataset(str(root / "val"), num_images=8, image_size=64, seed=1)
    return str(root)


def test_mirrored_two_logical_cpus_trains_the_detector(tmp_path, data_dir):
    out, err = _finish(_train(tiny_args(data_dir, steps=6), str(tmp_path),
                              "--strategy=mirrored", "--num_cpu_devices=2"))
    assert "2 replicas x 2 images" in err
    class_losses = _logged(out, "rcnn_class_loss")
    assert len(class_losses) == 6 and all(np.isfinite(class_losses))
    # From ln(K + 1) = ln 4 = 1.386 at initialisation, the class loss falls within a few steps.
    assert class_losses[-1] < class_losses[0]
    assert (tmp_path / "ckpt-6.index").exists()


def test_multi_worker_two_processes_end_with_identical_weights(tmp_path, data_dir):
    procs = []
    for config in local_cluster_tf_configs(2):
        procs.append(_train(tiny_args(data_dir, steps=4), str(tmp_path),
                            "--strategy=multi_worker", TF_CONFIG=json.dumps(config)))
    try:
        results = [_finish(proc) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    finals = [_final_metrics(err) for _, err in results]
    assert [f["step"] for f in finals] == [4.0, 4.0]
    # Same all-reduced gradients on both workers -> bit-identical weights.
    assert finals[0]["weights_l1"] == finals[1]["weights_l1"]
    assert finals[0]["weights_sha256"] == finals[1]["weights_sha256"]
    assert finals[0]["total_loss"] == finals[1]["total_loss"]  # reduced over workers
    assert (tmp_path / "ckpt-4.index").exists()  # the chief wrote, worker 1 cleaned up
    assert not list(tmp_path.glob(".workertemp_*"))


def test_kill_minus_9_then_resume_finishes_with_consistent_state(tmp_path, data_dir):
    args = tiny_args(data_dir, steps=8, **{"train.checkpoint_every": 2,
                                           "train.schedule": "cosine",
                                           "train.warmup_steps": 2})
    proc = _train(args, str(tmp_path))
    deadline = time.time() + 600
    while not (tmp_path / "ckpt-2.index").exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = int(tf.train.latest_checkpoint(str(tmp_path)).rsplit("-", 1)[1])
    assert 2 <= saved < 8

    out, err = _finish(_train(args, str(tmp_path)))
    assert re.search(rf"Restored .*ckpt-{saved} at step {saved}", err), err[-3000:]
    steps = [int(s) for s in re.findall(r"^step (\d+)/8", out, re.M)]
    assert steps == list(range(saved + 1, 9))  # nothing lost beyond the checkpoint, no repeats
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt-8"))
    keys = reader.get_variable_to_shape_map()
    iterations = [k for k in keys if k.startswith("optimizer/") and "iteration" in k]
    assert iterations and int(reader.get_tensor(iterations[0])) == 8
    step_key = next(k for k in keys if k.startswith("step/"))
    assert int(reader.get_tensor(step_key)) == 8
    # The schedule resumed at its position: cosine reaches 0 exactly at total_steps.
    assert _final_metrics(err)["learning_rate"] == pytest.approx(0.0, abs=1e-9)
