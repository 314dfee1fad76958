"""What a deployer measures: the exported SavedModel against the Python model, and batches.

For R50-FPN (random weights; the COCO recipe with its shorter side set to ``--size``, 1000
proposals) and for the demo run (``make demo``):

- ``python``: the Keras detector in one ``tf.function`` on the preprocessed image (what
  ``benchmarks/inference.py`` calls "full"), plus the preprocessing in the graph;
- ``served``: the SavedModel's ``serving_default`` on the uint8 image (decode-free,
  preprocessing and postprocessing included), loaded as TF Serving loads it;
- ``batch B``: the SavedModel's ``image_bytes`` signature on B encoded images of mixed sizes
  (portrait, landscape and square, padded to the largest in the batch as serving does), as
  seconds per image; ``x b1`` is the throughput per image relative to batch 1 on the same
  images.

Usage:
    .venv/bin/python benchmarks/serving.py [--models=faster_r50_fpn,demo] [--size=640]
        [--runs=5] [--batches=1,4,8]
"""

from __future__ import annotations

import io
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from absl import app, flags, logging
from PIL import Image

from benchmarks.speed_common import REPO, median_time

_MODELS = flags.DEFINE_list("models", ["faster_r50_fpn", "demo"],
                            "faster_r50_fpn (random weights) and/or demo (runs/demo).")
_SIZE = flags.DEFINE_integer("size", 640, "R50-FPN: the shorter side images are resized to.")
_RUNS = flags.DEFINE_integer("runs", 5, "Timed calls per measurement (median, 2 warm-ups).")
_BATCHES = flags.DEFINE_list("batches", ["1", "4", "8"], "Batch sizes of the image_bytes runs.")
_DEMO = flags.DEFINE_string("demo_run", os.path.join(REPO, "runs", "demo"), "The demo run.")


def _model_and_preprocess(name: str, tmp: str):
    from tf_rcnn.config import load_config_file
    from tf_rcnn.export import PreprocessConfig
    from tf_rcnn.models import builder
    from tf_rcnn.models.checkpoint import restore_detector

    if name == "demo":
        model, config, _ = restore_detector(_DEMO.value)
        return model, PreprocessConfig.from_recipe(config), int(max(config.data.scales))
    config = load_config_file(os.path.join(REPO, "configs", "faster_rcnn_r50_fpn_coco.py"))
    config.model.num_classes = 80
    config.model.backbone.weights = None
    config.model.rpn.post_nms_topk_test = 1000
    config.data.scales = (_SIZE.value,)
    config.data.max_size = _SIZE.value
    model = builder.build_model(config)
    model.build_with_dummy_inputs()
    return model, PreprocessConfig.from_recipe(config), _SIZE.value


def _images(size: int, count: int) -> list[np.ndarray]:
    """Mixed shapes around ``size``: square, landscape 3:4, portrait 4:3, landscape 9:16."""
    rng = np.random.default_rng(0)
    shapes = [(size, size), (size * 3 // 4, size), (size, size * 3 // 4),
              (size * 9 // 16, size)]
    out = []
    for i in range(count):
        h, w = shapes[i % len(shapes)]
        small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        out.append(np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR)))
    return out


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def measure(name: str, tmp: str) -> dict:
    import tensorflow as tf

    from tf_rcnn.export import export_saved_model, preprocess_batch

    model, pre, size = _model_and_preprocess(name, tmp)
    square = _images(size, 1)[0]
    batch = preprocess_batch([square], pre)
    detect = tf.function(lambda x, s: model({"images": x, "image_shape": s}, training=False))
    row = {"model": name, "size": size}
    row["python_s"] = median_time(detect, batch["images"], batch["image_shape"],
                                  runs=_RUNS.value)
    export_dir = export_saved_model(model, os.path.join(tmp, name), pre)
    loaded = tf.saved_model.load(export_dir)
    serve = loaded.signatures["serving_default"]
    row["served_s"] = median_time(lambda x: serve(images=x), tf.constant(square[None]),
                                  runs=_RUNS.value)
    image_bytes = loaded.signatures["image_bytes"]
    largest = max(int(b) for b in _BATCHES.value)
    encoded = [_png(im) for im in _images(size, largest)]
    per_image = {}
    for b in (int(v) for v in _BATCHES.value):
        # The same images for every batch size: batch b runs ceil(largest / b) calls.
        groups = [tf.constant(encoded[i:i + b]) for i in range(0, largest, b)]

        def run_all(groups=groups):
            return [image_bytes(images=g) for g in groups]

        per_image[b] = median_time(run_all, runs=_RUNS.value) / largest
    row["per_image_s"] = per_image
    return row


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in _MODELS.value:
            rows.append(measure(name, tmp))
            print(rows[-1], flush=True)
    print(f"\nseconds (median of {_RUNS.value}); batch columns: seconds per image "
          "(throughput vs batch 1)")
    head = " ".join(f"{'batch ' + str(b):>15s}" for b in rows[0]["per_image_s"])
    print(f"{'model':16s} {'size':>5s} {'python':>8s} {'served':>8s} {'ratio':>6s} {head}")
    for r in rows:
        one = r["per_image_s"][min(r["per_image_s"])]
        cells = " ".join(f"{s:8.3f} ({one / s:4.2f}x)" for s in r["per_image_s"].values())
        print(f"{r['model']:16s} {r['size']:5d} {r['python_s']:8.3f} {r['served_s']:8.3f} "
              f"{r['served_s'] / r['python_s']:6.2f} {cells}")


if __name__ == "__main__":
    app.run(main)
