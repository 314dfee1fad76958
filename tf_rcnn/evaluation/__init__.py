"""tf_rcnn.evaluation: COCO box/mask AP, VOC mAP and RPN proposal recall (NumPy, off the graph)."""

from tf_rcnn.evaluation.coco_evaluator import COCO_STAT_NAMES, COCOEvaluator

__all__ = ["COCO_STAT_NAMES", "COCOEvaluator"]
