"""Shared fixtures of the test suite: tiny configs and batches of every family, a decisive
random-init model, the overfit-on-8-images run, and a user's own CSV dataset. Test modules import
from here (never from each other).

Tiny means: 64x64 images, 8-16 channel backbones, a handful of RoIs, so a train step takes well
under a second on two CPU cores.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import tensorflow as tf

from tf_rcnn.config import load_config_file
from tf_rcnn.data.shapes import generate_shapes_dataset
from tf_rcnn.evaluation.evaluate import evaluate_checkpoint
from tf_rcnn.models import builder
from tf_rcnn.models.detectors.two_stage import TwoStageDetector
from tf_rcnn.training.run import run_training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64

# A label map whose dataset ids differ from the contiguous ones, so mix-ups show.
DATASET_IDS = (10, 20, 30)
LABEL_MAP = {"format": "tf_rcnn.label_map.v1", "classes": [
    {"id": i + 1, "dataset_id": d, "name": n}
    for i, (d, n) in enumerate(zip(DATASET_IDS, ("square", "circle", "triangle"), strict=True))]}


def recipe(name: str) -> ml_collections.ConfigDict:
    """``configs/<name>.py``."""
    return load_config_file(os.path.join(REPO, "configs", f"{name}.py"))


def _shrink_rpn(m: ml_collections.ConfigDict) -> None:
    m.rpn.batch_size_per_image = 32
    m.rpn.pre_nms_topk_train = m.rpn.pre_nms_topk_test = 64
    m.rpn.post_nms_topk_train = m.rpn.post_nms_topk_test = 20


def tiny_config(family: str = "faster_rcnn", variant: str = "fpn", *, ohem: bool = True,
                pool_mode: str = "align", pooler: str = "roi_align",
                box_head: str = "fpn_fc") -> ml_collections.ConfigDict:
    """The shapes recipe of ``family`` shrunk to tiny sizes.

    Args:
        family: ``faster_rcnn`` (``variant`` fpn or c4), ``mask_rcnn``, ``rfcn`` (``ohem``,
            ``pool_mode``), ``fast_rcnn`` (``pooler``, ``box_head``), ``cascade_rcnn`` or
            ``cascade_mask_rcnn``.
    """
    if family == "fast_rcnn":
        config = recipe("shapes_fast_rcnn")
        m = config.model
        m.roi_head.pooler = pooler
        m.roi_head.box_head = box_head
    elif family == "rfcn":
        config = recipe("shapes_rfcn")
        m = config.model
        _shrink_rpn(m)
        m.rfcn.channels = 16
        m.rfcn.pool_mode = pool_mode
        m.roi_head.ohem = ohem
        m.roi_head.ohem_batch_size = 8
    else:
        config = recipe("shapes_cascade_rcnn" if family.startswith("cascade")
                        else "shapes_faster_rcnn")
        m = config.model
        _shrink_rpn(m)
        if variant == "c4":
            m.neck.type = "none"
            m.rpn.in_features = ("C4",)
            m.rpn.anchor_sizes = ((16.0, 32.0, 64.0),)
            m.roi_head.in_features = ("C4",)
            m.roi_head.pooler_resolution = 7
        if family in ("mask_rcnn", "cascade_mask_rcnn"):
            m.type = family
            m.mask_head.conv_dims = (8, 8)
            m.mask_head.deconv_dim = 8
    m.num_classes = 3  # no data here to take it from (tiny_batch has classes 1..3)
    m.backbone.widths = (8, 8, 16, 16)
    if family != "rfcn":
        m.neck.out_channels = 16
        m.roi_head.fc_dims = (32, 32)
    m.roi_head.batch_size_per_image = 16
    m.roi_head.detections_per_image = 10
    return config


def tiny_batch(batch: int = 2, size: int = SIZE, proposals: bool = False,
               masks: bool = False) -> tuple[tf.Tensor, dict]:
    """``batch`` random images with 2 GT boxes in image 0 and 1 in image 1 (-1 padded).

    Args:
        proposals: add ``proposals [B, 6, 4]`` with padding rows (Fast R-CNN); needs batch 2.
        masks: add box-cropped ``masks [B, 3, 56, 56]`` (a full square, a left half, a disc).
    """
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(batch, size, size, 3)), tf.float32)
    boxes = np.full((batch, 3, 4), -1.0, np.float32)
    classes = np.full((batch, 3), -1, np.int32)
    boxes[0, :2] = [[4, 4, 30, 30], [20, 30, 50, 60]]
    classes[0, :2] = [1, 3]
    if batch > 1:
        boxes[1, 0] = [10, 10, 40, 25]
        classes[1, 0] = 2
    shapes = [[size, size], [size - 8, size]] + [[size, size]] * max(batch - 2, 0)
    targets = {
        "boxes": tf.constant(boxes),
        "classes": tf.constant(classes),
        "image_shape": tf.constant(shapes[:batch], tf.int32),
    }
    if proposals:
        given = np.full((2, 6, 4), -1.0, np.float32)
        given[0, :4] = [[5, 5, 28, 31], [0, 0, 20, 20], [22, 28, 52, 58], [40, 0, 60, 30]]
        given[1, :3] = [[12, 8, 40, 25], [30, 30, 60, 60], [0, 40, 20, 64]]
        targets["proposals"] = tf.constant(given[:batch])
    if masks:
        crops = np.zeros((batch, 3, 56, 56), np.float32)
        crops[0, 0] = 1.0
        crops[0, 1, :, :28] = 1.0
        yy, xx = np.mgrid[:56, :56]
        if batch > 1:
            crops[1, 0] = ((yy - 27.5) ** 2 + (xx - 27.5) ** 2 <= 28**2).astype(np.float32)
        targets["masks"] = tf.constant(crops)
    return images, targets


def built_model(config: ml_collections.ConfigDict, label_map: dict | None = None
                ) -> TwoStageDetector:
    """The recipe's detector with its variables created."""
    model = builder.build_model(config, label_map=label_map)
    model.build_with_dummy_inputs()
    return model


