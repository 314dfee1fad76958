"""Mirrored (2 logical CPUs) and multi-worker (2 local processes) training, in subprocesses.

Logical devices and TF_CONFIG must exist before TensorFlow initialises, hence fresh
interpreters running ``tests/training/distributed_run.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

from tf_rcnn.training import (
    get_strategy,
    local_cluster_tf_configs,
    per_replica_batch_size,
    scale_learning_rate,
)

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = dict(
        os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT)
    )
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout
    return json.loads(lines[-1][len("RESULT ") :])


def test_mirrored_two_cpus_matches_one_device(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tests.training.distributed_run", "mirrored", str(tmp_path)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _result(proc.stdout)
    assert result["replicas"] == 2 and result["step"] == 3
    # Loss scaled by 1/replicas + summed gradients + decay/replicas + all-reduced clip norm
    # give exactly the single-device update on the concatenated global batch.
    assert result["loss"] == pytest.approx(result["single_loss"], rel=1e-5)
    assert result["max_weight_diff"] < 1e-5 * max(1.0, result["max_weight"])
    assert (tmp_path / "mirrored" / "ckpt-3.index").exists()


def test_multi_worker_two_processes(tmp_path):
    procs = []
    for config in local_cluster_tf_configs(2):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.training.distributed_run",
                    "multi_worker",
                    str(tmp_path),
                ],
                cwd=ROOT,
                env=_env(TF_CONFIG=json.dumps(config)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-3000:]
            outputs.append(_result(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [r["replicas"] for r in outputs] == [2, 2]
    assert [r["step"] for r in outputs] == [3, 3]
    assert outputs[0]["loss"] == pytest.approx(outputs[1]["loss"])  # reduced over workers
    # Only the chief (worker 0) writes into model_dir; worker 1's temp dir is gone.
    assert (tmp_path / "ckpt-3.index").exists()
    assert not list(tmp_path.glob(".workertemp_*"))


def test_local_cluster_tf_configs_give_each_worker_its_task_on_one_cluster():
    configs = local_cluster_tf_configs(3)
    workers = configs[0]["cluster"]["worker"]
    assert len(workers) == len(set(workers)) == 3
    assert all(w.startswith("127.0.0.1:") and int(w.rsplit(":", 1)[1]) > 0 for w in workers)
    assert [c["cluster"]["worker"] for c in configs] == [workers] * 3
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    with pytest.raises(ValueError, match="num_workers"):
        local_cluster_tf_configs(0)


def test_strategy_helpers():
    strategy = get_strategy("default")
    assert strategy.num_replicas_in_sync == 1
    assert per_replica_batch_size(strategy, 8) == 8
    # Detectron: 0.02 for 16 images -> 0.0025 for 2 (0.02 * 2 / 16).
    assert scale_learning_rate(0.02, 16, 2) == pytest.approx(0.0025)
    with pytest.raises(ValueError, match="strategy name"):
        get_strategy("horovod")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        get_strategy("multi_worker")
    tf.zeros([1]).numpy()  # make sure this process's TensorFlow runtime is initialised
    with pytest.raises(RuntimeError, match="before building anything"):
        get_strategy("mirrored", num_cpu_devices=3)
