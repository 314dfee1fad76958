"""The shapes demo recipe on crowded shapes: 6-12 shapes per image, mostly in clusters of one
class whose boxes overlap at IoU 0.3-0.7 (``data.shapes_variant = "crowded"``, cached in
``data_cache/shapes_crowded``, apart from the plain shapes).

It is the data where the final per-class NMS matters: evaluate one checkpoint with
``--config.model.roi_head.nms_method=hard|linear|gaussian`` (``benchmarks/soft_nms.py`` does the
three). Everything else is ``shapes_faster_rcnn``'s but the test-time proposal and detection
counts (more objects per image).
"""

from tf_rcnn.config import base_recipe


def get_config():
    config = base_recipe("shapes_faster_rcnn")
    config.data.shapes_variant = "crowded"
    # Up to 12 objects per image: more proposals and detections than the 1-4 shapes demo.
    config.model.rpn.post_nms_topk_test = 200
    config.model.roi_head.detections_per_image = 100
    return config
