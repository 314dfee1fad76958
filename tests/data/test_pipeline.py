"""InputPipeline: geometry to 1e-3 px, masks, batching, determinism, sharding, decoding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_rcnn.data import masks as masks_lib
from tf_rcnn.data.coco import load_coco
from tf_rcnn.data.pipeline import (
    CAFFE_MEAN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputPipeline,
    decode_image,
    encoded_image_sizes,
    mirror_pad,
    normalize_pixels,
    pixel_stats_for_backbone,
    preprocess_image_for_inference,
    resize_geometry,
    resize_image,
    resize_normalize_pad,
    resized_shape,
)
from tf_rcnn.data.records import DetectionRecord
from tf_rcnn.data.shapes import generate_shapes_dataset
from tf_rcnn.label_map import LabelMap

from .helpers import write_boxes_image, write_image

LABELS = LabelMap.from_names(["a", "b"])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shapes_pipe"))
    path = generate_shapes_dataset(out, num_images=10, image_size=64, seed=1)
    return load_coco(path, os.path.join(out, "images"))


def _record(tmp_path, name, h, w, boxes, classes=None, image_id=1) -> DetectionRecord:
    int_boxes = [[int(v) for v in b] for b in boxes]
    path = write_boxes_image(str(tmp_path / f"{name}.png"), h, w, int_boxes)
    classes = classes if classes is not None else [1] * len(boxes)
    return DetectionRecord(path, image_id, h, w, np.asarray(boxes, np.float32), classes)


def _batches(pipe, n=None):
    it = iter(pipe.dataset())
    out = []
    for i, batch in enumerate(it):
        out.append(tf.nest.map_structure(lambda t: t.numpy(), batch))
        if n is not None and i + 1 >= n:
            break
    return out


def test_resize_and_flip_geometry_exact(tmp_path):
    # 40x60 image (h x w) resized with shorter side 50, cap 100:
    # scale = min(50/40, 100/60) = 1.25; canvas = ceil(40*1.25), ceil(60*1.25) = 50 x 75.
    # Box [4, 6, 20, 30] -> [5, 7.5, 25, 37.5]. Flipped first in original pixels:
    # x' = 60 - x -> [4, 30, 20, 54] -> * 1.25 = [5, 37.5, 25, 67.5].
    rec = _record(tmp_path, "g", 40, 60, [[4, 6, 20, 30]])
    for flip, expected in ((False, [5, 7.5, 25, 37.5]), (True, [5, 37.5, 25, 67.5])):
        pipe = InputPipeline([rec], LABELS, backbone="tiny", training=True, batch_size=1,
                             scales=(50,), max_size=100, random_flip=flip,
                             flip_probability=1.0, seed=0, max_instances=3)
        images, t = _batches(pipe, 1)[0]
        assert t["scale"][0].tolist() == pytest.approx([1.25, 1.25])
        np.testing.assert_array_equal(t["image_shape"][0], [50, 75])
        np.testing.assert_array_equal(t["original_shape"][0], [40, 60])
        assert bool(t["flipped"][0]) == flip
        np.testing.assert_allclose(t["boxes"][0, 0], expected, atol=1e-3)
        np.testing.assert_array_equal(t["boxes"][0, 1:], -1)
        np.testing.assert_array_equal(t["classes"][0], [1, -1, -1])
        assert images.shape == (1, 64, 96, 3)  # padded to multiples of 32
        # The white box lands where the transformed box says (image/box alignment).
        y1, x1, y2, x2 = np.asarray(expected)
        inside = images[0, int(y1) + 2:int(y2) - 2, int(x1) + 2:int(x2) - 2]
        outside = images[0, int(y2) + 2:50, :]
        assert inside.mean() > outside.mean() + 2.0
        np.testing.assert_array_equal(images[0, 50:], 0.0)  # padding is 0 after normalising


def test_max_size_caps_longer_side(tmp_path):
    # 20x200: min(50/20, 100/200) = 0.5 -> canvas 10 x 100.
    rec = _record(tmp_path, "long", 20, 200, [[2, 10, 18, 190]])
    pipe = InputPipeline([rec], LABELS, backbone="tiny", training=False, batch_size=1, scales=(50,),
                         max_size=100, size_divisor=1)
    images, t = _batches(pipe)[0]
    assert images.shape == (1, 10, 100, 3)
    np.testing.assert_allclose(t["boxes"][0, 0], [1, 5, 9, 95], atol=1e-3)


def test_eval_keeps_every_image_once(shapes):
    records, label_map, _ = shapes
    pipe = InputPipeline(records, label_map, backbone="tiny", training=False, batch_size=4,
                         scales=(64,), max_size=64)
    batches = _batches(pipe)
    ids = np.concatenate([t["image_id"] for _, t in batches])
    assert sorted(ids.tolist()) == sorted(r.image_id for r in records)
    assert [len(t["image_id"]) for _, t in batches] == [4, 4, 2]
    assert not any(t["flipped"].any() for _, t in batches)


def test_training_batches_static_and_masks_follow_flip(shapes):
    records, label_map, _ = shapes
    pipe = InputPipeline(records, label_map, backbone="tiny", training=True, batch_size=4,
                         scales=(64,), max_size=64, with_masks=True, mask_crop_size=16, seed=5,
                         max_instances=6)
    images_spec, t_spec = pipe.dataset().element_spec
    assert images_spec.shape.as_list() == [4, 64, 64, 3]
    assert t_spec["masks"].shape.as_list() == [4, 6, 16, 16]
    by_id = {r.image_id: r for r in records}
    seen_flip = set()
    for _, t in _batches(pipe, 4):
        for b in range(4):
            rec = by_id[int(t["image_id"][b])]
            crops = masks_lib.crop_masks_to_boxes(rec.instance_masks(), rec.boxes, 16)
            if t["flipped"][b]:
                crops = crops[:, :, ::-1]
            m = rec.num_instances
            np.testing.assert_array_equal(t["masks"][b, :m], crops)
            np.testing.assert_array_equal(t["masks"][b, m:], 0)
            seen_flip.add(bool(t["flipped"][b]))
    assert seen_flip == {True, False}


def test_deterministic_mode_repeats_batches(shapes):
    records, label_map, _ = shapes
    kwargs = {"backbone": "tiny", "training": True, "batch_size": 2, "scales": (48, 64),
              "max_size": 64, "seed": 11, "deterministic": True, "scale_jitter": (0.8, 1.2)}
    first = _batches(InputPipeline(records, label_map, **kwargs), 3)
    second = _batches(InputPipeline(records, label_map, **kwargs), 3)
    for (i1, t1), (i2, t2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(t1["image_id"], t2["image_id"])
    with pytest.raises(ValueError, match="seed"):
        InputPipeline(records, label_map, backbone="tiny", training=True, batch_size=2,
                      deterministic=True)


def test_input_context_shards_and_uses_per_replica_batch(shapes):
    records, label_map, _ = shapes
    pipe = InputPipeline(records, label_map, backbone="tiny", training=False, batch_size=4,
                         scales=(64,), max_size=64)
    ids = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                         num_replicas_in_sync=2)
        batches = list(pipe.dataset(ctx))
        assert max(len(t["image_id"]) for _, t in batches) == 2
        ids.append({int(i) for _, t in batches for i in t["image_id"]})
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {r.image_id for r in records}


def test_works_with_distribute_datasets_from_function(shapes):
    records, label_map, _ = shapes
    pipe = InputPipeline(records, label_map, backbone="tiny", training=True, batch_size=2,
                         scales=(64,), max_size=64, seed=0)
    strategy = tf.distribute.get_strategy()
    dist = strategy.distribute_datasets_from_function(pipe.dataset)
    images, targets = next(iter(dist))
    assert images.shape[0] == 2 and targets["boxes"].shape == (2, 100, 4)


def test_aspect_ratio_grouping(tmp_path):
    records = []
    for i in range(8):
        h, w = (30, 50) if i % 2 else (50, 30)
        records.append(_record(tmp_path, f"ar{i}", h, w, [[2, 2, 20, 20]], image_id=i + 1))
    pipe = InputPipeline(records, LABELS, backbone="tiny", training=True, batch_size=2,
                         scales=(30,), max_size=50, seed=3)
    for _, t in _batches(pipe, 6):
        landscape = t["original_shape"][:, 1] >= t["original_shape"][:, 0]
        assert landscape.all() or not landscape.any()


def test_instances_beyond_limit_keep_largest(tmp_path):
    boxes = [[0, 0, 5, 5], [0, 0, 20, 20], [0, 0, 2, 2], [0, 0, 10, 10]]
    rec = _record(tmp_path, "many", 30, 30, boxes, classes=[1, 2, 1, 2])
    pipe = InputPipeline([rec], LABELS, backbone="tiny", training=True, batch_size=1, scales=(30,),
                         max_size=30, max_instances=2, random_flip=False, seed=0)
    assert pipe.stats == {"instances beyond max_instances=2 dropped": 2}
    _, t = _batches(pipe, 1)[0]
    np.testing.assert_allclose(t["boxes"][0], [[0, 0, 20, 20], [0, 0, 10, 10]])
    np.testing.assert_array_equal(t["classes"][0], [2, 2])


def test_decode_grayscale_rgba_and_16bit(tmp_path):
    gray = write_image(str(tmp_path / "g.png"), 5, 7, mode="L", value=77)
    rgba = write_image(str(tmp_path / "a.png"), 5, 7, mode="RGBA", value=200)
    jpeg = write_image(str(tmp_path / "j.jpg"), 5, 7, value=120, fmt="JPEG")
    arr16 = np.full((5, 7), 65535 // 3, np.uint16)  # 21845 / 257 = 85
    path16 = str(tmp_path / "d16.png")
    Image.fromarray(arr16).save(path16)
    for path, value in ((gray, 77), (rgba, 200), (jpeg, 120), (path16, 85)):
        image = decode_image(tf.io.read_file(path)).numpy()
        assert image.shape == (5, 7, 3), path
        assert abs(int(image[2, 3, 0]) - value) <= 2, (path, image[2, 3])


def test_sizes_from_image_headers_are_the_decoded_sizes():
    # Read without decoding (the TFRecord parse checks records with them): each must be the
    # size decode_image gives, for JPEG (baseline, progressive, grayscale, a 3 KB EXIF block
    # and a 70 KB ICC profile split over two APP2 segments before the frame header, fill
    # bytes before a marker), PNG (RGB, RGBA, gray, 16-bit), GIF and BMP; -1 for bytes that
    # do not decode (not an image, empty, a JPEG cut before its frame header).
    import io

    rng = np.random.default_rng(0)
    blobs = []

    def encode(image, fmt, **options):
        out = io.BytesIO()
        image.save(out, format=fmt, **options)
        blobs.append(out.getvalue())

    for h, w in ((20, 40), (300, 17), (1, 1), (70, 1025)):
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        exif = Image.Exif()
        exif[0x010E] = "x" * 3000
        encode(image, "JPEG")
        encode(image, "JPEG", progressive=True)
        encode(image.convert("L"), "JPEG")
        encode(image, "JPEG", exif=exif.tobytes(), icc_profile=b"\0" * 70000)
        encode(image, "PNG")
        encode(image.convert("RGBA"), "PNG")
        encode(image.convert("L"), "PNG")
        encode(Image.fromarray(pixels[..., 0].astype(np.uint16) * 257), "PNG")
        encode(image, "GIF")
        encode(image, "BMP")
    blobs.append(blobs[0][:2] + b"\xff\xff" + blobs[0][2:])  # fill bytes before APP0
    expected = [decode_image(tf.constant(b)).shape[:2].as_list() for b in blobs]
    blobs += [b"not an image", b"", blobs[0][:30]]
    expected += [[-1, -1]] * 3
    height, width = encoded_image_sizes(tf.constant(blobs))
    assert np.stack([height, width], 1).tolist() == expected
    # In a graph too (the parse runs in tf.data), on a batch with no JPEG at all.
    graph = tf.function(encoded_image_sizes)
    assert np.stack(graph(tf.constant(blobs[4:6])), 1).tolist() == expected[4:6]


def test_preprocess_for_inference_matches_eval_pipeline(tmp_path):
    rec = _record(tmp_path, "inf", 40, 60, [[4, 6, 20, 30]])
    pipe = InputPipeline([rec], LABELS, backbone="tiny", training=False, batch_size=1, scales=(50,),
                         max_size=100)
    images, t = _batches(pipe)[0]
    raw = tf.io.decode_png(tf.io.read_file(rec.image_path), channels=3)
    fn = tf.function(lambda x: preprocess_image_for_inference(
        x, (50,), 100, 32, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD))
    image, shape, scale = fn(raw)
    np.testing.assert_allclose(image.numpy(), images[0], atol=1e-5)
    np.testing.assert_array_equal(shape.numpy(), t["image_shape"][0])
    assert scale.numpy().tolist() == pytest.approx([1.25, 1.25])


def test_pixel_stats_table():
    # keras.applications ResNet weights are Caffe-trained: Caffe mean, no scaling.
    assert pixel_stats_for_backbone("resnet50") == ((123.68, 116.779, 103.939), (1.0, 1.0, 1.0))
    assert pixel_stats_for_backbone("tiny")[0] == (123.675, 116.28, 103.53)
    assert pixel_stats_for_backbone("vgg16")[1] == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="backbone"):
        pixel_stats_for_backbone("mystery")


@pytest.mark.parametrize("shape,pad", [((5, 7, 3), 1), ((5, 7, 3), 3), ((5, 7, 3), 5),
                                       ((1, 1, 3), 1), ((4, 9, 1), 4)])
def test_mirror_pad_is_symmetric_tf_pad(rng, shape, pad):
    image = rng.uniform(0, 255, shape).astype(np.float32)
    expected = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="SYMMETRIC").numpy()
    np.testing.assert_array_equal(mirror_pad(tf.constant(image), pad).numpy(), expected)
    # As a tensor too (resize_image's pad depends on the scale), and on uint8.
    pad_t = tf.constant(pad)
    np.testing.assert_array_equal(
        mirror_pad(tf.constant(image.astype(np.uint8)), pad_t).numpy(), expected.astype(np.uint8))
    # By hand for one row: [a b c] padded by 2 is [b a a b c c b].
    row = mirror_pad(tf.constant([[[1.0], [2.0], [3.0]]] * 2), 2).numpy()[2, :, 0]
    assert row.tolist() == [2, 1, 1, 2, 3, 3, 2]


@pytest.mark.parametrize("shape", [(5, 7, 3), (2, 4, 6, 3), (1, 1, 3)])
@pytest.mark.parametrize("stats", [
    (IMAGENET_MEAN, IMAGENET_STD),         # both steps
    (CAFFE_MEAN, (1.0, 1.0, 1.0)),         # mean only: no division
    ((0.0, 0.0, 0.0), (2.0, 3.0, 4.0)),    # std only
    ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),    # identity: the image unchanged
])
def test_normalize_pixels_is_the_per_channel_broadcast_bit_for_bit(rng, shape, stats):
    # The row-wise computation must give exactly NumPy's per-channel broadcast: the same two
    # IEEE operations per value, only laid out differently.
    mean, std = stats
    image = rng.uniform(0, 255, shape).astype(np.float32)
    expected = (image - np.float32(mean)) / np.float32(std)
    out = normalize_pixels(tf.constant(image), mean, std).numpy()
    assert out.shape == shape
    np.testing.assert_array_equal(out, expected)
    # Each channel moved by its own statistics (a mix-up of the tiling would show here).
    if stats == (IMAGENET_MEAN, IMAGENET_STD):
        value = np.full(shape, 100.0, np.float32)
        out = normalize_pixels(tf.constant(value), mean, std).numpy()
        for c in range(3):
            np.testing.assert_allclose(out[..., c], (100.0 - mean[c]) / std[c], rtol=1e-6)
    with pytest.raises(ValueError, match="differ in length"):
        normalize_pixels(tf.constant(image), mean, std[:2])
    if stats != ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)):
        # One channel is not three: an error, not a silent re-tiling of the rows.
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
            normalize_pixels(tf.constant(image[..., :1]), mean, std)
        gray = tf.function(lambda x: normalize_pixels(x, mean, std),
                           input_signature=[tf.TensorSpec([None, None, None])])
        with pytest.raises(tf.errors.InvalidArgumentError):
            gray(tf.zeros([6, 2, 1]))  # 12 values: rows of 2 * 3 would fit


def test_corrupt_file_at_run_time_is_skipped_not_fatal(tmp_path):
    # A file that passed the load-time check but is corrupt when read (e.g. replaced later).
    good = _record(tmp_path, "fine", 20, 20, [[2, 2, 10, 10]], image_id=1)
    bad_path = tmp_path / "bad.png"
    bad_path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    bad = DetectionRecord(str(bad_path), 2, 20, 20, np.asarray([[2, 2, 10, 10]]), [1])
    pipe = InputPipeline([bad, good], LABELS, backbone="tiny", training=False, batch_size=2,
                         scales=(20,), max_size=20)
    batches = _batches(pipe)
    assert [int(i) for _, t in batches for i in t["image_id"]] == [1]


def _reference_resize(image: np.ndarray, scale, out_h: int, out_w: int) -> np.ndarray:
    """NumPy bilinear resize by exactly ``scale`` (one factor, or (y, x)): output pixel c
    samples the input at (c + 0.5) / scale - 0.5, clamped to the image (edge values), loops
    for clarity."""
    scale_y, scale_x = (scale, scale) if np.isscalar(scale) else scale
    h, w, _ = image.shape
    out = np.zeros((out_h, out_w, image.shape[2]), np.float64)
    for i in range(out_h):
        y = min(max((i + 0.5) / scale_y - 0.5, 0.0), h - 1)
        y0 = int(np.floor(y))
        y1 = min(y0 + 1, h - 1)
        fy = y - y0
        for j in range(out_w):
            x = min(max((j + 0.5) / scale_x - 0.5, 0.0), w - 1)
            x0 = int(np.floor(x))
            x1 = min(x0 + 1, w - 1)
            fx = x - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x1])
                         + fy * ((1 - fx) * image[y1, x0] + fx * image[y1, x1]))
    return out


@pytest.mark.parametrize("scale", [1.7, 1.0, 0.6])
def test_resize_image_matches_reference(rng, scale):
    image = rng.uniform(0, 255, (7, 9, 3)).astype(np.float32)
    shape = resized_shape(7, 9, scale).numpy()
    # e.g. scale 1.7: ceil(7 * 1.7) = ceil(11.9) = 12, ceil(9 * 1.7) = ceil(15.3) = 16.
    out = resize_image(tf.constant(image), [scale, scale], shape).numpy()
    np.testing.assert_allclose(out, _reference_resize(image, scale, *shape), atol=1e-2)


@pytest.mark.parametrize("rule", ["tf_rcnn", "torchvision"])
def test_an_image_that_keeps_its_size_is_not_resampled(rng, rule):
    # Scale 1 onto its own size: every output pixel is the input pixel (normalised), exactly;
    # resampling would give the same up to float rounding of the sample positions.
    image = rng.integers(0, 256, (6, 9, 3)).astype(np.uint8)
    expected = (image.astype(np.float32) - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    out = resize_normalize_pad(tf.constant(image), tf.constant([1.0, 1.0]), tf.constant([6, 9]),
                               IMAGENET_MEAN, IMAGENET_STD, 1, rule)
    np.testing.assert_array_equal(out.numpy(), expected)
    # Padded to the stride after it, as when resampled.
    out = resize_normalize_pad(tf.constant(image), tf.constant([1.0, 1.0]), tf.constant([6, 9]),
                               IMAGENET_MEAN, IMAGENET_STD, 4, rule).numpy()
    assert out.shape == (8, 12, 3) and not out[6:].any() and not out[:, 9:].any()
    # Any other scale is resampled, as resize_image does it.
    out = resize_normalize_pad(tf.constant(image), tf.constant([2.0, 2.0]), tf.constant([12, 18]),
                               IMAGENET_MEAN, IMAGENET_STD, 1, rule).numpy()
    assert out.shape == (12, 18, 3)
    reference = resize_image(tf.constant(expected), tf.constant([2.0, 2.0]),
                             tf.constant([12, 18]), rule).numpy()
    np.testing.assert_allclose(out, reference, atol=1e-5)


def test_torchvision_resize_rule_geometry_and_samples(rng):
    # torchvision: s = min(320 / 301, 512 / 457) = min(1.063123, 1.120350) = 1.063123 (float64);
    # canvas floor(301 * s) = 320, floor(457 * s) = floor(485.847) = 485; the content is
    # stretched onto it, so each axis has its own factor: 320 / 301 and 485 / 457.
    shape, scale = resize_geometry(301, 457, 320.0, 512.0, "torchvision")
    assert shape.numpy().tolist() == [320, 485]
    np.testing.assert_allclose(scale.numpy(), [320 / 301, 485 / 457], rtol=1e-7)
    # The tf_rcnn rule on the same image: one factor, canvas rounded up (ceil(485.847) = 486).
    shape, scale = resize_geometry(301, 457, 320.0, 512.0, "tf_rcnn")
    assert shape.numpy().tolist() == [320, 486] and scale.numpy()[0] == scale.numpy()[1]
    # Samples: (c + 0.5) / scale_axis - 0.5 with edge values, like the NumPy reference.
    image = rng.uniform(0, 255, (7, 9, 3)).astype(np.float32)
    shape, scale = resize_geometry(7, 9, 10.0, 100.0, "torchvision")  # 10 x floor(12.857) = 12
    assert shape.numpy().tolist() == [10, 12]
    out = resize_image(tf.constant(image), scale, shape, "torchvision").numpy()
    np.testing.assert_allclose(out, _reference_resize(image, scale.numpy(), 10, 12), atol=1e-3)
    with pytest.raises(ValueError, match="data.resize_rule"):
        resize_geometry(7, 9, 10.0, 100.0, "bicubic")


def test_files_damaged_after_loading_are_named_and_only_they_are_skipped(tmp_path, capfd):
    # Files checked at load time, then truncated (JPEG, PNG), replaced by garbage or by an
    # image of another size before the run: evaluation keeps every good image and names each
    # bad file; training skips the batches that hold one (its batch size is static) and goes
    # on.
    records = [_record(tmp_path, f"im{i}", 20, 24, [[2, 2, 10, 10]], image_id=i + 1)
               for i in range(8)]
    jpeg = Path(write_image(str(tmp_path / "t.jpg"), 20, 24, fmt="JPEG")).read_bytes()
    records[1] = DetectionRecord(str(tmp_path / "t.jpg"), 2, 20, 24,
                                 np.asarray([[2, 2, 10, 10]], np.float32), [1])
    damaged = {2: jpeg[: len(jpeg) // 2], 4: b"not an image at all"}
    for image_id, data in damaged.items():
        Path(records[image_id - 1].image_path).write_bytes(data)
    png = Path(records[5].image_path).read_bytes()
    Path(records[5].image_path).write_bytes(png[: len(png) // 2])  # image 6, truncated PNG
    write_image(records[6].image_path, 30, 24)  # image 7, another size now
    bad = {2, 4, 6, 7}
    options = {"backbone": "tiny", "batch_size": 3, "scales": (20,), "max_size": 24}
    pipe = InputPipeline(records, LABELS, training=False, **options)
    ids = sorted(int(i) for _, t in _batches(pipe) for i in t["image_id"])
    assert ids == [1, 3, 5, 8]
    err = capfd.readouterr().err
    for image_id in bad:  # each named once (image 7 is also the filler of the short last batch)
        assert err.count(os.path.basename(records[image_id - 1].image_path)) == 1, image_id
    pipe = InputPipeline(records, LABELS, training=True, shuffle=True, seed=0,
                         group_by_aspect_ratio=False, **options)
    batches = _batches(pipe, 4)
    assert len(batches) == 4
    assert not bad & {int(i) for _, t in batches for i in t["image_id"]}


def test_pixel_statistics_come_from_the_backbone_or_are_given(tmp_path):
    rec = _record(tmp_path, "stats", 20, 20, [[2, 2, 10, 10]])
    with pytest.raises(ValueError, match="backbone=NAME"):
        InputPipeline([rec], LABELS, training=False, batch_size=1)  # no silent default
    resnet = InputPipeline([rec], LABELS, backbone="resnet50", training=False, batch_size=1)
    # keras.applications' ImageNet ResNets: Caffe mean, std 1 (not the ImageNet mean/std).
    assert resnet.pixel_mean == CAFFE_MEAN and resnet.pixel_std == (1.0, 1.0, 1.0)
    tiny = InputPipeline([rec], LABELS, backbone="tiny", training=False, batch_size=1)
    assert (tiny.pixel_mean, tiny.pixel_std) == (IMAGENET_MEAN, IMAGENET_STD)
    given = InputPipeline([rec], LABELS, backbone="resnet50", pixel_std=(2, 2, 2),
                          training=False, batch_size=1)
    assert given.pixel_mean == CAFFE_MEAN and given.pixel_std == (2.0, 2.0, 2.0)
