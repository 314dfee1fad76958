"""Proposal files end to end: write -> pipeline (resize, flip) -> Fast R-CNN; the dump_proposals
command on an RPN run directory; and a hand-written JSON file in the documented format that
trains and evaluates through run_training / evaluate_checkpoint (what train.py and eval.py run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.support import REPO, built_model
from tf_rcnn.config import ConfigError, load_config_file
from tf_rcnn.data.builder import build_input_pipeline, load_split
from tf_rcnn.data.coco import load_coco
from tf_rcnn.data.pipeline import InputPipeline
from tf_rcnn.data.proposal_dump import dump_proposals
from tf_rcnn.data.proposals import read_proposals, write_proposals
from tf_rcnn.data.shapes import generate_shapes_dataset
from tf_rcnn.evaluation.evaluate import evaluate_checkpoint
from tf_rcnn.evaluation.runner import make_predict_fn
from tf_rcnn.models import builder
from tf_rcnn.training import CheckpointManager, build_optimizer
from tf_rcnn.training.run import run_training


def shapes_records(root, num_images=4, size=64, seed=0):
    annotation_file = generate_shapes_dataset(str(root), num_images=num_images, image_size=size,
                                              seed=seed)
    records, label_map, _ = load_coco(annotation_file, os.path.join(str(root), "images"),
                                      include_masks=False)
    return records, label_map, annotation_file


def tiny(config_name, shapes_dir, size=64, images=4):
    config = load_config_file(os.path.join(REPO, "configs", config_name))
    m = config.model
    m.num_classes = 3  # some tests build the model without loading the data
    m.backbone.widths = (8, 8, 16, 16)
    m.neck.out_channels = 16
    m.roi_head.fc_dims = (32, 32)
    m.roi_head.batch_size_per_image = 16
    m.roi_head.detections_per_image = 10
    d = config.data
    d.shapes_dir = shapes_dir
    d.shapes_train_images = d.shapes_val_images = images
    d.shapes_val_seed = d.shapes_train_seed  # val = train images (overfit checks)
    d.shapes_image_size = size
    d.scales, d.max_size = (size,), size
    d.train_batch_size = d.eval_batch_size = 4
    config.eval.visualize = 0
    return config


def test_proposal_file_through_pipeline_into_the_model(tmp_path):
    # (.npz here; the hand-written test below goes through the .json reader.)
    records, label_map, _ = shapes_records(tmp_path / "shapes")
    # Proposals = each image's GT boxes (highest scores) + one fixed box, original pixels.
    extra = np.array([2.0, 3.0, 20.0, 30.0], np.float32)
    proposals = {}
    for rec in records:
        boxes = np.concatenate([rec.boxes, extra[None]])
        proposals[rec.image_id] = (boxes, np.linspace(1.0, 0.5, len(boxes)))
    path = str(tmp_path / "proposals.npz")
    write_proposals(path, proposals)
    pipeline = InputPipeline(records, label_map, backbone="tiny", training=True, batch_size=4,
                             scales=(96,), max_size=96, random_flip=True, proposals=path,
                             max_proposals=8, seed=3)
    seen_flips = set()
    batches = list(pipeline.dataset().take(4))
    for _, targets in batches:
        t = {k: v.numpy() for k, v in targets.items()}
        for i in range(4):
            flipped = bool(t["flipped"][i])
            seen_flips.add(flipped)
            n = int((t["classes"][i] >= 1).sum())
            got = t["proposals"][i]
            # GT proposals undergo exactly the GT's resize and flip.
            for box in t["boxes"][i, :n]:
                assert np.abs(got[:n + 1] - box).max(axis=1).min() < 1e-3
            # The extra box, by hand: scale 96 / 64 = 1.5; unflipped [3, 4.5, 30, 45];
            # flipped x' = (64 - x) * 1.5: x1' = (64 - 30) * 1.5 = 51, x2' = (64 - 3) * 1.5 = 91.5.
            want = [3.0, 51.0, 30.0, 91.5] if flipped else [3.0, 4.5, 30.0, 45.0]
            np.testing.assert_allclose(got[n], want, atol=1e-3)
            assert np.all(got[n + 1:] == -1.0)  # padding rows
    assert seen_flips == {True, False}

    # ... and into Fast R-CNN: training losses and inference through the evaluation runner.
    images, targets = batches[-1]
    config = tiny("shapes_fast_rcnn.py", str(tmp_path / "shapes"))
    model = builder.build_model(config)
    model.build_with_dummy_inputs()
    losses = model.compute_losses(images, targets)
    assert all(np.isfinite(v.numpy()) for v in losses.values())
    out = make_predict_fn(model)(images, targets["image_shape"], targets["proposals"])
    assert out["detection_boxes"].shape == (4, 10, 4)


def test_dump_proposals_writes_rpn_boxes_in_original_pixels(tmp_path):
    config = tiny("shapes_faster_rcnn.py", str(tmp_path / "shapes"))
    config.data.scales, config.data.max_size = (96,), 96  # 64 px images at scale 1.5
    config.model.rpn.pre_nms_topk_test = 64
    config.model.rpn.post_nms_topk_test = 20
    model = built_model(config)
    optimizer = build_optimizer("sgd", learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    run_dir = tmp_path / "run"
    CheckpointManager(str(run_dir), model, optimizer).save()
    (run_dir / "config.json").write_text(config.to_json_best_effort(indent=2))

    # The command on the run directory alone (its config.json gives the recipe).
    out = str(tmp_path / "proposals_val.npz")
    result = subprocess.run(
        [sys.executable, "-m", "tf_rcnn.tools.dump_proposals", f"--checkpoint={run_dir}",
         "--split=val", f"--output={out}", "--top_n=7"],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 images" in result.stdout
    written = read_proposals(out)
    records, label_map, _ = load_split(config, "val")
    assert sorted(written) == sorted(r.image_id for r in records)
    # The same numbers straight from the model on the 1.5x network input, divided by 1.5.
    images, targets = next(iter(
        build_input_pipeline(config, records, label_map, training=False).dataset()))
    direct = model.propose({"images": images, "image_shape": targets["image_shape"]})
    for i, image_id in enumerate(targets["image_id"].numpy()):
        boxes, scores = written[int(image_id)]
        assert 1 <= len(boxes) <= 7
        assert np.all(np.diff(scores) <= 0)
        assert np.all(boxes >= 0) and np.all(boxes <= 64)
        valid = direct["proposal_valid"][i].numpy()
        want = np.clip(direct["proposals"][i].numpy()[valid] / 1.5, 0, 64)
        want = want[(want[:, 2] > want[:, 0]) & (want[:, 3] > want[:, 1])][:7]
        np.testing.assert_allclose(boxes, want, atol=1e-3)

    with pytest.raises(ValueError, match=r"\.npz or \.json"):
        dump_proposals(model, config, "val", str(tmp_path / "p.txt"))
    with pytest.raises(ValueError, match="split"):
        dump_proposals(model, config, "test", out)
    fast = tiny("shapes_fast_rcnn.py", str(tmp_path / "shapes"))
    with pytest.raises(ConfigError, match="has no RPN"):
        dump_proposals(built_model(fast), fast, "val", out)


def test_hand_written_json_trains_and_evaluates(tmp_path):
    shapes_dir = str(tmp_path / "shapes")
    config = tiny("shapes_fast_rcnn.py", shapes_dir, images=8)
    _, _, annotation_file = load_split(config, "train")
    with open(annotation_file) as f:
        coco = json.load(f)
    # What a person writes by hand: COCO image ids, x1 y1 x2 y2 pixels, no scores. Each object
    # gets a loose box around it (2 px bigger) and every image a background box.
    entries = {str(image["id"]): {"boxes": [[1.0, 1.0, 20.0, 12.0]]} for image in coco["images"]}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        entries[str(ann["image_id"])]["boxes"].append([x - 2, y - 2, x + w + 2, y + h + 2])
    path = str(tmp_path / "my_proposals.json")
    with open(path, "w") as f:
        json.dump({"format": "tf_rcnn.proposals.v1", "box_format": "xyxy",
                   "proposals": entries}, f)

    config.data.proposals_train = config.data.proposals_val = path
    config.data.max_proposals = 8
    config.data.random_flip = False
    t = config.train
    t.total_steps, t.warmup_steps, t.checkpoint_every, t.steps_per_loop = 150, 20, 150, 50
    t.base_batch_size = 4
    run_dir = str(tmp_path / "run")
    losses = run_training(config, run_dir)
    assert np.isfinite(losses["total_loss"])
    metrics = evaluate_checkpoint(run_dir, str(tmp_path / "eval"))
    assert metrics["num_images"] == 8
    # Proposals close to every object, evaluated on the training images: a trained head
    # classifies most of them.
    assert metrics["bbox/AP50"] >= 0.5, metrics
    assert os.path.exists(tmp_path / "eval" / "detections.json")
