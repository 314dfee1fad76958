"""Proposal-NMS speed: the paths tf_rcnn.ops.nms chose between (run by hand, never in tests).

    python benchmarks/bench_nms.py

B = 2 images, 12000 random boxes -> 2000 kept at IoU 0.7, each path inside ``tf.function``;
prints the median and minimum of 7 timed runs after one warm-up call.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from tf_rcnn.ops import nms

BATCH, NUM_BOXES, KEEP, IOU = 2, 12000, 2000, 0.7


@tf.function
def combined_no_indices(boxes, scores):
    out = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores[:, :, None], KEEP, KEEP, IOU, pad_per_class=False,
        clip_boxes=False)
    return out.nmsed_boxes, out.valid_detections


@tf.function
def combined_rank_scores(boxes, scores):
    out = nms.batched_nms(boxes, scores, KEEP, IOU)
    return out.indices, out.num_valid


@tf.function
def padded_indices(boxes, scores):
    return tf.image.non_max_suppression_padded(boxes, scores, KEEP, IOU,
                                               pad_to_max_output_size=True)


@tf.function
def combined_index_by_equality(boxes, scores):
    out = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores[:, :, None], KEEP, KEEP, IOU, pad_per_class=False,
        clip_boxes=False)
    # [B, K, N] exact box equality to recover the kept indices.
    same = tf.reduce_all(tf.equal(out.nmsed_boxes[:, :, None, :], boxes[:, None, :, :]), -1)
    return tf.argmax(tf.cast(same, tf.int32), -1), out.valid_detections


def main() -> None:
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 800, (BATCH, NUM_BOXES, 2))
    sizes = rng.uniform(8, 200, (BATCH, NUM_BOXES, 2))
    boxes = tf.constant(np.concatenate([centres - sizes / 2, centres + sizes / 2], -1),
                        tf.float32)
    scores = tf.constant(rng.uniform(size=(BATCH, NUM_BOXES)), tf.float32)
    for name, fn in [("combined q=1 (no indices)", combined_no_indices),
                     ("combined rank scores (ops.nms)", combined_rank_scores),
                     ("non_max_suppression_padded", padded_indices),
                     ("combined + index by equality", combined_index_by_equality)]:
        fn(boxes, scores)
        times = []
        for _ in range(7):
            start = time.perf_counter()
            outputs = fn(boxes, scores)
            _ = [np.asarray(o) for o in outputs]
            times.append(time.perf_counter() - start)
        print(f"{name:32s} median {1e3 * np.median(times):7.1f} ms  min {1e3 * min(times):7.1f} ms")
    same = np.array_equal(combined_rank_scores(boxes, scores)[0].numpy(),
                          padded_indices(boxes, scores)[0].numpy())
    print("rank-score indices == non_max_suppression_padded indices:", same)


if __name__ == "__main__":
    main()
