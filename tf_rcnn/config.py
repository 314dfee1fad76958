"""Configuration: the full default config every recipe starts from, and override checking.

Recipes in ``configs/`` call :func:`default_config` and change what their paper or dataset needs;
a recipe that only varies another one starts from it with :func:`base_recipe` instead.
Every key exists in the defaults, so ``--config.a.b=v`` overrides of a misspelt key are refused
with the list of valid keys (:func:`find_unknown_overrides`, used by ``tf_rcnn.tools.cli``)
instead of silently adding a field. A run directory's ``config.json`` reads back with
:func:`load_run_config`. Only the builders (``tf_rcnn.models.builder``, ``tf_rcnn.data.builder``,
``tf_rcnn.training.optimizers.optimizer_from_config``) and the scripts read a config; model
parts never see one.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from ml_collections import config_dict

# The resolved config a training run writes into its run directory; eval, export, predict,
# dump_proposals and the fine-tuning API read it back.
CONFIG_FILE = "config.json"


class ConfigError(ValueError):
    """A recipe value that cannot work with the data or machine (the message says the fix)."""


def _cd(**kwargs) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(kwargs)


def default_config() -> ml_collections.ConfigDict:
    """Faster R-CNN R50-FPN on COCO with Detectron 1x values; recipes override from here."""
    placeholder = config_dict.placeholder
    config = ml_collections.ConfigDict()
    config.model = _cd(
        # faster_rcnn | fast_rcnn | rfcn | mask_rcnn | cascade_rcnn | cascade_mask_rcnn
        type="faster_rcnn",
        # K object classes (background excluded). None: the training data's label map decides
        # (train.py writes the resolved value into the run's config.json); set it only to build
        # a model without data.
        num_classes=placeholder(int),
        # Given-proposals build: a family with an RPN built without it, its RoI heads reading
        # proposals from data.proposals_train / proposals_val like Fast R-CNN. Stage 2 of the
        # 4-step alternating schedule (train.schedule_mode=alternating) sets it; a recipe
        # rarely does.
        given_proposals=False,
        backbone=_cd(
            name="resnet50",  # resnet50 | resnet101 | vgg16 | tiny
            weights=placeholder(str),  # None (random), "imagenet", or a weights file path
            freeze_at=2,  # Detectron: stem and res2 frozen
            norm="frozen_bn",  # frozen_bn | bn | sync_bn
            stride_in_1x1=True,  # MSRA/Caffe-style bottlenecks (keras.applications layout)
            dilate_c5=False,  # R-FCN: res5 at stride 16 with dilation 2
            widths=(16, 32, 64, 128),  # tiny backbone only
            # ResNet norm epsilon; None: keras.applications' 1.001e-5 (torchvision 1e-5, its v1
            # COCO detection weights 0).
            norm_epsilon=placeholder(float),
        ),
        # type: fpn | none; norm: None | frozen_bn | bn | sync_bn after each FPN conv (no bias).
        neck=_cd(type="fpn", out_channels=256, norm=placeholder(str)),
        rpn=_cd(
            in_features=("P2", "P3", "P4", "P5", "P6"),
            # FPN paper Sec. 4.1: one size per level {32..512}, ratios {1:2, 1:1, 2:1}.
            anchor_sizes=((32.0,), (64.0,), (128.0,), (256.0,), (512.0,)),
            aspect_ratios=(0.5, 1.0, 2.0),
            anchor_offset=0.5,
            round_anchors=False,  # round base anchors to integers (torchvision)
            head_channels=placeholder(int),  # None: same as the input features
            head_num_convs=1,  # 3x3 convs of the RPN head (torchvision *_fpn_v2: 2)
            # Detectron FPN: per level 2000/1000 before NMS (train/test), 1000 after.
            pre_nms_topk_train=2000,
            post_nms_topk_train=1000,
            pre_nms_topk_test=1000,
            post_nms_topk_test=1000,
            nms_threshold=0.7,  # Faster R-CNN Sec. 3.3
            min_size=0.0,
            positive_iou=0.7,  # Faster R-CNN Sec. 3.1.2
            negative_iou=0.3,
            batch_size_per_image=256,
            positive_fraction=0.5,
            straddle_threshold=0.0,  # ignore cross-boundary anchors in training (Sec. 3.3)
            box_loss_beta=1.0 / 9.0,  # Detectron RPN smooth-L1 beta
            focal_gamma=placeholder(float),
        ),
        roi_head=_cd(
            in_features=("P2", "P3", "P4", "P5"),
            pooler="roi_align",  # roi_align | roi_pool | spp
            pooler_resolution=7,
            sampling_ratio=2,
            aligned=True,
            spp_levels=(1, 2, 4),
            box_head="fpn_fc",  # fpn_fc | res5 | vgg_fc
            conv_dims=(),  # fpn_fc: 3x3 convs before the fcs ("4conv1fc": four of 256)
            norm=placeholder(str),  # None | frozen_bn | bn | sync_bn after those convs
            fc_dims=(1024, 1024),
            class_agnostic_box=False,
            batch_size_per_image=512,  # Detectron 1x
            positive_fraction=0.25,  # Fast R-CNN Sec. 2.3
            fg_iou=0.5,
            bg_iou_low=0.0,  # Detectron; Fast R-CNN paper uses 0.1
            box_loss_beta=1.0,
            focal_gamma=placeholder(float),
            score_threshold=0.05,
            nms_threshold=0.5,
            detections_per_image=100,
            min_size=0.0,  # detections smaller than this are dropped (0: only empty ones)
            # The final per-class NMS (test time only; settable on a trained run with eval.py,
            # export, predict): hard | linear | gaussian. linear and gaussian are Soft-NMS
            # (Bodla et al., ICCV 2017, Algorithm 1): overlapping boxes are not removed but
            # their scores decayed, by 1 - iou where iou >= nms_threshold (linear) or by
            # exp(-iou^2 / soft_nms_sigma) (gaussian; sigma 0.5 in the paper); boxes whose
            # decayed score is <= soft_nms_min_score (0.001) are dropped. The RPN stays hard.
            nms_method="hard",
            soft_nms_sigma=0.5,
            soft_nms_min_score=0.001,
            # Online hard example mining (Shrivastava et al. 2016) instead of the sampled
            # mini-batch: the loss of every candidate, NMS 0.7 by loss, the hardest kept.
            ohem=False,  # R-FCN trains with it (R-FCN Sec. 2.2 "Training")
            ohem_batch_size=128,  # R-FCN: B = 128 RoIs back-propagated per image
            ohem_nms_threshold=0.7,  # OHEM paper Sec. 4: NMS 0.7
        ),
        # Mask R-CNN only (model.type == "mask_rcnn"); reads roi_head.in_features.
        mask_head=_cd(
            head="fpn_conv",  # fpn_conv: 4 convs + deconv (Mask R-CNN Fig. 4 right) | res5 (C4)
            conv_dims=(256, 256, 256, 256),  # Mask R-CNN Fig. 4: four 3x3 convs of 256
            deconv_dim=256,  # the 2x2 stride-2 transposed conv
            pooler_resolution=14,  # RoIAlign 14x14 -> 28x28 masks (FPN head)
            sampling_ratio=2,  # Detectron MASK_RCNN.ROI_XFORM_SAMPLING_RATIO
            aligned=True,  # RoIAlign's half-pixel shift (torchvision's models: False)
            norm=placeholder(str),  # None | frozen_bn | bn | sync_bn after each 3x3 conv
            # How eval, predict and drawings paste the 28x28 masks into the image: tf_rcnn
            # (inverse of the target crop) | torchvision (its paste_masks_in_image).
            paste_rule="tf_rcnn",
            class_agnostic=False,  # one mask per class (Sec. 4.2 "class-specific")
            loss_weight=1.0,  # L = L_cls + L_box + L_mask (Sec. 3)
        ),
        # R-FCN only (model.type == "rfcn"); the head reads the ONE map in roi_head.in_features
        # (dilated C5), roi_head gives the IoU rules, OHEM or sampling, and the decoder.
        rfcn=_cd(
            k=7,  # R-FCN Sec. 2: k x k = 7 x 7 position-sensitive grid (3 in its figures)
            channels=1024,  # R-FCN Sec. 2.2: random 1x1 conv reducing res5 2048 -> 1024
            pool_mode="pool",  # pool: average over quantised bins (Eq. 1) | align: bilinear
        ),
        # Cascade (Mask) R-CNN only (model.type cascade_rcnn | cascade_mask_rcnn; Cai &
        # Vasconcelos 2018). One value per stage; every stage is a model.roi_head box head with
        # a class-agnostic predictor, and model.roi_head's sampling and decoder settings.
        cascade=_cd(
            fg_ious=(0.5, 0.6, 0.7),  # paper Sec. 4.2; Detectron2 ROI_BOX_CASCADE_HEAD.IOUS
            # Detectron2 ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS (paper Sec. 4.2: the deltas of
            # better boxes are smaller; larger weights keep the targets' spread).
            box_weights=((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0),
                         (30.0, 30.0, 15.0, 15.0)),
            # Detectron2's scheme: the stages' losses summed with weight 1 each, and the
            # gradient each stage sends into the feature maps scaled by 1 / stages
            # (trunk_gradient_scale None). MMDetection instead weights the losses 1, 0.5, 0.25
            # with no scaling (stage_loss_weights=(1, 0.5, 0.25), trunk_gradient_scale=1).
            stage_loss_weights=(1.0, 1.0, 1.0),
            trunk_gradient_scale=placeholder(float),  # None: 1 / number of stages
        ),
    )
    config.data = _cd(
        dataset="coco",  # coco | voc | shapes | custom | tfrecord
        train_annotations="",
        train_images="",
        val_annotations="",
        val_images="",
        voc_root="",
        voc_train_sets=(("2007", "trainval"), ("2012", "trainval")),
        voc_val_sets=(("2007", "test"),),
        # dataset=tfrecord: OD API TFRecord shards of each split (comma-separated globs, any
        # tf.io.gfile path such as gs://bucket/train-*.tfrecord) and their label_map.pbtxt
        # ("": the label_map.pbtxt beside the first training shard, else the records' ids).
        train_files="",
        val_files="",
        label_map="",
        shuffle_buffer=1024,  # dataset=tfrecord: records in the shuffle buffer (at most all)
        shapes_dir="data_cache/shapes",
        shapes_train_images=1000,
        shapes_val_images=200,
        shapes_image_size=128,
        shapes_train_seed=0,
        shapes_val_seed=1,
        # Shapes variant: plain (1-4 independent shapes) | crowded (6-12, mostly same-class
        # clusters at box IoU 0.3-0.7, for Soft-NMS). A variant other than plain is cached in
        # <shapes_dir>_<variant>, never mixed with the plain cache (tf_rcnn.data.shapes).
        shapes_variant="plain",
        scales=(800,),  # shorter side (Detectron 1x)
        max_size=1333,
        # tf_rcnn: content scaled by exactly the factor, canvas rounded up; torchvision: its
        # detection transform (float64 factor, canvas floor(h * s), content stretched onto it).
        resize_rule="tf_rcnn",
        # (lo, hi): training scales times a factor drawn from [lo, hi] per image.
        scale_jitter=placeholder(tuple),
        random_flip=True,
        # None: the backbone family's statistics (tf_rcnn.data.pipeline.PIXEL_STATS).
        pixel_mean=placeholder(tuple),
        pixel_std=placeholder(tuple),
        size_divisor=32,
        # (H, W): pad every batch to this static canvas (multiples of size_divisor, each at
        # least max_size rounded up to one, so any resized image fits), for TPUs and any
        # accelerator that compiles per shape. None: the largest image of each batch (landscape
        # and portrait images batched apart), static only when every record has one size.
        fixed_image_size=placeholder(tuple),
        max_instances=100,
        train_batch_size=16,  # global batch (Detectron: 2 images x 8 GPUs)
        eval_batch_size=8,
        mask_crop_size=56,
        proposals_train="",
        proposals_val="",
        max_proposals=2000,
        seed=placeholder(int),
        deterministic=False,
    )
    config.train = _cd(
        total_steps=90000,  # Detectron 1x at batch 16
        optimizer="sgd",  # sgd | adamw
        base_learning_rate=0.02,
        base_batch_size=16,  # linear scaling rule reference
        momentum=0.9,
        weight_decay=1e-4,
        weight_decay_norm=0.0,
        exclude_bias_from_decay=False,
        schedule="step",  # step | cosine | constant
        decay_steps=(60000, 80000),
        decay_gamma=0.1,
        warmup_steps=1000,
        warmup_factor=1.0 / 1000.0,
        clip_norm=placeholder(float),
        checkpoint_every=2000,
        keep_checkpoints=5,
        log_every=20,
        steps_per_loop=1,
        mixed_precision=placeholder(str),  # mixed_float16 | mixed_bfloat16
        init_checkpoint="",
        init_skip_mismatch=False,
        eval_every=0,  # evaluate val every N steps (0: never); best kept in model_dir/best
        eval_metric="bbox/AP50",  # metric that picks model_dir/best
        eval_num_images=placeholder(int),  # None: the whole val split at each evaluation
        image_summary_every=0,  # TensorBoard picture of detections every N steps (0: never)
        image_summary_count=4,  # val images in that picture
        nan_policy="stop",  # stop | warn (warn only makes sense with loss scaling)
        schedule_mode="joint",  # joint (approximate joint) | alternating (4-step, Sec. 3.2)
        # Alternating training: steps of each of the 4 stages (None: train.total_steps).
        alternating_steps=placeholder(tuple),
    )
    config.eval = _cd(
        batch_size=8,
        metrics=("coco",),  # coco | voc | proposal_recall
        num_images=placeholder(int),
        visualize=4,
        score_threshold_visualize=0.5,
    )
    # Test-time augmentation (eval.py --tta, predict --tta, export --tta; tf_rcnn.models.tta):
    # each view is the network input flipped and/or resized by a factor, the views' detections
    # are merged (Detectron's TEST.BBOX_AUG: horizontal flip, more scales, NMS or box voting).
    config.test = _cd(
        tta=_cd(
            enabled=False,  # eval, predict and export run the plain model unless set (or --tta)
            flip=True,  # add a horizontally flipped view of every scale
            # Scale FACTORS of the network input (1.0: the recipe's data.scales size); one view
            # per factor.
            scales=(1.0,),
            merge="nms",  # nms: per-class NMS of the union | vote: NMS + weighted box voting
            nms_threshold=0.5,  # IoU of the merging NMS and of the voting clusters
        ),
    )
    return config


def _valid_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_valid_keys(value, path + "."))
        else:
            keys.append(path)
    return keys


def find_unknown_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> list[tuple[str, list[str]]]:
    """Dotted override paths that do not exist, each with the valid keys of its section."""
    unknown = []
    for path in overrides:
        node = config
        parts = path.split(".")
        for depth, part in enumerate(parts):
            if isinstance(node, ml_collections.ConfigDict) and part in node:
                node = node[part]
                continue
            section = ".".join(parts[:depth])
            if isinstance(node, ml_collections.ConfigDict):
                choices = sorted(f"{section}.{k}" if section else k for k in node)
            else:
                choices = [section]
            unknown.append((path, choices))
            break
    return unknown


def _recipe_get_config(file_path: str) -> Callable[..., ml_collections.ConfigDict]:
    """Executes the recipe file at ``file_path`` and returns its ``get_config``."""
    spec = importlib.util.spec_from_file_location("tf_rcnn_recipe", file_path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"Config file {file_path!r} not found.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config


def load_config_file(path: str, upgrade: Upgrade | None = None) -> ml_collections.ConfigDict:
    """Loads a recipe file (``configs/NAME.py``, optionally ``PATH:arg``) and calls get_config,
    or a run's ``config.json`` (see :func:`config_from_dict`, which ``upgrade`` is passed to)."""
    if path.endswith(".json"):
        with open(path) as f:
            return config_from_dict(json.load(f), source=path, upgrade=upgrade)
    file_path, _, arg = path.partition(":")
    get_config = _recipe_get_config(file_path)
    return get_config(arg) if arg else get_config()


