"""Test-time augmentation on held-out shapes: bbox AP of plain vs flip vs flip + scales, and the
SavedModel with TTA against eval.py --tta.

    .venv/bin/python benchmarks/tta.py [--checkpoint=runs/demo] [--output_dir=runs/tta_bench] \
        [--scales=1.0,1.25] [--merge=nms] [--num_images=200]

Everything goes through the commands a user runs:

1. ``eval.py --checkpoint=RUN`` (plain), ``eval.py --tta --config.test.tta.scales=(1.0,)``
   (flip only) and ``eval.py --tta --config.test.tta.scales=(SCALES)`` (flip + scales), each on
   the run's validation split (for the shapes demo run: 200 images generated with another seed
   than the training images); the table prints bbox AP / AP50 / AP75 from ``metrics.json``.
2. ``export/export_saved_model.py --tta`` with the same ``test.tta`` values, then the SavedModel's
   ``image_bytes`` signature on every validation image (loaded in this process); its detections
   are matched to the ``detections.json`` of ``eval.py --tta`` (per image, same class, the best
   IoU greedily, highest score first): the count of matched detections out of both totals, the
   largest box coordinate difference (pixels) and the largest score difference.

Scale factors are relative to the network input (the recipe's ``data.scales``; 1.0 = the size
the run was trained and is evaluated at).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import tensorflow as tf
from absl import app, flags

import tf_rcnn  # noqa: F401
from tf_rcnn.config import load_run_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", "/work/main/runs/demo", "A trained shapes run directory.")
flags.DEFINE_string("output_dir", os.path.join(REPO, "runs", "tta_bench"), "Where runs go.")
flags.DEFINE_list("scales", ["1.0", "1.25"], "Scale factors of the 'flip + scales' case.")
flags.DEFINE_string("merge", "nms", "test.tta.merge of the TTA cases: nms or vote.")
flags.DEFINE_integer("num_images", None, "Evaluate only the first N validation images.")
flags.DEFINE_bool("skip_export", False, "Only the AP table.")


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}):\n{result.stderr[-3000:]}")


def tta_flags(scales: list[str]) -> list[str]:
    return [f"--config.test.tta.scales=({','.join(scales)},)",
            f"--config.test.tta.merge={FLAGS.merge}"]


def evaluate(name: str, extra: list[str]) -> dict:
    out = os.path.join(FLAGS.output_dir, name)
    command = [sys.executable, "eval.py", f"--checkpoint={FLAGS.checkpoint}",
               f"--output_dir={out}", "--visualize=0", *extra]
    if FLAGS.num_images:
        command.append(f"--num_images={FLAGS.num_images}")
    run(command)
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``[x, y, w, h]`` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def compare_with_saved_model(export_dir: str, detections_json: str) -> dict:
    """Matches the SavedModel's detections on each image with eval.py's (see module doc)."""
    config = load_run_config(FLAGS.checkpoint)
    images_dir = os.path.join(REPO, config.data.shapes_dir, "val", "images")
    with open(detections_json) as f:
        evaluated = json.load(f)
    by_file: dict[str, list[dict]] = {}
    for det in evaluated:
        by_file.setdefault(det["file_name"], []).append(det)
    serve = tf.saved_model.load(export_dir).signatures["image_bytes"]
    matched = served_total = 0
    box_diff = score_diff = 0.0
    for file_name in sorted(by_file):
        with open(os.path.join(images_dir, file_name), "rb") as f:
            data = f.read()
        height, width = tf.io.decode_image(data, channels=3).shape[:2]
        out = {k: v.numpy() for k, v in serve(images=tf.constant([data])).items()}
        n = int(out["num_detections"][0])
        served_total += n
        yxyx = out["detection_boxes"][0, :n] * np.array([height, width, height, width])
        served = [{"bbox": np.array([b[1], b[0], b[3] - b[1], b[2] - b[0]]),
                   "score": float(out["detection_scores"][0, d]),
                   "category_id": int(out["detection_classes"][0, d])}
                  for d, b in enumerate(yxyx)]
        used = set()
        for det in sorted(by_file[file_name], key=lambda d: -d["score"]):
            best, best_iou = None, 0.5
            for j, s in enumerate(served):
                if j in used or s["category_id"] != det["category_id"]:
                    continue
                overlap = iou(np.array(det["bbox"]), s["bbox"])
                if overlap > best_iou:
                    best, best_iou = j, overlap
            if best is None:
                continue
            used.add(best)
            matched += 1
            box_diff = max(box_diff, float(np.abs(served[best]["bbox"] - det["bbox"]).max()))
            score_diff = max(score_diff, abs(served[best]["score"] - det["score"]))
    return {"eval_detections": len(evaluated), "saved_model_detections": served_total,
            "matched": matched, "max_box_diff_px": box_diff, "max_score_diff": score_diff}


def main(argv):
    del argv
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    scales_name = "+".join(FLAGS.scales)
    cases = [
        ("plain", []),
        ("flip", ["--tta", *tta_flags(["1.0"])]),
        (f"flip+scales({scales_name})", ["--tta", *tta_flags(FLAGS.scales)]),
    ]
    rows = []
    for name, extra in cases:
        metrics = evaluate(name.replace("+", "_").replace("(", "_").replace(")", ""), extra)
        rows.append((name, metrics))
    print(f"\nbbox AP on {int(rows[0][1]['num_images'])} held-out images of "
          f"{FLAGS.checkpoint} (merge={FLAGS.merge}; scales are factors of the network input)")
    print(f"{'case':<28} {'AP':>7} {'AP50':>7} {'AP75':>7}")
    for name, m in rows:
        print(f"{name:<28} {m['bbox/AP']:7.4f} {m['bbox/AP50']:7.4f} {m['bbox/AP75']:7.4f}")
    if FLAGS.skip_export:
        return
    export_dir = os.path.join(FLAGS.output_dir, "saved_model_tta")
    run([sys.executable, "export/export_saved_model.py", f"--checkpoint={FLAGS.checkpoint}",
         f"--output_dir={export_dir}", "--tta", *tta_flags(FLAGS.scales)])
    last = cases[-1][0].replace("+", "_").replace("(", "_").replace(")", "")
    result = compare_with_saved_model(
        export_dir, os.path.join(FLAGS.output_dir, last, "detections.json"))
    print(f"\nSavedModel --tta vs eval.py --tta ({cases[-1][0]}):")
    for key, value in result.items():
        print(f"  {key}: {value:.6g}" if isinstance(value, float) else f"  {key}: {value}")


if __name__ == "__main__":
    app.run(main)
