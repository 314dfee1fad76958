"""Fine-tune the demo detector to a two-class subset of shapes and print the validation AP50.

    .venv/bin/python benchmarks/finetune_shapes.py [--source_dir=runs/demo] [--train_steps=N]

``EXAMPLE`` below is the README's fine-tuning example, verbatim; this script runs it (training the
demo detector first into ``--source_dir`` when no checkpoint is there, with
``--source_steps`` steps) and prints the final ``bbox/AP50``. ``tests/test_finetune.py`` runs the
same text with tiny sizes.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

EXAMPLE = '''\
import keras
from tf_rcnn.data import InputPipeline, LabelMap, generate_shapes_dataset, load_coco
from tf_rcnn.finetune import COCOEvalCallback, finetune_model, load_detector

# Squares and circles only: dataset category ids 1 and 2 of the shapes data.
subset = LabelMap([1, 2], ["square", "circle"])
data = {}
for split, num_images, seed in (("train", 500, 10), ("val", 100, 11)):
    root = f"data_cache/shapes2/{split}"
    annotations = generate_shapes_dataset(root, num_images, image_size=128, seed=seed)
    records, _, _ = load_coco(annotations, f"{root}/images", label_map=subset)
    pipeline = InputPipeline(records, subset, backbone="tiny", training=split == "train",
                             batch_size=8, scales=(128,), max_size=128)
    data[split] = (annotations, pipeline.dataset())

# The demo detector (make demo); keep every weight that fits, freeze the backbone.
source = load_detector("runs/demo", config="configs/shapes_faster_rcnn.py")
model = finetune_model(source, subset, freeze="backbone")
model.compile()  # SGD(0.01, momentum 0.9), losses computed by the model
coco = COCOEvalCallback(data["val"][1], data["val"][0], subset)
model.fit(data["train"][1], epochs=3, steps_per_epoch=200, callbacks=[coco])
print("val AP50:", coco.history[-1]["bbox/AP50"])

images, _ = next(iter(data["val"][1]))
detections = model.predict(images, verbose=0)  # detection_boxes/scores/classes, num_detections
model.save("shapes2.keras")
restored = keras.models.load_model("shapes2.keras")
'''

_SOURCE_DIR = flags.DEFINE_string("source_dir", "runs/demo",
                                  "Run directory of the demo detector (trained if empty).")
_SOURCE_STEPS = flags.DEFINE_integer("source_steps", 3000,
                                     "Demo training steps when the source has to be trained.")
_WORK_DIR = flags.DEFINE_string("work_dir", REPO, "Directory the example runs in.")


def main(argv):
    del argv
    import tensorflow as tf

    import tf_rcnn  # noqa: F401
    from tf_rcnn.config import load_config_file

    source_dir = os.path.abspath(_SOURCE_DIR.value)
    if tf.train.latest_checkpoint(source_dir) is None:
        from tf_rcnn.training.run import run_training

        config = load_config_file(os.path.join(REPO, "configs", "shapes_faster_rcnn.py"))
        config.train.total_steps = _SOURCE_STEPS.value
        start = time.time()
        run_training(config, source_dir)
        print(f"trained the demo detector in {time.time() - start:.0f} s")
    os.chdir(_WORK_DIR.value)
    code = EXAMPLE.replace('"runs/demo"', repr(source_dir)).replace(
        '"configs/shapes_faster_rcnn.py"',
        repr(os.path.join(REPO, "configs", "shapes_faster_rcnn.py")))
    start = time.time()
    scope: dict = {}
    exec(compile(code, "README-finetune-example", "exec"), scope)
    ap50 = scope["coco"].history[-1]["bbox/AP50"]
    print(f"fine-tuning example: {time.time() - start:.0f} s, val bbox/AP50 = {ap50:.4f} "
          f"(history: {[round(h['bbox/AP50'], 4) for h in scope['coco'].history]})")


if __name__ == "__main__":
    app.run(main)
