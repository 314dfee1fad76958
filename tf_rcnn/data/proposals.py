"""Precomputed proposals (Fast R-CNN, alternating training): file format, reader, writer.

File format (boxes ``[y1, x1, y2, x2]`` in ORIGINAL-image pixels, float32; scores optional):

``.npz`` -- arrays
    ``image_ids [N] int64``, ``offsets [N + 1] int64`` (proposals of image i are rows
    ``offsets[i]:offsets[i + 1]``), ``boxes [T, 4] float32`` and optionally ``scores [T]``.

``.json`` -- ``{"format": "tf_rcnn.proposals.v1", "box_format": "yxyx",
"proposals": {"<image_id>": {"boxes": [[y1, x1, y2, x2], ...], "scores": [...]}}}``
(``"scores"`` may be omitted; ``"box_format": "xyxy"`` is accepted too).

The pipeline joins them to images by ``image_id``, clips them to the image, drops NaN and
empty boxes (counted), keeps the top ``max_proposals`` by score (file order without scores) and
applies the image's resize and flip.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

Proposals = dict[int, tuple[np.ndarray, np.ndarray | None]]


def _check(boxes: np.ndarray, scores: np.ndarray | None, image_id: int, path: str) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{path}: proposals of image {image_id} have shape {boxes.shape}; "
                         "expected [P, 4] [y1, x1, y2, x2].")
    if scores is not None and scores.shape != (len(boxes),):
        raise ValueError(f"{path}: image {image_id} has {len(boxes)} proposals but scores of "
                         f"shape {scores.shape}; give one score per box or none.")


def write_proposals(
    path: str, proposals: Mapping[int, tuple[np.ndarray, np.ndarray | None]]
) -> None:
    """Write ``{image_id: (boxes [P, 4] yxyx original pixels, scores [P] or None)}``.

    The format follows the extension: ``.npz`` or ``.json``. Scores are written when every
    image has them.
    """
    items = []
    for image_id, (boxes, scores) in proposals.items():
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        s = None if scores is None else np.asarray(scores, np.float32).reshape(-1)
        _check(b, s, image_id, path)
        items.append((int(image_id), b, s))
    with_scores = all(s is not None for _, _, s in items)
    if path.endswith(".npz"):
        lengths = [len(b) for _, b, _ in items]
        arrays = {
            "image_ids": np.asarray([i for i, _, _ in items], np.int64),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "boxes": (np.concatenate([b for _, b, _ in items]) if items
                      else np.zeros((0, 4), np.float32)),
        }
        if with_scores and items:
            arrays["scores"] = np.concatenate([s for _, _, s in items])
        np.savez_compressed(path, **arrays)
    elif path.endswith(".json"):
        data = {"format": "tf_rcnn.proposals.v1", "box_format": "yxyx", "proposals": {}}
        for image_id, b, s in items:
            entry = {"boxes": b.tolist()}
            if with_scores:
                entry["scores"] = s.tolist()
            data["proposals"][str(image_id)] = entry
        with open(path, "w") as f:
            json.dump(data, f)
    else:
        raise ValueError(f"Proposal file {path!r} must end in .npz or .json.")


def read_proposals(path: str) -> Proposals:
    """Read a ``.npz`` or ``.json`` proposal file into ``{image_id: (boxes, scores|None)}``."""
    out: Proposals = {}
    try:
        if path.endswith(".npz"):
            with np.load(path) as data:
                ids, offsets = data["image_ids"], data["offsets"]
                boxes = data["boxes"].astype(np.float32)
                scores = data["scores"].astype(np.float32) if "scores" in data else None
            if len(offsets) != len(ids) + 1 or offsets[-1] != len(boxes):
                raise ValueError("offsets must have N + 1 entries ending at len(boxes)")
            for i, image_id in enumerate(ids):
                lo, hi = int(offsets[i]), int(offsets[i + 1])
                out[int(image_id)] = (boxes[lo:hi], None if scores is None else scores[lo:hi])
        elif path.endswith(".json"):
            with open(path) as f:
                data = json.load(f)
            xyxy = data.get("box_format", "yxyx") == "xyxy"
            for key, entry in data["proposals"].items():
                b = np.asarray(entry["boxes"], np.float32).reshape(-1, 4)
                if xyxy:
                    b = b[:, [1, 0, 3, 2]]
                s = entry.get("scores")
                out[int(key)] = (b, None if s is None else np.asarray(s, np.float32))
        else:
            raise ValueError("the file name must end in .npz or .json")
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(
            f"Could not read proposal file {path!r} ({type(e).__name__}: {e}); see the format in "
            "tf_rcnn/data/proposals.py or docs/data.md."
        ) from e
    for image_id, (b, s) in out.items():
        _check(b, s, image_id, path)
    return out


def load_proposals(path: str) -> Proposals:
    """Alias of :func:`read_proposals` (the name the model builder uses)."""
    return read_proposals(path)
