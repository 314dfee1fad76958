"""Inference speed of the four torchvision COCO recipes beside torchvision: same weights, image.

tf_rcnn imports torchvision's ``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn`` and their
``_v2`` variants as the recipes ``configs/torchvision_<arch>.py``, which compute what torchvision
computes (``tests/pretrained/test_torchvision_parity.py``). This benchmark times both frameworks
running them on one image at the recipes' real size: torchvision's defaults ``min_size=800,
max_size=1333`` and a synthetic 800x1066 RGB image (``benchmarks/peers/synthetic_images.py``), so
neither side resizes it and both pad it to 800x1088.

The weights cannot be downloaded here, so "the same weights" are the deterministic synthetic
state dict ``tf_rcnn.pretrained.synthetic.synthetic_state_dict(spec, seed)`` with the spec and
seed of ``tests/fixtures/torchvision/<arch>.json``. They keep every stage busy as COCO weights
would: the RPN sends 1000 proposals to the box head and the image gets 100 detections (the cap),
the same ones on both sides, so both do the same work by construction. The benchmark checks it:
each torchvision detection must have a tf_rcnn one with the same label, IoU >= 0.99 and a score
within 1e-3, and the other way round (as the parity tests do), and the counts must agree within 2.

Per architecture (``--archs``, default all four), each measurement in a fresh process:

1. the weights are written once to a temporary ``.npz``
   (``tf_rcnn.formats.torch_checkpoint.save_npz``);
2. ``import_s``: wall time of ``python -m tf_rcnn.tools.import_weights --source=torchvision
   --arch=A --weights=FILE --output_dir=DIR`` (process start, TensorFlow import, build, convert,
   checkpoint write: what a user waits for), and ``convert_s``, the "Imported ... in X s" time it
   logs (reading the file and setting the weights, to 0.1 s);
3. tf_rcnn: ``restore_detector(DIR)`` (the run the import wrote), the image preprocessed as
   serving does (``tf_rcnn.export.preprocess_batch`` with ``PreprocessConfig.from_recipe``);

   * ``first_call_s``: restore + preprocess + tracing + first run of the detector;
   * ``full_s``: median of ``--runs`` calls, after 2 warm-ups, of the detector as one traced
     ``tf.function`` (``model({"images", "image_shape"})``: preprocessed batch in, detections with
     28x28 mask probabilities out, boxes in the network input's pixels);
   * ``backbone_fpn_s``: ``model.extract_features`` alone, likewise;
   * ``serving_s``: the ``serving_default`` signature of the SavedModel export
     (``tf_rcnn.export.make_serving_functions``: uint8 image in, resize/normalise/pad, detector,
     boxes normalised to the original image and dataset class ids out), all in one graph;
4. torchvision (``--torchvision_python``; ``benchmarks/peers/torchvision_pretrained_bench.py``,
   which builds each model as torchvision builds it for its COCO weights, loads the same ``.npz``
   with ``strict=True``, eval mode, ``torch.inference_mode()``, all cores):

   * ``first_call_s``: build + load + first forward;
   * ``full_s``: ``model([image])``: transform (normalise, resize, pad), network, and
     ``transform.postprocess`` (boxes to the original image and, for Mask R-CNN, each mask pasted
     into a full-image canvas, which tf_rcnn's outputs leave to the caller);
   * ``network_s``: ``backbone`` + ``rpn`` + ``roi_heads`` on the transformed batch: the work of
     tf_rcnn's ``full_s``, so ``ratio = tf_rcnn full_s / torchvision network_s`` compares like with
     like; ``transform_s``, ``postprocess_s``, ``backbone_fpn_s`` alone.

Run from the repository root (the torchvision venv: ``benchmarks/peers/setup_torchvision.sh``)::

    .venv/bin/python benchmarks/pretrained.py                       # all four, 5 runs each
    .venv/bin/python benchmarks/pretrained.py --archs=maskrcnn_resnet50_fpn --runs=7
    .venv/bin/python benchmarks/pretrained.py --torchvision_python=    # tf_rcnn side only

Prints a table and one ``RESULT {json}`` line. Each architecture takes a few minutes on two
cores. Timings on a shared machine are noisy: run it alone (``uptime``) and more than once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from speed_common import run_result, timed_runs  # noqa: E402

ARCHS = ["fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2",
         "maskrcnn_resnet50_fpn_v2"]
FIXTURES = os.path.join(REPO, "tests", "fixtures", "torchvision")
PEER = os.path.join(REPO, "benchmarks", "peers", "torchvision_pretrained_bench.py")
DEFAULT_TV = "/tmp/tvenv/bin/python"
IMAGE_SEED = 7
COUNT_SLACK = 2  # detections per image may differ by this much (near-ties at the cuts)
MIN_IOU, SCORE_TOL = 0.99, 1e-3  # a detection "matches": same label, IoU and score this close

_ARCHS = flags.DEFINE_list("archs", ARCHS, f"Any of {ARCHS}.")
_RUNS = flags.DEFINE_integer("runs", 5, "Timed runs (after 2 warm-up calls).")
_IMAGE_SIZE = flags.DEFINE_string(
    "image_size", "800x1066",
    "HxW of the synthetic test image (800x1066: no resize at min_size 800 / max_size 1333).")
_TV = flags.DEFINE_string(
    "torchvision_python", DEFAULT_TV,
    "Python of a venv with torch + torchvision; empty or missing: tf_rcnn side only.")
_SERVING = flags.DEFINE_boolean("serving", True,
                                "Also time the SavedModel serving_default function.")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Where the weights, image and runs go "
                                "(default: a temporary directory, removed at the end).")
_WORKER = flags.DEFINE_string("worker", None, "Internal: measure tf_rcnn on this arch.")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "Internal: the imported run (--worker).")
_IMAGE = flags.DEFINE_string("image", None, "Internal: the test image (--worker).")


def _load_by_path(relative: str, name: str):
    """A NumPy-only module of the repository loaded from its file, so this parent process does
    not import TensorFlow (the measuring processes do)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, relative))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------- tf_rcnn worker