def decisive_model(config: ml_collections.ConfigDict) -> TwoStageDetector:
    """A random-init model whose class scores are spread out (scaled logits), so detections are
    not a tie of near-equal scores and at least some survive NMS in every image."""
    model = built_model(config, label_map=LABEL_MAP)
    scaled = 0
    for variable in model.weights:  # one layer, or one per stage of a cascade
        if variable.path.endswith(("class_logits/kernel", "cls_score_maps/kernel")):
            variable.assign(variable * 30.0)
            scaled += 1
    assert scaled >= 1, "no class-logit layer found to scale"
    return model


def overfit_config(name: str, data_dir: str, steps: int) -> ml_collections.ConfigDict:
    """``configs/<name>.py`` on 8 64x64 shapes images, trained ``steps`` steps and evaluated on
    the same images (the validation split is generated with the training seed): near-perfect
    detections are expected after a few hundred steps."""
    config = recipe(name)
    d = config.data
    d.shapes_dir = data_dir
    d.shapes_train_images = d.shapes_val_images = 8
    d.shapes_val_seed = d.shapes_train_seed  # evaluate on the training images
    d.shapes_image_size = 64
    d.scales = (64,)
    d.max_size = 64
    d.train_batch_size = 4
    d.eval_batch_size = 8
    d.random_flip = False
    t = config.train
    t.total_steps = steps
    t.warmup_steps = 50
    t.base_learning_rate = 0.02
    t.base_batch_size = 4
    t.checkpoint_every = steps
    t.log_every = 100
    t.steps_per_loop = 20
    config.model.rpn.anchor_sizes = ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
    config.eval.visualize = 2
    return config


