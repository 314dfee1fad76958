"""SavedModel export for TF Serving: preprocessing and postprocessing inside the graph.

Works for every ``TwoStageDetector`` (Fast/Faster R-CNN, R-FCN, Mask R-CNN), and for a
``tf_rcnn.models.tta.TTADetector`` around one (test-time augmentation in the graph:
``export/export_saved_model.py --tta``; ``export_info.json`` records its views). The only
per-model differences are read off the model: a family that takes its proposals with the inputs
(``model.needs_proposals``, Fast R-CNN) has a ``proposals`` input in every signature, and
``detection_masks`` is exported when the model returns it.

Signatures (all dynamic in batch size B and image size H x W):
    ``serving_default``: ``images`` uint8 ``[B, H, W, 3]`` RGB.
    ``image_bytes``: ``images`` string ``[B]``, encoded JPEG/PNG/GIF/BMP; grayscale and RGBA are
        converted to RGB; the images of one batch may differ in size.
    ``tf_example``: ``examples`` string ``[B]``, serialized ``tf.train.Example`` with the encoded
        image under ``image/encoded``.
    RPN-less detectors add ``proposals`` float32 ``[B, P, 4]``: ``[y1, x1, y2, x2]`` in
    ORIGINAL-image pixels; rows with zero area are padding.

Outputs (D = the recipe's detections per image):
    ``num_detections`` int32 ``[B]``; ``detection_boxes`` float32 ``[B, D, 4]``
    ``[y1, x1, y2, x2]`` normalised to [0, 1] by the ORIGINAL image height/width (the TF Object
    Detection API convention); ``detection_scores`` float32 ``[B, D]``; ``detection_classes``
    int32 ``[B, D]`` in DATASET category ids (the label map saved with the run);
    ``detection_masks`` float32 ``[B, D, Hm, Wm]`` box-relative mask probabilities (Mask R-CNN).
    Rows past ``num_detections`` are zeros (class 0).

Preprocessing is ``tf_rcnn.data.pipeline.preprocess_image_for_inference`` (resize to the recipe's
largest scale capped by ``max_size``, normalise, pad to ``size_divisor``) per image, then the
images of a batch are zero-padded to the largest one, exactly as the evaluation pipeline does.
No ``py_function`` and no custom op: the graph runs in a process that never imports tf_rcnn.
Bytes that do not decode fail that request with ``InvalidArgumentError``.

``label_map.json`` (``tf_rcnn.label_map.v1``: contiguous id, dataset id, name) is written beside
``saved_model.pb``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.data.builder import pixel_stats
from tf_rcnn.data.pipeline import decode_image, preprocess_image_for_inference, scale_boxes
from tf_rcnn.label_map import LABEL_MAP_FILE
from tf_rcnn.models.builder import with_tta
from tf_rcnn.models.checkpoint import restore_detector
from tf_rcnn.models.tta import TTADetector

SIGNATURES = ("serving_default", "image_bytes", "tf_example")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Inference preprocessing of a recipe (``config.data`` and the backbone's pixel stats).

    Attributes:
        scales: shorter-side targets; inference uses the largest.
        max_size: cap on the longer side.
        size_divisor: pad height/width to multiples of this.
        pixel_mean: RGB mean, 0-255 units (keyword only, no default: the backbone family's,
            ``tf_rcnn.data.pipeline.pixel_stats_for_backbone``).
        pixel_std: RGB std, 0-255 units, likewise.
        resize_rule: ``"tf_rcnn"`` or ``"torchvision"`` (``tf_rcnn.data.pipeline``; keyword
            only).
    """

    scales: tuple[int, ...] = (600,)
    max_size: float = 1000.0
    size_divisor: int = 32
    pixel_mean: tuple[float, float, float] = dataclasses.field(kw_only=True)
    pixel_std: tuple[float, float, float] = dataclasses.field(kw_only=True)
    resize_rule: str = dataclasses.field(default="tf_rcnn", kw_only=True)

    @classmethod
    def from_recipe(cls, config: Any) -> PreprocessConfig:
        """From a full recipe (``configs/*.py``): ``config.data`` and the pixel statistics
        training used (``tf_rcnn.data.builder.pixel_stats``: the backbone's, or
        ``data.pixel_mean/std``)."""
        mean, std = pixel_stats(config)
        d = config.data
        return cls(tuple(int(s) for s in d.scales), float(d.max_size), int(d.size_divisor),
                   pixel_mean=tuple(mean), pixel_std=tuple(std),
                   resize_rule=str(d.resize_rule))


def label_map_entries(model: Any) -> list[dict]:
    """``[{"id", "dataset_id", "name"}, ...]`` for classes 1..K from ``model.label_map``.

    A model without a label map (or with one in another format) gets identity ids and names
    ``"class_<id>"``.
    """
    k = int(model.num_classes)
    label_map = getattr(model, "label_map", None) or {}
    classes = label_map.get("classes") if isinstance(label_map, dict) else None
    if classes:
        classes = sorted(classes, key=lambda c: int(c["id"]))
        if [int(c["id"]) for c in classes] != list(range(1, k + 1)):
            raise ValueError(
                f"model.label_map has ids {[c['id'] for c in classes]} but the model has {k} "
                "classes; rebuild the model with the label map of its training data."
            )
        return [{"id": int(c["id"]), "dataset_id": int(c["dataset_id"]), "name": str(c["name"])}
                for c in classes]
    return [{"id": i, "dataset_id": i, "name": f"class_{i}"} for i in range(1, k + 1)]


def decode_image_bytes(data: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP scalar string -> ``[H, W, 3]`` uint8 RGB, safe on any bytes
    (the data pipeline's decoder, so serving and training decode alike)."""
    return decode_image(data)


def _decode_and_preprocess(decode: Any, items: tf.Tensor, pre: PreprocessConfig):
    """Per-image decode + preprocess over a batch, padded to the largest image.

    Returns:
        ``images [B, Hp, Wp, 3]`` float32 normalised, ``image_shape [B, 2]`` int32 (resized size
        before padding), ``scale [B, 2]`` float32 (y, x; resized = original * scale) and
        ``original_shape [B, 2]`` int32.
    """

    def one(item):
        image = decode(item)
        original = tf.shape(image)[:2]
        image, shape, scale = preprocess_image_for_inference(
            image, scales=pre.scales, max_size=pre.max_size, size_divisor=pre.size_divisor,
            pixel_mean=pre.pixel_mean, pixel_std=pre.pixel_std, resize_rule=pre.resize_rule)
        # [H', W', 3] -> ragged [H', (W'), 3] so images of different sizes can share one batch.
        return tf.RaggedTensor.from_tensor(image), shape, scale, original

    signature = (
        tf.RaggedTensorSpec(shape=[None, None, 3], dtype=tf.float32, ragged_rank=1),
        tf.TensorSpec([2], tf.int32),
        tf.TensorSpec([2], tf.float32),
        tf.TensorSpec([2], tf.int32),
    )
    ragged, image_shape, scale, original = tf.map_fn(one, items, fn_output_signature=signature)
    # [B, (H'), (W'), 3] ragged -> [B, max H', max W', 3], zero padding bottom/right (every H', W'
    # is already a multiple of size_divisor, so the maximum is too).
    images = ragged.to_tensor(default_value=0.0)
    images.set_shape([None, None, None, 3])
    return images, image_shape, scale, original


def _postprocess(outputs: dict, scale: tf.Tensor, original: tf.Tensor,
                 dataset_ids: tf.Tensor) -> dict:
    """Network-input pixels -> original image, normalised; contiguous -> dataset class ids."""
    # [B, D, 4] / [B, 1, 4] (sy, sx, sy, sx)
    boxes = outputs["detection_boxes"] / tf.concat([scale, scale], axis=-1)[:, tf.newaxis, :]
    hw = tf.cast(original, tf.float32)  # [B, 2]
    size = tf.concat([hw, hw], axis=-1)[:, tf.newaxis, :]  # [B, 1, 4] (h, w, h, w)
    boxes = tf.clip_by_value(boxes, 0.0, size) / size
    num = tf.cast(outputs["num_detections"], tf.int32)
    d = tf.shape(boxes)[1]
    valid = tf.range(d)[tf.newaxis, :] < num[:, tf.newaxis]  # [B, D]
    classes = tf.gather(dataset_ids, tf.cast(outputs["detection_classes"], tf.int32))
    result = {
        "num_detections": num,
        "detection_boxes": tf.where(valid[..., tf.newaxis], boxes, 0.0),
        "detection_scores": tf.where(valid, tf.cast(outputs["detection_scores"], tf.float32),
                                     0.0),
        "detection_classes": tf.where(valid, classes, 0),
    }
    if "detection_masks" in outputs:
        masks = tf.cast(outputs["detection_masks"], tf.float32)
        result["detection_masks"] = tf.where(valid[:, :, tf.newaxis, tf.newaxis], masks, 0.0)
    return result


def detection_function(model: Any) -> Callable[..., dict[str, tf.Tensor]]:
    """``detect(images, image_shape, scale, original, proposals=None)``: the network on
    preprocessed images and their serving outputs (:func:`_postprocess`), shared by every
    export. ``scale`` / ``original`` are each image's resize factors and original size;
    ``proposals`` (RPN-less models) are in original-image pixels."""
    entries = label_map_entries(model)
    # Contiguous class c -> dataset id; entry 0 (background / padding rows) -> 0.
    table = tf.constant([0] + [e["dataset_id"] for e in entries], tf.int32)
    needs_proposals = model.needs_proposals

    def detect(images, image_shape, scale, original, proposals=None):
        inputs = {"images": images, "image_shape": image_shape}
        if needs_proposals:
            # Original pixels -> network-input pixels (zero-area padding rows stay zero-area).
            inputs["proposals"] = scale_boxes(proposals, scale[:, tf.newaxis, :])
        outputs = model(inputs, training=False)
        return _postprocess(dict(outputs), scale, original, table)

    return detect


def make_serving_functions(model: Any, preprocess: PreprocessConfig) -> dict[str, Any]:
    """The three signature ``tf.function`` s of ``model`` (see the module docstring).

    Args:
        model: a built ``TwoStageDetector`` or a ``TTADetector`` around one.
        preprocess: the recipe's inference preprocessing.

    Returns:
        ``{"serving_default": fn, "image_bytes": fn, "tf_example": fn}``; each takes a dict of
        inputs (``images`` / ``examples`` and, for RPN-less models, ``proposals``).
    """
    needs_proposals = model.needs_proposals
    detect = detection_function(model)

    # The network is traced once and shared by the three signatures (tracing a detector takes
    # seconds; the signatures differ only in decoding).
    core_spec = [tf.TensorSpec([None, None, None, 3], tf.float32),
                 tf.TensorSpec([None, 2], tf.int32), tf.TensorSpec([None, 2], tf.float32),
                 tf.TensorSpec([None, 2], tf.int32)]
    if needs_proposals:
        core_spec.append(tf.TensorSpec([None, None, 4], tf.float32))
    core = tf.function(detect, input_signature=core_spec, autograph=False)

    def run(decode, items, proposals):
        images, image_shape, scale, original = _decode_and_preprocess(decode, items, preprocess)
        args = (images, image_shape, scale, original)
        if needs_proposals:
            args += (tf.cast(proposals, tf.float32),)
        return core(*args)

    def decode_uint8(image):
        return image

    def decode_bytes(data):
        return decode_image_bytes(data)

    def decode_example(serialized):
        features = tf.io.parse_single_example(
            serialized, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
        return decode_image_bytes(features["image/encoded"])

    proposal_spec = {"proposals": tf.TensorSpec([None, None, 4], tf.float32, name="proposals")}
    specs = {
        "serving_default": ("images", tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                    name="images"), decode_uint8),
        "image_bytes": ("images", tf.TensorSpec([None], tf.string, name="images"), decode_bytes),
        "tf_example": ("examples", tf.TensorSpec([None], tf.string, name="examples"),
                       decode_example),
    }
    def make(key, spec, decode):
        signature = {key: spec, **(proposal_spec if needs_proposals else {})}

        def serve(inputs):
            return run(decode, inputs[key], inputs.get("proposals"))

        return tf.function(serve, input_signature=[signature], autograph=False)

    return {name: make(*spec) for name, spec in specs.items()}


def export_saved_model(
    model: Any,
    output_dir: str,
    preprocess: PreprocessConfig,
    overwrite: bool = True,
) -> str:
    """Writes ``model`` as a SavedModel with the three signatures and ``label_map.json``.

    Args:
        model: a built ``TwoStageDetector`` (e.g. ``model.build_with_dummy_inputs()``) or a
            ``TTADetector`` around one.
        output_dir: SavedModel directory (for TF Serving: ``MODEL_BASE/<version>``).
        preprocess: the recipe's inference preprocessing (``PreprocessConfig.from_recipe``).
        overwrite: replace an existing SavedModel in ``output_dir``.

    Returns:
        ``output_dir``.
    """
    if not model.built or not model.weights:
        raise ValueError("The model has no weights yet; build it first "
                         "(model.build_with_dummy_inputs()).")
    if tf.io.gfile.exists(os.path.join(output_dir, "saved_model.pb")) and not overwrite:
        raise FileExistsError(f"{output_dir} already holds a SavedModel; pass overwrite=True "
                              "or choose another directory.")
    archive = keras.export.ExportArchive()
    archive.track(model)
    functions = make_serving_functions(model, preprocess)
    # Registered in SIGNATURES order; serving_default is named explicitly.
    for name in SIGNATURES:
        archive.add_endpoint(name, functions[name])
    archive.write_out(output_dir, verbose=False)
    write_label_map(model, output_dir)
    write_export_info(model, output_dir, preprocess)
    return output_dir


EXPORT_INFO_FILE = "export_info.json"


def model_info(model: Any, preprocess: PreprocessConfig) -> dict[str, Any]:
    """What a client of any export needs to know of the model besides the graph: the detector
    class, class count, compute type, preprocessing, test-time augmentation (or None) and, for
    a mask model, the mask paste rule. ``export_info.json`` and the LiteRT export's
    ``tflite_info.json`` both carry it."""
    detector = model.detector if isinstance(model, TTADetector) else model
    tta = None
    if isinstance(model, TTADetector):
        tta = {k: model.get_config()[k] for k in ("scales", "flip", "merge", "nms_threshold")}
    info = {"model": type(detector).__name__, "num_classes": int(model.num_classes),
            "compute_dtype": str(detector.roi_heads.compute_dtype),
            "preprocess": dataclasses.asdict(preprocess), "tta": tta}
    if getattr(model.roi_heads, "predicts_masks", False):
        info["mask_paste_rule"] = model.roi_heads.paste_rule
    return info


def write_export_info(model: Any, output_dir: str, preprocess: PreprocessConfig) -> str:
    """Writes ``output_dir/export_info.json``: the format tag and :func:`model_info`."""
    info = {"format": "tf_rcnn.export.v1", **model_info(model, preprocess)}
    path = os.path.join(output_dir, EXPORT_INFO_FILE)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(info, indent=1))
    return path


def write_label_map(model: Any, output_dir: str) -> str:
    """Writes ``output_dir/label_map.json`` (the ``LabelMap.to_dict`` format)."""
    path = os.path.join(output_dir, LABEL_MAP_FILE)
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps({"format": "tf_rcnn.label_map.v1",
                            "classes": label_map_entries(model)}, indent=1))
    return path


def export_from_checkpoint(checkpoint: str, output_dir: str, config: Any = None,
                           precision: str = "float32", tta: bool = False) -> str:
    """Restores a trained run (``tf_rcnn.models.checkpoint.restore_detector``) and exports it.

    Args:
        checkpoint: a run directory or checkpoint prefix.
        output_dir: SavedModel directory.
        config: the recipe (path or ConfigDict); default: the run's ``config.json``, so the
            exported preprocessing (scales, max size, pixel statistics) is the one the run
            was trained with.
        precision: the type the exported graph computes in (``float32``, ``bfloat16``,
            ``float16``; weights stay float32 and outputs are float32 either way).
        tta: bake the recipe's test-time augmentation (``test.tta``: flip, scale factors,
            merge) into the graph; also on when the config sets ``test.tta.enabled``.

    The label map comes from the run's ``label_map.json``; without it class ids are exported as
    they are (1..K).
    """
    model, config, _ = restore_detector(checkpoint, config, precision=precision)
    model = with_tta(model, config, tta)
    return export_saved_model(model, output_dir, PreprocessConfig.from_recipe(config))


def preprocess_batch(images: Sequence[Any], preprocess: PreprocessConfig) -> dict:
    """Eager reference of the in-graph preprocessing for a list of uint8 ``[H, W, 3]`` images.

    Returns:
        ``{"images", "image_shape", "scale", "original_shape"}`` as the serving graph computes
        them (images padded to the largest in the batch); useful to call the Keras model on the
        exact tensors the SavedModel feeds it.
    """
    items = [tf.convert_to_tensor(im) for im in images]
    outs = [preprocess_image_for_inference(
        im, scales=preprocess.scales, max_size=preprocess.max_size,
        size_divisor=preprocess.size_divisor, pixel_mean=preprocess.pixel_mean,
        pixel_std=preprocess.pixel_std, resize_rule=preprocess.resize_rule) for im in items]
    h = max(int(o[0].shape[0]) for o in outs)
    w = max(int(o[0].shape[1]) for o in outs)
    padded = [tf.pad(o[0], [[0, h - o[0].shape[0]], [0, w - o[0].shape[1]], [0, 0]])
              for o in outs]
    return {
        "images": tf.stack(padded),
        "image_shape": tf.stack([o[1] for o in outs]),
        "scale": tf.stack([o[2] for o in outs]),
        "original_shape": tf.constant([list(im.shape[:2]) for im in items], tf.int32),
    }