def measure_tf_rcnn(arch: str, run_dir: str, image_file: str, runs: int) -> dict:
    """Times the imported ``run_dir`` on ``image_file`` in this process (see module docstring)."""
    import tensorflow as tf
    from PIL import Image

    from tf_rcnn.export import PreprocessConfig, make_serving_functions, preprocess_batch
    from tf_rcnn.models.checkpoint import restore_detector

    image = np.asarray(Image.open(image_file).convert("RGB"))
    start = time.perf_counter()
    model, config, _ = restore_detector(run_dir)
    restore_s = time.perf_counter() - start
    batch = preprocess_batch([image], PreprocessConfig.from_recipe(config))
    images, image_shape = batch["images"], batch["image_shape"]

    full = tf.function(
        lambda x, s: model({"images": x, "image_shape": s}, training=False))
    out = {k: v.numpy() for k, v in full(images, image_shape).items()}
    first_call_s = time.perf_counter() - start

    trunk = tf.function(lambda x: model.extract_features(x, training=False))
    full_times = timed_runs(full, images, image_shape, runs=runs)
    trunk_times = timed_runs(trunk, images, runs=runs)
    n = int(out["num_detections"][0])
    boxes = out["detection_boxes"][0, :n] / batch["scale"].numpy()[0, [0, 1, 0, 1]]
    valid = model.propose({"images": images, "image_shape": image_shape})["proposal_valid"]
    result = {
        "framework": "tf_rcnn",
        "arch": arch,
        "image_size": list(image.shape[:2]),
        "input_tensor_shape": images.shape.as_list(),
        "resized_size": image_shape.numpy()[0].tolist(),
        "proposals_to_box_head": int(tf.reduce_sum(tf.cast(valid, tf.int32))),
        "detections": n,
        "boxes": boxes[:, [1, 0, 3, 2]].tolist(),  # (x1, y1, x2, y2) like torchvision
        "labels": out["detection_classes"][0, :n].tolist(),  # class c = COCO id c
        "scores": out["detection_scores"][0, :n].tolist(),
        "restore_s": restore_s,
        "first_call_s": first_call_s,
        "full_s": statistics.median(full_times),
        "backbone_fpn_s": statistics.median(trunk_times),
        "full_times_s": full_times,
        "backbone_fpn_times_s": trunk_times,
        "runs": runs,
        "tensorflow": tf.__version__,
    }
    if "detection_masks" in out:
        result["mask_shape"] = list(out["detection_masks"][0, :n].shape)
    if _SERVING.value:
        serve = make_serving_functions(model, PreprocessConfig.from_recipe(config))
        serve = serve["serving_default"]
        inputs = {"images": tf.constant(image[np.newaxis])}
        start = time.perf_counter()
        served = serve(inputs)
        result["serving_first_call_s"] = time.perf_counter() - start
        result["serving_detections"] = int(served["num_detections"][0])
        result["serving_times_s"] = timed_runs(serve, inputs, runs=runs)
        result["serving_s"] = statistics.median(result["serving_times_s"])
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return result


