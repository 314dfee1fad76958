"""ProposalLayer, RPNTargetAssigner, RoISampler and DetectionDecoder on hand-made cases."""

import numpy as np
import pytest
import tensorflow as tf

from tests.layer_contract import check_layer_contract
from tf_rcnn.layers.detection_decoder import DetectionDecoder
from tf_rcnn.layers.proposal_layer import ProposalLayer
from tf_rcnn.layers.roi_sampler import RoISampler
from tf_rcnn.layers.rpn_target_assigner import RPNTargetAssigner
from tf_rcnn.ops import box_coder
from tf_rcnn.ops import boxes as box_ops
from tf_rcnn.ops import nms as nms_ops

# ------------------------------------------------------------------------------ ProposalLayer


def _proposal_inputs():
    # Five anchors in a 100x100 image. Anchors 0 and 1 overlap with IoU 0.81 (area 100, inter
    # 90 -> 90 / 110 = 0.818 > 0.7): NMS keeps only the higher-scoring one. Anchor 4 is tiny.
    anchors = tf.constant(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 1.0, 10.0, 11.0],
            [50.0, 50.0, 70.0, 70.0],
            [80.0, 80.0, 120.0, 120.0],  # crosses the border: clipped to [80, 80, 100, 100]
            [5.0, 5.0, 5.5, 5.5],
        ]
    )
    logits = tf.constant([[1.0, 2.0, 0.5, 3.0, 4.0]])
    deltas = tf.zeros([1, 5, 4])
    image_shape = tf.constant([[100, 100]])
    return logits, deltas, anchors, image_shape


def test_proposal_layer_decodes_clips_filters_and_suppresses():
    logits, deltas, anchors, image_shape = _proposal_inputs()
    layer = ProposalLayer(pre_nms_topk_test=5, post_nms_topk_test=4, min_size=1.0)
    boxes, scores, valid = layer(logits, deltas, anchors, image_shape, training=False)
    # Order by logit: tiny (4.0, removed by min_size), border (3.0), anchor 1 (2.0),
    # anchor 0 (1.0, suppressed by anchor 1), anchor 2 (0.5).
    np.testing.assert_array_equal(valid.numpy(), [[True, True, True, False]])
    np.testing.assert_allclose(
        boxes.numpy()[0, :3],
        [[80, 80, 100, 100], [0, 1, 10, 11], [50, 50, 70, 70]],
        atol=1e-5,
    )
    np.testing.assert_allclose(scores.numpy()[0, :3], 1 / (1 + np.exp(-np.array([3, 2, 0.5]))),
                               rtol=1e-5)
    assert scores.numpy()[0, 3] == 0.0
    np.testing.assert_array_equal(boxes.numpy()[0, 3], 0.0)


def test_proposal_layer_train_and_test_numbers_differ():
    logits, deltas, anchors, image_shape = _proposal_inputs()
    layer = ProposalLayer(pre_nms_topk_train=5, post_nms_topk_train=2,
                          pre_nms_topk_test=5, post_nms_topk_test=3)
    assert layer(logits, deltas, anchors, image_shape, training=True)[0].shape[1] == 2
    assert layer(logits, deltas, anchors, image_shape, training=False)[0].shape[1] == 3


def test_proposal_layer_pre_nms_topk_limits_candidates():
    logits, deltas, anchors, image_shape = _proposal_inputs()
    # Only the 2 best anchors (tiny one and the border one) enter NMS.
    layer = ProposalLayer(pre_nms_topk_test=2, post_nms_topk_test=4)
    _, _, valid = layer(logits, deltas, anchors, image_shape)
    assert valid.numpy().sum() == 2


