"""Send images to a tf_rcnn detector served by TF Serving, over REST or gRPC.

Serve an exported model (``export/export_saved_model.py --output_dir=exported/shapes/1``):

    docker run --rm -p 8500:8500 -p 8501:8501 \
        -v "$PWD/exported/shapes:/models/shapes" -e MODEL_NAME=shapes tensorflow/serving

then:

    python export/client.py --images=a.jpg,b.png --model=shapes              # REST, port 8501
    python export/client.py --images=a.jpg --model=shapes --grpc=localhost:8500

REST needs only the standard library. gRPC needs ``tensorflow-serving-api`` (``pip install
tensorflow-serving-api`` or ``pip install tf_rcnn[serving]``); it is imported only when used.

Both use the ``image_bytes`` signature (encoded JPEG/PNG, any size, grayscale/RGBA accepted).
Replies hold ``num_detections``, ``detection_boxes`` (``[y1, x1, y2, x2]`` normalised to each
original image), ``detection_scores``, ``detection_classes`` (dataset category ids) and, for
Mask R-CNN, ``detection_masks``. This file never imports tf_rcnn.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any


def rest_request_body(images: Sequence[bytes], signature: str = "image_bytes") -> dict:
    """The JSON body of a TF Serving REST ``:predict`` call (columnar ``inputs`` format).

    Binary strings travel as ``{"b64": ...}`` objects, which TF Serving decodes back to bytes.
    """
    return {
        "signature_name": signature,
        "inputs": {"images": [{"b64": base64.b64encode(data).decode("ascii")}
                              for data in images]},
    }


def predict_rest(images: Sequence[bytes], model: str, host: str = "http://localhost:8501",
                 signature: str = "image_bytes", timeout: float = 60.0) -> dict[str, Any]:
    """POSTs ``images`` to ``{host}/v1/models/{model}:predict``; returns the ``outputs`` dict
    (nested lists). A bad image comes back as an HTTP 400 with TF Serving's error message."""
    body = json.dumps(rest_request_body(images, signature)).encode("utf-8")
    request = urllib.request.Request(f"{host}/v1/models/{model}:predict", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["outputs"]
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"TF Serving refused the request ({error.code}): "
                           f"{error.read().decode('utf-8', 'replace')}") from error


def _serving_api():
    try:
        # optional dependency: only gRPC requests need tensorflow-serving-api
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # optional
    except ImportError as error:
        raise ImportError(
            "gRPC requests need the tensorflow-serving-api package: pip install "
            "tensorflow-serving-api (or use the REST client, which needs nothing extra)."
        ) from error
    return predict_pb2, prediction_service_pb2_grpc


def grpc_request(images: Sequence[bytes], model: str, signature: str = "image_bytes") -> Any:
    """A ``PredictRequest`` protobuf carrying ``images`` as a string tensor ``[B]``."""
    import tensorflow as tf  # optional: the REST client runs without TensorFlow

    predict_pb2, _ = _serving_api()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
    return request


def predict_grpc(images: Sequence[bytes], model: str, target: str = "localhost:8500",
                 signature: str = "image_bytes", timeout: float = 60.0) -> dict[str, Any]:
    """Calls TF Serving's gRPC ``Predict``; returns ``{output name: np.ndarray}``."""
    import grpc  # optional: gRPC only (tensorflow-serving-api brings it)
    import tensorflow as tf  # optional: the REST client runs without TensorFlow

    _, service = _serving_api()
    with grpc.insecure_channel(target) as channel:
        stub = service.PredictionServiceStub(channel)
        reply = stub.Predict(grpc_request(images, model, signature), timeout=timeout)
    return {name: tf.make_ndarray(proto) for name, proto in reply.outputs.items()}


def main(argv: Sequence[str]) -> None:
    del argv
    from absl import flags  # optional: the command line only (the functions need no absl)

    f = flags.FLAGS
    images = []
    for path in f.images:
        with open(path, "rb") as handle:
            images.append(handle.read())
    if f.grpc:
        outputs = predict_grpc(images, f.model, f.grpc)
        outputs = {k: v.tolist() for k, v in outputs.items()}
    else:
        outputs = predict_rest(images, f.model, f.rest)
    for i, path in enumerate(f.images):
        n = int(outputs["num_detections"][i])
        print(f"{path}: {n} detections")
        for d in range(n):
            box = [round(v, 3) for v in outputs["detection_boxes"][i][d]]
            print(f"  class {outputs['detection_classes'][i][d]} "
                  f"score {outputs['detection_scores'][i][d]:.3f} box {box}")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_list("images", None, "Comma-separated image files.")
    flags.DEFINE_string("model", "shapes", "Model name in TF Serving (MODEL_NAME).")
    flags.DEFINE_string("rest", "http://localhost:8501", "REST endpoint.")
    flags.DEFINE_string("grpc", None, "gRPC target host:port; REST when unset.")
    flags.mark_flag_as_required("images")
    app.run(main)
