"""The README's own-data loop on the command line: a trained start vs random weights.

    .venv/bin/python benchmarks/own_data.py [--source=runs/demo] [--steps=100]

Renders a small "own data" set unlike the demo's shapes (photo-like noisy backgrounds,
non-square 256x192 and 192x256 images, two new classes: filled boxes and balls of random
colours and sizes 24-96 px) as a CSV per split, then for each start runs exactly the README's
commands as subprocesses:

1. ``train.py --config=configs/shapes_faster_rcnn.py --model_dir=DIR --config.data.dataset=custom
   --config.data.train_annotations=... --config.data.scales='(192,)' --config.data.max_size=256
   ...`` with ``--config.train.init_checkpoint=SOURCE --config.train.init_skip_mismatch=True``
   (start ``trained``) or without (start ``scratch``), ``--steps`` steps of 8 images;
2. ``eval.py --checkpoint=DIR --output_dir=DIR/eval`` (no other flag: the run's config);

and reports the wall time of each command, the training images/s and the held-out ``bbox/AP``
and ``bbox/AP50``. ``--source`` is a trained shapes run (``make demo`` writes ``runs/demo``).

Prints a table and one ``RESULT {json}`` line.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SOURCE = flags.DEFINE_string("source", os.path.join(REPO, "runs", "demo"),
                              "A trained shapes run to start from (make demo writes runs/demo).")
_STEPS = flags.DEFINE_integer("steps", 100, "Training steps per start (8 images each).")
_TRAIN_IMAGES = flags.DEFINE_integer("train_images", 40, "Rendered training images.")
_VAL_IMAGES = flags.DEFINE_integer("val_images", 40, "Rendered held-out images.")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Where data and runs go (default: a temp dir).")
_STARTS = flags.DEFINE_list("starts", ["trained", "scratch"], "Any of trained, scratch.")

CLASSES = ("box", "ball")


def render_split(folder: str, num_images: int, seed: int) -> str:
    """``num_images`` photo-like images with 1-4 objects each and ``annotations.csv``."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "photos"), exist_ok=True)
    path = os.path.join(folder, "annotations.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "x1", "y1", "x2", "y2", "class"])
        for i in range(num_images):
            width, height = (256, 192) if i % 2 == 0 else (192, 256)
            base = rng.integers(60, 200, size=3)
            pixels = base + rng.normal(0, 25, (height, width, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(image)
            name = f"photos/{i:04d}.jpg"
            for _ in range(int(rng.integers(1, 5))):
                size = int(rng.integers(24, 97))
                x = int(rng.integers(0, width - size))
                y = int(rng.integers(0, height - size))
                cls = CLASSES[int(rng.integers(0, 2))]
                colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
                shape = draw.rectangle if cls == "box" else draw.ellipse
                shape([x, y, x + size - 1, y + size - 1], fill=colour, outline=(0, 0, 0))
                writer.writerow([name, x, y, x + size, y + size, cls])
            image.save(os.path.join(folder, name), quality=92)
    return path


def run(args: list[str]) -> tuple[float, str, str]:
    env = dict(os.environ, PYTHONPATH=REPO)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout, done.stderr


def measure(start: str, work: str, train_csv: str, val_csv: str) -> dict:
    steps = _STEPS.value
    run_dir = os.path.join(work, start)
    args = ["train.py", "--config=configs/shapes_faster_rcnn.py", f"--model_dir={run_dir}",
            "--config.data.dataset=custom", f"--config.data.train_annotations={train_csv}",
            f"--config.data.val_annotations={val_csv}", "--config.data.scales=(192,)",
            "--config.data.max_size=256", f"--config.train.total_steps={steps}",
            f"--config.train.warmup_steps={max(steps // 10, 1)}",
            f"--config.train.checkpoint_every={steps}", f"--config.train.log_every={steps}"]
    if start == "trained":
        args += [f"--config.train.init_checkpoint={_SOURCE.value}",
                 "--config.train.init_skip_mismatch=True"]
    train_s, out, _ = run(args)
    speeds = [float(v) for v in re.findall(r"([0-9.]+) img/s", out)]
    eval_s, _, _ = run(["eval.py", f"--checkpoint={run_dir}",
                        f"--output_dir={os.path.join(run_dir, 'eval')}"])
    with open(os.path.join(run_dir, "eval", "metrics.json")) as f:
        metrics = json.load(f)
    return {"start": start, "steps": steps, "train_s": round(train_s, 1),
            "train_images_per_s": speeds[-1] if speeds else None, "eval_s": round(eval_s, 1),
            "bbox/AP": round(metrics["bbox/AP"], 3), "bbox/AP50": round(metrics["bbox/AP50"], 3)}


def main(argv):
    del argv
    if "trained" in _STARTS.value and not os.path.exists(
            os.path.join(_SOURCE.value, "config.json")):
        raise app.UsageError(f"--source={_SOURCE.value} is not a trained run; run `make demo` "
                             "first or pass --starts=scratch.")
    work = _WORK_DIR.value or tempfile.mkdtemp(prefix="tf_rcnn_own_data_")
    train_csv = render_split(os.path.join(work, "train"), _TRAIN_IMAGES.value, seed=0)
    val_csv = render_split(os.path.join(work, "val"), _VAL_IMAGES.value, seed=1)
    rows = []
    for start in _STARTS.value:
        rows.append(measure(start, work, train_csv, val_csv))
        print(f"{start}: done", flush=True)
    print(f"{'start':<9} {'steps':>5} {'train s':>8} {'img/s':>6} {'eval s':>7} "
          f"{'AP':>6} {'AP50':>6}")
    for r in rows:
        print(f"{r['start']:<9} {r['steps']:>5} {r['train_s']:>8} "
              f"{r['train_images_per_s'] or '-':>6} {r['eval_s']:>7} {r['bbox/AP']:>6} "
              f"{r['bbox/AP50']:>6}")
    print("RESULT " + json.dumps({"rows": rows, "work_dir": work, "source": _SOURCE.value}))


if __name__ == "__main__":
    app.run(main)
