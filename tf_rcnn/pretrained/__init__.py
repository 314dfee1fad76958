"""Pretrained weights from other frameworks: torchvision's COCO detectors and ImageNet ResNets.

    import tf_rcnn.pretrained
    model = tf_rcnn.pretrained.load("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_coco.pth")

:func:`load` builds the architecture's recipe (``configs/torchvision_<arch>.py``) with the COCO
label map and imports the file (``.pth`` zip or legacy, ``.safetensors``, ``.npz``; read without
torch by :mod:`tf_rcnn.formats.torch_checkpoint`). ``python -m tf_rcnn.tools.import_weights``
writes the same model as a run directory that every command reads.
"""

from __future__ import annotations

import keras

from tf_rcnn.config import load_config_file
from tf_rcnn.models import builder
from tf_rcnn.pretrained.torchvision import (
    ARCHS,
    NUM_CLASSES,
    coco_label_map,
    load_into,
    recipe_path,
)

__all__ = ["ARCHS", "load"]


def load(arch: str, path: str) -> keras.Model:
    """A torchvision COCO detector as a built tf_rcnn Keras model with its weights.

    Args:
        arch: ``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``,
            ``fasterrcnn_resnet50_fpn_v2`` or ``maskrcnn_resnet50_fpn_v2``.
        path: the torchvision weights file.

    Returns:
        The detector (``model.predict(images)`` on images preprocessed as the recipe says;
        class c is COCO category id c, ``model.label_map`` names them).
    """
    config = load_config_file(recipe_path(arch))
    config.model.num_classes = NUM_CLASSES
    model = builder.build_model(config, label_map=coco_label_map().to_dict())
    model.build_with_dummy_inputs()
    load_into(model, path, arch)
    return model
