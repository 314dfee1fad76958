"""What a user is told when the data cannot work: each message names the file and the
``--config.data`` flag to change, in command-line terms (no reader names, no Python objects)."""

from __future__ import annotations

import logging
import os

import pytest

from tests.support import recipe, write_csv_dataset
from tf_rcnn.config import ConfigError
from tf_rcnn.data.builder import build_input_pipeline, load_split
from tf_rcnn.data.coco import load_coco
from tf_rcnn.label_map import LabelMap

from .helpers import write_coco, write_image


def custom_config(train_csv: str):
    config = recipe("shapes_faster_rcnn")
    config.data.dataset = "custom"
    config.data.train_annotations = train_csv
    return config


def _write(path, text: str) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_csv_with_only_a_header_says_so_with_the_line_format(tmp_path):
    csv = _write(tmp_path / "mine" / "annotations.csv", "image,x1,y1,x2,y2,class\n")
    with pytest.raises(ConfigError) as error:
        load_split(custom_config(csv), "train")
    message = str(error.value)
    assert f"--config.data.train_annotations={csv}" in message
    assert "no annotation rows" in message and "image,x1,y1,x2,y2,class" in message
    assert "num_classes" not in message and "LoadReport" not in message


def test_every_image_path_wrong_names_the_csv_examples_and_where_paths_are_resolved(tmp_path):
    csv = _write(tmp_path / "mine" / "annotations.csv",
                 "image,x1,y1,x2,y2,class\n"
                 "pics/a.jpg,1,2,10,20,cat\npics/b.jpg,1,2,10,20,dog\npics/c.jpg,,,,,\n")
    with pytest.raises(ConfigError) as error:
        load_split(custom_config(csv), "train")
    message = str(error.value)
    assert f"None of the 3 images listed in --config.data.train_annotations={csv}" in message
    folder = str(tmp_path / "mine")
    assert os.path.join(folder, "pics", "a.jpg") + " (file not found)" in message
    assert "c.jpg" not in message  # two examples are enough
    assert f"resolved against the CSV's folder ({folder})" in message
    assert "image_dir" not in message and "train_images" not in message


def test_every_coco_image_missing_points_at_the_image_folder_flag(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    annotations = write_coco(str(tmp_path / "ann.json"),
                             [{"id": 1, "file_name": "gone.png", "height": 8, "width": 8}], [],
                             [{"id": 1, "name": "a"}])
    config = recipe("shapes_faster_rcnn")
    config.data.dataset = "coco"
    config.data.train_annotations, config.data.train_images = annotations, str(images)
    with pytest.raises(ConfigError, match=f"--config.data.train_images={images}"):
        load_split(config, "train")


def test_training_data_without_a_box_names_the_split_and_the_flag(tmp_path):
    csv = write_csv_dataset(tmp_path / "mine", num_images=2, seed=0, classes=())
    config = custom_config(csv)
    records, label_map, _ = load_split(config, "train")  # readable: 2 images, no boxes
    assert len(records) == 2 and label_map.num_classes == 0
    with pytest.raises(ConfigError) as error:
        build_input_pipeline(config, records, label_map, training=True)
    message = str(error.value)
    assert "train split" in message and f"--config.data.train_annotations={csv}" in message
    # The same records evaluate fine (images without boxes count there).
    build_input_pipeline(config, records, label_map, training=False)


def test_categories_left_out_on_purpose_are_one_summary_line(tmp_path, caplog):
    write_image(str(tmp_path / "images" / "a.png"), 20, 20)
    anns = [{"id": i, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]} for i in (1, 2, 3)]
    anns.append({"id": 4, "image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6]})
    annotations = write_coco(str(tmp_path / "ann.json"),
                             [{"id": 1, "file_name": "a.png", "height": 20, "width": 20}], anns,
                             [{"id": 1, "name": "square"}, {"id": 3, "name": "triangle"}])
    with caplog.at_level(logging.INFO, logger="absl"):  # whatever verbosity absl was left at
        records, _, report = load_coco(annotations, str(tmp_path / "images"),
                                       label_map=LabelMap([1], ["square"]))
    assert records[0].num_instances == 1 and not report.skipped
    lines = [r.getMessage() for r in caplog.records if "triangle" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        "left out 3 annotations of categories not in the label map: triangle (id 3)")
    assert records[0].file_name == "a.png"


def test_masks_missing_for_a_mask_model_names_the_split_and_what_to_add(tmp_path):
    csv = write_csv_dataset(tmp_path / "mine", num_images=2, seed=0)
    config = custom_config(csv)
    records, label_map, _ = load_split(config, "train", with_masks=True)
    with pytest.raises(ConfigError) as error:
        build_input_pipeline(config, records, label_map, training=True, with_masks=True)
    message = str(error.value)
    assert f"--config.data.train_annotations={csv}" in message and "mask column" in message
    assert "with_masks" not in message


def test_deterministic_without_a_seed_names_both_flags(tmp_path):
    csv = write_csv_dataset(tmp_path / "mine", num_images=2, seed=0)
    config = custom_config(csv)
    config.data.deterministic, config.data.seed = True, None
    records, label_map, _ = load_split(config, "train")
    with pytest.raises(ConfigError, match="--config.data.deterministic=True.*--config.data.seed"):
        build_input_pipeline(config, records, label_map, training=True)


def test_a_fixed_image_size_pads_every_batch_to_it_and_a_too_small_one_names_the_flag(tmp_path):
    # The shapes recipe resizes to 128 (max_size 128, size_divisor 32): any canvas of at least
    # 128 x 128 in multiples of 32 holds every resized image; batches are then static.
    csv = write_csv_dataset(tmp_path / "mine", num_images=3, seed=0)
    config = custom_config(csv)
    assert (config.data.max_size, config.data.size_divisor) == (128, 32)
    records, label_map, _ = load_split(config, "train")
    for bad in ((96, 128), (128, 150), (128,), (128, 128, 3)):
        config.data.fixed_image_size = bad
        with pytest.raises(ConfigError) as error:
            build_input_pipeline(config, records, label_map, training=True, batch_size=2)
        message = str(error.value)
        assert f"--config.data.fixed_image_size={bad!r}" in message, message
        assert "--config.data.fixed_image_size='(128, 128)'" in message
    for bad in ((1.2, 0.8), (0.0, 1.0), (1.1,)):
        config.data.scale_jitter = bad
        with pytest.raises(ConfigError, match=r"--config.data.scale_jitter=.*0 < lo <= hi"):
            build_input_pipeline(config, records, label_map, training=True, batch_size=2)
    # Scale jitter up to 1.2 can give 154 px: 160 is needed.
    config.data.scale_jitter = (0.8, 1.2)
    config.data.fixed_image_size = (128, 128)
    with pytest.raises(ConfigError, match=r"times the scale jitter 1.2 rounded up to one \(160\)"):
        build_input_pipeline(config, records, label_map, training=True, batch_size=2)
    config.data.scale_jitter = None
    config.data.fixed_image_size = (160, 128)
    for training in (True, False):
        pipe = build_input_pipeline(config, records, label_map, training=training,
                                    batch_size=2)
        images, _ = pipe.dataset().element_spec
        assert images.shape.as_list()[1:] == [160, 128, 3]
        batch, targets = next(iter(pipe.dataset()))
        assert batch.shape[1:] == (160, 128, 3)
        assert (targets["image_shape"].numpy() <= [160, 128]).all()
