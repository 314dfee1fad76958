"""match_label_map: the one rule for reading data with a model's label map."""

from __future__ import annotations

import logging

import pytest

from tf_rcnn.label_map import LabelMap, match_label_map

SHAPES = LabelMap([1, 2, 3], ["square", "circle", "triangle"])


def test_ids_that_agree_in_name_are_kept_and_nothing_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="absl"):
        # The data has one category more (4 star): not the rule's business (left out later).
        matched = match_label_map(SHAPES, [4, 3, 2, 1], ["star", "triangle", "circle", "square"],
                                  source="val.json")
    assert matched == SHAPES
    assert not [r for r in caplog.records if "by name" in r.getMessage()]


def test_other_ids_with_the_same_names_are_mapped_by_name_in_one_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="absl"):
        matched = match_label_map(SHAPES, [33, 11, 22], ["triangle", "square", "circle"],
                                  source="val.json")
    # Model order and names stay; dataset ids come from the data: square 11, circle 22, ...
    assert matched.names == ["square", "circle", "triangle"]
    assert matched.dataset_ids == [11, 22, 33]
    lines = [r.getMessage() for r in caplog.records if "by name" in r.getMessage()]
    assert len(lines) == 1
    assert "square 1 -> 11, circle 2 -> 22, triangle 3 -> 33" in lines[0]
    assert "val.json" in lines[0]


def test_an_id_whose_name_differs_is_looked_up_by_name():
    # Data id 1 is "circle" and id 2 "square" (swapped): by id they disagree in name, so both
    # go by name: square -> 2, circle -> 1; triangle agrees by id.
    matched = match_label_map(SHAPES, [1, 2, 3], ["circle", "square", "triangle"], source="x")
    assert matched.dataset_ids == [2, 1, 3]


def test_names_missing_from_the_data_list_both_label_maps():
    with pytest.raises(ValueError) as error:
        match_label_map(SHAPES, [1, 2, 3], ["square", "disk", "tri"], source="val.json")
    message = str(error.value)
    assert "['circle', 'triangle']" in message  # the missing model classes
    assert "1: square (id 1), 2: circle (id 2), 3: triangle (id 3)" in message  # the model's
    assert "Categories of val.json: 1 square, 2 disk, 3 tri" in message  # the data's


def test_names_only_data_keeps_the_model_ids_and_may_lack_a_class_when_incomplete(caplog):
    model = LabelMap([10, 20], ["cat", "dog"])
    assert match_label_map(model, None, ["dog", "cat"], source="a.csv") == model
    with caplog.at_level(logging.WARNING, logger="absl"):
        # Only the names that occur are known (no classes.txt): a warning, not an error.
        assert match_label_map(model, None, ["cat"], source="a.csv", complete=False) == model
    assert any("['dog']" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match=r"\['dog'\] are not in a.csv"):
        match_label_map(model, None, ["cat"], source="a.csv", complete=True)


def test_placeholder_classes_need_not_be_in_the_data_and_never_take_a_data_id():
    model = LabelMap([1, 2, 3], ["person", "unused_2", "car"])
    # COCO-like data without id 2: the placeholder keeps id 2.
    assert match_label_map(model, [1, 3], ["person", "car"], source="x") == model
    # Renumbered data that uses id 2 for "car": the placeholder moves to a free id (4).
    matched = match_label_map(model, [1, 2], ["person", "car"], source="x")
    assert matched.dataset_ids == [1, 4, 2]


def test_a_name_given_to_two_data_categories_is_an_error():
    with pytest.raises(ValueError, match="matches 2 categories"):
        match_label_map(LabelMap([1], ["a"]), [5, 6], ["a", "a"], source="x")
