"""tf_rcnn.evaluation: COCO box/mask AP, VOC mAP and RPN proposal recall (NumPy, off the graph)."""

from tf_rcnn.evaluation.coco_evaluator import COCO_STAT_NAMES, COCOEvaluator
from tf_rcnn.evaluation.proposal_recall import ProposalRecallEvaluator, best_gt_overlaps
from tf_rcnn.evaluation.voc_evaluator import VOCEvaluator, voc_ap

__all__ = [
    "COCO_STAT_NAMES",
    "COCOEvaluator",
    "ProposalRecallEvaluator",
    "best_gt_overlaps",
    "VOCEvaluator",
    "voc_ap",
]
