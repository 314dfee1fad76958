"""ProposalLayer: RPN outputs -> a fixed number of proposals per image.

Per level: take the ``pre_nms_topk`` highest-scoring anchors, decode their deltas (RPN weights),
clip to the true image shape, drop boxes not larger than ``min_size``, run class-agnostic NMS
(IoU ``nms_threshold``, 0.7) keeping ``post_nms_topk``. With several levels (FPN) the per-level
survivors are then merged and the ``post_nms_topk`` best kept. Train and test use separate numbers.
The levels go through decoding, clipping, the size filter and NMS together, one NMS row per
(image, level) (``ProposalLayer._proposals``); the result is the level-by-level one.

Conventions: boxes ``[y1, x1, y2, x2]`` pixels; anchors ordered ``(level, y, x, a)`` as produced by
``AnchorGenerator`` and ``RPNHead``. Shape shorthand: B batch, N anchors (all levels), P proposals.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tf_rcnn.ops import box_coder
from tf_rcnn.ops import boxes as box_ops
from tf_rcnn.ops import nms as nms_ops


@keras.saving.register_keras_serializable(package="tf_rcnn")
class ProposalLayer(keras.layers.Layer):
    """Turns RPN objectness logits and deltas into proposals.

    Args:
        pre_nms_topk_train: anchors kept per level before NMS in training.
        post_nms_topk_train: proposals kept per image after NMS in training.
        pre_nms_topk_test: as above, inference.
        post_nms_topk_test: as above, inference.
        nms_threshold: IoU threshold of the class-agnostic NMS.
        min_size: boxes whose height or width is not larger than this (pixels) are dropped.
        box_weights: box coder weights of the RPN deltas.

    Call arguments:
        objectness_logits: ``[B, N]`` float.
        pred_deltas: ``[B, N, 4]`` float.
        anchors: ``[N, 4]`` float, pixels.
        image_shape: ``[B, 2]`` int32 true (height, width) per image.
        num_anchors_per_level: list of scalar int tensors (or ints) summing to N; None = one level.
        training: selects the train or test numbers.

    Returns:
        ``(proposals [B, P, 4], scores [B, P] sigmoid objectness, valid [B, P] bool)`` with
        ``P = post_nms_topk``; invalid rows are zero boxes with score 0, sorted last.
    """

    def __init__(
        self,
        pre_nms_topk_train: int = 2000,
        post_nms_topk_train: int = 2000,
        pre_nms_topk_test: int = 1000,
        post_nms_topk_test: int = 1000,
        nms_threshold: float = 0.7,
        min_size: float = 0.0,
        box_weights: Sequence[float] = box_coder.RPN_BOX_WEIGHTS,
        **kwargs,
    ):
        # Mixed precision: box decoding and NMS stay float32 (float16: ~0.5 px steps at 1000 px).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.pre_nms_topk_train = int(pre_nms_topk_train)
        self.post_nms_topk_train = int(post_nms_topk_train)
        self.pre_nms_topk_test = int(pre_nms_topk_test)
        self.post_nms_topk_test = int(post_nms_topk_test)
        self.nms_threshold = float(nms_threshold)
        self.min_size = float(min_size)
        self.box_weights = tuple(float(w) for w in box_weights)

    def _proposals(self, logits_list, deltas_list, anchors_list, image_shape, pre_nms_topk,
                   post_nms_topk):
        """Each level's proposals (the module docstring), computed for all levels at once,
        then the ``post_nms_topk`` best of their union per image (one level: its own).

        Each level's top ``pre_nms_topk`` anchors (top-k first, so that only those are
        decoded) are padded to that many rows (logits ``-inf``, which NMS never keeps), so
        decoding, clipping, the size filter and NMS run once on ``[B, L * pre]`` boxes, NMS
        with one row per (image, level): the same proposals as level by level, with a fifth of
        the graph (FPN's five levels), which is what tracing, graph optimisation and the first
        call cost."""
        levels = len(logits_list)
        top_logits, top_deltas, top_anchors = [], [], []
        for logits, deltas, anchors in zip(logits_list, deltas_list, anchors_list, strict=True):
            count = logits.shape[1]  # static when the image size is (exports)
            k = (min(pre_nms_topk, count) if count is not None
                 else tf.minimum(pre_nms_topk, tf.shape(logits)[1]))
            values, index = tf.math.top_k(logits, k=k, sorted=True)
            pad = pre_nms_topk - k
            values = tf.pad(values, [[0, 0], [0, pad]], constant_values=float("-inf"))
            values.set_shape([logits.shape[0], pre_nms_topk])
            top_logits.append(values)
            top_deltas.append(tf.pad(tf.gather(deltas, index, batch_dims=1),
                                     [[0, 0], [0, pad], [0, 0]]))
            top_anchors.append(tf.pad(tf.gather(anchors, index), [[0, 0], [0, pad], [0, 0]]))
        logits = tf.concat(top_logits, axis=1)  # [B, L * pre]
        boxes = box_coder.decode(tf.concat(top_deltas, axis=1), tf.concat(top_anchors, axis=1),
                                 self.box_weights)
        boxes = box_ops.clip_boxes(boxes, image_shape)
        logits = box_ops.remove_small_boxes(boxes, logits, self.min_size)
        result = nms_ops.batched_nms(  # one row per (image, level), level fastest
            tf.reshape(boxes, [-1, pre_nms_topk, 4]), tf.reshape(logits, [-1, pre_nms_topk]),
            max_output_size=post_nms_topk, iou_threshold=self.nms_threshold)
        per_level = tf.shape(result.boxes)[1]
        kept = tf.range(per_level)[tf.newaxis, :] < result.num_valid[:, tf.newaxis]
        kept_logits = tf.where(kept, result.scores, float("-inf"))
        # [B * L, post] -> [B, L * post] (levels in order), then the best `post` per image.
        all_logits = tf.reshape(kept_logits, [-1, levels * per_level])
        all_boxes = tf.reshape(result.boxes, [-1, levels * per_level, 4])
        logits, idx = tf.math.top_k(all_logits, k=post_nms_topk, sorted=True)
        boxes = tf.gather(all_boxes, idx, batch_dims=1)
        return boxes, logits, tf.math.is_finite(logits)

    def call(
        self,
        objectness_logits,
        pred_deltas,
        anchors,
        image_shape,
        num_anchors_per_level=None,
        training=False,
    ):
        training = bool(training)
        pre = self.pre_nms_topk_train if training else self.pre_nms_topk_test
        post = self.post_nms_topk_train if training else self.post_nms_topk_test
        objectness_logits = tf.cast(objectness_logits, tf.float32)
        pred_deltas = tf.cast(pred_deltas, tf.float32)
        if num_anchors_per_level is None or len(num_anchors_per_level) == 1:
            logits_list, deltas_list, anchors_list = [objectness_logits], [pred_deltas], [anchors]
        else:
            sizes = tf.stack([tf.cast(n, tf.int32) for n in num_anchors_per_level])
            logits_list = tf.split(objectness_logits, sizes, axis=1)
            deltas_list = tf.split(pred_deltas, sizes, axis=1)
            anchors_list = tf.split(anchors, sizes, axis=0)

        boxes, logits, valid = self._proposals(logits_list, deltas_list, anchors_list,
                                               image_shape, pre, post)
        scores = tf.where(valid, tf.sigmoid(logits), 0.0)
        boxes = tf.where(valid[..., tf.newaxis], boxes, 0.0)
        return boxes, scores, valid

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            pre_nms_topk_train=self.pre_nms_topk_train,
            post_nms_topk_train=self.post_nms_topk_train,
            pre_nms_topk_test=self.pre_nms_topk_test,
            post_nms_topk_test=self.post_nms_topk_test,
            nms_threshold=self.nms_threshold,
            min_size=self.min_size,
            box_weights=list(self.box_weights),
        )
        return config
