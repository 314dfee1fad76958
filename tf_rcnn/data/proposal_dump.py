"""Proposals of a trained RPN over a dataset split, written as a proposal file.

Step 1 -> 2 of the 4-step alternating schedule (``tf_rcnn.training.alternating``) and the way to
feed a trained RPN's proposals to a Fast R-CNN recipe; ``python -m tf_rcnn.tools.dump_proposals``
is the command line around it.

How: the split is read with the evaluation pipeline (every image exactly once, no flip, the
recipe's test scale); ``model.propose`` gives the RPN's test-time proposals in network-input
pixels (``model.rpn.post_nms_topk_test`` per image; :func:`proposal_config` raises it to
``top_n`` before the model is built); they are mapped back to ORIGINAL-image pixels (divided by
the pipeline's ``scale``, clipped), empty boxes are dropped, and the top ``top_n`` by objectness
are written with their scores (format in :mod:`tf_rcnn.data.proposals`).

Shape shorthand: B batch, P proposals per image.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from tf_rcnn.config import ConfigError
from tf_rcnn.data.builder import build_input_pipeline, load_split
from tf_rcnn.data.pipeline import to_original_pixels
from tf_rcnn.data.proposals import write_proposals
from tf_rcnn.label_map import LabelMap


def proposal_config(config: ml_collections.ConfigDict,
                    top_n: int | None = None) -> tuple[ml_collections.ConfigDict, int]:
    """A copy of ``config`` whose RPN keeps at least ``top_n`` test proposals, and the count.

    Args:
        config: the recipe of the trained model.
        top_n: proposals per image to write (default ``model.rpn.post_nms_topk_test``).

    Raises:
        ValueError: ``top_n < 1``.
    """
    if top_n is not None and top_n < 1:
        raise ValueError(f"top_n must be >= 1 proposals per image, got {top_n}.")
    config = ml_collections.ConfigDict(config.to_dict())  # a copy: the changes stay local
    rpn = config.model.rpn
    if top_n is not None and top_n > rpn.post_nms_topk_test:
        logging.info("Raising model.rpn.post_nms_topk_test %d -> %d (top_n).",
                     rpn.post_nms_topk_test, top_n)
        rpn.post_nms_topk_test = int(top_n)
        rpn.pre_nms_topk_test = max(int(rpn.pre_nms_topk_test), int(top_n))
    config.data.proposals_train = config.data.proposals_val = ""
    return config, int(top_n or rpn.post_nms_topk_test)


def dump_proposals(
    model: Any,
    config: ml_collections.ConfigDict,
    split: str,
    output: str,
    top_n: int | None = None,
    num_images: int | None = None,
    label_map: LabelMap | None = None,
) -> dict[str, float]:
    """Runs ``model``'s RPN over ``split`` of the recipe's data and writes the proposals.

    Args:
        model: a trained detector with an RPN (``model.rpn``), built from ``config``.
        config: the recipe (from :func:`proposal_config` when ``top_n`` exceeds the RPN's
            test-time count).
        split: ``"train"`` or ``"val"``.
        output: proposal file path ending in ``.npz`` or ``.json``.
        top_n: proposals kept per image (default: ``model.rpn.post_nms_topk_test``).
        num_images: only the first N images of the split.
        label_map: the model's classes (default: the dataset's).

    Returns:
        ``{"num_images", "mean_proposals", "seconds"}``.

    Raises:
        ValueError: bad ``split`` or ``output`` extension.
        ConfigError: the model has no RPN.
    """
    if not output.endswith((".npz", ".json")):
        raise ValueError(f"output {output!r} must end in .npz or .json (the proposal formats).")
    if getattr(model, "rpn", None) is None:
        raise ConfigError(f"{type(model).__name__} has no RPN to produce proposals; dump them "
                          "from a Faster R-CNN, R-FCN or Mask R-CNN run.")
    top_n = int(top_n or config.model.rpn.post_nms_topk_test)
    records, label_map, _ = load_split(config, split, label_map=label_map)
    if num_images is not None:
        records = records[:num_images]
    pipeline = build_input_pipeline(config, records, label_map, training=False)

    @tf.function(reduce_retracing=True, autograph=False)  # as evaluation's predict function
    def propose(images, image_shape):
        return model.propose({"images": images, "image_shape": image_shape})

    proposals: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    start = time.time()
    for images, targets in pipeline.dataset():
        out = {k: v.numpy() for k, v in propose(images, targets["image_shape"]).items()}
        # [B, P, 4] network-input pixels -> original-image pixels (eval mode: never flipped).
        boxes = to_original_pixels(out["proposals"], targets["scale"].numpy(),
                                   targets["original_shape"].numpy())
        for j, image_id in enumerate(targets["image_id"].numpy()):
            if int(image_id) < 0 or int(image_id) in proposals:
                continue
            b, s = boxes[j], out["proposal_scores"][j]
            keep = out["proposal_valid"][j] & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            b, s = b[keep], s[keep]
            order = np.argsort(-s, kind="stable")[:top_n]
            proposals[int(image_id)] = (b[order], s[order])
    seconds = time.time() - start
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    write_proposals(output, proposals)
    counts = [len(b) for b, _ in proposals.values()]
    stats = {
        "num_images": float(len(proposals)),
        "mean_proposals": float(np.mean(counts)) if counts else 0.0,
        "seconds": seconds,
    }
    logging.info("Wrote %s: %d images, %.1f proposals per image (%.1f s).", output,
                 len(proposals), stats["mean_proposals"], seconds)
    return stats
