"""tf_rcnn.training: strategies, schedules, optimisers, checkpoints, progress and the Trainer."""

from tf_rcnn.training.checkpoints import CheckpointManager, export_best
from tf_rcnn.training.optimizers import (
    CoupledWeightDecaySGD,
    apply_weight_decay,
    build_optimizer,
    optimizer_from_config,
)
from tf_rcnn.training.progress import ProgressLogger
from tf_rcnn.training.schedules import WarmupCosineDecay, WarmupStepDecay, build_schedule
from tf_rcnn.training.strategy import (
    get_strategy,
    is_chief,
    local_cluster_tf_configs,
    per_replica_batch_size,
    scale_learning_rate,
)
from tf_rcnn.training.trainer import NonFiniteLossError, Trainer

__all__ = [
    "CheckpointManager",
    "CoupledWeightDecaySGD",
    "NonFiniteLossError",
    "ProgressLogger",
    "Trainer",
    "WarmupCosineDecay",
    "WarmupStepDecay",
    "apply_weight_decay",
    "build_optimizer",
    "build_schedule",
    "export_best",
    "get_strategy",
    "is_chief",
    "local_cluster_tf_configs",
    "optimizer_from_config",
    "per_replica_batch_size",
    "scale_learning_rate",
]
