"""Run a detector over images and write pictures and JSON to look at.

    python -m tf_rcnn.predict --inputs="photos/*.jpg" --saved_model=exported/shapes/1 \
        --output_dir=predictions
    python -m tf_rcnn.predict --inputs=photos/ --checkpoint=runs/shapes --output_dir=predictions \
        [--config=configs/shapes_faster_rcnn.py] [--config.a.b=v ...]
    python -m tf_rcnn.predict --inputs=photos/ --tflite=exported/shapes_tflite/model.tflite \
        --output_dir=predictions

``--inputs`` is an image file, a folder (its JPEG/PNG/BMP/GIF files) or a glob. Both sources go
through the same serving graph (``tf_rcnn.export``): a SavedModel is loaded as is; a trained run
is restored (``tf_rcnn.models.checkpoint.restore_detector``: its ``config.json`` unless
``--config`` is given) and wrapped in the same ``image_bytes`` function in-process (``--tta``:
with the recipe's test-time augmentation, ``test.tta``). A LiteRT model (``--tflite``, from
``export/export_tflite.py``) runs on the stock LiteRT interpreter (``pip install
ai-edge-litert``) on the image decoded as the serving graph decodes it. Writes
``OUTPUT/<name>.png`` per image (boxes, class names, scores, translucent masks for Mask R-CNN;
small images enlarged so labels stay legible) and ``OUTPUT/detections.json``: one entry per
image with ``image``, ``height``, ``width`` and ``detections``, each ``{"box": [y1, x1, y2, x2]
original pixels, "bbox_xywh", "score", "class_id" (dataset id), "class_name"}``. An image that
cannot be read gets ``{"image", "error"}`` with a one-line reason, and one console line; the
command fails (exit 1) when no image could be read.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import app, flags
from PIL import Image, UnidentifiedImageError

from tf_rcnn import visualize
from tf_rcnn.export import (
    PreprocessConfig,
    TFLiteDetector,
    decode_image_bytes,
    label_map_entries,
    make_serving_functions,
)
from tf_rcnn.export.saved_model import EXPORT_INFO_FILE
from tf_rcnn.models.builder import with_tta
from tf_rcnn.models.checkpoint import restore_detector
from tf_rcnn.ops.masks import paste_image_masks
from tf_rcnn.tools import cli

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def find_images(pattern: str) -> list[str]:
    """Image files named by a file, a folder or a glob pattern, sorted.

    Raises:
        ValueError: nothing matches (the message names the pattern).
    """
    if os.path.isdir(pattern):
        paths = [os.path.join(pattern, n) for n in os.listdir(pattern)
                 if n.lower().endswith(IMAGE_EXTENSIONS)]
    elif os.path.isfile(pattern):
        paths = [pattern]
    else:
        paths = [p for p in glob.glob(pattern) if p.lower().endswith(IMAGE_EXTENSIONS)]
    if not paths:
        raise ValueError(f"--inputs={pattern!r} matches no image file (a file, a folder of "
                         f"{'/'.join(IMAGE_EXTENSIONS)} files, or a glob such as 'dir/*.jpg').")
    return sorted(paths)


def _read_label_map(path: str) -> dict[int, str]:
    """``{dataset_id: name}`` from a ``label_map.json`` (empty when the file is missing)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        data = json.load(f)
    return {int(c["dataset_id"]): str(c["name"]) for c in data.get("classes", [])}


def load_tflite_predictor(path: str) -> tuple[Callable, dict[int, str]]:
    """:func:`load_predictor` for a LiteRT ``model.tflite`` (``export/export_tflite.py``)."""
    if not os.path.isfile(path) or not path.endswith(".tflite"):
        raise ValueError(f"--tflite={path!r} is not a .tflite file; export one with "
                         "export/export_tflite.py (it writes OUTPUT/model.tflite).")
    detector = TFLiteDetector(path)
    if detector.needs_proposals:
        raise ValueError(f"--tflite={path!r} takes proposals with each image (Fast R-CNN); "
                         "predict has no proposal input: run it with TFLiteDetector.")
    names = _read_label_map(os.path.join(os.path.dirname(path), "label_map.json"))

    def predict(data: bytes) -> dict:
        return detector(decode_image_bytes(tf.constant(data)).numpy())

    predict.paste_rule = detector.paste_rule
    return predict, names