# ------------------------------------------------------------------------------- run directories

def _as_tuples(value: Any) -> Any:
    """JSON lists back to the tuples recipes use (recursively)."""
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    return value


# Turns a config dict saved by an earlier version into the current layout (renamed keys);
# ``tf_rcnn.models.builder.upgrade_saved_config`` is the one the commands pass.
Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


def config_from_dict(data: dict[str, Any], source: str = "config",
                     upgrade: Upgrade | None = None) -> ml_collections.ConfigDict:
    """A full config from a saved dict (a run's ``config.json``): :func:`default_config` with
    every saved value applied, so keys added since the run was written take their defaults.

    Args:
        data: the saved config (``ConfigDict.to_dict`` / ``to_json`` output).
        source: file name used in errors.
        upgrade: applied to ``data`` first (keys renamed since it was written).

    Raises:
        ConfigError: a key that no longer exists or a value of the wrong type (both named).
    """
    config = default_config()
    unknown: list[str] = []

    def apply(node: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
        for key, value in values.items():
            path = f"{prefix}{key}"
            if key not in node:
                unknown.append(path)
                continue
            if isinstance(node[key], ml_collections.ConfigDict):
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: {path} must be a section, got {value!r}.")
                apply(node[key], value, path + ".")
                continue
            try:
                node[key] = _as_tuples(value)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{source}: {path}={value!r} does not fit ({error}).") from None

    apply(config, upgrade(data) if upgrade is not None else data, "")
    if unknown:
        raise ConfigError(f"{source} has keys this version of tf_rcnn does not know: "
                          f"{', '.join(sorted(unknown))}. Remove them from the file.")
    return config


def run_directory(path: str) -> str:
    """The run directory of a checkpoint prefix (``runs/x/ckpt-500``) or run directory."""
    path = os.path.normpath(path)
    return path if os.path.isdir(path) else os.path.dirname(path)


def run_config_file(path: str) -> str:
    """``config.json`` of the run holding ``path`` (a run directory or checkpoint prefix)."""
    return os.path.join(run_directory(path), CONFIG_FILE)


def load_run_config(path: str, upgrade: Upgrade | None = None
                    ) -> ml_collections.ConfigDict | None:
    """The config a run was trained with (its ``config.json``), or None when it has none.

    Args:
        path: a run directory or a checkpoint prefix inside one.
        upgrade: see :func:`config_from_dict`.
    """
    file = run_config_file(path)
    if not os.path.exists(file):
        return None
    with open(file) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{file} is not valid JSON ({error}); restore it from the run or "
                              "pass the recipe with --config.") from None
    return config_from_dict(data, source=file, upgrade=upgrade)


