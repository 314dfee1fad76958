"""TensorBoard summaries the trainer writes besides scalars: pictures of detections.

Written with core TF (``tf.summary.write`` and the images plugin's metadata) like
``tf_rcnn.training.progress`` writes its scalars, so no TensorBoard package is needed to train.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2


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