# ------------------------------------------------------------------------------- the parent


def _image_size() -> tuple[int, int]:
    parts = [int(p) for p in _IMAGE_SIZE.value.lower().split("x")]
    return parts[0], parts[-1]


def _torchvision_python() -> tuple[str | None, str | None]:
    """(python, None) or (None, why the torchvision side is skipped)."""
    python = _TV.value
    if not python:
        return None, "torchvision side skipped (--torchvision_python is empty)"
    if not os.path.exists(python):
        venv = os.path.dirname(os.path.dirname(python))
        return None, (f"torchvision side skipped: {python} does not exist (make the venv with "
                      f"bash benchmarks/peers/setup_torchvision.sh {venv})")
    return python, None


def time_import(arch: str, weights: str, run_dir: str) -> dict:
    """Runs the import tool as a user does; its wall time and logged conversion time."""
    args = [sys.executable, "-m", "tf_rcnn.tools.import_weights", "--source=torchvision",
            f"--arch={arch}", f"--weights={weights}", f"--output_dir={run_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    logged = re.search(r"Imported .* in ([0-9.]+) s\.", proc.stderr + proc.stdout)
    return {"import_s": wall, "convert_s": float(logged.group(1)) if logged else None}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def unmatched_scores(ref: dict, other: dict) -> list[float]:
    """Scores of ``ref``'s detections that have none in ``other`` with the same label, IoU >=
    0.99 and a score within 1e-3."""
    scores = np.array(ref["scores"], np.float64).reshape(-1)
    if not ref["detections"] or not other["detections"]:
        return scores.tolist()
    ok = ((_iou(np.array(ref["boxes"]), np.array(other["boxes"])) >= MIN_IOU)
          & (np.array(ref["labels"])[:, None] == np.array(other["labels"])[None, :])
          & (np.abs(scores[:, None] - np.array(other["scores"])[None, :]) <= SCORE_TOL))
    return scores[~ok.any(axis=1)].tolist()


def compare(tf_row: dict, tv_row: dict) -> dict:
    """Same detections? Counts within :data:`COUNT_SLACK` and matched in both directions."""
    a, b = tf_row["detections"], tv_row["detections"]
    tv_left, tf_left = unmatched_scores(tv_row, tf_row), unmatched_scores(tf_row, tv_row)
    return {
        "detections_tf_rcnn": a,
        "detections_torchvision": b,
        "counts_agree": abs(a - b) <= COUNT_SLACK,
        "torchvision_matched_by_tf_rcnn": b - len(tv_left),
        "tf_rcnn_matched_by_torchvision": a - len(tf_left),
        # near-ties at the score threshold, NMS or the 100-detection cap
        "unmatched_torchvision_scores": tv_left,
        "unmatched_tf_rcnn_scores": tf_left,
        "lowest_score_torchvision": min(tv_row["scores"], default=None),
        "proposals_tf_rcnn": tf_row["proposals_to_box_head"],
        "proposals_torchvision": tv_row["proposals_to_box_head"],
    }


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("boxes", "labels", "scores")}


def bench_arch(arch: str, work_dir: str, image_file: str, synthetic, save_npz,
               tv_python: str | None) -> dict:
    with open(os.path.join(FIXTURES, f"{arch}.json")) as f:
        meta = json.load(f)
    spec = [(k, tuple(s), d) for k, s, d in meta["spec"]]
    weights = os.path.join(work_dir, f"{arch}.npz")
    save_npz(synthetic.synthetic_state_dict(spec, meta["seed"]), weights)
    run_dir = os.path.join(work_dir, f"run_{arch}")
    row: dict = {"arch": arch, "weights_seed": meta["seed"],
                 "weights_mb": os.path.getsize(weights) / 1e6}
    try:
        row.update(time_import(arch, weights, run_dir))
        tf_row = run_result([sys.executable, os.path.abspath(__file__), f"--worker={arch}",
                             f"--run_dir={run_dir}", f"--image={image_file}",
                             f"--runs={_RUNS.value}", f"--serving={_SERVING.value}"])
        row["tf_rcnn"] = _strip(tf_row)
        if tv_python:
            tv_row = run_result([tv_python, PEER, f"--arch={arch}", f"--weights={weights}",
                                 f"--image={image_file}", f"--runs={_RUNS.value}"])
            row["torchvision"] = _strip(tv_row)
            row["check"] = compare(tf_row, tv_row)
            row["ratio"] = tf_row["full_s"] / tv_row["network_s"]
            if "serving_s" in tf_row:
                row["serving_ratio"] = tf_row["serving_s"] / tv_row["full_s"]
    finally:
        os.remove(weights)
        shutil.rmtree(run_dir, ignore_errors=True)
    return row


