"""COCO reader: category mapping, crowd regions, polygon/RLE masks and every kind of bad data."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tf_rcnn.data.coco import load_coco
from tf_rcnn.label_map import LabelMap

from .helpers import write_coco, write_image

CATS = [{"id": 90, "name": "zebra"}, {"id": 5, "name": "cat"}, {"id": 17, "name": "dog"}]


def _ann(aid, image_id, cat, bbox, **extra):
    return {"id": aid, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": 0,
            **extra}


@pytest.fixture
def good(tmp_path):
    img_dir = tmp_path / "images"
    write_image(str(img_dir / "a.png"), 20, 30)
    write_image(str(img_dir / "b.jpg"), 40, 10, fmt="JPEG")
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((4, 4), np.uint8),
                                                     ((2, 34), (3, 3)))))
    anns = [
        # Polygon: a rectangle x 2..12, y 3..8 -> yxyx [3, 2, 8, 12].
        _ann(1, 7, 5, [2, 3, 10, 5], segmentation=[[2, 3, 12, 3, 12, 8, 2, 8]]),
        _ann(2, 7, 90, [0, 0, 5, 5], segmentation={"size": [20, 30],
                                                    "counts": [0, 600]}),  # uncompressed RLE
        _ann(3, 7, 17, [10, 10, 20, 10], iscrowd=1,
             segmentation={"size": [20, 30], "counts": [0, 600]}),
        _ann(4, 1000000, 17, [3, 2, 4, 4],
             segmentation={"size": [40, 10], "counts": rle["counts"].decode()}),
    ]
    images = [{"id": 7, "file_name": "a.png", "height": 20, "width": 30},
              {"id": 1000000, "file_name": "b.jpg", "height": 40, "width": 10}]
    path = write_coco(str(tmp_path / "ann.json"), images, anns, CATS)
    return path, str(img_dir)


def test_category_mapping_ids_and_crowd(good):
    records, label_map, report = load_coco(*good)
    # Dataset ids sorted ascending -> 1..K: 5 -> 1 (cat), 17 -> 2 (dog), 90 -> 3 (zebra).
    assert label_map.dataset_ids == [5, 17, 90]
    assert label_map.names == ["cat", "dog", "zebra"]
    assert label_map.to_dataset_id(np.array([1, 3])).tolist() == [5, 90]
    assert [r.image_id for r in records] == [7, 1000000]
    a, b = records
    np.testing.assert_allclose(a.boxes, [[3, 2, 8, 12], [0, 0, 5, 5]])
    np.testing.assert_array_equal(a.classes, [1, 3])
    np.testing.assert_allclose(a.crowd_boxes, [[10, 10, 20, 30]])  # crowd is not a positive
    np.testing.assert_array_equal(b.classes, [2])
    assert report.num_images == 2 and report.num_boxes == 3 and report.num_crowd == 1
    assert report.num_skipped == 0 and not report.repaired


def test_polygon_and_rle_masks_decode(good):
    records, _, _ = load_coco(*good)
    a, b = records
    masks = a.instance_masks()
    assert masks.shape == (2, 20, 30)
    # The rectangle polygon covers rows 3..7 and columns 2..11 (pixel centres inside).
    rows, cols = np.nonzero(masks[0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 7, 2, 11)
    assert masks[1].all()  # counts [0, 600]: all 20*30 pixels set
    mb = b.instance_masks()[0]
    assert mb.sum() == 16 and mb[2:6, 3:7].all()


def test_label_map_json_round_trip_and_reuse(good, tmp_path):
    records, label_map, _ = load_coco(*good)
    path = str(tmp_path / "labels.json")
    label_map.to_json(path)
    again = LabelMap.from_json(path)
    assert again == label_map and LabelMap.from_json(label_map.to_json()) == label_map
    # A label map that leaves a category out on purpose (a subset of the classes, or the
    # training map on another split): its annotations are left out and summed up in one line.
    partial = LabelMap([5, 90], ["cat", "zebra"])
    recs, _, report = load_coco(*good, label_map=partial)
    assert not report.skipped  # nothing wrong with the data
    # The dog box and the dog crowd region.
    assert report.left_out == {"categories not in the label map": {"dog (id 17)": 2}}
    assert report.summary().endswith(
        "; left out 2 annotations of categories not in the label map: dog (id 17)")
    assert recs[1].num_instances == 0


def test_every_kind_of_bad_data_is_counted_with_its_file(tmp_path):
    d = tmp_path / "images"
    write_image(str(d / "ok.png"), 20, 20)
    write_image(str(d / "bigger.png"), 25, 20)  # annotation says 20x20
    (d / "corrupt.png").write_bytes(b"this is not an image")
    good_png = (d / "ok.png").read_bytes()
    (d / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    write_image(str(d / "empty.png"), 20, 20)
    images = [
        {"id": 1, "file_name": "ok.png", "height": 20, "width": 20},
        {"id": 2, "file_name": "missing.png", "height": 20, "width": 20},
        {"id": 3, "file_name": "corrupt.png", "height": 20, "width": 20},
        {"id": 4, "file_name": "truncated.png", "height": 20, "width": 20},
        {"id": 5, "file_name": "bigger.png", "height": 20, "width": 20},
        {"id": 6, "file_name": "empty.png", "height": 20, "width": 20},
    ]
    nan = float("nan")
    anns = [
        _ann(1, 1, 5, [1, 1, 5, 5]),  # fine
        _ann(2, 1, 5, [5, 5, 0, 4]),  # w = 0 (x2 <= x1)
        _ann(3, 1, 5, [5, 5, -3, 4]),  # w < 0
        _ann(4, 1, 5, [nan, 1, 2, 2]),  # NaN
        _ann(5, 1, 5, [30, 30, 5, 5]),  # entirely outside the 20x20 image
        _ann(6, 1, 5, [15, 15, 10, 10]),  # partly outside -> clipped to [15, 15, 20, 20]
        _ann(7, 1, 99, [1, 1, 2, 2]),  # unknown category
        _ann(8, 42, 5, [1, 1, 2, 2]),  # unknown image id
        _ann(9, 1, 5, [1, 1, 2]),  # malformed bbox
        _ann(10, 1, 5, [2, 2, 3, 3], segmentation=[[1, 2]]),  # malformed polygon -> box mask
        _ann(11, 2, 5, [1, 1, 2, 2]),  # annotation of the missing image
    ]
    ann_path = write_coco(str(tmp_path / "bad.json"), images, anns, CATS)
    records, _, report = load_coco(ann_path, str(d))
    assert [r.image_id for r in records] == [1, 6]
    ok = records[0]
    np.testing.assert_allclose(ok.boxes, [[1, 1, 6, 6], [15, 15, 20, 20], [2, 2, 5, 5]])
    assert records[1].num_instances == 0 and report.num_empty_images == 1
    expected = {
        "missing image file": 1,
        "unreadable image file": 1,
        "truncated image file": 1,
        "image size differs from annotation": 1,
        "annotation of skipped image": 1,
        "degenerate box (x2<=x1 or y2<=y1)": 2,
        "non-finite box": 1,
        "box outside image": 1,
        "unknown category id": 1,
        "annotation of unknown image id": 1,
        "malformed bbox": 1,
    }
    assert dict(report.skipped) == expected
    assert dict(report.repaired) == {"box clipped to image": 1,
                                     "bad segmentation (filled box used as mask)": 1,
                                     "missing segmentation (filled box used as mask)": 2}
    # Every reason names its file; the summary is one line with the totals.
    details = report.details()
    for name in ("missing.png", "corrupt.png", "truncated.png", "bigger.png"):
        assert name in details
    assert "bad.json" in "".join(report.examples["annotation of unknown image id"])
    # report.items lists every skip/repair with its file (an image or the json itself).
    assert len(report.items) == 16  # 12 skips + 4 repairs
    named = {os.path.basename(file) for _, _, file, _ in report.items}
    assert named == {"ok.png", "missing.png", "corrupt.png", "truncated.png", "bigger.png",
                     "bad.json"}
    summary = report.summary()
    assert "2 images, 3 boxes" in summary and "skipped 12" in summary
    assert "\n" not in summary
    # The filled-box mask stands in for the malformed polygon.
    np.testing.assert_array_equal(ok.instance_masks()[2][2:5, 2:5], 1)


def test_fatal_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_coco(str(tmp_path / "nope.json"), str(tmp_path))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_coco(str(broken), str(tmp_path))
    dup = write_coco(str(tmp_path / "dup.json"),
                     [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}], [], CATS)
    with pytest.raises(ValueError, match="duplicate image id 1"):
        load_coco(dup, str(tmp_path))
    with pytest.raises(ValueError, match="image_dir"):
        load_coco(dup, str(tmp_path / "no_dir"))


def test_pipeline_skips_empty_training_images(good, tmp_path):
    from tf_rcnn.data.pipeline import InputPipeline

    path, img_dir = good
    with open(path) as f:
        data = json.load(f)
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == 7]
    path2 = str(tmp_path / "one.json")
    with open(path2, "w") as f:
        json.dump(data, f)
    records, label_map, _ = load_coco(path2, img_dir)
    train = InputPipeline(records, label_map, backbone="tiny", training=True, batch_size=1,
                          scales=(20,), max_size=40, seed=0)
    assert train.num_images == 1 and train.stats == {"images without boxes left out": 1}
    evaluation = InputPipeline(records, label_map, backbone="tiny", training=False, batch_size=1)
    assert evaluation.num_images == 2
    assert os.path.basename(records[1].image_path) == "b.jpg"
