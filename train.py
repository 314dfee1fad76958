"""Train a tf_rcnn detector from a recipe.

    python train.py --config=configs/shapes_faster_rcnn.py --model_dir=runs/shapes \
        [--config.train.total_steps=1000 ...] [--strategy=mirrored]

Running the same command again resumes from the newest checkpoint in ``--model_dir`` (a run
already at ``train.total_steps`` is left alone). ``model.num_classes`` follows the training
data's classes. The run directory receives checkpoints (``ckpt-<step>``), TensorBoard summaries
(``train/``), the resolved config (``config.json``) and the label map (``label_map.json``) that
``eval.py``, the exporters, ``predict`` and ``dump_proposals`` read back (their ``--config`` is
optional). ``--verbose`` shows TensorFlow's start-up and C++ log lines (hidden by default).
``--config.train.schedule_mode=alternating`` runs the 4-step schedule of the Faster R-CNN paper
instead of joint training.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging

import tf_rcnn  # noqa: F401  (selects the TensorFlow backend before Keras loads)
from tf_rcnn.config import ConfigError
from tf_rcnn.evaluation.watch import make_eval_fn, make_image_fn
from tf_rcnn.tools import cli
from tf_rcnn.training.alternating import run_alternating
from tf_rcnn.training.run import run_training
from tf_rcnn.training.strategy import get_strategy

_CONFIG = cli.define_config_flag(sys.argv, help_string="Recipe file (configs/NAME.py).")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run directory (checkpoints, summaries).")
_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "one_device", "mirrored", "multi_worker", "tpu"],
    "tf.distribute strategy; multi_worker reads TF_CONFIG.")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
_NUM_CPU_DEVICES = flags.DEFINE_integer(
    "num_cpu_devices", None, "Split the CPU into this many logical devices (testing mirrored).")
flags.mark_flags_as_required(["model_dir"])


def main(argv):
    del argv
    config = _CONFIG.resolve()
    if config is None:
        raise app.UsageError("--config is required: a recipe such as "
                             "--config=configs/shapes_faster_rcnn.py.")
    strategy = get_strategy(_STRATEGY.value, tpu_address=_TPU.value,
                            num_cpu_devices=_NUM_CPU_DEVICES.value)
    # The script chooses the schedule; both take the evaluation hooks from here.
    train = run_alternating if config.train.schedule_mode == "alternating" else run_training
    try:
        metrics = train(config, _MODEL_DIR.value, strategy, make_eval_fn=make_eval_fn,
                        make_image_fn=make_image_fn)
    except ConfigError as error:
        raise app.UsageError(str(error)) from error
    if "total_loss" not in metrics:  # the run was finished already
        print(f"{_MODEL_DIR.value} is already at step {int(metrics['step'])}/"
              f"{int(metrics['total_steps'])}; nothing to train (a larger "
              "--config.train.total_steps continues it; a new --model_dir starts a new run).")
        return
    logging.info("Training finished: %s", json.dumps(metrics))
    print(f"Checkpoints, summaries, config.json and label_map.json are in {_MODEL_DIR.value}")


if __name__ == "__main__":
    app.run(main, argv=_CONFIG.argv)
