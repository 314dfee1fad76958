"""The one place that turns ``config.model`` into a detector (and the only model code that reads a
config).

Model parts take explicit keyword arguments and never see a config object; this module turns
``config.model`` into those arguments (see ``tf_rcnn.config.default_config`` for every key).
Data pipelines and optimisers are built elsewhere (``tf_rcnn.data.builder``,
``tf_rcnn.training.optimizers``).

Detector families: ``FAMILIES`` maps ``model.type`` to a :class:`Family` -- the detector class,
the function assembling it and the config sections it does not read. Code outside this module
asks :func:`family_class` (``needs_masks``, ``needs_rpn``) and :func:`needs_proposals` instead
of comparing ``model.type`` strings.

Given-proposals builds: ``model.given_proposals=True`` builds a family that has an RPN without
it; its own RoI heads (box, mask, position-sensitive, with their sampler or OHEM and
their targets) then read proposals given with the inputs, as Fast R-CNN's do. Every family with
an RPN has one, with no per-family code (:func:`has_given_proposals_build`): it is stage 2 of
the 4-step alternating schedule (``tf_rcnn.training.alternating``).

Adding a family is one entry here plus its classes (see docs/design.md, "How to add a detector
family").
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence

import ml_collections
from absl import logging

from tf_rcnn.config import ConfigError, default_config
from tf_rcnn.layers.anchor_generator import AnchorGenerator
from tf_rcnn.layers.detection_decoder import DetectionDecoder
from tf_rcnn.layers.poolers import MultiLevelRoIAlign
from tf_rcnn.layers.proposal_layer import ProposalLayer
from tf_rcnn.layers.roi_align import RoIAlign
from tf_rcnn.layers.roi_pool import RoIPool
from tf_rcnn.layers.roi_sampler import RoISampler
from tf_rcnn.layers.rpn_target_assigner import RPNTargetAssigner
from tf_rcnn.layers.spp import SpatialPyramidPooling
from tf_rcnn.models.backbones import build_backbone
from tf_rcnn.models.backbones.resnet import is_torchvision_file, make_res5_head
from tf_rcnn.models.detectors.cascade_rcnn import CascadeMaskRCNN, CascadeRCNN
from tf_rcnn.models.detectors.fast_rcnn import FastRCNN
from tf_rcnn.models.detectors.faster_rcnn import FasterRCNN
from tf_rcnn.models.detectors.mask_rcnn import MaskRCNN
from tf_rcnn.models.detectors.rfcn import RFCN
from tf_rcnn.models.detectors.two_stage import TwoStageDetector
from tf_rcnn.models.necks.fpn import FPN
from tf_rcnn.models.proposal_generator import RegionProposalNetwork, RPNHead
from tf_rcnn.models.roi_heads import (
    BoxPredictor,
    CascadeRoIHeads,
    FPNBoxHead,
    MaskHead,
    MaskRoIHeads,
    OHEMSampler,
    ResNetC4BoxHead,
    RFCNHead,
    RFCNRoIHeads,
    RoIHeads,
    VGGBoxHead,
)
from tf_rcnn.models.tta import TTADetector
from tf_rcnn.ops.box_coder import RCNN_BOX_WEIGHTS

# ------------------------------------------------------------------------------- trunk


def build_trunk(m: ml_collections.ConfigDict):
    """``(backbone, neck)`` from ``config.model`` (neck is None without FPN).

    A ResNet trunk stops at C4 when nothing reads C5 (the C4 detector applies res5 per RoI).
    """
    uses_c5 = m.neck.type == "fpn" or "C5" in (*m.rpn.in_features, *m.roi_head.in_features)
    b = m.backbone
    if b.name == "tiny":
        kwargs = {"widths": tuple(b.widths), "dilate_c5": b.dilate_c5}
    elif b.name.startswith("resnet"):
        kwargs = {"freeze_at": b.freeze_at, "norm": b.norm, "stride_in_1x1": b.stride_in_1x1,
                  "dilate_c5": b.dilate_c5, "weights": b.weights, "include_c5": uses_c5}
        if b.norm_epsilon is not None:
            kwargs["norm_epsilon"] = b.norm_epsilon
    elif b.name == "vgg16":
        kwargs = {"freeze_at": b.freeze_at, "weights": b.weights}
    else:
        kwargs = {}
    backbone = build_backbone(b.name, **kwargs)
    if m.neck.type == "fpn":
        in_features = tuple(sorted(backbone.output_strides, key=backbone.output_strides.get))
        neck = FPN(
            in_features=in_features,
            in_strides=tuple(backbone.output_strides[n] for n in in_features),
            out_channels=m.neck.out_channels,
            norm=m.neck.norm,
            name="fpn",
        )
    elif m.neck.type in ("none", None, ""):
        neck = None
    else:
        raise ConfigError(f"Unknown model.neck.type {m.neck.type!r}; choose fpn or none.")
    return backbone, neck


def feature_strides(backbone, neck, names: Sequence[str], key: str) -> list[int]:
    """Strides of the named feature maps of ``backbone`` (+ ``neck``); ``key`` is the config key
    naming them, for the error."""
    strides = dict(backbone.output_strides)
    if neck is not None:
        strides.update(neck.output_strides)
    missing = [n for n in names if n not in strides]
    if missing:
        raise ConfigError(f"{key} names feature maps {missing} that the trunk does not produce; "
                          f"available: {sorted(strides)}.")
    return [int(strides[n]) for n in names]


def build_res5(backbone_cfg: ml_collections.ConfigDict, key: str, name: str = "res5"):
    """The per-RoI res5 stage of a ResNet C4 head (box or mask), from ``config.model.backbone``.

    It takes ImageNet weights exactly when the trunk does. ``key`` names the config value that
    asked for it, for the error on a non-ResNet backbone.
    """
    if not backbone_cfg.name.startswith("resnet"):
        raise ConfigError(f"{key}='res5' needs a ResNet backbone, got model.backbone.name="
                          f"{backbone_cfg.name!r}.")
    depth = 101 if backbone_cfg.name == "resnet101" else 50
    weights = backbone_cfg.weights
    if not (weights == "imagenet" or is_torchvision_file(weights)):
        weights = None  # a Keras file of the trunk holds no per-RoI res5
    extra = {}
    if backbone_cfg.norm_epsilon is not None:
        extra["norm_epsilon"] = backbone_cfg.norm_epsilon
    return make_res5_head(depth=depth, norm=backbone_cfg.norm,
                          stride_in_1x1=backbone_cfg.stride_in_1x1, weights=weights, name=name,
                          **extra)


# ------------------------------------------------------------------------------- first stage


def build_rpn(cfg: ml_collections.ConfigDict, strides: list[int]) -> RegionProposalNetwork:
    """``config.model.rpn`` -> ``RegionProposalNetwork``."""
    sizes = [list(map(float, s)) for s in cfg.anchor_sizes]
    if len(sizes) != len(strides):
        raise ConfigError(
            f"model.rpn.anchor_sizes has {len(sizes)} levels but model.rpn.in_features has "
            f"{len(strides)}; give one tuple of sizes per feature level."
        )
    anchor_generator = AnchorGenerator(
        sizes=sizes,
        aspect_ratios=list(map(float, cfg.aspect_ratios)),
        strides=strides,
        offset=cfg.anchor_offset,
        round_coordinates=cfg.round_anchors,
    )
    head = RPNHead(num_anchors=anchor_generator.num_anchors_per_location,
                   channels=cfg.head_channels, num_convs=cfg.head_num_convs, name="rpn_head")
    proposal_layer = ProposalLayer(
        pre_nms_topk_train=cfg.pre_nms_topk_train,
        post_nms_topk_train=cfg.post_nms_topk_train,
        pre_nms_topk_test=cfg.pre_nms_topk_test,
        post_nms_topk_test=cfg.post_nms_topk_test,
        nms_threshold=cfg.nms_threshold,
        min_size=cfg.min_size,
    )
    assigner = RPNTargetAssigner(
        positive_iou=cfg.positive_iou,
        negative_iou=cfg.negative_iou,
        batch_size_per_image=cfg.batch_size_per_image,
        positive_fraction=cfg.positive_fraction,
        straddle_threshold=cfg.straddle_threshold,
    )
    return RegionProposalNetwork(
        head=head,
        anchor_generator=anchor_generator,
        proposal_layer=proposal_layer,
        target_assigner=assigner,
        box_loss_beta=cfg.box_loss_beta,
        focal_gamma=cfg.focal_gamma,
        name="rpn",
    )


# ------------------------------------------------------------------------------- second stage


def build_roi_align(strides: list[int], size: int, sampling_ratio: int, aligned: bool):
    """RoIAlign on one map, or ``MultiLevelRoIAlign`` over several (FPN level assignment)."""
    if len(strides) > 1:
        return MultiLevelRoIAlign(output_size=size, strides=strides,
                                  sampling_ratio=sampling_ratio, aligned=aligned)
    return RoIAlign(output_size=size, spatial_scale=1.0 / strides[0],
                    sampling_ratio=sampling_ratio, aligned=aligned)


def build_pooler(cfg: ml_collections.ConfigDict, strides: list[int]):
    """``config.model.roi_head`` pooler -> a RoI feature extractor layer."""
    if cfg.pooler == "roi_align":
        return build_roi_align(strides, cfg.pooler_resolution, cfg.sampling_ratio, cfg.aligned)
    if cfg.pooler not in ("roi_pool", "spp"):
        raise ConfigError(f"Unknown model.roi_head.pooler {cfg.pooler!r}; "
                          "choose roi_align, roi_pool or spp.")
    if len(strides) > 1:
        raise ConfigError(f"model.roi_head.pooler={cfg.pooler!r} reads one feature map; "
                          f"model.roi_head.in_features names {len(strides)} (use roi_align for "
                          "FPN).")
    if cfg.pooler == "roi_pool":
        return RoIPool(output_size=cfg.pooler_resolution, spatial_scale=1.0 / strides[0])
    return SpatialPyramidPooling(pyramid_levels=tuple(cfg.spp_levels),
                                 spatial_scale=1.0 / strides[0])


def build_box_head(cfg: ml_collections.ConfigDict, backbone_cfg: ml_collections.ConfigDict):
    """``config.model.roi_head.box_head`` -> a box head layer."""
    if cfg.box_head == "fpn_fc":
        return FPNBoxHead(fc_dims=tuple(cfg.fc_dims), conv_dims=tuple(cfg.conv_dims),
                          norm=cfg.norm, name="box_head")
    if cfg.box_head == "vgg_fc":
        return VGGBoxHead(fc_dims=tuple(cfg.fc_dims), name="box_head")
    if cfg.box_head == "res5":
        return ResNetC4BoxHead(build_res5(backbone_cfg, "model.roi_head.box_head"),
                               name="box_head")
    raise ConfigError(f"Unknown model.roi_head.box_head {cfg.box_head!r}; "
                      "choose fpn_fc, res5 or vgg_fc.")


def training_rois_kwargs(cfg: ml_collections.ConfigDict, fg_iou: float | None = None,
                         box_weights: Sequence[float] | None = None) -> dict:
    """``config.model.roi_head`` -> the ``RoIHeadsBase`` arguments every second stage shares:
    sampler (IoU rules, batch), OHEM, decoder (:func:`build_detection_decoder`), box loss
    beta.

    ``fg_iou`` / ``box_weights`` replace ``roi_head.fg_iou`` and the R-CNN coder weights (a
    cascade stage's own values) in both the sampler and the decoder."""
    weights = tuple(RCNN_BOX_WEIGHTS if box_weights is None else box_weights)
    return {
        "sampler": RoISampler(
            batch_size_per_image=cfg.batch_size_per_image,
            positive_fraction=cfg.positive_fraction,
            fg_iou=cfg.fg_iou if fg_iou is None else fg_iou,
            bg_iou_low=cfg.bg_iou_low,
            box_weights=weights,
        ),
        "ohem": (OHEMSampler(cfg.ohem_batch_size, cfg.ohem_nms_threshold) if cfg.ohem
                 else None),
        "decoder": build_detection_decoder(cfg, box_weights=weights),
        "box_loss_beta": cfg.box_loss_beta,
    }


def build_detection_decoder(cfg: ml_collections.ConfigDict,
                            box_weights: Sequence[float] | None = None) -> DetectionDecoder:
    """``config.model.roi_head`` -> the ``DetectionDecoder`` of every family (score threshold,
    hard or Soft-NMS, detections per image; ``box_weights``: a cascade stage's coder weights
    instead of the R-CNN ones); a bad NMS setting is a ``ConfigError`` naming its flag."""
    try:
        return DetectionDecoder(
            score_threshold=cfg.score_threshold,
            nms_threshold=cfg.nms_threshold,
            max_detections=cfg.detections_per_image,
            min_size=cfg.min_size,
            nms_method=cfg.nms_method,
            soft_nms_sigma=cfg.soft_nms_sigma,
            soft_nms_min_score=cfg.soft_nms_min_score,
            box_weights=tuple(RCNN_BOX_WEIGHTS if box_weights is None else box_weights),
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None


def build_standard_roi_heads(m: ml_collections.ConfigDict, strides: list[int],
                             cls: type[RoIHeads] = RoIHeads, *, name: str = "roi_heads",
                             fg_iou: float | None = None,
                             box_weights: Sequence[float] | None = None,
                             class_agnostic: bool | None = None,
                             **extra) -> RoIHeads:
    """``config.model.roi_head`` -> ``RoIHeads`` (or the subclass ``cls`` with
    ``extra`` arguments, e.g. the mask branch). ``fg_iou``, ``box_weights`` and
    ``class_agnostic`` replace the config's values (a cascade stage's)."""
    h = m.roi_head
    agnostic = h.class_agnostic_box if class_agnostic is None else class_agnostic
    return cls(
        pooler=build_pooler(h, strides),
        box_head=build_box_head(h, m.backbone),
        box_predictor=BoxPredictor(m.num_classes, class_agnostic=agnostic,
                                   name="box_predictor"),
        focal_gamma=h.focal_gamma,
        name=name,
        **training_rois_kwargs(h, fg_iou=fg_iou, box_weights=box_weights),
        **extra,
    )


def build_cascade_roi_heads(m: ml_collections.ConfigDict, strides: list[int],
                            with_masks: bool = False) -> CascadeRoIHeads:
    """``config.model.cascade`` (one IoU, coder weights and loss weight per stage) and
    ``config.model.roi_head`` (pooler, box head, sampling, decoder) -> ``CascadeRoIHeads``;
    with ``with_masks`` the first stage carries ``config.model.mask_head``'s branch."""
    c = m.cascade
    ious, weights = tuple(c.fg_ious), tuple(tuple(w) for w in c.box_weights)
    loss_weights = tuple(c.stage_loss_weights)
    if not ious or len(weights) != len(ious) or len(loss_weights) != len(ious):
        raise ConfigError(
            f"model.cascade.fg_ious ({len(ious)}), model.cascade.box_weights ({len(weights)}) "
            f"and model.cascade.stage_loss_weights ({len(loss_weights)}) need one value per "
            "stage, at least one stage.")
    if any(len(w) != 4 for w in weights):
        raise ConfigError(f"model.cascade.box_weights holds (wy, wx, wh, ww) per stage, got "
                          f"{weights}.")
    if m.roi_head.ohem:
        raise ConfigError("Cascade stages sample their training RoIs at rising IoU; OHEM is "
                          "not supported: set --config.model.roi_head.ohem=False.")
    stages = []
    for index, (iou, stage_weights) in enumerate(zip(ious, weights, strict=True)):
        mask = with_masks and index == 0
        stages.append(build_standard_roi_heads(
            m, strides, MaskRoIHeads if mask else RoIHeads, name=f"stage{index + 1}",
            fg_iou=float(iou), box_weights=stage_weights, class_agnostic=True,
            **(build_mask_branch(m, strides) if mask else {})))
    return CascadeRoIHeads(stages, stage_loss_weights=loss_weights,
                           trunk_gradient_scale=c.trunk_gradient_scale, name="roi_heads")


def build_mask_branch(m: ml_collections.ConfigDict, strides: list[int]) -> dict:
    """``config.model.mask_head`` -> ``{"mask_pooler", "mask_head", "mask_loss_weight"}``,
    reading the RoI head's feature maps."""
    cfg = m.mask_head
    res5 = None
    if cfg.head == "res5":
        res5 = build_res5(m.backbone, "model.mask_head.head", name="mask_res5")
    elif cfg.head != "fpn_conv":
        raise ConfigError(f"Unknown model.mask_head.head {cfg.head!r}; choose fpn_conv or res5.")
    return {
        "mask_pooler": build_roi_align(strides, cfg.pooler_resolution, cfg.sampling_ratio,
                                       aligned=cfg.aligned),
        "mask_head": MaskHead(m.num_classes, conv_dims=tuple(cfg.conv_dims),
                              deconv_dim=cfg.deconv_dim, class_agnostic=cfg.class_agnostic,
                              res5=res5, norm=cfg.norm, name="mask_head"),
        "mask_loss_weight": cfg.loss_weight,
        "paste_rule": cfg.paste_rule,
    }


def build_rfcn_roi_heads(m: ml_collections.ConfigDict, strides: list[int]) -> RFCNRoIHeads:
    """``config.model.rfcn`` (head) and ``config.model.roi_head`` (IoU rules, OHEM or
    sampling, decoder) -> ``RFCNRoIHeads`` on the one map of ``model.roi_head.in_features``."""
    if len(strides) != 1:
        raise ConfigError(
            f"R-FCN reads one feature map; model.roi_head.in_features is "
            f"{tuple(m.roi_head.in_features)}. Use ('C5',) with model.backbone.dilate_c5=True."
        )
    r = m.rfcn
    if r.pool_mode not in ("pool", "align"):
        raise ConfigError(f"Unknown model.rfcn.pool_mode {r.pool_mode!r}; choose pool or align.")
    head = RFCNHead(m.num_classes, k=r.k, channels=r.channels, spatial_scale=1.0 / strides[0],
                    mode=r.pool_mode, sampling_ratio=m.roi_head.sampling_ratio, name="rfcn_head")
    return RFCNRoIHeads(head, name="roi_heads", **training_rois_kwargs(m.roi_head))


# ------------------------------------------------------------------------------- families


@dataclasses.dataclass(frozen=True)
class Family:
    """A detector family: its class, how its second stage is built, what it does not read.

    Attributes:
        cls: the ``TwoStageDetector`` subclass.
        build_roi_heads: ``(config.model, roi strides) -> roi_heads``.
        ignores: config paths under ``model`` that this family does not read (a section
            ``"rpn"`` or a key ``"roi_head.pooler"``); a recipe that changes one of them gets a
            warning naming it.
        renamed: keys this family read under another name in configs saved by earlier
            versions, ``{"model.old.key": "model.new.key"}`` (:func:`upgrade_saved_config`).
    """

    cls: type[TwoStageDetector]
    build_roi_heads: Callable[[ml_collections.ConfigDict, list[int]], object]
    ignores: tuple[str, ...] = ()
    renamed: dict[str, str] = dataclasses.field(default_factory=dict)


# OHEM's keys, under model.rfcn in configs saved before OHEM served every family.
_OHEM_KEYS = ("ohem", "ohem_batch_size", "ohem_nms_threshold")

# What only the standard pooled-feature head reads (R-FCN pools position-sensitive maps).
_STANDARD_HEAD_KEYS = tuple(f"roi_head.{k}" for k in (
    "pooler", "pooler_resolution", "aligned", "spp_levels", "box_head", "fc_dims",
    "class_agnostic_box", "focal_gamma"))

# model.type -> family. One entry per detector family.
# What a cascade reads elsewhere: model.cascade.fg_ious replaces roi_head.fg_iou, and every
# stage predicts class-agnostic boxes.
_CASCADE_REPLACED_KEYS = ("roi_head.fg_iou", "roi_head.class_agnostic_box")

FAMILIES: dict[str, Family] = {
    "faster_rcnn": Family(FasterRCNN, build_standard_roi_heads,
                          ("mask_head", "rfcn", "cascade")),
    "fast_rcnn": Family(FastRCNN, build_standard_roi_heads,
                        ("rpn", "mask_head", "rfcn", "cascade")),
    "mask_rcnn": Family(
        MaskRCNN,
        lambda m, strides: build_standard_roi_heads(m, strides, MaskRoIHeads,
                                                    **build_mask_branch(m, strides)),
        ("rfcn", "cascade")),
    "rfcn": Family(RFCN, build_rfcn_roi_heads, ("mask_head", "cascade", *_STANDARD_HEAD_KEYS),
                   renamed={f"model.rfcn.{k}": f"model.roi_head.{k}" for k in _OHEM_KEYS}),
    "cascade_rcnn": Family(CascadeRCNN, build_cascade_roi_heads,
                           ("mask_head", "rfcn", *_CASCADE_REPLACED_KEYS)),
    "cascade_mask_rcnn": Family(
        CascadeMaskRCNN,
        lambda m, strides: build_cascade_roi_heads(m, strides, with_masks=True),
        ("rfcn", *_CASCADE_REPLACED_KEYS)),
}

# Keys that no longer exist: every family's renamed keys (dropped where a family did not read
# them; the family that did moves them first).
_RETIRED_KEYS = tuple(sorted({old for f in FAMILIES.values() for old in f.renamed}))


def _pop_path(data: dict, path: str) -> tuple[bool, object]:
    *parents, key = path.split(".")
    node = data
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and key in node:
        return True, node.pop(key)
    return False, None


def upgrade_saved_config(data: dict) -> dict:
    """A copy of a config dict saved by an earlier version (a run's ``config.json``) in the
    current layout: keys its family read under another name move to their place, retired keys
    its family never read are dropped. Pass it to ``tf_rcnn.config.load_run_config``.
    """
    data = copy.deepcopy(data)
    family = FAMILIES.get(data.get("model", {}).get("type"))
    for old, new in (family.renamed if family is not None else {}).items():
        found, value = _pop_path(data, old)
        if found:
            *parents, key = new.split(".")
            node = data
            for part in parents:
                node = node.setdefault(part, {})
            node.setdefault(key, value)
    for old in _RETIRED_KEYS:
        _pop_path(data, old)
    return data


def _model_section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return config.model if "model" in config else config


def family_of(config: ml_collections.ConfigDict) -> Family:
    """The :class:`Family` of a recipe (full config or its ``model`` section).

    Raises:
        ConfigError: unknown ``model.type`` (the message lists the known ones).
    """
    m = _model_section(config)
    if m.type not in FAMILIES:
        raise ConfigError(f"Unknown model.type {m.type!r}; available: {sorted(FAMILIES)}.")
    return FAMILIES[m.type]


def family_class(config: ml_collections.ConfigDict) -> type[TwoStageDetector]:
    """The detector class a recipe builds, without building it: ask it what the family needs
    (``needs_masks``, ``needs_proposals``, ``needs_rpn``)."""
    return family_of(config).cls


def has_given_proposals_build(config: ml_collections.ConfigDict) -> bool:
    """Whether the recipe's family can be built with ``model.given_proposals=True``: it has an
    RPN to leave out (``needs_rpn``); its second stage then reads given proposals, which every
    RoI head takes (``RoIHeadsBase`` works on ``(features, proposals, valid)`` whatever made
    them). Fast R-CNN has no RPN: its proposals are always given."""
    return family_class(config).needs_rpn is True


def needs_proposals(config: ml_collections.ConfigDict) -> bool:
    """Whether the recipe's detector reads proposals with its inputs (data.proposals_train /
    proposals_val): a family without an RPN, or a given-proposals build."""
    m = _model_section(config)
    return bool(family_class(config).needs_proposals or m.get("given_proposals", False))


def ignored_settings(config: ml_collections.ConfigDict) -> list[str]:
    """``model.*`` keys the recipe sets to non-default values although its family ignores them.

    A given-proposals build keeps its recipe's ``model.rpn`` unreported: the trunk still reads
    ``rpn.in_features`` (whether a ResNet builds C5), and the stage-2 run's config.json stays
    the recipe of the other stages."""
    m = _model_section(config)
    defaults = default_config().model
    found = []
    for path in family_of(config).ignores:
        section, _, key = path.partition(".")
        if section not in m or section not in defaults:
            continue
        keys = [key] if key else list(m[section].keys())
        for k in keys:
            if k in m[section] and k in defaults[section] and m[section][k] != defaults[section][k]:
                found.append(f"model.{section}.{k}")
    return found


def build_model(config: ml_collections.ConfigDict, label_map: dict | None = None,
                warn_ignored: bool = True) -> TwoStageDetector:
    """Builds the detector a recipe describes (weights random unless the backbone loads some).

    Args:
        config: a full recipe (``configs/*.py``) or just its ``model`` section.
        label_map: optional JSON-able class description stored with the model.
        warn_ignored: log a warning naming the ``model.*`` values the family does not read.

    Returns:
        The unbuilt detector; :meth:`TwoStageDetector.build_with_dummy_inputs` creates its
        variables.

    Raises:
        ConfigError: an unknown type or option, values that cannot work together (the message
            names the config key), or ``model.num_classes`` unset (it comes from the training
            data: ``run_training`` and ``restore_detector`` fill it in).
    """
    m = _model_section(config)
    family = family_of(config)
    if m.num_classes is None:
        raise ConfigError(
            "model.num_classes is not set: train.py takes it from the training data's classes "
            "and saves it in the run's config.json. To build a model without data, give the "
            "class count with --config.model.num_classes=K (config.model.num_classes = K in "
            "Python).")
    if warn_ignored:
        ignored = ignored_settings(config)
        if ignored:
            logging.warning("model.type=%r does not read %s; those values have no effect.",
                            m.type, ", ".join(ignored))
    backbone, neck = build_trunk(m)
    roi_strides = feature_strides(backbone, neck, m.roi_head.in_features,
                                  "model.roi_head.in_features")
    given = bool(m.get("given_proposals", False)) and has_given_proposals_build(config)
    rpn = None
    if family.cls.needs_rpn is not False and not given:
        rpn = build_rpn(m.rpn, feature_strides(backbone, neck, m.rpn.in_features,
                                               "model.rpn.in_features"))
    model = family.cls(
        backbone=backbone,
        neck=neck,
        rpn=rpn,
        roi_heads=family.build_roi_heads(m, roi_strides),
        num_classes=m.num_classes,
        rpn_in_features=None if rpn is None else tuple(m.rpn.in_features),
        roi_in_features=tuple(m.roi_head.in_features),
        label_map=label_map,
        given_proposals=given,
    )
    logging.info("Built %s%s: backbone %s, neck %s, %d classes.", type(model).__name__,
                 " (given proposals, no RPN)" if given else "",
                 m.backbone.name, m.neck.type, m.num_classes)
    return model


def with_tta(model: TwoStageDetector, config: ml_collections.ConfigDict,
             tta: bool = False) -> TwoStageDetector | TTADetector:
    """The detector a command runs: wrapped in the recipe's test-time augmentation
    (:func:`build_tta`) when ``tta`` (the command's ``--tta``) or ``test.tta.enabled`` is on,
    else ``model`` itself. eval.py, predict and the SavedModel exporter decide it here."""
    return build_tta(model, config) if tta or config.test.tta.enabled else model


def build_tta(model: TwoStageDetector, config: ml_collections.ConfigDict) -> TTADetector:
    """Wraps a detector in the recipe's test-time augmentation (``config.test.tta``; whether
    to is :func:`with_tta`'s business).

    Raises:
        ConfigError: a ``test.tta`` value that cannot work (the message names the flag).
    """
    t = config.test.tta
    try:
        scales = tuple(float(s) for s in t.scales)
    except (TypeError, ValueError):
        raise ConfigError(f"--config.test.tta.scales must be a list of scale factors of the "
                          f"network input such as '(1.0, 1.25)', got {t.scales!r}.") from None
    try:  # TTADetector checks the values; its messages name the flags
        tta = TTADetector(model, scales=scales, flip=t.flip, merge=t.merge,
                          nms_threshold=float(t.nms_threshold),
                          size_divisor=int(config.data.size_divisor))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if tta.views == [(1.0, False)]:
        logging.warning("test.tta has one view (scales=(1.0,), flip=False): the detections are "
                        "the plain model's; set --config.test.tta.flip or more scales.")
    logging.info("TTA: %d views (scale factors %s%s), merge %s at IoU %.2f.", len(tta.views),
                 list(scales), ", flipped too" if t.flip else "", t.merge, t.nms_threshold)
    return tta