def load_predictor(saved_model: str | None = None, checkpoint: str | None = None,
                   config: Any = None, tta: bool = False, tflite: str | None = None
                   ) -> tuple[Callable, dict[int, str]]:
    """A function ``bytes -> outputs dict`` (the ``image_bytes`` signature on one image) and the
    class names ``{dataset_id: name}``, from a SavedModel, a trained run (+ optional recipe) or
    a LiteRT model.

    ``tta`` (with ``checkpoint``) runs the run's detector with the recipe's test-time
    augmentation (``test.tta``, also on when the config enables it); a SavedModel has it in its
    graph when it was exported with ``--tta``.

    The function carries ``paste_rule``, the mask paste rule of the model (``"tf_rcnn"`` for
    models without masks or SavedModels without ``export_info.json``)."""
    if sum(x is not None for x in (saved_model, checkpoint, tflite)) != 1:
        raise ValueError("Pass exactly one of --saved_model (an exported directory), "
                         "--checkpoint (a run directory or checkpoint prefix) or --tflite (an "
                         "exported model.tflite).")
    if tflite is not None:
        if tta:
            raise ValueError("--tta applies to --checkpoint: a .tflite runs the graph it was "
                             "exported with.")
        return load_tflite_predictor(tflite)
    if saved_model is not None:
        if tta:
            raise ValueError("--tta applies to --checkpoint: a SavedModel runs the graph it was "
                             "exported with (export/export_saved_model.py --tta bakes TTA in).")
        loaded = tf.saved_model.load(saved_model)
        fn = loaded.signatures["image_bytes"]
        names = _read_label_map(os.path.join(saved_model, "label_map.json"))

        def predict(data: bytes) -> dict:
            return {k: v.numpy() for k, v in fn(images=tf.constant([data])).items()}

        predict.keep_alive = loaded  # the signature needs its SavedModel object alive
        info_file = os.path.join(saved_model, EXPORT_INFO_FILE)
        predict.paste_rule = "tf_rcnn"
        if os.path.exists(info_file):
            with open(info_file) as f:
                predict.paste_rule = json.load(f).get("mask_paste_rule", "tf_rcnn")
        return predict, names

    model, config, _ = restore_detector(checkpoint, config)
    model = with_tta(model, config, tta)
    fn = make_serving_functions(model, PreprocessConfig.from_recipe(config))["image_bytes"]
    names = {e["dataset_id"]: e["name"] for e in label_map_entries(model)}

    def predict(data: bytes) -> dict:
        return {k: v.numpy() for k, v in fn({"images": tf.constant([data])}).items()}

    predict.paste_rule = getattr(model.roi_heads, "paste_rule", "tf_rcnn")
    return predict, names


def detections_for_image(outputs: dict, height: int, width: int,
                         names: dict[int, str]) -> list[dict]:
    """JSON-able detections of image 0 of a serving output, boxes in original pixels."""
    n = int(outputs["num_detections"][0])
    scale = np.array([height, width, height, width], np.float64)
    boxes = outputs["detection_boxes"][0, :n].astype(np.float64) * scale
    out = []
    for d in range(n):
        y1, x1, y2, x2 = (float(v) for v in boxes[d])
        class_id = int(outputs["detection_classes"][0, d])
        out.append({"box": [y1, x1, y2, x2], "bbox_xywh": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(outputs["detection_scores"][0, d]), "class_id": class_id,
                    "class_name": names.get(class_id, str(class_id))})
    return out


def pasted_masks(outputs: dict, height: int, width: int,
                 rule: str = "tf_rcnn") -> np.ndarray | None:
    """Image 0's box-relative ``detection_masks`` pasted into ``[D, H, W]`` uint8 original-image
    masks with tf_rcnn's one paste mechanism and the model's rule (what ``eval.py`` scores);
    None without masks."""
    if "detection_masks" not in outputs:
        return None
    n = int(outputs["num_detections"][0])
    boxes = outputs["detection_boxes"][0, :n] * np.array([height, width, height, width])
    return paste_image_masks(outputs["detection_masks"][0, :n], boxes, (height, width),
                             rule=rule)


