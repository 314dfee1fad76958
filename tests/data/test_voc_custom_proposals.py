"""VOC reader, custom CSV/records format and precomputed proposals."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_rcnn.data.custom import load_custom, records_from_list
from tf_rcnn.data.pipeline import InputPipeline
from tf_rcnn.data.proposals import read_proposals, write_proposals
from tf_rcnn.data.voc import VOC_CLASSES, load_voc, voc_image_id
from tf_rcnn.label_map import LabelMap

from .helpers import write_boxes_image, write_image


def _obj(name, xmin, ymin, xmax, ymax, difficult=0):
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
            "</bndbox></object>")


def _voc_image(base, name, h, w, objects, write_img=True):
    if write_img:
        write_image(os.path.join(base, "JPEGImages", f"{name}.jpg"), h, w, fmt="JPEG")
    os.makedirs(os.path.join(base, "Annotations"), exist_ok=True)
    with open(os.path.join(base, "Annotations", f"{name}.xml"), "w") as f:
        f.write(f"<annotation><filename>{name}.jpg</filename><size><width>{w}</width>"
                f"<height>{h}</height><depth>3</depth></size>{''.join(objects)}</annotation>")


def _image_set(base, set_name, names):
    os.makedirs(os.path.join(base, "ImageSets", "Main"), exist_ok=True)
    with open(os.path.join(base, "ImageSets", "Main", f"{set_name}.txt"), "w") as f:
        f.write("\n".join(names) + "\n")


@pytest.fixture
def voc_root(tmp_path):
    v07, v12 = str(tmp_path / "VOC2007"), str(tmp_path / "VOC2012")
    _voc_image(v07, "000005", 30, 40, [_obj("dog", 1, 1, 10, 20),
                                       _obj("person", 5, 5, 8, 8, difficult=1)])
    _voc_image(v07, "000007", 30, 40, [_obj("unicorn", 1, 1, 5, 5), _obj("cat", 8, 8, 7, 9),
                                       _obj("car", 30, 20, 60, 25)])
    _voc_image(v07, "000009", 30, 40, [], write_img=False)  # image file missing
    _image_set(v07, "trainval", ["000005", "000007", "000009", "000005"])
    _voc_image(v12, "2008_000001", 20, 20, [_obj("bus", 2, 3, 20, 20)])
    with open(os.path.join(v12, "Annotations", "2008_000002.xml"), "w") as f:
        f.write("<annotation><size>")  # broken XML
    write_image(os.path.join(v12, "JPEGImages", "2008_000002.jpg"), 20, 20, fmt="JPEG")
    _image_set(v12, "trainval", ["2008_000001", "2008_000002"])
    return str(tmp_path)


def test_voc_07_plus_12(voc_root):
    records, label_map, report = load_voc(voc_root)
    assert label_map.names == list(VOC_CLASSES) and label_map.num_classes == 20
    assert [r.image_id for r in records] == [5, 7, 2008000001]
    r5 = records[0]
    # 1-based inclusive VOC pixels: xmin=1..xmax=10 -> x1 = 0, x2 = 10 (10 columns).
    np.testing.assert_allclose(r5.boxes, [[0, 0, 20, 10], [4, 4, 8, 8]])
    np.testing.assert_array_equal(r5.classes, [VOC_CLASSES.index("dog") + 1,
                                               VOC_CLASSES.index("person") + 1])
    np.testing.assert_array_equal(r5.difficult, [False, True])
    np.testing.assert_allclose(records[1].boxes, [[19, 29, 25, 40]])  # car clipped at x=40
    assert report.skipped["unknown class name"] == 1
    assert report.skipped["degenerate box (x2<=x1 or y2<=y1)"] == 1
    assert report.skipped["missing image file"] == 1
    assert report.skipped["image listed twice"] == 1
    assert report.skipped["unreadable annotation file"] == 1
    assert report.repaired["box clipped to image"] == 1
    assert "2008_000002.xml" in report.details() and "000009.jpg" in report.details()
    # Difficult boxes are left out of training by default, kept in evaluation.
    train = InputPipeline(records, label_map, backbone="tiny", training=True, batch_size=1, seed=0)
    assert train.stats["difficult boxes left out of training"] == 1
    with pytest.raises(ValueError, match="image set file"):
        load_voc(voc_root, [("2007", "test")])
    with pytest.raises(ValueError, match="VOC2010"):
        load_voc(voc_root, [("2010", "trainval")])


def test_voc_image_ids_do_not_collide():
    assert voc_image_id("000027") == 27
    assert voc_image_id("2007_000027") == 2007000027
    assert voc_image_id("weird-name") >= 10**10


def test_records_from_list_and_csv(tmp_path):
    img = write_boxes_image(str(tmp_path / "p" / "a.png"), 20, 30, [[2, 3, 10, 12]])
    write_image(str(tmp_path / "p" / "b.jpg"), 10, 10, fmt="JPEG")
    records, label_map, report = records_from_list(
        [{"image": img, "boxes": [[3, 2, 12, 10], [1, 1, 1, 5]], "classes": ["dog", "cat"]},
         {"image": str(tmp_path / "p" / "b.jpg"), "boxes": [], "classes": []},
         {"image": str(tmp_path / "nope.jpg"), "boxes": [], "classes": []}],
        class_names=["cat", "dog"])
    assert label_map.names == ["cat", "dog"]
    np.testing.assert_allclose(records[0].boxes, [[2, 3, 10, 12]])  # xyxy -> yxyx
    np.testing.assert_array_equal(records[0].classes, [2])
    assert report.skipped == {"degenerate box (x2<=x1 or y2<=y1)": 1, "missing image file": 1}

    (tmp_path / "p" / "annotations.csv").write_text(
        "image,x1,y1,x2,y2,class\n"
        "a.png,3,2,12,10,dog\n"
        "a.png,0,0,5,5,bird\n"
        "a.png,x,0,5,5,dog\n"
        "b.jpg,,,,,\n")
    records, label_map, report = load_custom(str(tmp_path / "p"))
    assert label_map.names == ["bird", "dog"]
    assert [r.num_instances for r in records] == [2, 0]
    np.testing.assert_allclose(records[0].boxes, [[2, 3, 10, 12], [0, 0, 5, 5]])
    assert report.skipped["malformed CSV row"] == 1
    assert "line 4" in report.details()
    with pytest.raises(ValueError, match="annotations.csv"):
        load_custom(str(tmp_path))


def test_custom_masks_round_trip(tmp_path):
    img = write_image(str(tmp_path / "m.png"), 10, 12)
    mask = np.zeros((10, 12), np.uint8)
    mask[2:6, 3:9] = 1
    records, _, _ = records_from_list(
        [{"image": img, "boxes": [[3, 2, 9, 6]], "classes": ["x"], "masks": [mask]}])
    np.testing.assert_array_equal(records[0].instance_masks()[0], mask)


@pytest.mark.parametrize("ext", ["npz", "json"])
def test_proposals_round_trip_and_pipeline(tmp_path, ext):
    props = {1: (np.array([[1, 2, 10, 20], [0, 0, 5, 5], [3, 3, 4, 4]], np.float32),
                 np.array([0.2, 0.9, 0.5], np.float32)),
             2: (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))}
    path = str(tmp_path / f"props.{ext}")
    write_proposals(path, props)
    back = read_proposals(path)
    assert set(back) == {1, 2}
    np.testing.assert_allclose(back[1][0], props[1][0])
    np.testing.assert_allclose(back[1][1], props[1][1])

    img = write_boxes_image(str(tmp_path / "i.png"), 20, 40, [[1, 2, 10, 20]])
    records, label_map, _ = records_from_list(
        [{"image": img, "boxes": [[2, 1, 20, 10]], "classes": ["x"], "image_id": 1}])
    pipe = InputPipeline(records, label_map, backbone="tiny", training=True, batch_size=1,
                         scales=(40,), max_size=80, proposals=path, max_proposals=2,
                         random_flip=True, flip_probability=1.0, seed=0)
    _, t = next(iter(pipe.dataset()))
    # scale = min(40/20, 80/40) = 2; top-2 by score: [0,0,5,5] (0.9), [3,3,4,4] (0.5).
    # Flip in original pixels (w = 40): x' = 40 - x -> [0,35,5,40], [3,36,4,37]; then * 2.
    np.testing.assert_allclose(t["proposals"][0], [[0, 70, 10, 80], [6, 72, 8, 74]], atol=1e-3)
    np.testing.assert_allclose(t["proposal_scores"][0], [0.9, 0.5])
    assert t["proposals"].shape == (1, 2, 4)


def test_bad_proposal_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"proposals": {"1": {"boxes": [[1, 2, 3]]}}}')
    with pytest.raises(ValueError, match="bad.json"):
        read_proposals(str(bad))
    with pytest.raises(ValueError, match=".npz or .json"):
        write_proposals(str(tmp_path / "x.txt"), {})
    assert tf.executing_eagerly()


def test_voc_read_with_a_model_label_map_finds_its_classes_by_name(voc_root):
    # A model of two classes with ids 1, 2 (e.g. trained on a CSV): VOC's id 1 is aeroplane,
    # so both are found by name: dog -> VOC id 12, car -> VOC id 7 (1-based in VOC_CLASSES).
    model = LabelMap([1, 2], ["dog", "car"])
    records, label_map, report = load_voc(voc_root, label_map=model)
    assert label_map.names == ["dog", "car"] and label_map.dataset_ids == [12, 7]
    np.testing.assert_array_equal(records[0].classes, [1])  # the dog; person left out
    np.testing.assert_array_equal(records[1].classes, [2])  # the clipped car
    assert report.left_out == {"classes not in the label map": {"'person'": 1, "'cat'": 1,
                                                                "'bus'": 1}}
    assert report.skipped["unknown class name"] == 1  # unicorn is no VOC class at all
    with pytest.raises(ValueError, match=r"\['zebra'\] are not in the VOC classes"):
        load_voc(voc_root, label_map=LabelMap([1, 2], ["dog", "zebra"]))


def test_csv_read_with_a_model_label_map_uses_its_order(tmp_path, caplog):
    write_image(str(tmp_path / "p" / "a.png"), 20, 30)
    (tmp_path / "p" / "annotations.csv").write_text(
        "image,x1,y1,x2,y2,class\n"
        "a.png,3,2,12,10,dog\n"
        "a.png,0,0,5,5,bird\n")
    model = LabelMap([1, 2, 3], ["dog", "cat", "bird"])
    with caplog.at_level(logging.WARNING, logger="absl"):
        records, label_map, _ = load_custom(str(tmp_path / "p"), label_map=model)
    # The model's order (dog 1, bird 3), not the CSV's sorted names (bird, dog).
    assert label_map == model
    np.testing.assert_array_equal(records[0].classes, [1, 3])
    # No classes.txt: only the names that occur are known, so "cat" without a box is a
    # warning; with a classes.txt that lacks it, an error.
    assert any("['cat']" in r.getMessage() for r in caplog.records)
    (tmp_path / "p" / "classes.txt").write_text("bird\ndog\n")
    with pytest.raises(ValueError, match=r"\['cat'\] are not in custom"):
        load_custom(str(tmp_path / "p"), label_map=model)
