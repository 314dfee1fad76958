"""Minimal LiteRT client of a tf_rcnn ``.tflite`` export: no TensorFlow, no tf_rcnn.

    pip install ai-edge-litert numpy pillow
    python examples/litert_client.py exported/shapes_tflite/model.tflite photo.jpg

Needs only the three files ``export/export_tflite.py`` writes: ``model.tflite``,
``tflite_info.json`` (the names of the signature's outputs) and ``label_map.json`` (class names).
The model letterboxes the image itself, so any size is fed as it is: the interpreter's input is
resized to the image (the signature runner does it), and the boxes come back normalised by the
original image size.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image


def main(model_path: str, image_path: str, score_threshold: float = 0.5) -> None:
    folder = os.path.dirname(model_path)
    with open(os.path.join(folder, "tflite_info.json")) as f:
        info = json.load(f)
    with open(os.path.join(folder, "label_map.json")) as f:
        names = {c["dataset_id"]: c["name"] for c in json.load(f)["classes"]}
    if "proposals" in info["inputs"]:
        sys.exit("This model (Fast R-CNN) also takes proposals [1, P, 4] in image pixels.")

    interpreter = Interpreter(model_path=model_path)
    runner = interpreter.get_signature_runner("serving_default")
    with Image.open(image_path) as pil:
        image = np.asarray(pil.convert("RGB"), np.uint8)
    raw = runner(images=image[np.newaxis])
    # output_0, output_1, ... -> detection_boxes, detection_classes, ...
    out = {info["signature_outputs"][key]: value for key, value in raw.items()}

    height, width = image.shape[:2]
    for d in range(int(out["num_detections"][0])):
        score = float(out["detection_scores"][0, d])
        if score < score_threshold:
            continue
        y1, x1, y2, x2 = out["detection_boxes"][0, d] * [height, width, height, width]
        class_id = int(out["detection_classes"][0, d])
        print(f"{names.get(class_id, class_id)}\t{score:.3f}\t"
              f"[{y1:.1f}, {x1:.1f}, {y2:.1f}, {x2:.1f}]")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], *(float(a) for a in sys.argv[3:4]))
