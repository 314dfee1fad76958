"""R-FCN inference time with 300 vs 1000 proposals, and the head's share of it.

    .venv/bin/python benchmarks/rfcn.py [--models=shapes,r101] [--runs=5] [--warmup=2]

R-FCN's claim (Dai et al. 2016) is that almost all computation is shared over the image, so the
per-RoI cost is nearly free. For each model this builds two detectors with the same weights that
differ only in ``model.rpn.post_nms_topk_test`` (300 vs 1000 proposals), and times, inside
``tf.function``, at the same image size:

  * ``total``: ``model(images)`` — backbone, RPN + proposal NMS, score maps, PS-RoI pooling +
    voting of every proposal, decoding + per-class NMS;
  * ``propose``: backbone + RPN only (``model.propose``); ``head = total - propose`` is the
    R-FCN head (score maps + per-RoI work + decoding);
  * ``per-RoI``: PS-RoI pooling + voting of the proposals alone, on precomputed score maps.

Models: ``shapes`` (the ``configs/shapes_rfcn.py`` demo model, batch 1, 256x256 as the recipe
feeds it) and ``r101`` (``configs/rfcn_r101_voc.py``: ResNet-101, dilated C5, k = 7, 21 classes,
batch 1, 600x1008, random weights: timing does not depend on the weights except through the
number of detections, which the decoder's score threshold keeps small). Prints medians in ms and
the 1000/300 ratio of ``total`` (acceptance: <= 1.10).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf
from absl import app, flags

import tf_rcnn  # noqa: F401
from tf_rcnn.config import load_config_file
from tf_rcnn.models import builder

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["shapes", "r101"], "Which models to time: shapes, r101.")
flags.DEFINE_integer("runs", 20, "Timed calls per case (the median is reported).")
flags.DEFINE_integer("warmup", 2, "Untimed calls before timing.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    # name: (recipe, image height, width)
    "shapes": ("shapes_rfcn.py", 256, 256),  # the recipe feeds the 128 px shapes at 256 px
    "r101": ("rfcn_r101_voc.py", 600, 1008),  # 1000 padded to the size divisor 16
}


def time_interleaved(fns: dict[str, Callable[[], object]], runs: int, warmup: int
                     ) -> dict[str, float]:
    """Median wall time in ms of each ``fn()`` (outputs fetched to the host). The cases are
    timed in turn within each round, so load from other processes hits them alike."""
    def call(fn):
        tf.nest.map_structure(lambda t: t.numpy(), fn())

    for _ in range(warmup):
        for fn in fns.values():
            call(fn)
    times = {key: [] for key in fns}
    for _ in range(runs):
        for key, fn in fns.items():
            start = time.perf_counter()
            call(fn)
            times[key].append((time.perf_counter() - start) * 1e3)
    return {key: statistics.median(t) for key, t in times.items()}


def build(recipe: str, num_proposals: int, height: int):
    config = load_config_file(os.path.join(REPO, "configs", recipe))
    config.model.num_classes = 20 if "voc" in recipe else 3  # VOC or shapes (no data loaded)
    config.model.backbone.weights = None  # no download; timing does not need trained weights
    config.model.rpn.post_nms_topk_test = num_proposals
    config.model.rpn.pre_nms_topk_test = max(config.model.rpn.pre_nms_topk_test, num_proposals)
    config.data.size_divisor = 16
    model = builder.build_model(config)
    model(tf.zeros([1, height, height, 3]))
    return model


def run_case(name: str) -> None:
    recipe, height, width = CASES[name]
    images = tf.random.normal([1, height, width, 3])
    models = {p: build(recipe, p, 64) for p in (300, 1000)}
    models[1000].set_weights(models[300].get_weights())
    fns = {}
    for num, model in models.items():
        features = model.extract_features(images)
        maps = model.roi_heads.score_maps(model._select(features, model.roi_in_features))
        proposals = model.propose(images)["proposals"]
        fns[("total", num)] = tf.function(lambda m=model: m(images))
        fns[("propose", num)] = tf.function(lambda m=model: m.propose(images))
        fns[("per_roi", num)] = tf.function(
            lambda m=model, p=proposals, s=maps: m.roi_heads.head.pool(s, p))
    ms = time_interleaved(fns, FLAGS.runs, FLAGS.warmup)
    results = {}
    for num in models:
        t_total, t_propose, t_roi = (ms[(key, num)] for key in ("total", "propose", "per_roi"))
        results[num] = (t_total, t_propose, t_roi)
        head = t_total - t_propose
        print(f"{name} {height}x{width} P={num:4d}: total {t_total:8.1f} ms | backbone+RPN "
              f"{t_propose:8.1f} | head {head:7.1f} ({100 * head / t_total:4.1f}% of total) | "
              f"per-RoI PS pool+vote {t_roi:6.1f} ({100 * t_roi / t_total:4.1f}%)", flush=True)
    ratio = results[1000][0] / results[300][0]
    print(f"{name}: total(1000) / total(300) = {ratio:.3f}  (acceptance <= 1.10)", flush=True)


def main(argv):
    del argv
    tf.random.set_seed(0)
    for name in FLAGS.models:
        if name not in CASES:
            raise ValueError(f"Unknown model {name!r}; choose from {sorted(CASES)}.")
        run_case(name)


if __name__ == "__main__":
    app.run(main)
