"""tf_rcnn.data: dataset readers, the synthetic shapes dataset and the tf.data input pipeline.

Readers return ``(records, label_map, report)``: a list of :class:`DetectionRecord` (boxes
``[y1, x1, y2, x2]`` in original-image pixels, classes ``1..K``), the :class:`LabelMap`
(contiguous id <-> dataset id <-> name) and a :class:`LoadReport` counting every skip/repair.
:class:`InputPipeline` turns records into padded batches for training and evaluation.
See docs/data.md.
"""

from tf_rcnn.data.coco import load_coco
from tf_rcnn.data.custom import load_custom, records_from_list
from tf_rcnn.data.pipeline import (
    InputPipeline,
    pixel_stats_for_backbone,
    preprocess_image_for_inference,
)
from tf_rcnn.data.proposals import read_proposals, write_proposals
from tf_rcnn.data.records import DetectionRecord, LoadReport
from tf_rcnn.data.shapes import generate_shapes_dataset
from tf_rcnn.data.voc import load_voc
from tf_rcnn.label_map import LabelMap  # re-exported for `from tf_rcnn.data import LabelMap`

__all__ = [
    "DetectionRecord",
    "InputPipeline",
    "LabelMap",
    "LoadReport",
    "generate_shapes_dataset",
    "load_coco",
    "load_custom",
    "load_voc",
    "pixel_stats_for_backbone",
    "preprocess_image_for_inference",
    "read_proposals",
    "records_from_list",
    "write_proposals",
]
