"""Write a dataset as OD API-format TFRecords (the layout of :mod:`tf_rcnn.data.tfrecords`).

    python -m tf_rcnn.tools.create_tfrecords --dataset=coco \\
        --annotations=coco/annotations/instances_train2017.json --images=coco/train2017 \\
        --output=gs://bucket/coco/train --num_shards=64
    python -m tf_rcnn.tools.create_tfrecords --dataset=voc --voc_root=VOCdevkit \\
        --voc_sets=2007:trainval,2012:trainval --output=data/voc/train --num_shards=8
    python -m tf_rcnn.tools.create_tfrecords --dataset=custom \\
        --annotations=my_data/annotations.csv --output=data/mine/train --num_shards=4
    python -m tf_rcnn.tools.create_tfrecords --dataset=shapes --shapes_images=1000 \\
        --output=data/shapes/train

Writes ``OUTPUT-00000-of-0000N.tfrecord`` ... (image ``i`` into shard ``i % N``) and
``label_map.pbtxt`` in OUTPUT's folder; images keep their original bytes, instance masks are
PNGs. The records are what the dataset's reader keeps (its report is logged first: skipped
images and boxes are not written). Train on them with ``--config.data.dataset=tfrecord
--config.data.train_files='OUTPUT-*.tfrecord'`` (the label map beside them is found).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

import tf_rcnn  # noqa: F401  (selects the TensorFlow backend before Keras loads)
from tf_rcnn.data.coco import load_coco
from tf_rcnn.data.custom import load_custom
from tf_rcnn.data.shapes import generate_shapes_dataset
from tf_rcnn.data.tfrecords import LABEL_MAP_PBTXT, write_tfrecords
from tf_rcnn.data.voc import load_voc

_DATASET = flags.DEFINE_enum("dataset", None, ["coco", "voc", "custom", "shapes"],
                             "The dataset's format.")
_ANNOTATIONS = flags.DEFINE_string("annotations", None,
                                   "COCO json (--dataset=coco) or CSV (--dataset=custom).")
_IMAGES = flags.DEFINE_string("images", None, "Folder of the COCO json's file_name entries.")
_VOC_ROOT = flags.DEFINE_string("voc_root", None, "VOCdevkit folder (--dataset=voc).")
_VOC_SETS = flags.DEFINE_string("voc_sets", "2007:trainval",
                                "Comma-separated YEAR:SET image sets (--dataset=voc).")
_SHAPES_DIR = flags.DEFINE_string("shapes_dir", "data_cache/shapes_tfrecord",
                                  "Where the shapes images are generated (--dataset=shapes).")
_SHAPES_IMAGES = flags.DEFINE_integer("shapes_images", 1000, "Shapes images to generate.")
_SHAPES_SIZE = flags.DEFINE_integer("shapes_image_size", 128, "Side of the shapes images.")
_SHAPES_SEED = flags.DEFINE_integer("shapes_seed", 0, "Seed of the shapes images.")
_OUTPUT = flags.DEFINE_string("output", None, "Shard prefix, e.g. DIR/train (any tf.io.gfile "
                              "path, gs:// included).")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Shards to write (at least one per "
                                   "training worker).", lower_bound=1)
_MASKS = flags.DEFINE_bool("masks", True, "Write instance masks when the dataset has them.")
flags.mark_flags_as_required(["dataset", "output"])


def _need(flag: flags.FlagHolder, dataset: str) -> str:
    if not flag.value:
        raise app.UsageError(f"--dataset={dataset} needs --{flag.name}.")
    return flag.value


def _read() -> tuple:
    dataset = _DATASET.value
    if dataset == "coco":
        return load_coco(_need(_ANNOTATIONS, dataset), _need(_IMAGES, dataset),
                         include_masks=_MASKS.value)
    if dataset == "voc":
        sets = []
        for item in _VOC_SETS.value.split(","):
            year, _, name = item.strip().partition(":")
            if not name:
                raise app.UsageError(f"--voc_sets entries are YEAR:SET, got {item!r}.")
            sets.append((year, name))
        return load_voc(_need(_VOC_ROOT, dataset), image_sets=sets)
    if dataset == "custom":
        return load_custom(_need(_ANNOTATIONS, dataset))
    annotations = generate_shapes_dataset(_SHAPES_DIR.value, _SHAPES_IMAGES.value,
                                          image_size=_SHAPES_SIZE.value, seed=_SHAPES_SEED.value)
    return load_coco(annotations, os.path.join(_SHAPES_DIR.value, "images"),
                     include_masks=_MASKS.value)


def main(argv: list[str]) -> None:
    del argv
    try:
        records, label_map, _ = _read()
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if not records:
        raise app.UsageError("The dataset has no readable image; its report above says why.")
    step = max(1, len(records) // 100)

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            end = "\n" if done == total else ""
            print(f"\r{done}/{total} images ({100 * done // total}%)", end=end, flush=True)

    paths = write_tfrecords(records, label_map, _OUTPUT.value, _NUM_SHARDS.value,
                            with_masks=_MASKS.value, progress=progress)
    folder = os.path.dirname(_OUTPUT.value)
    print(f"Wrote {len(records)} images to {len(paths)} shard(s) {paths[0]} ...; label map "
          f"{os.path.join(folder, LABEL_MAP_PBTXT)} ({label_map.num_classes} classes).")


if __name__ == "__main__":
    app.run(main, argv=sys.argv)
