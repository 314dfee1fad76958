"""Run a detector over images and write pictures and JSON to look at.

    python -m tf_rcnn.predict --inputs="photos/*.jpg" --saved_model=exported/shapes/1 \
        --output_dir=predictions
    python -m tf_rcnn.predict --inputs=photos/ --checkpoint=runs/shapes \
        [--config=configs/shapes_faster_rcnn.py] --output_dir=predictions

``--inputs`` is an image file, a folder (its JPEG/PNG/BMP/GIF files) or a glob. Both sources go
through the same serving graph (``tf_rcnn.export``): a SavedModel is loaded as is; a checkpoint
is restored into the recipe's model (``--config``, default the run's ``config.json``) and wrapped
in the same ``image_bytes`` function in-process. Writes ``OUTPUT/<name>.png`` per image (boxes,
class names, scores, translucent masks for Mask R-CNN) and ``OUTPUT/detections.json``: one entry
per image with ``image``, ``height``, ``width`` and ``detections``, each
``{"box": [y1, x1, y2, x2] original pixels, "bbox_xywh", "score", "class_id" (dataset id),
"class_name"}``.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

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


def load_predictor(saved_model: str | None = None, checkpoint: str | None = None,
                   config: Any = None) -> tuple[Callable, dict[int, str]]:
    """A function ``bytes -> outputs dict`` (the ``image_bytes`` signature on one image) and the
    class names ``{dataset_id: name}``, from a SavedModel or a checkpoint (+ recipe)."""
    import tensorflow as tf

    if (saved_model is None) == (checkpoint is None):
        raise ValueError("Pass exactly one of saved_model (an exported directory) or checkpoint "
                         "(a checkpoint prefix or run directory).")
    if saved_model is not None:
        loaded = tf.saved_model.load(saved_model)
        fn = loaded.signatures["image_bytes"]
        names = _read_label_map(os.path.join(saved_model, "label_map.json"))

        def predict(data: bytes) -> dict:
            return {k: v.numpy() for k, v in fn(images=tf.constant([data])).items()}

        predict.keep_alive = loaded  # the signature needs its SavedModel object alive
        return predict, names

    from tf_rcnn.export import PreprocessConfig, label_map_entries, make_serving_functions
    from tf_rcnn.finetune import load_detector
    from tf_rcnn.training.checkpoints import resolve_checkpoint_path

    if config is None:
        import ml_collections

        run_dir = os.path.dirname(resolve_checkpoint_path(checkpoint))
        with open(os.path.join(run_dir, "config.json")) as f:
            config = ml_collections.ConfigDict(json.load(f))
    elif isinstance(config, str):
        from tf_rcnn.config import load_config_file

        config = load_config_file(config)
    model = load_detector(checkpoint, config=config)
    fn = make_serving_functions(model, PreprocessConfig.from_recipe(config))["image_bytes"]
    names = {e["dataset_id"]: e["name"] for e in label_map_entries(model)}

    def predict(data: bytes) -> dict:
        return {k: v.numpy() for k, v in fn({"images": tf.constant([data])}).items()}

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


def annotate(image: np.ndarray, outputs: dict, names: dict[int, str],
             score_threshold: float = 0.5) -> np.ndarray:
    """Draws image 0 of a serving output (normalised boxes, dataset ids, optional box-relative
    masks) on the original ``image [H, W, 3]`` uint8."""
    from tf_rcnn import visualize
    from tf_rcnn.evaluation.coco_evaluator import paste_masks

    height, width = image.shape[:2]
    n = int(outputs["num_detections"][0])
    boxes = outputs["detection_boxes"][0, :n] * np.array([height, width, height, width])
    masks = None
    if "detection_masks" in outputs:
        masks = paste_masks(outputs["detection_masks"][0, :n], boxes, (height, width))
    return visualize.draw_detections(image, boxes, outputs["detection_classes"][0, :n],
                                     outputs["detection_scores"][0, :n], names, masks=masks,
                                     score_threshold=score_threshold)


def predict_images(paths: Sequence[str], predict: Callable, names: dict[int, str],
                   output_dir: str, score_threshold: float = 0.5) -> str:
    """Runs ``predict`` on every image, writes the PNGs and ``detections.json``; returns the
    JSON path. An image that fails to decode is reported in the JSON with its error."""
    import tensorflow as tf
    from PIL import Image

    from tf_rcnn import visualize

    os.makedirs(output_dir, exist_ok=True)
    results = []
    used: set[str] = set()
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            outputs = predict(data)
        except tf.errors.InvalidArgumentError as error:
            results.append({"image": path, "error": error.message})
            continue
        image = np.asarray(Image.open(path).convert("RGB"))
        height, width = image.shape[:2]
        stem = os.path.splitext(os.path.basename(path))[0]
        name, k = stem, 1
        while name in used:  # same file name in different folders
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        visualize.save_image(os.path.join(output_dir, f"{name}.png"),
                             annotate(image, outputs, names, score_threshold))
        results.append({"image": path, "annotated": f"{name}.png", "height": height,
                        "width": width,
                        "detections": detections_for_image(outputs, height, width, names)})
    json_path = os.path.join(output_dir, "detections.json")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1)
    return json_path


def main(argv: Sequence[str]) -> None:
    del argv
    from absl import flags

    f = flags.FLAGS
    predict, names = load_predictor(f.saved_model, f.checkpoint, f.config)
    paths = find_images(f.inputs)
    json_path = predict_images(paths, predict, names, f.output_dir, f.score_threshold)
    print(f"{len(paths)} image(s): pictures in {f.output_dir}, detections in {json_path}")


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("inputs", None, "An image file, a folder or a glob ('dir/*.jpg').")
    flags.DEFINE_string("saved_model", None, "An exported SavedModel directory.")
    flags.DEFINE_string("checkpoint", None, "Or: a checkpoint prefix or run directory.")
    flags.DEFINE_string("config", None, "Recipe of the checkpoint (default: its config.json).")
    flags.DEFINE_string("output_dir", None, "Where the PNGs and detections.json go.")
    flags.DEFINE_float("score_threshold", 0.5, "Lowest score drawn (the JSON keeps all).")
    flags.mark_flags_as_required(["inputs", "output_dir"])


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import app

    import tf_rcnn  # noqa: F401  (selects the TensorFlow backend before Keras loads)

    _define_flags()
    app.run(main)
