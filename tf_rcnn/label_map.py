"""LabelMap: contiguous class ids ``1..K`` <-> dataset category ids <-> names.

The one place where a dataset's category ids map to the model's contiguous classes and back
(class 0 is background and has no entry). Training writes it beside the model as
``label_map.json`` (format ``tf_rcnn.label_map.v1``); evaluation, export and prediction read it
back so detections are reported in the dataset's own ids and names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

LABEL_MAP_FILE = "label_map.json"


class LabelMap:
    """Contiguous class ids ``1..K`` <-> dataset category ids <-> names.

    Class 0 is background and has no entry. Save it beside a model (``to_json``) so detections
    can be reported in the dataset's own ids (``to_dataset_id``).

    Args:
        dataset_ids: dataset category ids in contiguous order; ``dataset_ids[i]`` is class ``i+1``.
        names: one name per category, same order.
    """

    def __init__(self, dataset_ids: Sequence[int], names: Sequence[str]) -> None:
        dataset_ids = [int(i) for i in dataset_ids]
        names = [str(n) for n in names]
        if len(dataset_ids) != len(names):
            raise ValueError(
                f"LabelMap: got {len(dataset_ids)} dataset_ids but {len(names)} names; give one "
                "name per category."
            )
        if len(set(dataset_ids)) != len(dataset_ids):
            raise ValueError(f"LabelMap: dataset_ids contain duplicates: {dataset_ids}.")
        if len(set(names)) != len(names):
            raise ValueError(f"LabelMap: names contain duplicates: {names}.")
        self.dataset_ids = dataset_ids
        self.names = names
        self._from_dataset = {d: i + 1 for i, d in enumerate(dataset_ids)}
        self._from_name = {n: i + 1 for i, n in enumerate(names)}

    @classmethod
    def from_names(cls, names: Sequence[str]) -> LabelMap:
        """Label map whose dataset ids are ``1..K`` in the order of ``names``."""
        return cls(list(range(1, len(names) + 1)), names)

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (background excluded)."""
        return len(self.names)

    def __len__(self) -> int:
        return self.num_classes

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LabelMap)
            and self.dataset_ids == other.dataset_ids
            and self.names == other.names
        )

    def __repr__(self) -> str:
        pairs = ", ".join(
            f"{i + 1}:{d}:{n}"
            for i, (d, n) in enumerate(zip(self.dataset_ids, self.names, strict=True))
        )
        return f"LabelMap({pairs})"

    def from_dataset_id(self, dataset_id: int) -> int:
        """Contiguous class (1..K) of a dataset category id; ValueError when unknown."""
        try:
            return self._from_dataset[int(dataset_id)]
        except KeyError:
            raise ValueError(
                f"Unknown dataset category id {dataset_id}; known ids: {self.dataset_ids}."
            ) from None

    def to_dataset_id(self, contiguous_id: int | np.ndarray) -> int | np.ndarray:
        """Dataset category id of contiguous class ``1..K`` (scalar or array)."""
        table = np.asarray([-1, *self.dataset_ids], np.int64)
        ids = np.asarray(contiguous_id)
        if np.any((ids < 1) | (ids > self.num_classes)):
            raise ValueError(
                f"Contiguous class ids must be in 1..{self.num_classes}, got {contiguous_id}."
            )
        out = table[ids]
        return int(out) if out.ndim == 0 else out

    def from_name(self, name: str) -> int:
        """Contiguous class (1..K) of a category name; ValueError when unknown."""
        try:
            return self._from_name[name]
        except KeyError:
            raise ValueError(f"Unknown class name {name!r}; known names: {self.names}.") from None

    def name(self, contiguous_id: int) -> str:
        """Name of contiguous class ``1..K`` (``"background"`` for 0)."""
        if contiguous_id == 0:
            return "background"
        return self.names[int(contiguous_id) - 1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "tf_rcnn.label_map.v1",
            "classes": [
                {"id": i + 1, "dataset_id": d, "name": n}
                for i, (d, n) in enumerate(zip(self.dataset_ids, self.names, strict=True))
            ],
        }

    def to_json(self, path: str | None = None) -> str:
        """JSON text of the map; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str) -> LabelMap:
        """Inverse of :meth:`to_json`: accepts the JSON text or a path to the file."""
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            with open(text_or_path) as f:
                text = f.read()
        data = json.loads(text)
        classes = sorted(data["classes"], key=lambda c: c["id"])
        if [c["id"] for c in classes] != list(range(1, len(classes) + 1)):
            raise ValueError("Label map json: class ids must be exactly 1..K.")
        return cls([c["dataset_id"] for c in classes], [c["name"] for c in classes])
