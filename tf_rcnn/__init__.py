"""tf_rcnn: region-based object detectors for TensorFlow and Keras 3.

Fast R-CNN, Faster R-CNN (C4 and FPN), R-FCN, Mask R-CNN and Cascade (Mask) R-CNN on one
two-stage base.
See README.md for set-up and docs/design.md for the layers and conventions (boxes
``[y1, x1, y2, x2]`` in pixels, class 0 = background).
"""

from tf_rcnn import console as _console

# TensorFlow loads here (through Keras). In a tf_rcnn command run without --verbose its
# start-up lines are held back; anywhere else quiet_startup does nothing (tf_rcnn.console).
with _console.quiet_startup():
    from tf_rcnn import backend as _backend  # noqa: F401  (must run before keras is imported)
    from tf_rcnn.models.detectors.cascade_rcnn import CascadeMaskRCNN, CascadeRCNN
    from tf_rcnn.models.detectors.fast_rcnn import FastRCNN
    from tf_rcnn.models.detectors.faster_rcnn import FasterRCNN
    from tf_rcnn.models.detectors.mask_rcnn import MaskRCNN
    from tf_rcnn.models.detectors.rfcn import RFCN
    from tf_rcnn.models.detectors.two_stage import TwoStageDetector

__version__ = "0.1.0"
__all__ = ["CascadeMaskRCNN", "CascadeRCNN", "FastRCNN", "FasterRCNN", "MaskRCNN", "RFCN",
           "TwoStageDetector"]
