"""ProposalRecallEvaluator: hand-computed recall / AR cases for both matching rules."""

from __future__ import annotations

import numpy as np
import pytest

from tf_rcnn.evaluation.proposal_recall import ProposalRecallEvaluator, best_gt_overlaps

GT = np.array([[0, 0, 10, 10], [0, 10, 10, 20]], np.float32)  # two side-by-side 10x10 boxes
PROPOSALS = np.array(
    [
        [0, 0, 10, 10],  # p1: IoU 1 with GT1, 0 with GT2
        [0, 5, 10, 15],  # p2: IoU 50/150 = 1/3 with both
        [0, 10, 10, 18],  # p3: IoU 80/100 = 0.8 with GT2
    ],
    np.float32,
)


def test_hand_computed_ar_at_two_limits():
    ev = ProposalRecallEvaluator(limits=(1, 3))
    gt = np.concatenate([GT, -np.ones([1, 4], np.float32)])[None]  # one padding row
    ev.update(PROPOSALS[None], gt)
    m = ev.evaluate()
    # N = 1: best IoUs (1, 0): GT1 recalled at every t in 0.5..0.95, GT2 never -> AR = 0.5.
    assert m["rpn/AR@1"] == pytest.approx(0.5)
    # N = 3: best IoUs (1, 0.8): both recalled for the 7 thresholds 0.5..0.8 (0.8 >= 0.8
    # included), only GT1 for 0.85, 0.9, 0.95 -> AR = (7 * 1 + 3 * 0.5) / 10 = 0.85.
    assert m["rpn/AR@3"] == pytest.approx(0.85)
    assert m["rpn/recall@0.5/3"] == 1.0 and m["rpn/recall@0.5/1"] == 0.5
    assert m["rpn/recall@0.7/3"] == 1.0


def test_scores_rank_and_num_proposals_truncate():
    ev = ProposalRecallEvaluator(limits=(1,))
    # Scores put p3 first: top-1 = p3 -> best IoUs (0, 0.8): recall 1/2 for 0.5..0.8 (7 of
    # the 10 thresholds) -> AR = 7 * 0.5 / 10 = 0.35.
    ev.update(PROPOSALS[None], GT[None], proposal_scores=np.array([[0.1, 0.2, 0.9]]))
    assert ev.evaluate()["rpn/AR@1"] == pytest.approx(0.35)
    # num_proposals = 1 keeps only p1 whatever the limit: best IoUs (1, 0) -> AR 0.5.
    ev = ProposalRecallEvaluator(limits=(3,))
    ev.update(PROPOSALS[None], GT[None], num_proposals=np.array([1]))
    assert ev.evaluate()["rpn/AR@3"] == pytest.approx(0.5)


def test_max_versus_one_to_one_matching():
    # One proposal [0,0,10,11] over two nested GTs: IoU 100/110 = 0.909 with [0,0,10,10] and
    # 110/120 = 0.917 with [0,0,10,12].  "max": both covered.  "one_to_one": the proposal goes
    # to the higher pair (GT2) and GT1 gets nothing.
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 12]], np.float64)
    prop = np.array([[0, 0, 10, 11]], np.float64)
    np.testing.assert_allclose(best_gt_overlaps(prop, gt, "max"), [100 / 110, 110 / 120])
    np.testing.assert_allclose(best_gt_overlaps(prop, gt, "one_to_one"), [0.0, 110 / 120])
    ev = ProposalRecallEvaluator(limits=(10,), matching="one_to_one")
    ev.update(prop[None], gt[None])
    assert ev.evaluate()["rpn/recall@0.5/10"] == 0.5


def test_empty_inputs():
    ev = ProposalRecallEvaluator()
    ev.update(np.zeros([2, 0, 4]), -np.ones([2, 3, 4]))  # no proposals, all-padding GT
    assert ev.evaluate()["rpn/AR@100"] == -1.0  # no GT at all: undefined
    ev.update(np.zeros([1, 0, 4]), GT[None])  # GT but no proposals: recall 0
    m = ev.evaluate()
    assert m["rpn/AR@100"] == 0.0 and m["rpn/AR@1000"] == 0.0
    # gt_classes decides validity when given: class -1 rows are padding.
    ev = ProposalRecallEvaluator(limits=(5,))
    ev.update(PROPOSALS[None], GT[None], gt_classes=np.array([[1, -1]]))
    assert ev.evaluate()["rpn/AR@5"] == 1.0
    with pytest.raises(ValueError, match="matching"):
        ProposalRecallEvaluator(matching="hungarian")
    with pytest.raises(ValueError, match="gt_boxes"):
        ev.update(PROPOSALS[None], GT)