def train_and_evaluate(root, name: str, steps: int) -> tuple:
    """Trains :func:`overfit_config` under ``root`` (a path) and evaluates the final checkpoint
    from the run directory alone (its config.json), as ``eval.py --checkpoint=RUN`` does.

    Returns ``(config, model_dir, eval_dir, final_losses, metrics)``.
    """
    config = overfit_config(name, str(root / "shapes"), steps)
    model_dir = str(root / "run")
    losses = run_training(config, model_dir)
    out = str(root / "eval")
    metrics = evaluate_checkpoint(model_dir, out)
    return config, model_dir, out, losses, metrics


def write_csv_dataset(folder, num_images: int, seed: int, classes=("circle", "square"),
                      image_size: int = SIZE) -> str:
    """A user's own data: ``folder/photos/*.png`` and ``folder/annotations.csv``
    (``image,x1,y1,x2,y2,class``, paths relative to the CSV) made from shapes images, keeping the
    boxes of ``classes`` only (an image left without one gets an empty row). Returns the CSV."""
    folder = str(folder)
    source = os.path.join(folder, "_generated")
    with open(generate_shapes_dataset(source, num_images, image_size=image_size,
                                      seed=seed)) as f:
        data = json.load(f)
    names = {c["id"]: c["name"] for c in data["categories"]}
    os.makedirs(os.path.join(folder, "photos"), exist_ok=True)
    path = os.path.join(folder, "annotations.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "x1", "y1", "x2", "y2", "class"])
        for image in data["images"]:
            name = f"photos/{image['file_name']}"
            shutil.copy(os.path.join(source, "images", image["file_name"]),
                        os.path.join(folder, name))
            rows = [(a["bbox"], names[a["category_id"]]) for a in data["annotations"]
                    if a["image_id"] == image["id"] and names[a["category_id"]] in classes]
            for (x, y, w, h), name_of_class in rows:
                writer.writerow([name, x, y, x + w, y + h, name_of_class])
            if not rows:
                writer.writerow([name, "", "", "", "", ""])
    return path


def own_data_config(train_csv: str, val_csv: str, steps: int = 3) -> ml_collections.ConfigDict:
    """The demo recipe on CSV data as the README's "Your own data" runs it (no num_classes),
    shrunk to tiny sizes; images are fed at 48 px (``data.scales`` overridden)."""
    config = tiny_config()
    config.model.num_classes = None  # from the training data, as train.py does
    d = config.data
    d.dataset = "custom"
    d.train_annotations, d.val_annotations = train_csv, val_csv
    d.scales, d.max_size = (48,), 48
    d.train_batch_size = d.eval_batch_size = 4
    d.seed = 0
    t = config.train
    t.total_steps = t.checkpoint_every = steps
    t.warmup_steps, t.log_every, t.steps_per_loop = 0, steps, 1
    config.model.rpn.anchor_sizes = ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
    config.eval.metrics = ("coco", "voc")
    config.eval.visualize = 1
    return config


def run_command(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``args`` (a script of the repository, or ``-m MODULE``) run by this Python from the
    repository, as a user runs the commands; stdout and stderr are captured as text."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG")}
    env["PYTHONPATH"] = REPO
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


HEAVY_PACKAGES = ("tensorflow", "keras", "torch", "tf_rcnn")


def run_module_by_path(module_file, check: str) -> None:
    """Loads ``module_file`` by its path in a fresh Python (no ``PYTHONPATH``, started in the
    module's folder), runs ``check`` (statements using ``module``), and asserts that none of
    :data:`HEAVY_PACKAGES` was imported: the module stands alone."""
    module_file = os.path.abspath(module_file)
    code = "\n".join([
        "import importlib.util, sys",
        f"spec = importlib.util.spec_from_file_location('standalone', {str(module_file)!r})",
        "module = importlib.util.module_from_spec(spec)",
        "spec.loader.exec_module(module)",
        check,
        f"heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY_PACKAGES!r}]",
        "assert not heavy, heavy",
        "print('ok')",
    ])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(str(module_file)), check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def imported_roots(module_file) -> set[str]:
    """Top-level package names a module's source imports (absolute imports only)."""
    with open(module_file) as f:
        tree = ast.parse(f.read())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots
