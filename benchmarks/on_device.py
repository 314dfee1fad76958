"""LiteRT (.tflite, builtin ops only) against the SavedModel: detections, AP, latency, size.

    python benchmarks/on_device.py --demo=runs/demo [--parts=equality,ap,latency]
        [--equality_images=20] [--ap_images=200] [--runs=10] [--threads=2]

1. ``equality``: for every family, float32 ``.tflite`` detections vs the SavedModel's on the
   same held-out 128x128 shapes images, exported at the recipe's inference size (128; 256 for
   R-FCN's 2x upsampling), where the letterbox equals the recipe's resize. Faster R-CNN FPN is
   the trained demo run and its SavedModel (``DEMO/saved_model/1`` when present); the other
   families are the shapes recipes with random weights (class logits scaled so scores are
   spread out, as the tests do) and their SavedModel exported here. Per family: images
   compared, images whose detection count differs, SavedModel rows without a .tflite row of
   the same class within 1e-2 px and 1e-4, rows matched at another position (score ties
   ordered differently), and the largest box (pixels of the 128 px image) and score
   differences over the matched rows.
2. ``ap``: the demo run's held-out shapes AP through ``.tflite`` none / dynamic / int8 (int8
   calibrated on 32 training images) vs ``eval.py``'s (``evaluate_checkpoint``) in this run,
   exported at the recipe's inference size. ``--demo`` may name any trained shapes run of
   another family, e.g. the R-FCN of ``benchmarks/train_scaling.py alternating
   --recipe=shapes_rfcn`` (``.../stage4_detector``, exported at 256x256): AP / AP50 eval.py
   0.7130 / 0.9361, none 0.7130 / 0.9361 (1.67 MiB), dynamic 0.7120 / 0.9367 (0.56 MiB),
   int8 0.7115 / 0.9356 (0.65 MiB).
3. ``latency``: median seconds per image, LiteRT (XNNPACK, ``--threads``) float32 and int8 vs
   the TF serving graph (the SavedModel's ``serving_default`` function) in the same process,
   back to back, for the demo model (128x128) and a random-weight R50-FPN
   (``configs/faster_rcnn_r50_fpn_coco.py``, 80 classes, 640x640, 1000 test proposals; int8
   calibrated on 4 random images, which is enough for a timing, not for accuracy); and the
   file sizes.

Prints one table per part and one ``RESULT {json}`` line. The machine is shared: absolute times
are inflated; the ratios are measured side by side.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.speed_common import median_time  # noqa: E402
from tf_rcnn.config import load_config_file  # noqa: E402
from tf_rcnn.data.builder import load_split  # noqa: E402
from tf_rcnn.data.records import records_to_coco  # noqa: E402
from tf_rcnn.data.tfrecords import load_image  # noqa: E402
from tf_rcnn.evaluation.coco_evaluator import COCOEvaluator  # noqa: E402
from tf_rcnn.evaluation.evaluate import evaluate_checkpoint  # noqa: E402
from tf_rcnn.export import (  # noqa: E402
    PreprocessConfig,
    TFLiteDetector,
    export_saved_model,
    export_tflite,
    export_tflite_from_checkpoint,
    make_serving_functions,
)
from tf_rcnn.export.tflite import calibration_images, default_input_size  # noqa: E402
from tf_rcnn.models import builder  # noqa: E402
from tf_rcnn.models.checkpoint import resolve_run_config, restore_detector  # noqa: E402

_DEMO = flags.DEFINE_string("demo", os.path.join(REPO, "runs", "demo"),
                            "The trained shapes_faster_rcnn demo run (part 2: any trained "
                            "shapes run).")
_OUT = flags.DEFINE_string("output_dir", "/tmp/tf_rcnn_litert_bench", "Scratch exports.")
_PARTS = flags.DEFINE_list("parts", ["equality", "ap", "latency"], "Parts to run.")
_EQ_IMAGES = flags.DEFINE_integer("equality_images", 20, "Held-out images per family (part 1).")
_AP_IMAGES = flags.DEFINE_integer("ap_images", 200, "Held-out images for AP (part 2).")
_RUNS = flags.DEFINE_integer("runs", 10, "Timed calls per measurement (after 2 warm-ups).")
_THREADS = flags.DEFINE_integer("threads", 2, "LiteRT interpreter threads.")
_AP_MODES = flags.DEFINE_list("ap_modes", ["none", "dynamic", "int8"], "Quantisations of part 2.")
_R50 = flags.DEFINE_boolean("r50", True, "Include R50-FPN 640x640 in the latency part.")
_FAMILIES = flags.DEFINE_list(
    "families", ["faster_rcnn_fpn", "faster_rcnn_c4", "fast_rcnn", "rfcn", "mask_rcnn",
                 "cascade_rcnn", "cascade_mask_rcnn"],
    "Families of part 1 (faster_rcnn_fpn is the demo run).")

FAMILIES = {  # name -> (recipe, overrides of config.model)
    "faster_rcnn_c4": ("shapes_faster_rcnn", "c4"),
    "fast_rcnn": ("shapes_fast_rcnn", None),
    "rfcn": ("shapes_rfcn", None),
    "mask_rcnn": ("shapes_mask_rcnn", None),
    "cascade_rcnn": ("shapes_cascade_rcnn", None),
    "cascade_mask_rcnn": ("shapes_cascade_rcnn", "mask"),
}


SHAPES_DIR = os.path.join(REPO, "data_cache", "shapes")  # the demo's data (make demo)


def _recipe(name: str):
    config = load_config_file(os.path.join(REPO, "configs", f"{name}.py"))
    config.model.num_classes = 3
    config.data.shapes_dir = SHAPES_DIR
    return config


def _random_family(name: str):
    recipe, variant = FAMILIES[name]
    config = _recipe(recipe)
    if variant == "c4":
        m = config.model
        m.neck.type = "none"
        m.rpn.in_features = ("C4",)
        m.rpn.anchor_sizes = ((16.0, 32.0, 64.0),)
        m.roi_head.in_features = ("C4",)
    if variant == "mask":
        config.model.type = "cascade_mask_rcnn"
    model = builder.build_model(config)
    model.build_with_dummy_inputs()
    for variable in model.weights:  # spread-out class scores (no near-tie of random logits)
        if variable.path.endswith(("class_logits/kernel", "cls_score_maps/kernel")):
            variable.assign(variable * 30.0)
    return model, config


def _val_images(config, count: int):
    records, label_map, _ = load_split(config, "val", num_images=count)
    return records, label_map, [load_image(record) for record in records]


def _proposals(image: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Random boxes over the image (original pixels) for Fast R-CNN."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    ctr = rng.uniform(0, [h, w], (count, 2))
    size = rng.uniform(8, 64, (count, 2))
    boxes = np.concatenate([ctr - size / 2, ctr + size / 2], 1)
    return np.clip(boxes, 0, [h, w, h, w]).astype(np.float32)


def _compare(saved: dict, lite: dict, height: int, width: int) -> dict:
    """Rows of the SavedModel matched to rows of the .tflite: same class, box within 1e-2 px
    and score within 1e-4, preferring the same position (rows whose scores tie may come out in
    another order: the two NMS implementations order exact ties differently)."""
    n_s, n_l = int(saved["num_detections"][0]), int(lite["num_detections"][0])
    scale = np.array([height, width, height, width])
    free = list(range(n_l))
    moved = unmatched = 0
    box_err = score_err = 0.0
    for row in range(n_s):
        box = np.abs(lite["detection_boxes"][0, :n_l] - saved["detection_boxes"][0, row]) * scale
        score = np.abs(lite["detection_scores"][0, :n_l] - saved["detection_scores"][0, row])
        same = lite["detection_classes"][0, :n_l] == saved["detection_classes"][0, row]
        candidates = [r for r in free if same[r] and box[r].max() <= 1e-2 and score[r] <= 1e-4]
        if not candidates:
            unmatched += 1
            continue
        match = min(candidates, key=lambda r: abs(r - row))
        free.remove(match)
        moved += match != row
        box_err = max(box_err, float(box[match].max()))
        score_err = max(score_err, float(score[match]))
    return {"count_differs": n_s != n_l, "unmatched": unmatched, "moved": moved,
            "box_px": box_err, "score": score_err, "detections": n_s}


def part_equality(out_dir: str) -> dict:
    results = {}
    demo_model, demo_config, _ = restore_detector(_DEMO.value)
    demo_config.data.shapes_dir = SHAPES_DIR
    _, _, images = _val_images(demo_config, _EQ_IMAGES.value)
    cases = {}
    if "faster_rcnn_fpn" in _FAMILIES.value:
        cases["faster_rcnn_fpn (demo)"] = (demo_model, demo_config)
    for name in FAMILIES:
        if name in _FAMILIES.value:
            cases[name] = _random_family(name)
    for name, (model, config) in cases.items():
        pre = PreprocessConfig.from_recipe(config)
        folder = os.path.join(out_dir, "equality", name.split()[0])
        saved_dir = os.path.join(_DEMO.value, "saved_model", "1")
        if not name.endswith("(demo)") or not os.path.exists(saved_dir):
            saved_dir = export_saved_model(model, os.path.join(folder, "saved_model"), pre)
        loaded = tf.saved_model.load(saved_dir)
        serve = loaded.signatures["serving_default"]
        # The recipe's own inference size (128; R-FCN's recipe upsamples to 256), where the
        # letterbox of a 128x128 image equals the recipe's resize.
        path = export_tflite(model, os.path.join(folder, "tflite"), pre,
                             default_input_size(pre), num_proposals=100)
        lite = TFLiteDetector(path, num_threads=_THREADS.value)
        rows = []
        for i, image in enumerate(images):
            feed = {"images": tf.constant(image[None])}
            proposals = None
            if model.needs_proposals:
                proposals = _proposals(image, 100, i)
                feed["proposals"] = tf.constant(proposals[None])
            saved = {k: v.numpy() for k, v in serve(**feed).items()}
            rows.append(_compare(saved, lite(image, proposals), *image.shape[:2]))
        results[name] = {
            "images": len(rows),
            "count_differs": sum(r["count_differs"] for r in rows),
            "unmatched": sum(r["unmatched"] for r in rows),
            "moved": sum(r["moved"] for r in rows),
            "max_box_px": max(r["box_px"] for r in rows),
            "max_score": max(r["score"] for r in rows),
            "mean_detections": float(np.mean([r["detections"] for r in rows])),
            "ops": len(lite.ops()),
        }
    print("\n1. float32 .tflite vs SavedModel (held-out 128x128 shapes images)")
    print("(rows matched by class, box within 1e-2 px and score within 1e-4; 'moved': matched "
          "at another position, i.e. a score tie ordered differently)")
    print(f"{'family':24s} {'images':>6s} {'dets/img':>8s} {'count!=':>7s} {'unmatched':>9s} "
          f"{'moved':>5s} {'max box px':>10s} {'max score':>10s}")
    for name, r in results.items():
        print(f"{name:24s} {r['images']:6d} {r['mean_detections']:8.1f} {r['count_differs']:7d} "
              f"{r['unmatched']:9d} {r['moved']:5d} {r['max_box_px']:10.2e} "
              f"{r['max_score']:10.2e}")
    return results


def _tflite_ap(path: str, records, label_map, images) -> dict:
    lite = TFLiteDetector(path, num_threads=_THREADS.value)
    coco = COCOEvaluator(gt_dataset=records_to_coco(records, label_map))
    for record, image in zip(records, images, strict=True):
        out = lite(image)
        h, w = image.shape[:2]
        boxes = out["detection_boxes"] * np.array([h, w, h, w], np.float32)
        # The .tflite returns dataset ids; the evaluator wants contiguous ids.
        classes = np.array([label_map.from_dataset_id(int(c)) if c > 0 else 0
                            for c in out["detection_classes"][0]])[None]
        coco.update({"image_id": np.array([record.image_id]), "detection_boxes": boxes,
                     "detection_scores": out["detection_scores"],
                     "detection_classes": classes, "num_detections": out["num_detections"]})
    metrics = coco.evaluate()
    return {"AP": metrics["bbox/AP"], "AP50": metrics["bbox/AP50"]}


def part_ap(out_dir: str) -> dict:
    eval_metrics = evaluate_checkpoint(_DEMO.value, os.path.join(out_dir, "eval"),
                                       num_images=_AP_IMAGES.value, visualize=0)
    config = resolve_run_config(_DEMO.value)  # the model is restored by the exporter
    config.data.shapes_dir = SHAPES_DIR
    records, label_map, images = _val_images(config, _AP_IMAGES.value)
    results = {"eval.py": {"AP": eval_metrics["bbox/AP"], "AP50": eval_metrics["bbox/AP50"]}}
    for mode in _AP_MODES.value:
        folder = os.path.join(out_dir, "ap", mode)
        path = export_tflite_from_checkpoint(_DEMO.value, folder, input_size=None,
                                             quantize=mode)
        results[f"tflite {mode}"] = _tflite_ap(path, records, label_map, images)
        results[f"tflite {mode}"]["MiB"] = os.path.getsize(path) / 2**20
    print(f"\n2. held-out shapes AP of the demo run ({len(records)} images)")
    print(f"{'model':16s} {'AP':>7s} {'AP50':>7s} {'dAP50':>7s} {'MiB':>7s}")
    base = results["eval.py"]["AP50"]
    for name, r in results.items():
        print(f"{name:16s} {r['AP']:7.4f} {r['AP50']:7.4f} {r['AP50'] - base:+7.4f} "
              f"{r.get('MiB', float('nan')):7.2f}")
    return results


def _dir_mib(folder: str) -> float:
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    return total / 2**20


def _latency(name: str, model, config, size: int, out_dir: str, calibration) -> dict:
    pre = PreprocessConfig.from_recipe(config)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    serve = make_serving_functions(model, pre)["serving_default"]
    folder = os.path.join(out_dir, "latency", name)
    paths = {}
    for mode in ("none", "int8"):
        start = time.perf_counter()
        paths[mode] = export_tflite(model, os.path.join(folder, mode), pre, (size, size),
                                    quantize=mode, representative_images=calibration)
        print(f"  {name}: exported {mode} in {time.perf_counter() - start:.0f} s", flush=True)
    feed = {"images": tf.constant(image[None])}
    row = {"TF serving": median_time(lambda: serve(feed), runs=_RUNS.value)}
    for mode, path in paths.items():
        lite = TFLiteDetector(path, num_threads=_THREADS.value)
        row[f"LiteRT {mode}"] = median_time(lambda lite=lite: lite(image), runs=_RUNS.value)
        row[f"MiB {mode}"] = os.path.getsize(path) / 2**20
    return row


def part_latency(out_dir: str) -> dict:
    results = {}
    model, config, _ = restore_detector(_DEMO.value)
    config.data.shapes_dir = SHAPES_DIR
    calibration = calibration_images(config, 32)
    results["demo 128x128"] = _latency("demo", model, config, 128, out_dir,
                                       lambda: calibration)
    saved_dir = os.path.join(_DEMO.value, "saved_model", "1")
    if os.path.exists(saved_dir):
        results["demo 128x128"]["MiB SavedModel"] = _dir_mib(saved_dir)
    if _R50.value:
        config = load_config_file(os.path.join(REPO, "configs", "faster_rcnn_r50_fpn_coco.py"))
        config.model.num_classes = 80
        config.model.backbone.weights = None  # random weights: no download
        model = builder.build_model(config)
        model.build_with_dummy_inputs()
        rng = np.random.default_rng(1)
        images = [rng.integers(0, 256, (640, 640, 3), dtype=np.uint8) for _ in range(4)]
        results["R50-FPN 640x640"] = _latency("r50_fpn", model, config, 640, out_dir,
                                              lambda: images)
    print(f"\n3. latency, median s/image ({_RUNS.value} runs, LiteRT {_THREADS.value} threads "
          "XNNPACK; shared 2-core machine, same process, back to back)")
    print(f"{'model':18s} {'TF serving':>10s} {'LiteRT f32':>10s} {'LiteRT int8':>11s} "
          f"{'MiB f32':>8s} {'MiB int8':>8s}")
    for name, r in results.items():
        print(f"{name:18s} {r['TF serving']:10.4f} {r['LiteRT none']:10.4f} "
              f"{r['LiteRT int8']:11.4f} {r['MiB none']:8.2f} {r['MiB int8']:8.2f}")
    return results


def main(argv):
    del argv
    os.makedirs(_OUT.value, exist_ok=True)
    result = {}
    if "equality" in _PARTS.value:
        result["equality"] = part_equality(_OUT.value)
    if "ap" in _PARTS.value:
        result["ap"] = part_ap(_OUT.value)
    if "latency" in _PARTS.value:
        result["latency"] = part_latency(_OUT.value)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    app.run(main)
