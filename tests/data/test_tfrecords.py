"""OD API TFRecords: label_map.pbtxt, writer/reader round trips, the streaming pipeline against
the file pipeline, bad records counted and named, per-worker shards."""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_rcnn.config import ConfigError
from tf_rcnn.data import tfrecords as tfr
from tf_rcnn.data.coco import load_coco
from tf_rcnn.data.pipeline import InputPipeline
from tf_rcnn.data.shapes import generate_shapes_dataset
from tf_rcnn.label_map import LabelMap

from .helpers import write_coco


def _batches(pipe, context=None):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in pipe.dataset(context)]


def _assert_same_records(read, expected, masks=True):
    assert [r.image_id for r in read] == [r.image_id for r in expected]
    for got, want in zip(read, expected, strict=True):
        assert (got.height, got.width) == (want.height, want.width)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
        np.testing.assert_array_equal(got.classes, want.classes)
        np.testing.assert_allclose(got.crowd_boxes, want.crowd_boxes, atol=1e-4)
        np.testing.assert_array_equal(got.difficult, want.difficult)
        assert got.file_name == want.file_name
        if masks:
            np.testing.assert_array_equal(got.instance_masks(), want.instance_masks())


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfr_shapes")
    ann = generate_shapes_dataset(str(root / "src"), num_images=6, image_size=48, seed=3)
    records, label_map, _ = load_coco(ann, str(root / "src" / "images"))
    order = sorted(records, key=lambda r: r.image_id)
    files = tfr.write_tfrecords(order, label_map, str(root / "out" / "train"), num_shards=2)
    return records, label_map, files


def test_pbtxt_parse_and_write_round_trip():
    text = """# written by hand
    item {
      name: "/m/01"
      id: 7
      display_name: 'dog'
    }
    item { id: 3 display_name: "cat" }  # no name: the display name
    """
    label_map = tfr.parse_label_map_pbtxt(text)
    # Ids ascending -> 1..K: 3 -> 1, 7 -> 2.
    assert label_map.dataset_ids == [3, 7] and label_map.names == ["cat", "/m/01"]
    assert tfr.parse_label_map_pbtxt(tfr.label_map_to_pbtxt(label_map)) == label_map
    quoted = LabelMap([2], ["it's"])
    assert tfr.parse_label_map_pbtxt(tfr.label_map_to_pbtxt(quoted)).names == ["it's"]
    for bad, words in (("", "no 'item"), ("item { name: 'x' }", "no integer id"),
                       ("item { id: 0 name: 'bg' }", "0 is the background"),
                       ("item { id: 1 name: 'a' } item { id: 1 name: 'b' }", "duplicates")):
        with pytest.raises(ValueError, match=words):
            tfr.parse_label_map_pbtxt(bad, source="lm.pbtxt")


def test_shapes_round_trip_gives_the_same_records(shapes):
    records, label_map, files = shapes
    assert [os.path.basename(f) for f in files] == ["train-00000-of-00002.tfrecord",
                                                  "train-00001-of-00002.tfrecord"]
    written = tfr.read_label_map_pbtxt(os.path.join(os.path.dirname(files[0]),
                                                    "label_map.pbtxt"))
    assert written == label_map
    read, report = tfr.read_tfrecord_records(files, label_map, with_masks=True)
    assert report.num_skipped == 0 and not report.repaired
    by_id = {r.image_id: r for r in records}
    _assert_same_records(sorted(read, key=lambda r: r.image_id), [by_id[i] for i in sorted(by_id)])
    # Evaluation of the first N records (eval.py --num_images) streams exactly those.
    pipe = tfr.TFRecordPipeline(files, label_map, num_images=3, training=False, batch_size=2,
                                scales=(48,), max_size=48, backbone="tiny")
    streamed = [int(i) for _, t in _batches(pipe) for i in t["image_id"]]
    assert streamed == [r.image_id for r in read[:3]]
    # The image is the original file's bytes.
    assert np.array_equal(tfr.load_image(read[1]), tfr.load_image(by_id[read[1].image_id]))


