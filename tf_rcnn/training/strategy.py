"""Distribution strategies: one entry point for CPU, one GPU, many GPUs, many workers and TPUs.

Conventions:
    A *replica* is one copy of the model (one device). ``global_batch`` images are split evenly
    over ``strategy.num_replicas_in_sync`` replicas, so ``per_replica_batch = global_batch /
    num_replicas``. Losses are means over the per-replica batch; the trainer scales them by
    ``1 / num_replicas`` so that the cross-replica SUM of gradients is the global-batch mean.

Strategy names accepted by :func:`get_strategy`:
    ``"default"``       the no-op default strategy (current device, no distribution);
    ``"one_device"``    ``OneDeviceStrategy`` on the first GPU, else the CPU;
    ``"mirrored"``      ``MirroredStrategy`` over every local GPU, or over ``num_cpu_devices``
                        logical CPU devices when there is no GPU (used by the tests);
    ``"multi_worker"``  ``MultiWorkerMirroredStrategy`` configured from the ``TF_CONFIG``
                        environment variable;
    ``"tpu"``           ``TPUStrategy`` on ``tpu_address`` (``""`` or ``"local"`` for a TPU VM).
"""

from __future__ import annotations

import json
import os
import socket

import tensorflow as tf
from absl import logging

STRATEGY_NAMES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def configure_cpu_devices(num_cpu_devices: int) -> list[str]:
    """Splits the physical CPU into ``num_cpu_devices`` logical devices.

    TensorFlow fixes its devices the first time anything touches them (the first tensor,
    variable, model or dataset), so this must run before that; calling it again with the same
    count is a no-op.

    Args:
        num_cpu_devices: number of logical CPU devices, >= 1.

    Returns:
        Names of the logical CPU devices, e.g. ``["/device:CPU:0", "/device:CPU:1"]``.

    Raises:
        ValueError: ``num_cpu_devices < 1``.
        RuntimeError: TensorFlow was already initialised with a different device layout.
    """
    if num_cpu_devices < 1:
        raise ValueError(f"num_cpu_devices must be >= 1, got {num_cpu_devices}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is None or len(current) != num_cpu_devices:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_cpu_devices)]
            )
        except RuntimeError as error:
            raise RuntimeError(
                f"Cannot split the CPU into {num_cpu_devices} logical devices: TensorFlow has "
                "already initialised its devices (some tensor, variable, model or dataset was "
                "created first). Call get_strategy(..., num_cpu_devices=...) at the very start "
                "of the program, before building anything with TensorFlow or Keras."
            ) from error
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def get_strategy(
    name: str = "default",
    tpu_address: str | None = None,
    num_cpu_devices: int | None = None,
) -> tf.distribute.Strategy:
    """Builds the distribution strategy called ``name`` and logs its replica count.

    Args:
        name: one of ``"default"``, ``"one_device"``, ``"mirrored"``, ``"multi_worker"``,
            ``"tpu"`` (see the module docstring).
        tpu_address: TPU name or ``grpc://`` address for ``"tpu"``; ``None``/``""``/``"local"``
            means the TPU attached to this VM.
        num_cpu_devices: if set, split the CPU into this many logical devices first (must be
            called before TensorFlow initialises its devices). With ``"mirrored"`` and no GPU,
            the strategy then mirrors over these logical CPUs.

    Returns:
        The strategy. Build the model and optimizer under ``strategy.scope()``.

    Raises:
        ValueError: unknown ``name`` or ``"multi_worker"`` without ``TF_CONFIG``.
        RuntimeError: ``num_cpu_devices`` requested after TensorFlow initialised its devices.
    """
    if name not in STRATEGY_NAMES:
        raise ValueError(f"Unknown strategy name {name!r}; use one of {STRATEGY_NAMES}.")
    cpu_devices = configure_cpu_devices(num_cpu_devices) if num_cpu_devices else None
    # Physical, not logical, device listing: it does not initialise the runtime, which
    # MultiWorkerMirroredStrategy must configure itself at start-up.
    gpus = tf.config.list_physical_devices("GPU")

    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "one_device":
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    elif name == "mirrored":
        if gpus:
            strategy = tf.distribute.MirroredStrategy()
        else:
            # NCCL needs GPUs; on CPU the gradients are summed on one device.
            devices = cpu_devices or ["/cpu:0"]
            strategy = tf.distribute.MirroredStrategy(
                devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
            )
    elif name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "strategy 'multi_worker' reads the cluster from the TF_CONFIG environment "
                "variable, which is not set. Set TF_CONFIG to "
                '{"cluster": {"worker": ["host1:port", ...]}, "task": {"type": "worker", '
                '"index": i}} on every worker.'
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:  # tpu
        address = "" if tpu_address in (None, "local") else tpu_address
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)

    logging.info(
        "Distribution strategy: %s (%s) with %d replica(s) in sync.",
        name,
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    return strategy


def per_replica_batch_size(strategy: tf.distribute.Strategy, global_batch: int) -> int:
    """Splits ``global_batch`` over the replicas of ``strategy`` and logs both sizes.

    Raises:
        ValueError: ``global_batch`` is not a positive multiple of the replica count.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch < 1 or global_batch % replicas:
        raise ValueError(
            f"global_batch={global_batch} must be a positive multiple of the "
            f"{replicas} replicas in sync; use e.g. "
            f"global_batch={replicas * max(1, global_batch // replicas)}."
        )
    per_replica = global_batch // replicas
    logging.info(
        "Batch: global %d = %d replica(s) x %d image(s) per replica.",
        global_batch,
        replicas,
        per_replica,
    )
    return per_replica


def local_cluster_tf_configs(num_workers: int, host: str = "127.0.0.1") -> list[dict]:
    """``TF_CONFIG`` dicts for a ``num_workers``-worker cluster on this machine, one per worker.

    Each worker gets a port that is free when this is called (the OS picks it); set
    ``TF_CONFIG=json.dumps(configs[i])`` in worker ``i``'s environment and run the same
    ``train.py --strategy=multi_worker`` command in every one, e.g. to try multi-worker training
    on loopback before moving to real hosts.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
    sockets = [socket.socket() for _ in range(num_workers)]
    try:
        for s in sockets:
            s.bind((host, 0))
        workers = [f"{host}:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return [{"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            for index in range(num_workers)]


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes checkpoints and summaries.

    Single-process strategies are always chief. Under multi-worker training the chief is the
    task of type ``"chief"``, or worker 0 when the cluster has no ``"chief"`` task.
    """
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is not None and getattr(resolver, "task_type", None) is not None:
        task_type, task_id = resolver.task_type, resolver.task_id
        cluster = resolver.cluster_spec().as_dict()
    else:
        config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
        task = config.get("task", {})
        task_type, task_id = task.get("type"), task.get("index", 0)
        cluster = config.get("cluster", {})
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def scale_learning_rate(base_lr: float, base_batch: int, global_batch: int) -> float:
    """Linear scaling rule (Goyal et al. 2017, "Accurate, Large Minibatch SGD", Sec. 2.1).

    A recipe tuned with learning rate ``base_lr`` for ``base_batch`` images keeps the same
    per-image update size with ``global_batch`` images when the rate is multiplied by
    ``global_batch / base_batch``. Example: Detectron's 0.02 for 16 images is 0.0025 for 2.

    Raises:
        ValueError: non-positive batch sizes or learning rate.
    """
    if base_lr <= 0 or base_batch <= 0 or global_batch <= 0:
        raise ValueError(
            f"scale_learning_rate needs positive values, got base_lr={base_lr}, "
            f"base_batch={base_batch}, global_batch={global_batch}."
        )
    return base_lr * global_batch / base_batch
