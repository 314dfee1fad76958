"""Watching a run: periodic validation metrics and TensorBoard pictures of detections.

Both hooks run on the chief only, between training loops, with the live (possibly mirrored)
model in inference mode; they never touch the optimizer or the step.

- :func:`make_eval_fn` -> ``eval_fn(step) -> {"bbox/AP": ..., "bbox/AP50": ..., ...}`` over the
  recipe's validation split (COCO metrics), for ``Trainer(eval_fn=..., eval_every=...)``.
- :func:`make_image_fn` -> ``image_fn(step) -> uint8 [H, W, 3]``: the first validation images
  with their detections drawn by :mod:`tf_rcnn.visualize`, tiled into one picture.
- :func:`write_image_summary` writes such a picture as a TensorBoard image summary.

Boxes in the pictures are ``[y1, x1, y2, x2]`` in original-image pixels (the evaluation runner
maps them back from the network input).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import ml_collections
import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow.core.framework import summary_pb2

from tf_rcnn import visualize as vis


def make_eval_fn(
    config: ml_collections.ConfigDict,
    model: tf.keras.Model | object,
    label_map: object,
    num_images: int | None = None,
) -> Callable[[int], dict[str, float]]:
    """Builds ``eval_fn(step)`` computing COCO box metrics on the validation split.

    Args:
        config: the recipe (``data`` section gives the split and the eval batch).
        model: the detector being trained (evaluated in inference mode, weights as they are).
        label_map: the training ``LabelMap`` (dataset ids of the detections).
        num_images: evaluate only the first images of the split (None: all).

    Raises:
        ConfigError: the dataset has no COCO annotation file (VOC/custom data).
    """
    from tf_rcnn.config import ConfigError
    from tf_rcnn.evaluation.coco_evaluator import COCOEvaluator
    from tf_rcnn.evaluation.runner import run_evaluation
    from tf_rcnn.models import builder

    records, label_map, annotation_file = builder.load_split(config, "val", label_map=label_map)
    if annotation_file is None:
        raise ConfigError(
            "train.eval_every needs COCO-style validation annotations; this dataset has none. "
            "Set --config.train.eval_every=0 and run eval.py on the checkpoints instead."
        )
    if num_images is not None:
        records = records[:num_images]
    pipeline = builder.build_input_pipeline(config, records, label_map, training=False)

    def eval_fn(step: int) -> dict[str, float]:
        del step
        evaluator = COCOEvaluator(annotation_file, iou_types=("bbox",), label_map=label_map)
        run_evaluation(model, pipeline.dataset(), [evaluator], log_every=0)
        # pycocotools prints its tables; the trainer logs the numbers it needs.
        with contextlib.redirect_stdout(io.StringIO()):
            return {k: float(v) for k, v in evaluator.evaluate().items()}

    return eval_fn


def make_image_fn(
    config: ml_collections.ConfigDict,
    model: tf.keras.Model | object,
    label_map: object,
    count: int = 4,
    score_threshold: float = 0.5,
) -> Callable[[int], np.ndarray]:
    """Builds ``image_fn(step) -> uint8 [H, W, 3]``: ``count`` validation images with detections.

    Raises:
        ValueError: ``count < 1``.
    """
    from tf_rcnn.evaluation.runner import run_evaluation
    from tf_rcnn.models import builder

    if count < 1:
        raise ValueError(f"count (train.image_summary_count) must be >= 1, got {count}.")
    records, label_map, _ = builder.load_split(config, "val", label_map=label_map)
    records = records[:count]
    pipeline = builder.build_input_pipeline(config, records, label_map, training=False,
                                            batch_size=len(records))
    names = {i: label_map.name(i) for i in range(1, label_map.num_classes + 1)}
    originals = {int(r.image_id): np.asarray(Image.open(r.image_path).convert("RGB"))
                 for r in records}

    def image_fn(step: int) -> np.ndarray:
        del step
        per_image = run_evaluation(model, pipeline.dataset(), [], num_images=len(records),
                                   log_every=0)
        drawn = []
        for image_id, image in originals.items():
            det = per_image.get(image_id)
            if det is None:
                drawn.append(image)
                continue
            drawn.append(vis.draw_detections(image, det["boxes"], det["classes"], det["scores"],
                                             names, score_threshold=score_threshold))
        return vis.draw_grid(drawn)

    return image_fn


def _image_metadata() -> summary_pb2.SummaryMetadata:
    # TensorBoard's "images" plugin tag (ImagePluginData version 0 serialises to empty bytes),
    # the same metadata tf.summary.image attaches; written with core TF like progress.py does.
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "images"
    return metadata


def write_image_summary(name: str, image: np.ndarray, step: int) -> None:
    """Writes one uint8 ``[H, W, 3]`` picture to the default summary writer.

    The tensor is the images plugin's format: ``[width, height, png_bytes]`` strings.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3]; got {image.dtype} {image.shape}.")
    png = tf.io.encode_png(image)
    tensor = tf.stack([tf.as_string(image.shape[1]), tf.as_string(image.shape[0]), png])
    tf.summary.write(name, tensor, step=step, metadata=_image_metadata())
