"""Write the proposals of a trained RPN (Faster R-CNN, R-FCN, Mask R-CNN) over a dataset split.

    python -m tf_rcnn.tools.dump_proposals --checkpoint=runs/shapes --split=train \
        --output=runs/shapes/proposals_train.npz [--top_n=300] [--num_images=N] \
        [--config=configs/shapes_faster_rcnn.py] [--config.a.b=v ...]

The run's ``config.json`` and ``label_map.json`` are used unless ``--config`` is given. The file
(``.npz`` or ``.json``, see :mod:`tf_rcnn.data.proposals`) holds, for every image of the split,
the top ``top_n`` proposals by objectness with their scores, as ``[y1, x1, y2, x2]`` in
ORIGINAL-image pixels; Fast R-CNN reads it back through ``data.proposals_train`` /
``data.proposals_val``. The work is :mod:`tf_rcnn.data.proposal_dump`; this is its command line.
"""

from __future__ import annotations

import sys

from absl import app, flags

import tf_rcnn  # noqa: F401  (selects the TensorFlow backend before Keras loads)
from tf_rcnn.config import ConfigError
from tf_rcnn.data.proposal_dump import dump_proposals, proposal_config
from tf_rcnn.models.checkpoint import resolve_run_config, restore_detector
from tf_rcnn.tools import cli


def main(argv, config_flag: cli.ConfigFlag) -> None:
    del argv
    f = flags.FLAGS
    try:
        config = resolve_run_config(f.checkpoint, config_flag.resolve())
        config, top_n = proposal_config(config, f.top_n)
        model, config, label_map = restore_detector(f.checkpoint, config)
        stats = dump_proposals(model, config, f.split, f.output, top_n=top_n,
                               num_images=f.num_images, label_map=label_map)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    print(f"Wrote {f.output}: {int(stats['num_images'])} images, "
          f"{stats['mean_proposals']:.1f} proposals per image.")


def _define_flags(argv: list[str]) -> cli.ConfigFlag:
    config = cli.define_config_flag(
        argv, run_flag="checkpoint",
        help_string="Recipe or config.json (default: the run's config.json).")
    flags.DEFINE_string("checkpoint", None, "Run directory or checkpoint prefix.")
    flags.DEFINE_enum("split", "train", ["train", "val"], "Dataset split to run over.")
    flags.DEFINE_string("output", None, "Proposal file to write (.npz or .json).")
    flags.DEFINE_integer("top_n", None, "Proposals per image (default: the RPN's test-time "
                         "post-NMS count, model.rpn.post_nms_topk_test).")
    flags.DEFINE_integer("num_images", None, "Only the first N images of the split.")
    flags.mark_flags_as_required(["checkpoint", "output"])
    return config


if __name__ == "__main__":
    _config = _define_flags(sys.argv)
    app.run(lambda argv: main(argv, _config), argv=_config.argv)
