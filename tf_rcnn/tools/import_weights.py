"""Import a torchvision COCO detector as a tf_rcnn run directory.

    python -m tf_rcnn.tools.import_weights --source=torchvision --arch=maskrcnn_resnet50_fpn \
        --weights=maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth --output_dir=runs/coco_mask

Writes ``OUTPUT/config.json`` (the architecture's recipe, ``configs/torchvision_<arch>.py``,
with any ``--config.a.b=v`` overrides), ``OUTPUT/label_map.json`` (class c = COCO category id c,
with COCO's names) and a checkpoint ``OUTPUT/ckpt-0``: a run directory that ``eval.py``,
``python -m tf_rcnn.predict``, ``export/export_saved_model.py``, ``dump_proposals`` and
``tf_rcnn.finetune.load_detector`` read like a trained one (to fine-tune with ``train.py``,
start a new run from it: ``--config.train.init_checkpoint=OUTPUT``).
"""

from __future__ import annotations

import os
import sys
import time

import ml_collections
from absl import app, flags, logging

import tf_rcnn  # noqa: F401  (selects the TensorFlow backend before Keras loads)
from tf_rcnn.config import CONFIG_FILE, ConfigError, load_config_file
from tf_rcnn.formats.torch_checkpoint import UnsafeCheckpointError
from tf_rcnn.label_map import LABEL_MAP_FILE
from tf_rcnn.models import builder
from tf_rcnn.models.backbones.torchvision_resnet import WeightsMismatchError
from tf_rcnn.models.checkpoint import save_weights
from tf_rcnn.pretrained.torchvision import (
    ARCHS,
    NUM_CLASSES,
    coco_label_map,
    load_into,
    recipe_path,
)
from tf_rcnn.tools import cli

SOURCES = ("torchvision",)


def import_weights(arch: str, weights: str, output_dir: str,
                   config: ml_collections.ConfigDict | None = None) -> str:
    """Builds ``arch``'s recipe (or ``config``), imports ``weights`` and writes the run.

    Returns:
        The checkpoint prefix written.
    """
    if config is None:
        config = load_config_file(recipe_path(arch))
    config.model.num_classes = NUM_CLASSES  # the weights' 90 COCO ids (+ background)
    label_map = coco_label_map()
    model = builder.build_model(config, label_map=label_map.to_dict())
    model.build_with_dummy_inputs()
    start = time.time()
    load_into(model, weights, arch)
    logging.info("Imported %s (%s) in %.1f s.", weights, arch, time.time() - start)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, CONFIG_FILE), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    label_map.to_json(os.path.join(output_dir, LABEL_MAP_FILE))
    return save_weights(model, output_dir)


def main(argv, config_flag: cli.ConfigFlag) -> None:
    del argv
    f = flags.FLAGS
    try:
        if f.arch not in ARCHS:
            raise ValueError(f"--arch={f.arch!r} is not one of {sorted(ARCHS)}.")
        prefix = import_weights(f.arch, f.weights, f.output_dir, config_flag.resolve())
    except (ConfigError, FileNotFoundError, ValueError, WeightsMismatchError,
            UnsafeCheckpointError) as error:
        raise app.UsageError(str(error)) from error
    print(f"Wrote {f.output_dir}: config.json, label_map.json and {os.path.basename(prefix)}.")
    print(f"Try it: python -m tf_rcnn.predict --inputs=photo.jpg --checkpoint={f.output_dir} "
          "--output_dir=predictions")


def _define_flags(argv: list[str]) -> cli.ConfigFlag:
    arch = cli.flag_value(argv, "arch")
    default = recipe_path(arch) if arch in ARCHS else None
    config = cli.define_config_flag(
        argv, default_path=default,
        help_string="Recipe to build (default: configs/torchvision_<arch>.py).")
    flags.DEFINE_enum("source", "torchvision", list(SOURCES), "Where the weights come from.")
    flags.DEFINE_enum("arch", None, sorted(ARCHS), "The torchvision architecture.")
    flags.DEFINE_string("weights", None, "The weights file (.pth zip or legacy, .safetensors, "
                        ".npz).")
    flags.DEFINE_string("output_dir", None, "The run directory to write.")
    flags.mark_flags_as_required(["arch", "weights", "output_dir"])
    return config


if __name__ == "__main__":
    _config = _define_flags(sys.argv)
    app.run(lambda argv: main(argv, _config), argv=_config.argv)