def test_proposal_layer_merges_levels():
    # Level 0: two anchors; level 1: one anchor. post = 2 per level, then the best 2 overall.
    anchors = tf.constant([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 80, 80.0]])
    logits = tf.constant([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    deltas = tf.zeros([2, 3, 4])
    layer = ProposalLayer(pre_nms_topk_test=10, post_nms_topk_test=2)
    boxes, scores, valid = layer(logits, deltas, anchors, tf.constant([[100, 100]] * 2),
                                 num_anchors_per_level=[2, 1])
    np.testing.assert_array_equal(valid.numpy(), [[True, True], [True, True]])
    np.testing.assert_allclose(boxes.numpy()[0], [[20, 20, 30, 30], [40, 40, 80, 80]])
    np.testing.assert_allclose(boxes.numpy()[1], [[0, 0, 10, 10], [20, 20, 30, 30]])
    assert np.all(np.diff(scores.numpy(), axis=1) <= 0)


@pytest.mark.parametrize("sizes", [[300, 40, 7, 1], [300], [20]])
@pytest.mark.parametrize("training", [False, True])
def test_proposal_layer_levels_at_once_equal_level_by_level(training, sizes):
    # The layer runs all levels through one decode / clip / size filter / NMS, each level's
    # top-k padded with -inf rows. Reference: each level alone (top-k, decode, clip, size
    # filter, NMS, written here from the definition), then the best `post` of their union.
    # Levels of 300, 40, 7 and 1 anchors against pre = 50: the three small ones are padded;
    # the second image's true shape clips many boxes. One level (C4) goes through the same
    # mechanism: 300 anchors, or 20 (padded to pre = 50).
    rng = np.random.default_rng(3)
    n = sum(sizes)
    yx = rng.uniform(0, 90, (n, 2))
    anchors = tf.constant(np.concatenate([yx, yx + rng.uniform(2, 40, (n, 2))], 1), tf.float32)
    logits = tf.constant(rng.normal(size=(2, n)), tf.float32)
    deltas = tf.constant(rng.normal(scale=0.5, size=(2, n, 4)), tf.float32)
    image_shape = tf.constant([[100, 100], [60, 45]], tf.int32)
    layer = ProposalLayer(pre_nms_topk_train=50, post_nms_topk_train=30, pre_nms_topk_test=50,
                          post_nms_topk_test=30, min_size=2.0)
    boxes, scores, valid = layer(logits, deltas, anchors, image_shape,
                                 num_anchors_per_level=sizes if len(sizes) > 1 else None,
                                 training=training)

    def level_alone(level_logits, level_deltas, level_anchors, pre, post):
        top, index = tf.math.top_k(level_logits, k=min(pre, level_logits.shape[1]))
        decoded = box_coder.decode(tf.gather(level_deltas, index, batch_dims=1),
                                   tf.gather(level_anchors, index), layer.box_weights)
        decoded = box_ops.clip_boxes(decoded, image_shape)
        top = box_ops.remove_small_boxes(decoded, top, layer.min_size)
        kept = nms_ops.batched_nms(decoded, top, max_output_size=post,
                                   iou_threshold=layer.nms_threshold)
        rows = tf.range(post)[tf.newaxis, :] < kept.num_valid[:, tf.newaxis]
        return kept.boxes, tf.where(rows, kept.scores, float("-inf"))

    splits = np.cumsum([0] + sizes)
    per_level = [level_alone(logits[:, a:b], deltas[:, a:b], anchors[a:b], 50, 30)
                 for a, b in zip(splits[:-1], splits[1:], strict=True)]
    all_logits = tf.concat([p[1] for p in per_level], axis=1)
    ref_logits, idx = tf.math.top_k(all_logits, k=30)
    ref_boxes = tf.gather(tf.concat([p[0] for p in per_level], axis=1), idx, batch_dims=1)
    ref_valid = np.isfinite(ref_logits.numpy())
    assert ref_valid.sum() > min(30, n // 2)  # both images keep proposals
    np.testing.assert_array_equal(valid.numpy(), ref_valid)
    np.testing.assert_allclose(scores.numpy()[ref_valid],
                               tf.sigmoid(ref_logits).numpy()[ref_valid], rtol=1e-6)
    np.testing.assert_allclose(boxes.numpy()[ref_valid], ref_boxes.numpy()[ref_valid],
                               atol=1e-4)


def test_proposal_layer_contract():
    logits, deltas, anchors, image_shape = _proposal_inputs()
    check_layer_contract(ProposalLayer(pre_nms_topk_test=4, post_nms_topk_test=3),
                         (logits, deltas, anchors, image_shape))


# ------------------------------------------------------------------------------ RPN targets


def test_rpn_targets_thresholds_best_anchor_and_padding():
    # GT [0,0,10,10] in a 100x100 image (plus one padded row).
    # Anchor 0 equals the GT (IoU 1 -> positive); anchor 1 [0,0,10,20]: IoU 100/200 = 0.5
    # (ignore band); anchor 2 far away (IoU 0 -> negative); anchor 3 [0,0,10,12]: IoU 100/120
    # = 0.83 -> positive.
    anchors = tf.constant([[0, 0, 10, 10], [0, 0, 10, 20], [50, 50, 60, 60], [0, 0, 10, 12.0]])
    gt_boxes = tf.constant([[[0, 0, 10, 10], [-1, -1, -1, -1.0]]])
    gt_classes = tf.constant([[1, -1]])
    layer = RPNTargetAssigner(batch_size_per_image=4, positive_fraction=0.5)
    labels, targets = layer(anchors, gt_boxes, gt_classes, tf.constant([[100, 100]]))
    np.testing.assert_array_equal(labels.numpy(), [[1, -1, 0, 1]])
    # Anchor 3 target: dx = (5 - 6)/12, dw = log(10/12); anchor 0 target is all zero.
    np.testing.assert_allclose(targets.numpy()[0, 3], [0, -1 / 12, 0, np.log(10 / 12)],
                               atol=1e-6)
    np.testing.assert_allclose(targets.numpy()[0, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(targets.numpy()[0, 2], 0.0)


def test_rpn_targets_best_anchor_rule_rescues_low_iou_gt():
    # The only overlap with GT [0,0,10,10] is anchor 0 [0,0,10,40] with IoU 100/400 = 0.25:
    # below 0.3, yet it is the GT's best anchor, so case (i) makes it positive.
    anchors = tf.constant([[0, 0, 10, 40], [50, 50, 60, 60.0]])
    labels, _ = RPNTargetAssigner(batch_size_per_image=4)(
        anchors, tf.constant([[[0, 0, 10, 10.0]]]), tf.constant([[2]]), tf.constant([[100, 100]])
    )
    np.testing.assert_array_equal(labels.numpy(), [[1, 0]])


def test_rpn_targets_straddling_anchors_and_crowd_are_ignored():
    anchors = tf.constant([[-5, 0, 10, 10], [0, 0, 10, 10], [40, 40, 50, 50], [80, 80, 90, 90.0]])
    gt_boxes = tf.constant([[[0, 0, 10, 10.0]]])
    crowd = tf.constant([[[75, 75, 95, 95.0]]])
    layer = RPNTargetAssigner(batch_size_per_image=8, straddle_threshold=0.0)
    labels, _ = layer(anchors, gt_boxes, tf.constant([[1]]), tf.constant([[100, 100]]),
                      crowd_boxes=crowd)
    # Anchor 0 crosses the top border -> ignored; anchor 3 lies inside the crowd box -> ignored.
    np.testing.assert_array_equal(labels.numpy(), [[-1, 1, 0, -1]])
    # With the straddle rule off and no crowd box, anchor 0 takes part: its IoU 100/150 = 0.67
    # puts it in the ignore band by IoU alone, and anchor 3 becomes an ordinary negative.
    labels, _ = RPNTargetAssigner(batch_size_per_image=8, straddle_threshold=-1.0)(
        anchors, gt_boxes, tf.constant([[1]]), tf.constant([[100, 100]]))
    np.testing.assert_array_equal(labels.numpy(), [[-1, 1, 0, 0]])


def test_rpn_targets_sample_budget_and_no_gt():
    rng = np.random.default_rng(0)
    anchors = box_ops.xywh_to_yxyx(
        tf.constant(np.c_[rng.uniform(0, 80, (500, 2)), rng.uniform(5, 20, (500, 2))],
                    tf.float32))
    gt = tf.constant([[[10, 10, 30, 30], [40, 40, 60, 70.0]], [[-1, -1, -1, -1]] * 2])
    classes = tf.constant([[1, 3], [-1, -1]])
    labels, _ = RPNTargetAssigner(batch_size_per_image=64, straddle_threshold=-1.0)(
        anchors, gt, classes, tf.constant([[100, 100], [100, 100]]))
    labels = labels.numpy()
    assert (labels[0] >= 0).sum() == 64 and (labels[0] == 1).sum() <= 32
    assert (labels[0] == 1).sum() >= 2  # at least each GT's best anchor
    # An image without GT samples 64 negatives and no positive.
    assert (labels[1] == 0).sum() == 64 and (labels[1] == 1).sum() == 0


def test_rpn_target_assigner_contract():
    anchors = tf.constant([[0, 0, 10, 10], [0, 0, 10, 20], [50, 50, 60, 60.0]])
    layer = RPNTargetAssigner(batch_size_per_image=2, seed=3)
    check_layer_contract(layer, (anchors, tf.constant([[[0, 0, 10, 10.0]]]),
                                 tf.constant([[1]]), tf.constant([[100, 100]])),
                         check_symbolic=False)


# ------------------------------------------------------------------------------ RoI sampler


def test_roi_sampler_appends_gt_and_labels_classes():
    # Proposals: IoU with GT A [0,0,10,10]: p0 = 1.0 (fg), p1 [0,0,10,30] IoU 1/3 (bg),
    # p2 [0,0,10,11] IoU 10/11 (fg), p3 padding.
    proposals = tf.constant([[[0, 0, 10, 10], [0, 0, 10, 30], [0, 0, 10, 11], [0, 0, 0, 0.0]]])
    valid = tf.constant([[True, True, True, False]])
    gt = tf.constant([[[0, 0, 10, 10], [-1, -1, -1, -1.0]]])
    classes = tf.constant([[3, -1]])
    out = RoISampler(batch_size_per_image=8, positive_fraction=0.5)(proposals, valid, gt, classes)
    labels = out["labels"].numpy()[0]
    rois = out["rois"].numpy()[0]
    sampled_valid = out["valid"].numpy()[0]
    # Candidates: 3 valid proposals + 1 valid GT = 4 RoIs (3 fg, 1 bg); the rest is padding.
    assert sampled_valid.sum() == 4
    assert sorted(labels[sampled_valid].tolist()) == [0, 3, 3, 3]
    assert np.all(labels[~sampled_valid] == -1)
    # Foreground first; the appended GT box is among them with a zero regression target.
    fg_rois = rois[labels == 3]
    assert any(np.allclose(r, [0, 0, 10, 10]) for r in fg_rois)
    bg = labels == 0
    np.testing.assert_allclose(out["box_targets"].numpy()[0][bg], 0.0)
    # Targets use the R-CNN weights: p2 -> dx = 10 * (5 - 5.5) / 11, dw = 5 * log(10 / 11).
    p2 = np.where(np.all(np.isclose(rois, [0, 0, 10, 11]), axis=1))[0][0]
    np.testing.assert_allclose(out["box_targets"].numpy()[0, p2],
                               [0, 10 * -0.5 / 11, 0, 5 * np.log(10 / 11)], atol=1e-5)


def test_roi_sampler_bg_low_threshold_excludes_easy_background():
    # With bg in [0.1, 0.5) a proposal with IoU 0 is never sampled (Fast R-CNN).
    proposals = tf.constant([[[50, 50, 60, 60], [0, 0, 10, 30.0]]])
    out = RoISampler(batch_size_per_image=4, bg_iou_low=0.1, append_gt_boxes=False)(
        proposals, tf.constant([[True, True]]), tf.constant([[[0, 0, 10, 10.0]]]),
        tf.constant([[1]]))
    assert out["valid"].numpy().sum() == 1
    np.testing.assert_allclose(out["rois"].numpy()[0][out["valid"].numpy()[0]],
                               [[0, 0, 10, 30]])


def test_roi_sampler_fraction_and_no_gt():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 50, (2, 200, 2))
    proposals = tf.constant(np.concatenate([xy, xy + rng.uniform(5, 30, (2, 200, 2))], -1),
                            tf.float32)
    gt = tf.constant([[[10, 10, 40, 40], [20, 5, 45, 30.0]], [[-1, -1, -1, -1.0]] * 2])
    out = RoISampler(batch_size_per_image=32, positive_fraction=0.25)(
        proposals, tf.ones([2, 200], tf.bool), gt, tf.constant([[1, 2], [-1, -1]]))
    labels = out["labels"].numpy()
    assert (labels[0] > 0).sum() <= 8 and out["valid"].numpy()[0].sum() == 32
    assert (labels[1] > 0).sum() == 0 and (labels[1] == 0).sum() == 32


def test_roi_sampler_contract():
    proposals = tf.constant([[[0, 0, 10, 10], [0, 0, 10, 30.0]]])
    check_layer_contract(
        RoISampler(batch_size_per_image=4, seed=1),
        (proposals, tf.constant([[True, True]]), tf.constant([[[0, 0, 10, 10.0]]]),
         tf.constant([[1]])),
        check_symbolic=False,
    )


# ------------------------------------------------------------------------------ decoder


def test_detection_decoder_hand_case():
    # Two RoIs, K = 2. RoI 0 is confidently class 2 with zero deltas; RoI 1 is background.
    logits = tf.constant([[[0.0, 0.0, 10.0], [10.0, 0.0, 0.0]]])
    deltas = tf.zeros([1, 2, 3, 4])
    rois = tf.constant([[[10, 20, 30, 60], [0, 0, 5, 5.0]]])
    out = DetectionDecoder(score_threshold=0.05, max_detections=5)(
        logits, deltas, rois, tf.constant([[True, True]]), tf.constant([[100, 100]]))
    assert out["num_detections"].numpy()[0] == 1
    np.testing.assert_allclose(out["detection_boxes"].numpy()[0, 0], [10, 20, 30, 60], atol=1e-4)
    assert out["detection_classes"].numpy()[0, 0] == 2
    assert out["detection_classes"].dtype == tf.int32
    p = np.exp(10) / (np.exp(10) + 2)
    np.testing.assert_allclose(out["detection_scores"].numpy()[0, 0], p, rtol=1e-5)


def test_detection_decoder_applies_class_deltas_and_clips():
    # Class-1 deltas move the box right by dx = 10 * 0.5 -> 0.5 * width(40) = 20 px; the box
    # [10, 70, 30, 110] is then clipped at the image width 100.
    logits = tf.constant([[[0.0, 10.0]]])
    deltas = tf.constant([[[[0, 0, 0, 0], [0, 5.0, 0, 0]]]])
    out = DetectionDecoder()(logits, deltas, tf.constant([[[10, 50, 30, 90.0]]]),
                             tf.constant([[True]]), tf.constant([[100, 100]]))
    np.testing.assert_allclose(out["detection_boxes"].numpy()[0, 0], [10, 70, 30, 100],
                               atol=1e-4)


def test_detection_decoder_ignores_invalid_rois():
    logits = tf.constant([[[0.0, 10.0]]])
    out = DetectionDecoder()(logits, tf.zeros([1, 1, 2, 4]), tf.constant([[[10, 10, 30, 30.0]]]),
                             tf.constant([[False]]), tf.constant([[100, 100]]))
    assert out["num_detections"].numpy()[0] == 0


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_detection_decoder_contract(class_agnostic):
    groups = 1 if class_agnostic else 3
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(2, 6, 3)), tf.float32)
    deltas = tf.constant(rng.normal(scale=0.1, size=(2, 6, groups, 4)), tf.float32)
    xy = rng.uniform(0, 50, (2, 6, 2))
    rois = tf.constant(np.concatenate([xy, xy + 20], -1), tf.float32)
    check_layer_contract(
        DetectionDecoder(score_threshold=0.0, max_detections=4),
        (logits, deltas, rois, tf.ones([2, 6], tf.bool), tf.constant([[80, 80], [70, 90]])),
    )
