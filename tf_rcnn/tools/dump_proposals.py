"""Write the proposals of a trained RPN / Faster R-CNN over a dataset split to a proposal file.

    python -m tf_rcnn.tools.dump_proposals --config=configs/shapes_faster_rcnn.py \
        --checkpoint=runs/shapes --split=train --output=runs/shapes/proposals_train.npz \
        [--top_n=300] [--num_images=N] [--config.a.b=v ...]

The file (``.npz`` or ``.json``, see :mod:`tf_rcnn.data.proposals`) holds, for every image of the
split, the top ``top_n`` proposals by objectness with their scores, as ``[y1, x1, y2, x2]`` in
ORIGINAL-image pixels; Fast R-CNN reads it back through ``data.proposals_train`` /
``data.proposals_val`` (the pipeline applies each image's resize and flip). This is step 1 -> 2
of alternating training and the way to feed our own proposals to ``configs/*fast_rcnn*.py``.

How: the split is read with the evaluation pipeline (every image exactly once, no flip, the
recipe's test scale); ``model.propose`` gives the RPN's test-time proposals in network-input
pixels (``model.rpn.post_nms_topk_test`` per image, raised to ``top_n`` when smaller); they are
divided by the pipeline's ``scale``, clipped to the original image, and empty boxes are dropped.

Shape shorthand: B batch, P proposals per image.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys
import time

import ml_collections
import numpy as np
from absl import app, flags, logging

import tf_rcnn  # noqa: F401  (selects the TensorFlow backend before Keras loads)
from tf_rcnn.config import ConfigError, check_config_overrides


def dump_proposals(
    config: ml_collections.ConfigDict,
    checkpoint: str,
    split: str,
    output: str,
    top_n: int | None = None,
    num_images: int | None = None,
) -> dict[str, float]:
    """Runs the recipe's RPN over ``split`` and writes its proposals to ``output``.

    Args:
        config: the recipe of the trained model (a model type with an RPN, e.g. faster_rcnn).
        checkpoint: checkpoint prefix or run directory (its newest checkpoint).
        split: ``"train"`` or ``"val"``.
        output: proposal file path ending in ``.npz`` or ``.json``.
        top_n: proposals kept per image (default: ``model.rpn.post_nms_topk_test``).
        num_images: only the first N images of the split.

    Returns:
        ``{"num_images", "mean_proposals", "seconds"}``.

    Raises:
        ValueError: bad ``split``, ``output`` extension or ``top_n``.
        ConfigError: the recipe has no RPN.
    """
    import tensorflow as tf

    from tf_rcnn.data.proposals import write_proposals
    from tf_rcnn.data.records import LabelMap
    from tf_rcnn.evaluation.runner import to_original_pixels
    from tf_rcnn.models import builder
    from tf_rcnn.training.checkpoints import load_weights_partial, resolve_checkpoint_path

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
    if not output.endswith((".npz", ".json")):
        raise ValueError(f"output {output!r} must end in .npz or .json (the proposal formats).")
    if top_n is not None and top_n < 1:
        raise ValueError(f"top_n must be >= 1 proposals per image, got {top_n}.")
    if config.model.type == "fast_rcnn":
        raise ConfigError("dump_proposals needs a model with an RPN (model.type faster_rcnn, "
                          "rfcn, mask_rcnn); a fast_rcnn recipe only consumes proposals.")
    config = ml_collections.ConfigDict(config.to_dict())  # a copy: the overrides stay local
    rpn = config.model.rpn
    if top_n is not None and top_n > rpn.post_nms_topk_test:
        logging.info("Raising model.rpn.post_nms_topk_test %d -> %d (top_n).",
                     rpn.post_nms_topk_test, top_n)
        rpn.post_nms_topk_test = int(top_n)
        rpn.pre_nms_topk_test = max(int(rpn.pre_nms_topk_test), int(top_n))
    top_n = int(top_n or rpn.post_nms_topk_test)
    config.data.proposals_train = config.data.proposals_val = ""

    checkpoint = resolve_checkpoint_path(checkpoint)
    label_map = None
    label_map_file = os.path.join(os.path.dirname(checkpoint), "label_map.json")
    if os.path.exists(label_map_file):
        label_map = LabelMap.from_json(label_map_file)
    records, label_map, _ = builder.load_split(config, split, label_map=label_map)
    if num_images is not None:
        records = records[:num_images]
    pipeline = builder.build_input_pipeline(config, records, label_map, training=False)
    model = builder.build_model(config, label_map=label_map.to_dict())
    if model.rpn is None:
        raise ConfigError(f"{type(model).__name__} has no RPN to produce proposals.")
    builder.initialize_model(model, config)
    load_weights_partial(model, checkpoint, skip_mismatch=False)
    logging.info("Restored %s", checkpoint)

    @tf.function(reduce_retracing=True)
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


def _define_flags():
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file(
        "config", None, "Recipe of the trained RPN / Faster R-CNN (configs/NAME.py).")
    flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or run directory.")
    flags.DEFINE_enum("split", "train", ["train", "val"], "Dataset split to run over.")
    flags.DEFINE_string("output", None, "Proposal file to write (.npz or .json).")
    flags.DEFINE_integer("top_n", None, "Proposals per image (default: the RPN's test-time "
                         "post-NMS count, model.rpn.post_nms_topk_test).")
    flags.DEFINE_integer("num_images", None, "Only the first N images of the split.")
    flags.mark_flags_as_required(["config", "checkpoint", "output"])
    return config


def main(argv, config_flag=None):
    del argv
    f = flags.FLAGS
    try:
        stats = dump_proposals(config_flag.value, f.checkpoint, f.split, f.output,
                               top_n=f.top_n, num_images=f.num_images)
    except (ConfigError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    print(f"Wrote {f.output}: {int(stats['num_images'])} images, "
          f"{stats['mean_proposals']:.1f} proposals per image.")


if __name__ == "__main__":
    _config = _define_flags()
    check_config_overrides(sys.argv)
    app.run(lambda argv: main(argv, _config))
