"""LabelMap: contiguous class ids ``1..K`` <-> dataset category ids <-> names.

The one place where a dataset's category ids map to the model's contiguous classes and back
(class 0 is background and has no entry). Training writes it beside the model as
``label_map.json`` (format ``tf_rcnn.label_map.v1``); evaluation, export and prediction read it
back so detections are reported in the dataset's own ids and names.

:func:`match_label_map` is the one rule for reading data with a model's label map (every reader
applies it when given one): a model class is found in the data by its dataset id when the data
gives that id the same name, else by its name; data categories the model does not have are
left out (the reader sums them up), and a model class found neither way is an error listing
both label maps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

LABEL_MAP_FILE = "label_map.json"

# Names of placeholder classes: outputs a model has but no dataset uses (torchvision's COCO
# detectors keep one per unused COCO id, named ``unused_<id>``). They need not be in the data.
PLACEHOLDER_PREFIX = "unused_"

# How many classes of each label map an error message lists.
_LISTED = 40


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


def _listing(pairs: Sequence[tuple[Any, str]]) -> str:
    shown = ", ".join(f"{i} {n}" for i, n in pairs[:_LISTED])
    more = f", ... ({len(pairs)} in all)" if len(pairs) > _LISTED else ""
    return shown + more


def match_label_map(
    model: LabelMap,
    data_ids: Sequence[int] | None,
    data_names: Sequence[str],
    *,
    source: str,
    complete: bool = True,
) -> LabelMap:
    """The label map to read a dataset with for a model whose classes are ``model``.

    The rule, the same for every reader (COCO, VOC, CSV) and so for every command:

    1. a model class whose dataset id the data has, under the same name, keeps that id;
    2. otherwise it is found by its name: the data's id of that name is used, and every class
       matched this way is logged in one line (e.g. ``square 1 -> 11``);
    3. a model class found neither way is an error listing the model's classes (with their
       dataset ids) and the data's categories; placeholder classes (names starting with
       ``unused_``) need not be found (they keep their id, or get a free one).

    Categories of the data that the model does not have are not this function's business: the
    reader leaves their annotations out and sums them up in its report.

    Args:
        model: the model's classes (a run's ``label_map.json``).
        data_ids: the data's category ids, one per name; ``None`` for data that has names only
            (CSV): classes are then found by name and keep the model's dataset ids.
        data_names: the data's category names.
        source: the annotation file, for messages.
        complete: whether ``data_names`` is the data's full category list (COCO categories,
            VOC classes, a CSV's ``classes.txt``). ``False`` (a CSV without ``classes.txt``:
            only the names that occur are known): a model class without any annotation is
            logged as a warning instead of being an error.

    Returns:
        A ``LabelMap`` with the model's names in the model's order (class ``i`` is the model's
        class ``i``) and the data's dataset ids.

    Raises:
        ValueError: a model class is not in the data (both label maps listed), or its name
            names several of the data's categories.
    """
    data_names = [str(n) for n in data_names]
    if data_ids is not None:
        data_ids = [int(i) for i in data_ids]
        if len(data_ids) != len(data_names):
            raise ValueError(f"{source}: {len(data_ids)} category ids for {len(data_names)} "
                             "names.")
    by_id = dict(zip(data_ids, data_names, strict=True)) if data_ids is not None else {}
    ids_of_name: dict[str, list[int | None]] = {}
    for i, name in enumerate(data_names):
        ids_of_name.setdefault(name, []).append(None if data_ids is None else data_ids[i])

    ids: list[int | None] = []
    renamed, missing = [], []
    for model_id, name in zip(model.dataset_ids, model.names, strict=True):
        if data_ids is not None and by_id.get(model_id) == name:
            ids.append(model_id)
            continue
        found = ids_of_name.get(name, [])
        if len(found) > 1:
            raise ValueError(
                f"{source}: the model's class {name!r} matches {len(found)} categories of the "
                f"data by name (ids {found}); category names must be unique.")
        if found:
            data_id = model_id if data_ids is None else found[0]
            ids.append(data_id)
            if data_id != model_id:
                renamed.append(f"{name} {model_id} -> {data_id}")
            continue
        ids.append(None)
        if not name.startswith(PLACEHOLDER_PREFIX):
            missing.append(name)
    if missing and complete:
        model_pairs = [(f"{i + 1}:", f"{n} (id {d})") for i, (d, n) in
                       enumerate(zip(model.dataset_ids, model.names, strict=True))]
        data_pairs = (list(zip(data_ids, data_names, strict=True)) if data_ids is not None
                      else [("", n) for n in data_names])
        raise ValueError(
            f"the model's classes {missing} are not in {source} (found neither by dataset id "
            "under the same name nor by name). "
            f"Model classes: {_listing(model_pairs)}. "
            f"Categories of {source}: {_listing(data_pairs) or 'none'}. "
            "Use data that names the model's classes, or a model trained on these categories.")
    if missing:
        logging.warning("%s: no annotation of the model's classes %s (only the names that occur "
                        "are known); they are not evaluated.", source, missing)
    # Placeholders and classes missing from incomplete data keep their id unless the data
    # took it; then they get ids above every other one.
    taken = {i for i in ids if i is not None}
    spare = max([*taken, *model.dataset_ids, 0]) + 1
    for k, (model_id, data_id) in enumerate(zip(model.dataset_ids, ids, strict=True)):
        if data_id is None:
            if model_id in taken:
                model_id, spare = spare, spare + 1
            ids[k] = model_id
            taken.add(model_id)
    if renamed:
        logging.info("%s: the model's classes are matched to the data's categories by name "
                     "(model id -> data id): %s.", source, ", ".join(renamed))
    matched = LabelMap([int(i) for i in ids], model.names)
    return model if matched == model else matched