def _pair(row: dict, key: str, fmt: str) -> str:
    tf_v = row["tf_rcnn"].get(key)
    tv_v = row.get("torchvision", {}).get(key)
    return " / ".join("-" if v is None else format(v, fmt) for v in (tf_v, tv_v))


def print_table(rows: list[dict], note: str | None) -> None:
    print(f"{'arch':<27} {'tf_rcnn full':>12} {'tv network':>10} {'ratio':>5} "
          f"{'tf serving':>10} {'tv full':>7} {'backbone+FPN tf/tv':>18} "
          f"{'1st call tf/tv':>14} {'dets tf/tv (match)':>18} {'import (conv)':>13}")
    for r in rows:
        tf_row, tv_row = r["tf_rcnn"], r.get("torchvision", {})
        check = r.get("check")
        dets = _pair(r, "detections", "d")
        if check:
            dets += (f" ({check['torchvision_matched_by_tf_rcnn']}"
                     f"{'' if check['counts_agree'] else ' MISMATCH'})")
        conv = "-" if r["convert_s"] is None else f"{r['convert_s']:.1f}"
        nan = float("nan")
        print(f"{r['arch']:<27} {tf_row['full_s']:>12.2f} "
              f"{tv_row.get('network_s', nan):>10.2f} {r.get('ratio', nan):>5.2f} "
              f"{tf_row.get('serving_s', nan):>10.2f} {tv_row.get('full_s', nan):>7.2f} "
              f"{_pair(r, 'backbone_fpn_s', '.2f'):>18} {_pair(r, 'first_call_s', '.1f'):>14} "
              f"{dets:>18} {r['import_s']:>7.1f} ({conv})")
    print("seconds; full/network/serving/backbone: median of --runs after 2 warm-ups; ratio = "
          "tf_rcnn full / torchvision network (the same work); dets: detections per image "
          "(torchvision's matched by tf_rcnn's: label, IoU >= 0.99, score within 1e-3)")
    if note:
        print(note)


def main(argv):
    del argv
    if _WORKER.value:
        result = measure_tf_rcnn(_WORKER.value, _RUN_DIR.value, _IMAGE.value, _RUNS.value)
        print("RESULT " + json.dumps(result), flush=True)
        return
    unknown = [a for a in _ARCHS.value if a not in ARCHS]
    if unknown:
        raise app.UsageError(f"Unknown archs {unknown}; choose from {ARCHS}.")
    tv_python, note = _torchvision_python()
    if note:
        print(note, flush=True)
    synthetic = _load_by_path("tf_rcnn/pretrained/synthetic.py", "_bench_synthetic")
    save_npz = _load_by_path("tf_rcnn/formats/torch_checkpoint.py",
                             "_bench_torch_checkpoint").save_npz
    images = _load_by_path("benchmarks/peers/synthetic_images.py", "_bench_synthetic_images")
    from PIL import Image

    work_dir = _WORK_DIR.value or tempfile.mkdtemp(prefix="tf_rcnn_pretrained_bench_")
    os.makedirs(work_dir, exist_ok=True)
    height, width = _image_size()
    image_file = os.path.join(work_dir, f"image_{height}x{width}.png")
    Image.fromarray(images.make_image(np.random.default_rng(IMAGE_SEED), height, width)).save(
        image_file)
    rows = []
    try:
        for arch in _ARCHS.value:
            rows.append(bench_arch(arch, work_dir, image_file, synthetic, save_npz, tv_python))
            print(f"{arch}: done", flush=True)
    finally:
        if _WORK_DIR.value is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print_table(rows, note)
    machine = {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()}
    print("RESULT " + json.dumps({"rows": rows, "machine": machine, "runs": _RUNS.value,
                                  "image_size": [height, width], "note": note}), flush=True)


if __name__ == "__main__":
    app.run(main)