def annotate(image: np.ndarray, outputs: dict, names: dict[int, str],
             score_threshold: float = 0.5, paste_rule: str = "tf_rcnn") -> np.ndarray:
    """Draws image 0 of a serving output (normalised boxes, dataset ids, optional box-relative
    masks) on the original ``image [H, W, 3]`` uint8, enlarged when small."""
    height, width = image.shape[:2]
    n = int(outputs["num_detections"][0])
    boxes = outputs["detection_boxes"][0, :n] * np.array([height, width, height, width])
    masks = pasted_masks(outputs, height, width, paste_rule)
    image, boxes, masks = visualize.upscale_for_drawing(image, boxes, masks)
    return visualize.draw_detections(image, boxes, outputs["detection_classes"][0, :n],
                                     outputs["detection_scores"][0, :n], names, masks=masks,
                                     score_threshold=score_threshold)


def _reason(error: Exception) -> str:
    """One line saying why an image could not be read (no TensorFlow stack trace)."""
    if isinstance(error, tf.errors.InvalidArgumentError):
        text = error.message
    else:
        text = str(error)
    line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return line[:300]


def predict_images(paths: Sequence[str], predict: Callable, names: dict[int, str],
                   output_dir: str, score_threshold: float = 0.5,
                   report: Callable[[str], None] = print) -> tuple[str, int]:
    """Runs ``predict`` on every image, writes the PNGs and ``detections.json``.

    Returns:
        ``(json_path, failures)``. An image that cannot be read is reported once through
        ``report`` (file and reason) and in the JSON as ``{"image", "error"}``.
    """
    os.makedirs(output_dir, exist_ok=True)
    results = []
    failures = 0
    used: set[str] = set()
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
            outputs = predict(data)
            with Image.open(path) as pil:
                image = np.asarray(pil.convert("RGB"))
        except (OSError, UnidentifiedImageError, tf.errors.InvalidArgumentError) as error:
            failures += 1
            reason = _reason(error)
            report(f"skipped {path}: {reason}")
            results.append({"image": path, "error": reason})
            continue
        height, width = image.shape[:2]
        stem = os.path.splitext(os.path.basename(path))[0]
        name, k = stem, 1
        while name in used:  # same file name in different folders
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        visualize.save_image(
            os.path.join(output_dir, f"{name}.png"),
            annotate(image, outputs, names, score_threshold,
                     getattr(predict, "paste_rule", "tf_rcnn")))
        results.append({"image": path, "annotated": f"{name}.png", "height": height,
                        "width": width,
                        "detections": detections_for_image(outputs, height, width, names)})
    json_path = os.path.join(output_dir, "detections.json")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1)
    return json_path, failures


def main(argv: Sequence[str], config_flag: cli.ConfigFlag) -> None:
    del argv
    f = flags.FLAGS
    try:
        predict, names = load_predictor(
            f.saved_model, f.checkpoint,
            config_flag.resolve() if f.checkpoint else None, tta=f.tta, tflite=f.tflite)
        paths = find_images(f.inputs)
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    json_path, failures = predict_images(paths, predict, names, f.output_dir, f.score_threshold)
    done = len(paths) - failures
    print(f"{done} of {len(paths)} image(s) done: pictures in {f.output_dir}, detections in "
          f"{json_path}" + (f"; {failures} could not be read (listed above)" if failures else ""))
    if done == 0:
        raise SystemExit(1)


def _define_flags(argv: list[str]) -> cli.ConfigFlag:
    config = cli.define_config_flag(
        argv, run_flag="checkpoint",
        help_string="Recipe or config.json of --checkpoint (default: the run's config.json).")
    flags.DEFINE_string("inputs", None, "An image file, a folder or a glob ('dir/*.jpg').")
    flags.DEFINE_string("saved_model", None, "An exported SavedModel directory.")
    flags.DEFINE_string("checkpoint", None, "Or: a run directory or checkpoint prefix.")
    flags.DEFINE_string("tflite", None, "Or: a LiteRT model.tflite (export/export_tflite.py).")
    flags.DEFINE_string("output_dir", None, "Where the PNGs and detections.json go.")
    flags.DEFINE_float("score_threshold", 0.5, "Lowest score drawn (the JSON keeps all).")
    flags.DEFINE_bool("tta", False, "With --checkpoint: test-time augmentation with the recipe's "
                      "test.tta values (flip, scale factors, merge; --config.test.tta.*).")
    flags.mark_flags_as_required(["inputs", "output_dir"])
    return config


if __name__ == "__main__":
    import sys

    _config = _define_flags(sys.argv)
    app.run(lambda argv: main(argv, _config), argv=_config.argv)