def test_pipeline_feeds_what_the_file_pipeline_feeds(shapes):
    # The same images through both pipelines: training mode with every image flipped and
    # two scales (the scale drawn depends on the element's seed, which both derive alike).
    records, label_map, files = shapes
    records = sorted(records, key=lambda r: r.image_id)
    # The writer put record i into shard i % 2; the stream reads blocks of up to READ_BLOCK
    # records shard by shard, so the file pipeline gets the records in that order.
    records = records[0::2] + records[1::2]
    options = {"backbone": "tiny", "batch_size": 2, "max_size": 64, "with_masks": True,
               "mask_crop_size": 12, "max_instances": 5, "seed": 4, "deterministic": True}
    for training in (False, True):
        extra = {"scales": (40, 48), "random_flip": True, "flip_probability": 1.0,
                 "shuffle": False, "group_by_aspect_ratio": False} if training else {
                 "scales": (48,)}
        from_files = InputPipeline(records, label_map, training=training, **options, **extra)
        streamed = tfr.TFRecordPipeline(files[:1] + files[1:], label_map, training=training,
                                        **options, **extra)
        want = _batches(from_files) if not training else [
            tf.nest.map_structure(lambda t: t.numpy(), b)
            for b in from_files.dataset().take(2)]
        got = ([tf.nest.map_structure(lambda t: t.numpy(), b)
                for b in streamed.dataset().take(2)] if training else _batches(streamed))
        by_id = {}
        for images, t in want:
            for b, image_id in enumerate(t["image_id"]):
                by_id[int(image_id)] = (images[b], {k: v[b] for k, v in t.items()})
        seen = 0
        for images, t in got:
            for b, image_id in enumerate(t["image_id"]):
                if int(image_id) not in by_id:
                    continue
                image, target = by_id[int(image_id)]
                if training and float(target["scale"][0]) != float(t["scale"][b][0]):
                    continue  # another draw of the scale (other element position)
                np.testing.assert_allclose(images[b], image, atol=1e-4)
                for key in ("boxes", "classes", "crowd_boxes", "masks", "image_shape",
                            "flipped", "original_shape"):
                    np.testing.assert_allclose(t[key][b], target[key], atol=1e-3, err_msg=key)
                seen += 1
        assert seen >= (2 if training else len(records))


def _jpeg(height, width, value=90):
    out = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def test_coco_round_trip_keeps_crowd_regions_and_dataset_ids(tmp_path):
    # Non-contiguous category ids 3 and 7, a crowd region, an image without annotations,
    # JPEG files: written and read back, the records are the reader's.
    images = tmp_path / "images"
    images.mkdir()
    for name, (h, w) in (("a.jpg", (30, 40)), ("b.jpg", (20, 50))):
        (images / name).write_bytes(_jpeg(h, w))
    ann = write_coco(str(tmp_path / "ann.json"),
                     [{"id": 11, "file_name": "a.jpg", "height": 30, "width": 40},
                      {"id": 12, "file_name": "b.jpg", "height": 20, "width": 50}],
                     [{"id": 1, "image_id": 11, "category_id": 7, "bbox": [2.5, 3, 10, 12],
                       "iscrowd": 0, "area": 120,
                       "segmentation": [[2.5, 3, 12.5, 3, 12.5, 15, 2.5, 15]]},
                      {"id": 2, "image_id": 11, "category_id": 3, "bbox": [20, 1, 19.5, 28],
                       "iscrowd": 1, "area": 10},
                      {"id": 3, "image_id": 11, "category_id": 3, "bbox": [1, 15, 30, 10],
                       "iscrowd": 0, "area": 300,
                       "segmentation": [[1, 15, 31, 15, 16, 25]]}],
                     [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}])
    records, label_map, _ = load_coco(ann, str(images))
    files = tfr.write_tfrecords(records, label_map, str(tmp_path / "tf" / "val"), 1)
    text = (tmp_path / "tf" / "label_map.pbtxt").read_text()
    assert "id: 3\n  name: 'cat'" in text and "id: 7\n  name: 'dog'" in text
    read, _ = tfr.read_tfrecord_records(files, label_map, with_masks=True)
    _assert_same_records(read, records)  # masks too (polygons -> PNG -> RLE, equal pixels)
    assert read[0].instance_masks()[1].sum() > 0
    # By hand: image 11 keeps [y, x, y + h, x + w] = [3, 2.5, 15, 12.5] (dog: class 2) and
    # [15, 1, 25, 31] (cat: class 1); the crowd region is [1, 20, 29, 39.5].
    np.testing.assert_allclose(read[0].boxes, [[3, 2.5, 15, 12.5], [15, 1, 25, 31]], atol=1e-4)
    np.testing.assert_array_equal(read[0].classes, [2, 1])
    np.testing.assert_allclose(read[0].crowd_boxes, [[1, 20, 29, 39.5]], atol=1e-4)
    assert read[1].num_instances == 0