# The recipe files whose base_recipe() calls are running in this thread, outermost first.
_BASE_CHAIN = threading.local()


def base_recipe(name: str, relative_to: str | None = None) -> ml_collections.ConfigDict:
    """The config of the recipe ``name`` next to the calling recipe, for a recipe based on it.

    A recipe that varies another one starts from it and states only what differs::

        from tf_rcnn.config import base_recipe

        def get_config():
            config = base_recipe("faster_rcnn_r50_fpn_coco")  # configs/faster_rcnn_r50_fpn_coco.py
            config.model.type = "mask_rcnn"
            return config

    Args:
        name: file name of the base recipe, with or without ``.py``, in the directory of the
            recipe calling this function. That directory comes from the caller's ``__file__``
            (recipes are loaded by path, so ``configs`` need not be an importable package).
        relative_to: look in this directory (or, given a file, in its directory) instead of the
            caller's; for callers that are not recipe files.

    Returns:
        A fresh ConfigDict from the base recipe's ``get_config()`` (called without argument).

    Raises:
        FileNotFoundError: no recipe ``name`` there; the message names the path looked up.
        ConfigError: the recipes base on each other in a cycle (A on B on A); the message
            shows the cycle.
    """
    frame = inspect.currentframe()
    caller_frame = frame.f_back if frame is not None else None
    caller = None
    if caller_frame is not None:
        caller = caller_frame.f_globals.get("__file__") or caller_frame.f_code.co_filename
    del frame, caller_frame
    caller = os.path.realpath(caller) if caller and os.path.isfile(caller) else None
    if relative_to is not None:
        directory = relative_to if os.path.isdir(relative_to) else os.path.dirname(relative_to)
    elif caller is not None:
        directory = os.path.dirname(caller)
    else:
        raise ValueError(
            f"base_recipe({name!r}) could not tell which file called it; pass relative_to="
            "the directory holding the recipe.")
    file_name = name if name.endswith(".py") else name + ".py"
    path = os.path.abspath(os.path.join(directory, file_name))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Base recipe {name!r} not found: no file {path}.")

    outer = getattr(_BASE_CHAIN, "files", [])
    chain = outer or ([caller] if caller is not None else [])
    real_path = os.path.realpath(path)
    if real_path in chain:
        cycle = chain[chain.index(real_path):] + [real_path]
        raise ConfigError(
            "Recipes base on each other in a cycle: " + " -> ".join(cycle)
            + ". Make one of them start from default_config() instead.")
    _BASE_CHAIN.files = [*chain, real_path]
    try:
        return _recipe_get_config(path)()
    finally:
        _BASE_CHAIN.files = outer
