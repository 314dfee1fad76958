"""On-device export: a LiteRT (TFLite) flatbuffer that runs with TFLITE_BUILTINS only.

Works for every ``TwoStageDetector`` with nothing per family: the detector is traced inside
``tf_rcnn.backend.builtin_ops_only()``, so the ops without a TFLite builtin trace their
builtin-only variants (``tf_rcnn/ops/crop_and_resize.py``, ``builtin_pooling.py``,
``builtin_nms.py``), and the converter is restricted to ``TFLITE_BUILTINS`` (plus
``TFLITE_BUILTINS_INT8`` for int8): a Flex op anywhere is a conversion error, not a model the
stock interpreter refuses later.

The model (batch 1, fixed network input ``H x W``):
    input ``images`` uint8 ``[1, h, w, 3]`` RGB of any size ``h x w`` (resize the interpreter's
    input tensor to the image, ``resize_tensor_input``); RPN-less families (Fast R-CNN) add
    ``proposals`` float32 ``[1, P, 4]`` ``[y1, x1, y2, x2]`` in original-image pixels, zero-area
    rows are padding (``P`` fixed at export).
    Inside: letterbox resize by ``s = min(H / h, W / w)`` with the recipe's resize sampling
    (``tf_rcnn.data.pipeline.resize_image``), normalisation by the recipe's pixel statistics,
    zero padding bottom/right to ``H x W``, the detector, and the SavedModel's postprocessing.
    outputs, as the SavedModel's ``serving_default`` (``tf_rcnn/export/saved_model.py``):
    ``num_detections`` int32 ``[1]``, ``detection_boxes`` float32 ``[1, D, 4]`` normalised by
    the ORIGINAL image size, ``detection_scores`` ``[1, D]``, ``detection_classes`` int32
    ``[1, D]`` dataset category ids, ``detection_masks`` ``[1, D, 28, 28]`` (Mask R-CNN).

When the recipe would resize an image to exactly ``H x W`` (e.g. the 128x128 shapes images at
``--input_size=128x128``) the network sees the SavedModel's tensors and the detections equal
it; otherwise the letterbox differs from the recipe's resize by design (fixed size on device).

Beside ``model.tflite``: ``label_map.json`` (as the SavedModel's) and ``tflite_info.json``
(input/output names in interpreter order, input size, quantisation, and the model fields
of the SavedModel's ``export_info.json``: ``saved_model.model_info``).

Quantisation: ``none`` (float32), ``dynamic`` (int8 weights, float activations),
``int8`` (int8 weights and activations calibrated on a representative sample of images, for
the convolutions and fully-connected layers only, :data:`INT8_OPS`). Everything else stays
float32: the letterbox and normalisation at the input (its resize coordinates quantised to
half a pixel shift the sampled pixels), normalisation layers, anchors and box decoding, NMS,
RoI pooling, and the prediction layers :data:`FLOAT_LAYERS` (objectness, deltas, class
logits, ...). Quantising every op, or the convolutions and fully-connected layers including
the prediction layers, returned almost no detections on the shapes demo (held-out AP50 0.02
and 0.01): the quantiser gives the RPN objectness convolution the range of a downstream score
tensor masked with ``-inf`` (scale 1e36, every logit dequantises to 0) and the RPN deltas one
shared, too narrow range. Denying the other op types to the quantiser is not enough (it
still put quantise / requantise pairs on the RPN deltas' slices and the softmax scores), so
the calibration ranges of every tensor that is not an int8 op's input or output are removed
before quantising. The demo's int8 model: held-out AP / AP50 0.784 / 0.944 against float32's
0.788 / 0.951 (``benchmarks/on_device.py``, 200 images).
``tflite_info.json`` records the int8 op types and the layers kept float.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

from tf_rcnn.backend import builtin_ops_only
from tf_rcnn.data.builder import load_split
from tf_rcnn.data.pipeline import normalize_pixels, resize_image, resized_shape
from tf_rcnn.data.tfrecords import load_image
from tf_rcnn.export.saved_model import (
    PreprocessConfig,
    detection_function,
    model_info,
    write_label_map,
)
from tf_rcnn.models.checkpoint import restore_detector

QUANTIZE_MODES = ("none", "dynamic", "int8")
TFLITE_FILE = "model.tflite"
TFLITE_INFO_FILE = "tflite_info.json"
OUTPUT_NAMES = ("num_detections", "detection_boxes", "detection_scores", "detection_classes",
                "detection_masks")


def parse_input_size(text: str, size_divisor: int) -> tuple[int, int]:
    """``"640x480"`` (height x width) or ``"640"`` (square) -> ``(640, 480)``, checked against
    the recipe's ``data.size_divisor`` (the network input must be a multiple of it)."""
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"--input_size={text!r} must be HxW (e.g. 640x640) or one int.")
    bad = [s for s in size if size_divisor > 1 and s % size_divisor]
    if bad:
        raise ValueError(
            f"--input_size={text!r}: height and width must be multiples of the recipe's "
            f"data.size_divisor ({size_divisor}), e.g. "
            f"{'x'.join(str(-(-s // size_divisor) * size_divisor) for s in size)}.")
    return size  # type: ignore[return-value]


def default_input_size(preprocess: PreprocessConfig) -> tuple[int, int]:
    """The recipe's inference shorter side (largest of ``data.scales``, capped by
    ``max_size``) rounded up to ``size_divisor``, square."""
    side = int(min(max(preprocess.scales), preprocess.max_size))
    div = max(int(preprocess.size_divisor), 1)
    side = -(-side // div) * div
    return side, side


def letterbox(image: tf.Tensor, input_size: tuple[int, int], preprocess: PreprocessConfig
              ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """uint8 ``[h, w, 3]`` -> network input of static size ``[H, W, 3]``.

    Scale ``s = min(H / h, W / w)``; the content ``ceil(h * s) x ceil(w * s)`` (the recipe's
    rounding, ``resized_shape``) is sampled as ``resize_image`` samples it, normalised, and the
    rest of the canvas is 0 (the padding value of the normalised image).

    Returns:
        ``images [1, H, W, 3]`` float32, ``image_shape [1, 2]`` int32, ``scale [1, 2]`` float32
        and ``original [1, 2]`` int32.
    """
    if preprocess.resize_rule != "tf_rcnn":
        raise ValueError(
            f"The LiteRT export letterboxes with the tf_rcnn resize rule; this recipe uses "
            f"--config.data.resize_rule={preprocess.resize_rule!r}. Export with "
            f"--config.data.resize_rule=tf_rcnn (the sampling differs slightly from training's).")
    height, width = input_size
    original = tf.shape(image)[:2]
    h = tf.cast(original[0], tf.float32)
    w = tf.cast(original[1], tf.float32)
    s = tf.minimum(float(height) / h, float(width) / w)
    content = tf.minimum(resized_shape(original[0], original[1], s), [height, width])
    pixels = normalize_pixels(tf.cast(image, tf.float32), preprocess.pixel_mean,
                              preprocess.pixel_std)
    canvas = resize_image(pixels, tf.stack([s, s]), tf.constant([height, width]))
    canvas = tf.reshape(canvas, [height, width, 3])
    inside = tf.logical_and(tf.range(height)[:, None] < content[0],
                            tf.range(width)[None, :] < content[1])
    canvas = tf.where(inside[..., None], canvas, 0.0)
    return (canvas[tf.newaxis], content[tf.newaxis], tf.stack([s, s])[tf.newaxis],
            original[tf.newaxis])


@dataclasses.dataclass(frozen=True)
class TFLiteSpec:
    """What the exported graph takes: network input size and, for RPN-less families, the
    number of proposal rows."""

    input_size: tuple[int, int]
    num_proposals: int | None = None


def make_tflite_function(model: Any, preprocess: PreprocessConfig, spec: TFLiteSpec
                         ) -> tf.types.experimental.ConcreteFunction:
    """The concrete function converted to ``.tflite``, traced builtin-only (module docstring).

    Its keyword inputs are ``images`` (and ``proposals``); its outputs the serving dict.
    """
    needs_proposals = bool(model.needs_proposals)
    if needs_proposals and not spec.num_proposals:
        raise ValueError("This family takes proposals with the image; give their number with "
                         "--num_proposals (default: the recipe's data.max_proposals).")
    detect = detection_function(model)

    def serve(images, proposals=None):
        net, image_shape, scale, original = letterbox(images[0], spec.input_size, preprocess)
        result = detect(net, image_shape, scale, original, proposals)
        return {name: result[name] for name in OUTPUT_NAMES if name in result}

    signature = {"images": tf.TensorSpec([1, None, None, 3], tf.uint8, name="images")}
    if needs_proposals:
        signature["proposals"] = tf.TensorSpec([1, int(spec.num_proposals), 4], tf.float32,
                                               name="proposals")
    with builtin_ops_only():
        fn = tf.function(lambda **kw: serve(**kw), autograph=False)
        return fn.get_concrete_function(**signature)


# int8: the op types that run int8 (the convolutions and fully-connected layers carry nearly
# all the weights and arithmetic); everything else stays float32 (module docstring).
INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
# The prediction layers, whose outputs are decoded (logits -> scores, deltas -> boxes) and
# masked with -inf sentinels downstream: they stay float32 too (Keras layer names of the RPN,
# box and mask heads, the R-FCN head's score-map scope; a new head's prediction layers
# are named here).
FLOAT_LAYERS = ("objectness", "deltas", "class_logits", "box_deltas", "mask_logits",
                "score_maps")


@dataclasses.dataclass
class Conversion:
    """A converted flatbuffer and, for int8, what was kept float32."""

    flatbuffer: bytes
    int8_ops: list[str] = dataclasses.field(default_factory=list)
    float_layers: list[str] = dataclasses.field(default_factory=list)
    int8_nodes: int = 0


def convert(concrete: Any, model: Any, quantize: str = "none",
            representative_images: Callable[[], Iterable[np.ndarray]] | None = None,
            proposals: np.ndarray | None = None) -> Conversion:
    """Converts ``concrete`` (from :func:`make_tflite_function`) with builtin ops only.

    Args:
        quantize: ``none``, ``dynamic`` or ``int8`` (needs ``representative_images``: a
            callable returning uint8 ``[h, w, 3]`` images, a few dozen of the training data).
        proposals: ``[1, P, 4]`` given to every calibration image of an RPN-less family.

    Returns:
        The flatbuffer and, for int8, what was kept in float32.

    Raises:
        ValueError: an unknown mode, or int8 without images.
        tf.lite ConverterError: the graph still holds an op that is not a TFLite builtin.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"--quantize={quantize!r}: choose one of {QUANTIZE_MODES}.")
    # Weights as constants (not resource variables): quantisable and delegable (XNNPACK).
    frozen = convert_variables_to_constants_v2(concrete)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize in ("dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize != "int8":
        return Conversion(converter.convert())
    if representative_images is None:
        raise ValueError("--quantize=int8 needs representative images (the training data).")
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]

    def dataset():
        # Keyed by the signature's input names (the interpreter's input order is its own).
        for image in representative_images():
            feed = {"images": np.asarray(image, np.uint8)[np.newaxis]}
            if proposals is not None:
                feed["proposals"] = np.asarray(proposals, np.float32)
            yield feed

    converter.representative_dataset = dataset
    return _selective_int8(converter)


def _selective_int8(converter: Any) -> Conversion:
    """Calibrates once, then quantises only the :data:`INT8_OPS` outside the
    :data:`FLOAT_LAYERS`, through the deny lists of the converter's quantisation debugger
    (``get_nondebug_quantized_model`` is the plain quantised model, no debug ops)."""
    debug = tf.lite.experimental
    debugger = debug.QuantizationDebugger(converter=converter)
    ops = _graph_ops(debugger.calibrated_model)
    types = sorted({op_type for op_type, _ in ops})
    # Per op of an INT8_OPS type: the FLOAT_LAYERS entry it belongs to ("" for none).
    layers = {i: _float_layer(name) for i, (op_type, name) in enumerate(ops)
              if op_type in INT8_OPS}
    float_nodes = [ops[i][1] for i, layer in layers.items() if layer]
    int8_nodes = {i for i, layer in layers.items() if not layer}
    if not float_nodes:
        raise ValueError(
            "--quantize=int8: none of the prediction layers kept in float32 "
            f"({', '.join(FLOAT_LAYERS)}) is in the graph. Name the new head's prediction "
            "layers in tf_rcnn.export.tflite.FLOAT_LAYERS (int8 logits/deltas break decoding) "
            "or export with --quantize=dynamic.")
    # Denying the other op types alone still leaves quantise / requantise pairs on some float
    # tensors (the RPN deltas' slices, the softmax scores): the quantiser sees the calibration
    # range of every tensor. Keep the ranges of the int8 ops' inputs and outputs only.
    debugger.calibrated_model = _keep_ranges(debugger.calibrated_model, int8_nodes)
    debugger.options = debug.QuantizationDebugOptions(
        denylisted_ops=[t for t in types if t not in INT8_OPS], denylisted_nodes=float_nodes)
    return Conversion(
        debugger.get_nondebug_quantized_model(), [t for t in types if t in INT8_OPS],
        sorted({layer for layer in layers.values() if layer}), len(int8_nodes))


def _keep_ranges(flatbuffer: bytes, int8_ops: set[int]) -> bytes:
    """The calibrated model with the calibration ranges (min / max) of every tensor removed
    except the inputs and outputs of the ops ``int8_ops`` (indices in the main subgraph)."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    kept = set()
    for index in int8_ops:
        kept.update(int(t) for t in graph.operators[index].inputs)
        kept.update(int(t) for t in graph.operators[index].outputs)
    for index, tensor in enumerate(graph.tensors):
        if index not in kept and tensor.quantization is not None:
            tensor.quantization.min = None
            tensor.quantization.max = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _float_layer(tensor_name: str) -> str:
    """The :data:`FLOAT_LAYERS` entry a (fused) TFLite tensor name belongs to, or ``""``."""
    for part in tensor_name.split(";"):
        for scope in part.split("/")[:-1]:
            base = re.sub(r"_\d+$", "", scope)
            if base in FLOAT_LAYERS:
                return base
    return ""


def _graph_ops(flatbuffer: bytes) -> list[tuple[str, str]]:
    """``(builtin op name, first output tensor name)`` of every op of the main subgraph."""
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    result = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = graph.tensors[op.outputs[0]].name if len(op.outputs) else b""
        result.append((codes.get(builtin, str(builtin)),
                       name.decode() if isinstance(name, bytes) else str(name)))
    return result


def export_tflite(model: Any, output_dir: str, preprocess: PreprocessConfig,
                  input_size: Sequence[int] | None = None, quantize: str = "none",
                  representative_images: Callable[[], Iterable[np.ndarray]] | None = None,
                  num_proposals: int | None = None) -> str:
    """Writes ``output_dir/model.tflite``, ``label_map.json`` and ``tflite_info.json``.

    Args:
        model: a built ``TwoStageDetector``.
        preprocess: the recipe's inference preprocessing (``PreprocessConfig.from_recipe``).
        input_size: ``(H, W)`` network input (default :func:`default_input_size`).
        quantize, representative_images: see :func:`convert`.
        num_proposals: proposal rows of an RPN-less family's input.

    Returns:
        The path of ``model.tflite``.
    """
    if not model.built or not model.weights:
        raise ValueError("The model has no weights yet; build it first "
                         "(model.build_with_dummy_inputs()).")
    size = tuple(int(s) for s in (input_size or default_input_size(preprocess)))
    rows = int(num_proposals) if model.needs_proposals and num_proposals else None
    spec = TFLiteSpec(size, rows)  # type: ignore[arg-type]
    concrete = make_tflite_function(model, preprocess, spec)
    calibration_proposals = None
    if model.needs_proposals:
        # Calibration proposals: a regular grid of boxes over the whole network input.
        calibration_proposals = _grid_boxes(spec.num_proposals, size)[np.newaxis]
    conversion = convert(concrete, model, quantize, representative_images,
                         calibration_proposals)
    flatbuffer = conversion.flatbuffer
    tf.io.gfile.makedirs(output_dir)
    path = os.path.join(output_dir, TFLITE_FILE)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(flatbuffer)
    write_label_map(model, output_dir)
    outputs = [n for n in OUTPUT_NAMES if n in concrete.structured_outputs]
    info = {
        "format": "tf_rcnn.tflite.v1", **model_info(model, preprocess),
        "input_size": list(size), "quantize": quantize,
        "inputs": ["images"] + (["proposals"] if model.needs_proposals else []),
        "num_proposals": spec.num_proposals,
        "outputs": outputs,
        "signature_outputs": _signature_outputs(concrete),
    }
    if quantize == "int8":
        info["int8"] = {"int8_op_types": conversion.int8_ops,
                        "int8_ops": conversion.int8_nodes,
                        "float_layers": conversion.float_layers,
                        "float": "every other op (input letterbox and normalisation, "
                                 "normalisation layers, decoding, NMS, RoI pooling)"}
    with tf.io.gfile.GFile(os.path.join(output_dir, TFLITE_INFO_FILE), "w") as f:
        f.write(json.dumps(info, indent=1))
    return path


def _grid_boxes(count: int, size: tuple[int, int]) -> np.ndarray:
    """``count`` boxes ``[y1, x1, y2, x2]`` on a regular grid over an ``H x W`` image."""
    side = int(np.ceil(np.sqrt(count)))
    h, w = size[0] / side, size[1] / side
    boxes = [[i * h, j * w, (i + 1) * h, (j + 1) * w] for i in range(side) for j in range(side)]
    return np.asarray(boxes[:count], np.float32)


def _signature_outputs(concrete: Any) -> dict[str, str]:
    """``{"output_0": "detection_boxes", ...}``: the converter names the signature's outputs by
    their position in the concrete function's flattened outputs (a dict flattens by sorted
    key)."""
    return {f"output_{i}": name for i, name in enumerate(sorted(concrete.structured_outputs))}


def export_tflite_from_checkpoint(checkpoint: str, output_dir: str, config: Any = None,
                                  input_size: str | None = None, quantize: str = "none",
                                  num_proposals: int | None = None,
                                  num_calibration_images: int = 32) -> str:
    """Restores a run (``restore_detector``) and exports it; int8 calibrates on the first
    ``num_calibration_images`` images of the training split (``data.builder.load_split``)."""
    model, config, _ = restore_detector(checkpoint, config)
    preprocess = PreprocessConfig.from_recipe(config)
    size = (parse_input_size(input_size, preprocess.size_divisor) if input_size
            else default_input_size(preprocess))
    if model.needs_proposals and num_proposals is None:
        num_proposals = int(config.data.max_proposals)
    def images() -> list[np.ndarray]:
        return calibration_images(config, num_calibration_images)

    return export_tflite(model, output_dir, preprocess, size, quantize,
                         images if quantize == "int8" else None, num_proposals)


def calibration_images(config: Any, count: int) -> list[np.ndarray]:
    """The first ``count`` training images of the recipe as uint8 ``[h, w, 3]`` RGB arrays
    (the representative sample int8 quantisation calibrates on)."""
    records = load_split(config, "train", num_images=count)[0]
    if not isinstance(records, list):
        raise ValueError("--quantize=int8 reads calibration images from the training split's "
                         "image files; TFRecord training data is not supported here. Point "
                         "--config.data at the image files or use --quantize=dynamic.")
    return [load_image(record) for record in records]


class TFLiteDetector:
    """Runs an exported ``model.tflite`` on the stock LiteRT interpreter (``ai_edge_litert``,
    the optional ``litert`` extra): ``detector(image)`` -> the serving outputs by name.

    Args:
        path: ``model.tflite`` (its ``tflite_info.json`` beside it names the outputs).
        num_threads: interpreter threads (default: LiteRT's).
    """

    def __init__(self, path: str, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter  # optional dependency (litert)
        except ImportError as error:
            raise ImportError("Running a .tflite model needs the LiteRT interpreter: "
                              "pip install ai-edge-litert (or tf_rcnn[litert]).") from error
        info_path = os.path.join(os.path.dirname(path), TFLITE_INFO_FILE)
        if not os.path.exists(info_path):
            raise FileNotFoundError(f"{info_path} is missing: export the model with "
                                    "export/export_tflite.py, which writes it beside the model.")
        with open(info_path) as f:
            self.info = json.load(f)
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self._runner = self.interpreter.get_signature_runner("serving_default")
        self.names = dict(self.info["signature_outputs"])
        self.needs_proposals = "proposals" in self.info["inputs"]
        self.paste_rule = self.info.get("mask_paste_rule", "tf_rcnn")

    def ops(self) -> list[str]:
        """The builtin op names of the loaded model (sorted, unique)."""
        return sorted({op["op_name"] for op in self.interpreter._get_ops_details()})

    def __call__(self, image: np.ndarray, proposals: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
        """One uint8 ``[h, w, 3]`` RGB image (and ``[P, 4]`` original-pixel proposals for an
        RPN-less family, zero-padded or cut to the exported ``P``) -> outputs with batch 1."""
        feed = {"images": np.ascontiguousarray(np.asarray(image, np.uint8)[np.newaxis])}
        if self.needs_proposals:
            if proposals is None:
                raise ValueError("This model takes proposals with the image (Fast R-CNN): pass "
                                 "[P, 4] original-pixel boxes.")
            rows = int(self.info["num_proposals"])
            given = np.zeros((rows, 4), np.float32)
            kept = np.asarray(proposals, np.float32).reshape(-1, 4)[:rows]
            given[:len(kept)] = kept
            feed["proposals"] = given[np.newaxis]
        out = self._runner(**feed)
        return {self.names[k]: np.asarray(v) for k, v in out.items()}