def _feature(values, kind):
    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if kind == "int":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def foreign_example(image: bytes, boxes, labels, source_id="", masks=None, crowd=None,
                    **extra) -> bytes:
    """An OD API Example written with tf.train directly: ``boxes`` normalised yxyx."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    feature = {
        "image/encoded": _feature([image], "bytes"),
        "image/format": _feature([b"jpeg"], "bytes"),
        "image/source_id": _feature([source_id.encode()], "bytes"),
        "image/object/bbox/ymin": _feature(boxes[:, 0].tolist(), "float"),
        "image/object/bbox/xmin": _feature(boxes[:, 1].tolist(), "float"),
        "image/object/bbox/ymax": _feature(boxes[:, 2].tolist(), "float"),
        "image/object/bbox/xmax": _feature(boxes[:, 3].tolist(), "float"),
        "image/object/class/label": _feature(list(labels), "int"),
    }
    if crowd is not None:
        feature["image/object/is_crowd"] = _feature(crowd, "int")
    if masks is not None:
        feature["image/object/mask"] = _feature(masks, "bytes")
    for key, (values, kind) in extra.items():
        feature[key.replace("__", "/")] = _feature(values, kind)
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def _write_shard(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            writer.write(example)
    return str(path)


def test_bad_records_are_counted_named_and_skipped(tmp_path, capfd):
    image = _jpeg(20, 40)
    good = [[0.1, 0.1, 0.5, 0.5]]
    first = _write_shard(tmp_path / "a.tfrecord", [
        foreign_example(image, good, [3], "1"),                                    # 0 fine
        foreign_example(b"not an image at all", good, [3], "2"),                   # 1 bytes
        foreign_example(image, [[-0.5, 0.2, 0.5, 1.25], [0.2, 0.2, 0.3, 0.3]],
                        [7, 3], "3"),                                              # 2 clip
        foreign_example(image, [[np.nan, 0, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2]],
                        [3, 7], "4"),                                              # 3 NaN
        foreign_example(image, [[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]],
                        [5, 3], "5"),                                              # 4 label
        foreign_example(image, [[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]],
                        [3], "6"),                                                 # 5 lengths
        foreign_example(image, good, [3], "7",
                        image__height=([21], "int")),                              # 6 size
    ])
    whole = _write_shard(tmp_path / "b.tfrecord", [foreign_example(image, good, [7], str(i))
                                                   for i in (8, 9, 10)])
    full = _write_shard(tmp_path / "full_c.tfrecord", [
        foreign_example(image, good, [7], str(i)) for i in (11, 12, 13)])
    data = tf.io.gfile.GFile(full, "rb").read()
    truncated = tmp_path / "c.tfrecord"
    truncated.write_bytes(data[: len(data) * 2 // 3 + 5])  # 2 whole records, then a piece
    label_map = LabelMap([3, 7], ["cat", "dog"])
    files = [first, whole, str(truncated)]
    records, report = tfr.read_tfrecord_records(files, label_map)
    # Usable: a0, a2 (one box clipped), a3 (NaN box dropped), a4 (unknown label dropped),
    # b x3, c x2 (ids 11, 12; 13 is cut).
    ids = sorted(r.image_id for r in records)
    assert ids == [1, 3, 4, 5, 8, 9, 10, 11, 12]
    clipped = next(r for r in records if r.image_id == 3)
    # [-0.5, 0.2, 0.5, 1.25] on 20x40 -> clipped to [0, 0.2, 0.5, 1] -> [0, 8, 10, 40] px.
    np.testing.assert_allclose(clipped.boxes[0], [0, 8, 10, 40], atol=1e-4)
    assert next(r for r in records if r.image_id == 4).classes.tolist() == [2]
    assert next(r for r in records if r.image_id == 5).classes.tolist() == [1]
    assert dict(report.skipped) == {
        "undecodable image bytes (record skipped)": 1,
        "non-finite box (object skipped)": 1,
        "class label not in the label map (object skipped)": 1,
        "mismatched lengths of the per-object lists (record skipped)": 1,
        "image size differs from image/height and image/width (record skipped)": 1,
        "truncated shard (the rest of the shard skipped)": 1,
    }
    assert dict(report.repaired) == {"box partly outside [0, 1] (clipped)": 1}
    where = {(reason, file) for _, reason, file, _ in report.items}
    assert ("undecodable image bytes (record skipped)", f"{first} record 1") in where
    assert ("truncated shard (the rest of the shard skipped)", f"{truncated} record 2") in where

    # The training pipeline: the same counts from the graph, messages naming shard and record.
    capfd.readouterr()
    pipe = tfr.TFRecordPipeline(files, label_map, training=False, batch_size=4, scales=(20,),
                                max_size=40, backbone="tiny")
    ids = sorted(int(i) for _, t in _batches(pipe) for i in t["image_id"])
    assert ids == [1, 3, 4, 5, 8, 9, 10, 11, 12]
    counts = pipe.read_problems()
    assert counts == {**dict(report.skipped), **dict(report.repaired)}
    err = capfd.readouterr().err
    assert f"{first} record 1: 1 undecodable image bytes (record skipped)" in err
    assert f"{truncated} record 2: 1 truncated shard" in err


def test_a_small_set_is_read_about_once_before_the_first_training_batch(tmp_path):
    # The stream repeats before it shuffles: a 1024-record buffer over 8 records would hold
    # 128 copies of each and read the set 128 times before the first batch. The buffer is
    # capped at the records the shards hold (estimated from the records read at start-up);
    # the one record with an unknown label counts how often the set was read.
    image = _jpeg(20, 40)
    examples = [foreign_example(image, [[0.1, 0.1, 0.5, 0.5]], [3], str(i)) for i in range(7)]
    examples.append(foreign_example(image, [[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]],
                                    [3, 9], "7"))
    files = [_write_shard(tmp_path / "a.tfrecord", examples[:4]),
             _write_shard(tmp_path / "b.tfrecord", examples[4:])]
    pipe = tfr.TFRecordPipeline(files, LabelMap([3], ["cat"]), training=True, batch_size=2,
                                scales=(32,), max_size=64, backbone="tiny", seed=0,
                                shuffle_buffer=1024)
    assert pipe.shuffle_records(pipe.sizes) == 8
    next(iter(pipe.dataset()))
    reads = pipe.read_problems()["class label not in the label map (object skipped)"]
    assert 1 <= reads <= 16  # read-ahead may parse a few more blocks; uncapped: >= 128
    # A set larger than the buffer keeps it.
    assert pipe.shuffle_records([s * 1000 for s in pipe.sizes]) == 1024


def test_records_parsed_in_a_batch_decode_as_when_parsed_alone(tmp_path):
    # The stream parses a block of records at once, padding their per-object lists to the
    # longest one: a record's neighbours (more boxes, bad lengths, NaNs, no boxes, crowd
    # regions) must change nothing in what it decodes to.
    image = _jpeg(20, 40)
    examples = [
        foreign_example(image, [[0.1, 0.1, 0.5, 0.5]], [3], "1"),
        foreign_example(image, [[-0.5, 0.2, 0.5, 1.25], [0.2, 0.2, 0.3, 0.3],
                                [0.1, 0.5, 0.6, 0.9]], [7, 3, 9], "2", crowd=[0, 1, 0]),
        foreign_example(image, [], [], "3"),
        foreign_example(image, [[np.nan, 0, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2]], [3, 7], "4",
                        image__object__difficult=([1, 0], "int")),
        foreign_example(image, [[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]], [3], "5"),
        foreign_example(b"not an image", [[0.1, 0.1, 0.5, 0.5]], [3], "name.jpg"),
        foreign_example(image, [[0.3, 0.3, 0.2, 0.9]], [7], ""),
    ]
    shard = _write_shard(tmp_path / "a.tfrecord", examples)
    decoder = tfr.ExampleDecoder(LabelMap([3, 7], ["cat", "dog"]))
    sizes = [os.path.getsize(shard)]
    batched = list(decoder.stream(tfr.read_blocks([shard], sizes)).map(decoder.finish))
    alone = list(tfr.read_shards([shard], sizes).map(decoder))
    assert len(batched) == len(alone) == len(examples) + 1  # + the end-of-shard element
    for together, single in zip(batched, alone, strict=True):
        assert together.keys() == single.keys()
        for key in together:
            np.testing.assert_array_equal(together[key].numpy(), single[key].numpy(), key)
    # Spot checks of the values themselves: record 2 keeps its one box (label 7 -> class 2,
    # [-0.5, 0.2, 0.5, 1.25] clipped to [0, 0.2, 0.5, 1] -> [0, 8, 10, 40] px on 20x40), its
    # crowd region and drops the unknown label 9; record 3 has no box; record 6's id is a hash.
    np.testing.assert_allclose(batched[1]["boxes"].numpy(), [[0, 8, 10, 40]], atol=1e-4)
    assert batched[1]["classes"].numpy().tolist() == [2]
    np.testing.assert_allclose(batched[1]["crowd"].numpy(), [[4, 8, 6, 12]], atol=1e-4)
    assert batched[2]["boxes"].shape == (0, 4) and bool(batched[2]["ok"])
    assert batched[3]["difficult"].numpy().tolist() == [False]
    assert int(batched[5]["image_id"]) >= 2**62 and not bool(batched[5]["ok"])


def test_a_key_of_the_wrong_type_is_named_before_reading(tmp_path):
    image = _jpeg(16, 16)
    shard = _write_shard(tmp_path / "a.tfrecord", [foreign_example(
        image, [[0.1, 0.1, 0.6, 0.6]], [3], "1", image__object__area=([12], "int"))])
    with pytest.raises(ValueError, match="a.tfrecord: image/object/area is stored as "
                                         "int64_list; the OD API format stores it as "
                                         "float_list"):
        tfr.TFRecordPipeline([shard], LabelMap([3], ["cat"]), training=False, batch_size=1,
                             scales=(16,), max_size=16, backbone="tiny")


def test_each_worker_reads_its_own_shards(tmp_path):
    image = _jpeg(16, 16)
    files = [_write_shard(tmp_path / f"s{k}.tfrecord",
                          [foreign_example(image, [[0.1, 0.1, 0.6, 0.6]], [3], f"{k}{i}")
                           for i in range(2)]) for k in range(1, 4)]
    label_map = LabelMap([3], ["cat"])
    pipe = tfr.TFRecordPipeline(files, label_map, training=False, batch_size=2, scales=(16,),
                                max_size=16, backbone="tiny")
    seen = []
    for pid in range(2):
        # What distribute_datasets_from_function hands each worker under
        # MultiWorkerMirroredStrategy (one input pipeline per worker).
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                         num_replicas_in_sync=2)
        assert pipe.worker_files(ctx) == files[pid::2]
        batches = _batches(pipe, ctx)
        assert max(len(t["image_id"]) for _, t in batches) == 1  # per-replica batch
        seen.append({int(i) for _, t in batches for i in t["image_id"]})
    assert seen == [{10, 11, 30, 31}, {20, 21}]
    one = tfr.TFRecordPipeline(files[:1], label_map, training=True, batch_size=4, scales=(16,),
                               max_size=16, backbone="tiny", source_flag="--config.data.x=y")
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    with pytest.raises(ConfigError, match=r"1 TFRecord shard\(s\) \(--config.data.x=y\) cannot "
                                          r"be split over 2 workers.*--num_shards=2"):
        one.dataset(ctx)


def test_float_masks_read_like_png_masks(tmp_path):
    # The same two 6x8 masks as PNG strings and as one flat float list (objects x H x W).
    masks = np.zeros((2, 6, 8), np.uint8)
    masks[0, 1:3, 1:4] = 1
    masks[1, 2:6, 4:8] = 1
    image = _jpeg(6, 8)
    boxes = [[1 / 6, 1 / 8, 3 / 6, 4 / 8], [2 / 6, 4 / 8, 1.0, 1.0]]
    pngs = []
    for m in masks:
        out = io.BytesIO()
        Image.fromarray(m * 255).save(out, format="PNG")
        pngs.append(out.getvalue())
    png_file = _write_shard(tmp_path / "png.tfrecord",
                            [foreign_example(image, boxes, [3, 3], "1", masks=pngs)])
    float_file = _write_shard(tmp_path / "float.tfrecord", [foreign_example(
        image, boxes, [3, 3], "1",
        image__object__mask=(masks.astype(np.float32).ravel().tolist(), "float"))])
    label_map = LabelMap([3], ["cat"])
    assert tfr.detect_mask_format(tfr.peek_records([png_file])) == "png"
    assert tfr.detect_mask_format(tfr.peek_records([float_file])) == "float"
    # One record per shard, masks only in the sixth shard: the start-up peek reads on past the
    # first four shards (those the stream starts with) until it has seen 20 records.
    bare = [_write_shard(tmp_path / f"bare{i}.tfrecord", [foreign_example(image, boxes, [3, 3],
                                                                          str(i + 2))])
            for i in range(5)]
    peeked = tfr.peek_records([*bare, png_file])
    assert [path for path, _ in peeked] == [*bare, png_file]
    assert tfr.detect_mask_format(peeked) == "png"
    assert tfr.detect_mask_format(tfr.peek_records(bare)) is None
    for path in (png_file, float_file):
        (record,), report = tfr.read_tfrecord_records([path], label_map, with_masks=True)
        np.testing.assert_array_equal(record.instance_masks(), masks)
        assert report.num_skipped == 0
    # A float list of the wrong length drops the record, counted.
    short = _write_shard(tmp_path / "short.tfrecord", [foreign_example(
        image, boxes, [3, 3], "1", image__object__mask=([1.0] * 10, "float"))])
    records, report = tfr.read_tfrecord_records([short], label_map, with_masks=True)
    assert not records and report.num_skipped == 1
    # A PNG mask of another size than the image, or bytes that are no PNG: found from the
    # headers before decoding, the record skipped and counted, in the ground-truth pass and
    # in the training stream alike; the good record beside them is read.
    out = io.BytesIO()
    Image.fromarray(np.ones((5, 8), np.uint8) * 255).save(out, format="PNG")
    bad = _write_shard(tmp_path / "bad.tfrecord", [
        foreign_example(image, boxes, [3, 3], "1", masks=[pngs[0], out.getvalue()]),
        foreign_example(image, boxes, [3, 3], "2", masks=[pngs[0], b"not a png"]),
        foreign_example(image, boxes, [3, 3], "3", masks=pngs)])
    reason = "instance masks that are not PNGs or floats of the image size (record skipped)"
    records, report = tfr.read_tfrecord_records([bad], label_map, with_masks=True)
    assert [r.image_id for r in records] == [3] and dict(report.skipped) == {reason: 2}
    pipe = tfr.TFRecordPipeline([bad], label_map, training=True, shuffle=False, repeat=False,
                                batch_size=1, backbone="tiny", scales=(8,), max_size=8,
                                with_masks=True, mask_crop_size=4)
    assert [int(t["image_id"][0]) for _, t in pipe.dataset()] == [3]
    assert pipe.read_problems() == {reason: 2}


@pytest.mark.parametrize("mask_format", ["png", "float"])
def test_a_shard_of_images_without_objects_reads_to_empty_targets(tmp_path, mask_format):
    # 70 negatives in the second shard: more than a block of records without any object (or
    # mask). Unbatching a component with rows but no elements kills the process in TF 2.21,
    # so the parse keeps one padded object column; the records read as zero objects.
    image = _jpeg(6, 8)
    mask = np.zeros((6, 8), np.uint8)
    mask[1:4, 2:6] = 1
    if mask_format == "png":
        out = io.BytesIO()
        Image.fromarray(mask * 255).save(out, format="PNG")
        masked = {"masks": [out.getvalue()]}
    else:
        masked = {"image__object__mask": (mask.astype(np.float32).ravel().tolist(), "float")}
    first = _write_shard(tmp_path / "a.tfrecord",
                         [foreign_example(image, [[1 / 6, 2 / 8, 4 / 6, 6 / 8]], [3], "1",
                                          **masked)])
    negatives = _write_shard(tmp_path / "b.tfrecord",
                             [foreign_example(image, [], [], str(i)) for i in range(2, 72)])
    label_map = LabelMap([3], ["cat"])
    records, report = tfr.read_tfrecord_records([first, negatives], label_map, with_masks=True)
    assert sorted(r.image_id for r in records) == list(range(1, 72))
    assert report.num_skipped == 0
    by_id = {r.image_id: r for r in records}
    np.testing.assert_array_equal(by_id[1].instance_masks(), mask[None])
    for image_id in range(2, 72):
        assert by_id[image_id].num_instances == 0
        assert by_id[image_id].instance_masks().shape[0] == 0
    # The evaluation stream (no skip of empty images) feeds them with no box.
    pipe = tfr.TFRecordPipeline([first, negatives], label_map, training=False, batch_size=1,
                                backbone="tiny", scales=(16,), max_size=16, with_masks=True,
                                mask_crop_size=4)
    counts = {int(t["image_id"][0]): int(tf.reduce_sum(tf.cast(t["classes"][0] > 0, tf.int32)))
              for _, t in pipe.dataset()}
    assert counts == {1: 1, **dict.fromkeys(range(2, 72), 0)}


def test_crop_masks_matches_the_numpy_crop(rng):
    from tf_rcnn.data import masks as masks_lib

    masks = (rng.uniform(size=(3, 17, 23)) > 0.5).astype(np.uint8)
    boxes = np.asarray([[0, 0, 17, 23], [2.3, 4.7, 9.1, 20.2], [5, 5, 6, 6]], np.float32)
    want = masks_lib.crop_masks_to_boxes(masks, boxes, 7)
    got = tfr.crop_masks_to_boxes(tf.constant(masks), tf.constant(boxes), 7).numpy()
    np.testing.assert_array_equal(got, want)


def test_builder_messages_name_the_flags(shapes, tmp_path):
    from tests.support import recipe
    from tf_rcnn.data.builder import build_input_pipeline, load_split

    _, label_map, files = shapes
    config = recipe("shapes_faster_rcnn")
    config.data.dataset = "tfrecord"
    with pytest.raises(ConfigError, match=r"--config.data.train_files is unset"):
        load_split(config, "train")
    missing = str(tmp_path / "nothing-*.tfrecord")
    config.data.train_files = missing
    flag = f"--config.data.train_files={missing}"
    with pytest.raises(ConfigError, match=re.escape(f"{flag}: no file matches {missing}.")):
        load_split(config, "train")
    # The label map beside the shards (the writer's) is found; training data is not read.
    config.data.train_files = os.path.join(os.path.dirname(files[0]), "train-*")
    source, found, _ = load_split(config, "train")
    assert isinstance(source, tfr.TFRecordFiles) and source.files == files
    assert found == label_map
    config.data.label_map = str(tmp_path / "absent.pbtxt")
    with pytest.raises(ConfigError, match=r"--config.data.label_map=.*absent.pbtxt: label map"):
        load_split(config, "train")
    # Records whose ids are all outside the label map: said at start-up, not an endless read.
    config.data.label_map = str(tmp_path / "other.pbtxt")
    (tmp_path / "other.pbtxt").write_text("item { id: 40 name: 'kite' }")
    with pytest.raises(ConfigError, match=r"None of the first records of --config.data.train_"
                                          r"files=.* has a box to train on \(\d+ class label "
                                          r"not in the label map.*other.pbtxt"):
        load_split(config, "train")
    # Validation data is read once, into records; a model with masks on mask-less records.
    config.data.label_map = ""
    config.data.val_files = config.data.train_files
    records, _, annotation_file = load_split(config, "val", label_map=label_map)
    assert len(records) == 6 and annotation_file is None
    bare = tfr.write_tfrecords(records, label_map, str(tmp_path / "bare" / "train"), 1,
                               with_masks=False)
    config.data.train_files = bare[0]
    source, _, _ = load_split(config, "train", with_masks=True)
    with pytest.raises(ConfigError, match=r"predicts instance masks, but the records of "
                                          r"--config.data.train_files=.*have none"):
        build_input_pipeline(config, source, label_map, training=True, with_masks=True)


def test_without_a_label_map_the_records_ids_and_texts_are_the_classes(tmp_path):
    image = _jpeg(8, 8)
    box = [[0.1, 0.1, 0.9, 0.9]]
    shard = _write_shard(tmp_path / "s.tfrecord", [
        foreign_example(image, box, [7], "1", image__object__class__text=([b"dog"], "bytes")),
        foreign_example(image, box * 2, [3, 7], "2",
                        image__object__class__text=([b"cat", b"dog"], "bytes")),
        foreign_example(image, box, [5], "3", crowd=[1])])  # a crowd region: not a class
    label_map, origin = tfr.resolve_label_map("", [shard])
    assert origin == "the records' class ids"
    assert label_map == LabelMap([3, 7], ["cat", "dog"])


def test_a_models_classes_are_found_in_tfrecords_by_the_one_label_map_rule(shapes, tmp_path):
    # The shards' label_map.pbtxt says 1 square, 2 circle, 3 triangle. A model trained on data
    # that gave the same names the ids 11/22/33 reads them by name (its class i keeps its name,
    # with the data's id); a model class the data does not name is an error listing both maps.
    from tests.support import recipe
    from tf_rcnn.data.builder import load_split

    _, label_map, files = shapes
    config = recipe("shapes_faster_rcnn")
    config.data.dataset = "tfrecord"
    config.data.val_files = config.data.train_files = os.path.join(
        os.path.dirname(files[0]), "train-*")
    model = LabelMap([33, 11, 22], ["triangle", "square", "circle"])
    records, matched, _ = load_split(config, "val", label_map=model)
    assert matched.names == ["triangle", "square", "circle"]
    assert matched.dataset_ids == [label_map.dataset_ids[label_map.names.index(n)]
                                   for n in matched.names]
    own, _, _ = load_split(config, "val")
    # Same boxes, classes renumbered name for name (the data's class c is the model's
    # matched.from_name(label_map.name(c))).
    table = np.array([0] + [matched.from_name(n) for n in label_map.names])
    for a, b in zip(records, own, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.classes, table[b.classes])
    _, train_map, _ = load_split(config, "train", label_map=model)
    assert train_map == matched
    with pytest.raises(ConfigError, match=r"\['kite'\] are not in --config.data.val_files=.*"
                                          r"Model classes: .*kite.*Categories of"):
        load_split(config, "val", label_map=LabelMap([1, 5], ["square", "kite"]))


def _reference_filters(boxes, labels, crowd, difficult, h, w, ids, max_instances, max_crowd):
    """The training filters of one record from their definition (as the file pipeline applies
    them to a record): objects of a known label, not crowd, not difficult; none left -> the
    record is left out; more than ``max_instances`` -> the largest by pixel area, equal areas
    the first one, kept in their order; crowd regions likewise with ``max_crowd``. Returns
    ``(boxes, classes, crowd_boxes, counts)`` (None for the first three when left out)."""
    pixels = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0, 1) * [h, w, h, w]
    area = (pixels[:, 2] - pixels[:, 0]) * (pixels[:, 3] - pixels[:, 1])
    objects = [i for i in range(len(labels)) if not crowd[i] and labels[i] in ids]
    counts = {"difficult": sum(bool(difficult[i]) for i in objects)}
    objects = [i for i in objects if not difficult[i]]
    counts["empty"] = int(not objects)
    regions = [i for i in range(len(labels)) if crowd[i]]

    def largest(indices, limit):
        if len(indices) <= limit:
            return indices
        order = np.argsort(-area[indices], kind="stable")[:limit]
        return sorted(np.asarray(indices)[order].tolist())

    counts["beyond"] = max(len(objects) - max_instances, 0)
    counts["crowd_beyond"] = max(len(regions) - max_crowd, 0)
    if not objects:
        return None, None, None, counts
    objects, regions = largest(objects, max_instances), largest(regions, max_crowd)
    classes = [ids.index(labels[i]) + 1 for i in objects]
    return pixels[objects], classes, pixels[regions].reshape(-1, 4), counts


def test_training_filters_per_batch_match_a_per_record_reference(tmp_path):
    # One parse batch mixing every filter. Image 20x40; ids 3 -> class 1, 7 -> class 2.
    image = _jpeg(20, 40)
    ids = [3, 7]
    # name: (boxes normalised yxyx, labels, is_crowd, difficult)
    cases = {
        # Areas (normalised) .25, .0625, .25, .375, .0625; max_instances=2 keeps the largest
        # two: [0, 0, .75, .5] (.375), then of the two .25 boxes the first one: objects 0
        # and 3 in their order, i.e. [0, 0, 10, 20] and [0, 0, 15, 20] px; 3 dropped.
        "1": ([[0, 0, .5, .5], [0, 0, .25, .25], [.5, .5, 1, 1], [0, 0, .75, .5],
               [.25, .25, .5, .5]], [3, 7, 3, 7, 3], [0] * 5, [0] * 5),
        "2": ([[0, 0, .5, .5], [.25, 0, .75, .5], [0, .5, .5, 1]], [3, 3, 7], [0] * 3,
              [1, 0, 1]),                                  # 2 difficult left out, 1 kept
        "3": ([[0, 0, .5, .5]], [7], [0], [1]),            # all difficult: left out
        "4": ([], [], [], []),                             # no boxes: left out
        # Crowd areas .0625, .25, .125 (max_crowd=2 keeps regions 1 and 2), one object.
        "5": ([[0, 0, .25, .25], [0, 0, .5, .5], [.5, .5, 1, .75], [.25, .25, .75, .75]],
              [0, 0, 0, 7], [1, 1, 1, 0], [0] * 4),
        "6": ([[0, 0, .5, .5], [.5, .5, 1, 1]], [9, 3], [0, 0], [0, 0]),  # unknown label 9
        "7": ([[-.25, 0, .5, .5], [0, 0, .125, .125], [0, 0, .25, .25]], [3, 7, 7],
              [0] * 3, [0, 0, 0]),                         # clipped; 3 > 2: smallest out
    }
    examples = [foreign_example(image, b, labels, name, crowd=crowd,
                                image__object__difficult=(diff, "int"))
                for name, (b, labels, crowd, diff) in cases.items()]
    # Not usable before any filter: their objects are not counted by the filters either.
    examples.append(foreign_example(b"not an image", [[0, 0, .5, .5]] * 3, [3, 3, 3], "8",
                                    image__object__difficult=([1, 1, 1], "int")))
    examples.append(foreign_example(image, [[0, 0, .5, .5]] * 3, [3, 3], "9"))  # lengths
    shard = _write_shard(tmp_path / "a.tfrecord", examples)
    label_map = LabelMap(ids, ["cat", "dog"])
    decoder = tfr.ExampleDecoder(label_map, exclude_difficult=True, skip_empty=True,
                                 max_instances=2, max_crowd=2)
    ds = tfr.read_blocks([shard], [os.path.getsize(shard)])
    read = {}
    totals = np.zeros(len(tfr.PROBLEMS), np.int64)
    for e in decoder.stream(ds).map(decoder.finish):
        totals += e["problems"].numpy()
        read[int(e["image_id"])] = e
    want_counts = {"difficult": 0, "empty": 0, "beyond": 0, "crowd_beyond": 0}
    usable = set()
    for name, (b, labels, crowd, diff) in cases.items():
        boxes, classes, regions, counts = _reference_filters(b, labels, crowd, diff, 20, 40,
                                                             ids, 2, 2)
        for key, value in counts.items():
            want_counts[key] += value
        got = read[int(name)]
        assert bool(got["ok"]) == (boxes is not None), name
        if boxes is None:
            continue
        usable.add(int(name))
        np.testing.assert_allclose(got["boxes"].numpy(), boxes, atol=1e-4, err_msg=name)
        assert got["classes"].numpy().tolist() == classes, name
        np.testing.assert_allclose(got["crowd"].numpy(), regions, atol=1e-4, err_msg=name)
        assert not got["difficult"].numpy().any()
    assert not bool(read[8]["ok"]) and not bool(read[9]["ok"])
    # By hand: difficult 2 (record 2) + 1 (record 3); empty: records 3 and 4; beyond:
    # 3 (record 1) + 1 (record 7); crowd beyond: 1 (record 5).
    assert want_counts == {"difficult": 3, "empty": 2, "beyond": 4, "crowd_beyond": 1}
    np.testing.assert_allclose(read[1]["boxes"].numpy(), [[0, 0, 10, 20], [0, 0, 15, 20]])
    got_counts = dict(zip(want_counts, totals[tfr.DIFFICULT_LEFT_OUT:].tolist(), strict=True))
    assert got_counts == want_counts

    # The training pipeline counts the same per batch (one epoch, in order) and serves the
    # usable records only.
    pipe = tfr.TFRecordPipeline([shard], label_map, training=True, shuffle=False,
                                repeat=False, random_flip=False, batch_size=1, scales=(20,),
                                max_size=40, backbone="tiny", max_instances=2, max_crowd=2,
                                seed=0, deterministic=True)
    served = {int(t["image_id"][0]): t for _, t in _batches(pipe)}
    assert set(served) == usable == {1, 2, 5, 6, 7}
    np.testing.assert_allclose(served[1]["boxes"][0], [[0, 0, 10, 20], [0, 0, 15, 20]],
                               atol=1e-4)
    counts = pipe.read_problems()
    assert counts == {
        "difficult boxes left out of training": 3,
        "images without boxes left out of training": 2,
        "instances beyond max_instances dropped": 4,
        "crowd regions beyond max_crowd dropped": 1,
        "class label not in the label map (object skipped)": 1,
        "box partly outside [0, 1] (clipped)": 1,
        "undecodable image bytes (record skipped)": 1,
        "mismatched lengths of the per-object lists (record skipped)": 1,
    }


def test_image_bytes_check_of_a_batch_is_the_one_of_each_image():
    from tf_rcnn.data.pipeline import image_bytes_ok

    jpeg = _jpeg(40, 60)
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, format="PNG")
    png = png.getvalue()
    cases = [jpeg, jpeg[:-2], jpeg + b"\0" * 100, jpeg + b"x" * 1030, png, png[:-8],
             b"GIF89a....", b"BM", b"", b"\xff", b"\xff\xd8\xff\xd9", b"\x89PNG\r\n\x1a\nIEND",
             b"junk\xff\xd9"]
    # By hand: whole JPEG/PNG (padding after the end marker within 1 KB is fine), a JPEG
    # whose marker is more than 1 KB from the end, a cut JPEG/PNG, and bytes of no format.
    want = [True, False, True, False, True, False, True, True, False, False, True, True, False]
    assert [bool(image_bytes_ok(tf.constant(c))) for c in cases] == want
    assert image_bytes_ok(tf.constant(cases)).numpy().tolist() == want
