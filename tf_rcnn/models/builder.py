"""The one place that reads a config: config -> model, datasets and optimiser arguments.

Model parts take explicit keyword arguments and never see a config object; this module turns
``config.model`` into those arguments (see ``tf_rcnn.config.default_config`` for every key).
"""

from __future__ import annotations

import ml_collections
from absl import logging

from tf_rcnn.layers.anchor_generator import AnchorGenerator
from tf_rcnn.layers.detection_decoder import DetectionDecoder
from tf_rcnn.layers.proposal_layer import ProposalLayer
from tf_rcnn.layers.roi_align import MultiLevelRoIAlign, RoIAlign
from tf_rcnn.layers.roi_pool import RoIPool
from tf_rcnn.layers.spp import SpatialPyramidPooling
from tf_rcnn.layers.target_assigners import RoISampler, RPNTargetAssigner
from tf_rcnn.models.backbones import build_backbone
from tf_rcnn.models.detectors.fast_rcnn import FastRCNN
from tf_rcnn.models.detectors.faster_rcnn import FasterRCNN
from tf_rcnn.models.detectors.mask_rcnn import MaskRCNN
from tf_rcnn.models.detectors.rfcn import RFCN
from tf_rcnn.models.detectors.two_stage import TwoStageDetector
from tf_rcnn.models.heads.box import BoxPredictor, FPNBoxHead, VGGBoxHead
from tf_rcnn.models.heads.mask import MaskHead
from tf_rcnn.models.heads.rfcn import RFCNHead
from tf_rcnn.models.heads.rpn import RPNHead
from tf_rcnn.models.mask_heads import MaskRoIHeads
from tf_rcnn.models.necks.fpn import FPN
from tf_rcnn.models.rfcn_heads import RFCNRoIHeads
from tf_rcnn.models.roi_heads import RoIHeads
from tf_rcnn.models.rpn import RegionProposalNetwork


def _backbone(cfg: ml_collections.ConfigDict, include_c5: bool = True):
    """Backbone from ``config.model.backbone``; ``include_c5=False`` stops a ResNet trunk at C4
    (the C4 detector applies res5 per RoI instead)."""
    name = cfg.name
    if name == "tiny":
        kwargs = {"widths": tuple(cfg.widths), "dilate_c5": cfg.dilate_c5}
    elif name.startswith("resnet"):
        kwargs = {
            "freeze_at": cfg.freeze_at,
            "norm": cfg.norm,
            "stride_in_1x1": cfg.stride_in_1x1,
            "dilate_c5": cfg.dilate_c5,
            "weights": cfg.weights,
            "include_c5": include_c5,
        }
    elif name == "vgg16":
        kwargs = {"freeze_at": cfg.freeze_at, "weights": cfg.weights}
    else:
        kwargs = {}
    return build_backbone(name, **kwargs)


def _strides(backbone, neck, names) -> list[int]:
    strides = dict(backbone.output_strides)
    if neck is not None:
        strides.update(neck.output_strides)
    missing = [n for n in names if n not in strides]
    if missing:
        raise ValueError(f"Features {missing} are not produced; available: {sorted(strides)}.")
    return [int(strides[n]) for n in names]


def build_rpn(cfg: ml_collections.ConfigDict, strides: list[int]) -> RegionProposalNetwork:
    """``config.model.rpn`` -> ``RegionProposalNetwork``."""
    sizes = [list(map(float, s)) for s in cfg.anchor_sizes]
    if len(sizes) != len(strides):
        raise ValueError(
            f"model.rpn.anchor_sizes has {len(sizes)} levels but model.rpn.in_features has "
            f"{len(strides)}; give one tuple of sizes per feature level."
        )
    anchor_generator = AnchorGenerator(
        sizes=sizes,
        aspect_ratios=list(map(float, cfg.aspect_ratios)),
        strides=strides,
        offset=cfg.anchor_offset,
    )
    head = RPNHead(num_anchors=anchor_generator.num_anchors_per_location,
                   channels=cfg.head_channels, name="rpn_head")
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


def build_pooler(cfg: ml_collections.ConfigDict, strides: list[int]):
    """``config.model.roi_head`` pooler -> a RoI feature extractor layer."""
    if cfg.pooler not in ("roi_align", "roi_pool", "spp"):
        raise ValueError(f"Unknown model.roi_head.pooler {cfg.pooler!r}; "
                         "choose roi_align, roi_pool or spp.")
    size = cfg.pooler_resolution
    if cfg.pooler == "roi_align":
        if len(strides) > 1:
            return MultiLevelRoIAlign(output_size=size, strides=strides,
                                      sampling_ratio=cfg.sampling_ratio, aligned=cfg.aligned)
        return RoIAlign(output_size=size, spatial_scale=1.0 / strides[0],
                        sampling_ratio=cfg.sampling_ratio, aligned=cfg.aligned)
    if len(strides) > 1:
        raise ValueError(f"pooler {cfg.pooler!r} reads one feature map; got {len(strides)} "
                         "levels in model.roi_head.in_features (use roi_align for FPN).")
    if cfg.pooler == "roi_pool":
        return RoIPool(output_size=size, spatial_scale=1.0 / strides[0])
    return SpatialPyramidPooling(pyramid_levels=tuple(cfg.spp_levels),
                                 spatial_scale=1.0 / strides[0])


def build_box_head(cfg: ml_collections.ConfigDict, backbone_cfg: ml_collections.ConfigDict):
    """``config.model.roi_head.box_head`` -> a box head layer."""
    if cfg.box_head == "fpn_fc":
        return FPNBoxHead(fc_dims=tuple(cfg.fc_dims), name="box_head")
    if cfg.box_head == "vgg_fc":
        return VGGBoxHead(fc_dims=tuple(cfg.fc_dims), name="box_head")
    if cfg.box_head == "res5":
        from tf_rcnn.models.backbones.resnet import make_res5_head
        from tf_rcnn.models.heads.box import ResNetC4BoxHead

        depth = 101 if backbone_cfg.name == "resnet101" else 50
        # The per-RoI res5 takes ImageNet weights exactly when the trunk does.
        weights = backbone_cfg.weights if backbone_cfg.weights == "imagenet" else None
        res5 = make_res5_head(depth=depth, norm=backbone_cfg.norm,
                              stride_in_1x1=backbone_cfg.stride_in_1x1, weights=weights)
        return ResNetC4BoxHead(res5, name="box_head")
    raise ValueError(f"Unknown model.roi_head.box_head {cfg.box_head!r}; "
                     "choose fpn_fc, res5 or vgg_fc.")


def build_sampler(cfg: ml_collections.ConfigDict) -> RoISampler:
    """``config.model.roi_head`` IoU rules and batch -> ``RoISampler``."""
    return RoISampler(
        batch_size_per_image=cfg.batch_size_per_image,
        positive_fraction=cfg.positive_fraction,
        fg_iou=cfg.fg_iou,
        bg_iou_low=cfg.bg_iou_low,
    )


def build_decoder(cfg: ml_collections.ConfigDict) -> DetectionDecoder:
    """``config.model.roi_head`` score threshold, NMS and count -> ``DetectionDecoder``."""
    return DetectionDecoder(
        score_threshold=cfg.score_threshold,
        nms_threshold=cfg.nms_threshold,
        max_detections=cfg.detections_per_image,
    )


def build_roi_heads(cfg: ml_collections.ConfigDict, backbone_cfg, num_classes: int,
                    strides: list[int]) -> RoIHeads:
    """``config.model.roi_head`` -> ``RoIHeads``."""
    return RoIHeads(
        pooler=build_pooler(cfg, strides),
        box_head=build_box_head(cfg, backbone_cfg),
        box_predictor=BoxPredictor(num_classes, class_agnostic=cfg.class_agnostic_box,
                                   name="box_predictor"),
        sampler=build_sampler(cfg),
        decoder=build_decoder(cfg),
        box_loss_beta=cfg.box_loss_beta,
        focal_gamma=cfg.focal_gamma,
        name="roi_heads",
    )


def build_trunk(m: ml_collections.ConfigDict):
    """``(backbone, neck)`` from ``config.model`` (neck is None without FPN)."""
    uses_c5 = m.neck.type == "fpn" or "C5" in (*m.rpn.in_features, *m.roi_head.in_features)
    backbone = _backbone(m.backbone, include_c5=uses_c5)
    if m.neck.type == "fpn":
        in_features = tuple(sorted(backbone.output_strides, key=backbone.output_strides.get))
        neck = FPN(
            in_features=in_features,
            in_strides=tuple(backbone.output_strides[n] for n in in_features),
            out_channels=m.neck.out_channels,
            name="fpn",
        )
    elif m.neck.type in ("none", None, ""):
        neck = None
    else:
        raise ValueError(f"Unknown model.neck.type {m.neck.type!r}; choose fpn or none.")
    return backbone, neck


def _assemble(cls: type[TwoStageDetector], m: ml_collections.ConfigDict, backbone, neck,
              roi_heads, label_map: dict | None) -> TwoStageDetector:
    """The detector ``cls`` from its parts, with an RPN from ``model.rpn`` unless the family
    takes its proposals with the inputs (``cls.requires_rpn is False``)."""
    rpn = None
    if cls.requires_rpn is not False:
        rpn = build_rpn(m.rpn, _strides(backbone, neck, m.rpn.in_features))
    return cls(
        backbone=backbone,
        neck=neck,
        rpn=rpn,
        roi_heads=roi_heads,
        num_classes=m.num_classes,
        rpn_in_features=None if rpn is None else tuple(m.rpn.in_features),
        roi_in_features=tuple(m.roi_head.in_features),
        label_map=label_map,
    )


def _build_faster_rcnn(m: ml_collections.ConfigDict, label_map: dict | None) -> FasterRCNN:
    backbone, neck = build_trunk(m)
    roi_strides = _strides(backbone, neck, m.roi_head.in_features)
    roi_heads = build_roi_heads(m.roi_head, m.backbone, m.num_classes, roi_strides)
    return _assemble(FasterRCNN, m, backbone, neck, roi_heads, label_map)


def _build_fast_rcnn(m: ml_collections.ConfigDict, label_map: dict | None) -> FastRCNN:
    """Fast R-CNN: no RPN, proposals come with the inputs; ``model.rpn`` is not read."""
    backbone, neck = build_trunk(m)
    roi_strides = _strides(backbone, neck, m.roi_head.in_features)
    roi_heads = build_roi_heads(m.roi_head, m.backbone, m.num_classes, roi_strides)
    return _assemble(FastRCNN, m, backbone, neck, roi_heads, label_map)


def build_mask_branch(cfg: ml_collections.ConfigDict, backbone_cfg: ml_collections.ConfigDict,
                      num_classes: int, strides: list[int]):
    """``config.model.mask_head`` -> ``(mask_pooler, MaskHead)`` reading the RoI head's features."""
    size = cfg.pooler_resolution
    if len(strides) > 1:
        pooler = MultiLevelRoIAlign(output_size=size, strides=strides,
                                    sampling_ratio=cfg.sampling_ratio, aligned=True)
    else:
        pooler = RoIAlign(output_size=size, spatial_scale=1.0 / strides[0],
                          sampling_ratio=cfg.sampling_ratio, aligned=True)
    res5 = None
    if cfg.head == "res5":
        if not backbone_cfg.name.startswith("resnet"):
            raise ValueError(f"model.mask_head.head='res5' needs a ResNet backbone, got "
                             f"{backbone_cfg.name!r}; use head='fpn_conv'.")
        from tf_rcnn.models.backbones.resnet import make_res5_head

        depth = 101 if backbone_cfg.name == "resnet101" else 50
        weights = backbone_cfg.weights if backbone_cfg.weights == "imagenet" else None
        res5 = make_res5_head(depth=depth, norm=backbone_cfg.norm,
                              stride_in_1x1=backbone_cfg.stride_in_1x1, weights=weights,
                              name="mask_res5")
    elif cfg.head != "fpn_conv":
        raise ValueError(f"Unknown model.mask_head.head {cfg.head!r}; choose fpn_conv or res5.")
    head = MaskHead(num_classes, conv_dims=tuple(cfg.conv_dims), deconv_dim=cfg.deconv_dim,
                    class_agnostic=cfg.class_agnostic, res5=res5, name="mask_head")
    return pooler, head


def _build_mask_rcnn(m: ml_collections.ConfigDict, label_map: dict | None) -> MaskRCNN:
    backbone, neck = build_trunk(m)
    roi_strides = _strides(backbone, neck, m.roi_head.in_features)
    box = build_roi_heads(m.roi_head, m.backbone, m.num_classes, roi_strides)
    mask_pooler, mask_head = build_mask_branch(m.mask_head, m.backbone, m.num_classes,
                                               roi_strides)
    roi_heads = MaskRoIHeads(
        pooler=box.pooler,
        box_head=box.box_head,
        box_predictor=box.box_predictor,
        mask_pooler=mask_pooler,
        mask_head=mask_head,
        sampler=box.sampler,
        decoder=box.decoder,
        box_loss_beta=box.box_loss_beta,
        focal_gamma=box.focal_gamma,
        mask_loss_weight=m.mask_head.loss_weight,
        name="roi_heads",
    )
    return _assemble(MaskRCNN, m, backbone, neck, roi_heads, label_map)


def _build_rfcn(m: ml_collections.ConfigDict, label_map: dict | None) -> RFCN:
    """R-FCN: RPN on ``model.rpn.in_features`` (C4), ``RFCNHead`` on the one map of
    ``model.roi_head.in_features`` (dilated C5); ``model.rfcn`` holds the head and OHEM values,
    ``model.roi_head`` the IoU rules, plain-sampling batch and decoder."""
    backbone, neck = build_trunk(m)
    roi_strides = _strides(backbone, neck, m.roi_head.in_features)
    if len(roi_strides) != 1:
        raise ValueError(
            f"R-FCN reads one feature map; model.roi_head.in_features is "
            f"{tuple(m.roi_head.in_features)}. Use ('C5',) with model.backbone.dilate_c5=True."
        )
    r, h = m.rfcn, m.roi_head
    if r.pool_mode not in ("pool", "align"):
        raise ValueError(f"Unknown model.rfcn.pool_mode {r.pool_mode!r}; choose pool or align.")
    head = RFCNHead(
        m.num_classes, k=r.k, channels=r.channels, spatial_scale=1.0 / roi_strides[0],
        mode=r.pool_mode, sampling_ratio=h.sampling_ratio, name="rfcn_head",
    )
    roi_heads = RFCNRoIHeads(
        head,
        sampler=build_sampler(h),
        decoder=build_decoder(h),
        box_loss_beta=h.box_loss_beta,
        ohem=r.ohem,
        ohem_batch_size=r.ohem_batch_size,
        ohem_nms_threshold=r.ohem_nms_threshold,
        name="roi_heads",
    )
    return _assemble(RFCN, m, backbone, neck, roi_heads, label_map)


# model.type -> function(config.model, label_map) -> detector. One entry per detector family.
MODEL_BUILDERS = {
    "faster_rcnn": _build_faster_rcnn,
    "fast_rcnn": _build_fast_rcnn,
    "mask_rcnn": _build_mask_rcnn,
    "rfcn": _build_rfcn,
}


def build_model(config: ml_collections.ConfigDict, label_map: dict | None = None
                ) -> TwoStageDetector:
    """Builds the detector a recipe describes (weights random unless the backbone loads some).

    Args:
        config: a full recipe (``configs/*.py``) or just its ``model`` section.
        label_map: optional JSON-able class description stored with the model.
    """
    m = config.model if "model" in config else config
    if m.type not in MODEL_BUILDERS:
        raise ValueError(f"Unknown model.type {m.type!r}; available: {sorted(MODEL_BUILDERS)}.")
    model = MODEL_BUILDERS[m.type](m, label_map)
    logging.info("Built %s: backbone %s, neck %s, %d classes.", type(model).__name__,
                 m.backbone.name, m.neck.type, m.num_classes)
    return model


# --------------------------------------------------------------------------------- data


def load_split(config: ml_collections.ConfigDict, split: str, label_map=None):
    """Reads the records of ``split`` ("train" or "val") of the recipe's dataset.

    The shapes dataset is generated (deterministically, once) under ``data.shapes_dir``.

    Returns:
        ``(records, label_map, annotation_file)``; ``annotation_file`` is the COCO json the
        COCO evaluator compares against (``None`` for VOC and custom data).
    """
    import os

    from tf_rcnn.data.coco import load_coco

    d = config.data
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
    with_masks = config.model.type == "mask_rcnn"
    if d.dataset == "shapes":
        from tf_rcnn.data.shapes import generate_shapes_dataset

        out = os.path.join(d.shapes_dir, split)
        annotation_file = generate_shapes_dataset(
            out,
            num_images=d.shapes_train_images if split == "train" else d.shapes_val_images,
            image_size=d.shapes_image_size,
            seed=d.shapes_train_seed if split == "train" else d.shapes_val_seed,
        )
        records, label_map, report = load_coco(
            annotation_file, os.path.join(out, "images"), label_map=label_map,
            include_masks=with_masks,
        )
    elif d.dataset == "coco":
        annotation_file = d.train_annotations if split == "train" else d.val_annotations
        image_dir = d.train_images if split == "train" else d.val_images
        if not annotation_file or not image_dir:
            raise ValueError(
                f"data.{split}_annotations and data.{split}_images must point at the COCO json "
                "and image folder (e.g. --config.data.val_annotations=.../instances_val2017.json)."
            )
        records, label_map, report = load_coco(annotation_file, image_dir, label_map=label_map,
                                               include_masks=with_masks)
    elif d.dataset == "voc":
        from tf_rcnn.data.voc import load_voc

        sets = d.voc_train_sets if split == "train" else d.voc_val_sets
        records, label_map, report = load_voc(
            d.voc_root, image_sets=[tuple(s) for s in sets], training=split == "train"
        )
        annotation_file = None
    elif d.dataset == "custom":
        from tf_rcnn.data.custom import load_custom

        path = d.train_annotations if split == "train" else d.val_annotations
        records, label_map, report = load_custom(path, label_map=label_map)
        annotation_file = None
    else:
        raise ValueError(f"Unknown data.dataset {d.dataset!r}; choose shapes, coco, voc, custom.")
    logging.info("%s split: %s", split, report.summary())
    return records, label_map, annotation_file


def pixel_stats(config: ml_collections.ConfigDict) -> tuple[tuple, tuple]:
    """``(pixel_mean, pixel_std)`` (RGB, 0-255 inputs): ``data.pixel_mean/pixel_std`` when set,
    else the backbone family's statistics. Training, evaluation and export all use this."""
    from tf_rcnn.data.pipeline import pixel_stats_for_backbone

    mean, std = pixel_stats_for_backbone(config.model.backbone.name)
    d = config.data
    return (tuple(d.pixel_mean) if d.pixel_mean is not None else mean,
            tuple(d.pixel_std) if d.pixel_std is not None else std)


def build_input_pipeline(config: ml_collections.ConfigDict, records, label_map, training: bool,
                         batch_size: int | None = None):
    """``config.data`` -> ``InputPipeline`` for the given records.

    Args:
        batch_size: GLOBAL batch (each replica gets its share through the input context);
            defaults to the recipe's train / eval batch.
    """
    from tf_rcnn.data.pipeline import InputPipeline

    d = config.data
    mean, std = pixel_stats(config)
    if batch_size is None:
        batch_size = d.train_batch_size if training else d.eval_batch_size
    import os

    proposals = None
    proposal_file = d.proposals_train if training else d.proposals_val
    key = "data.proposals_train" if training else "data.proposals_val"
    if config.model.type == "fast_rcnn" and not (proposal_file and os.path.exists(proposal_file)):
        from tf_rcnn.config import ConfigError

        raise ConfigError(
            f"Fast R-CNN reads its proposals from {key}, which is "
            f"{'unset' if not proposal_file else 'missing: ' + repr(proposal_file)}; write one "
            "with python -m tf_rcnn.tools.dump_proposals (or by hand, format in "
            f"tf_rcnn/data/proposals.py) and pass --config.{key}=FILE."
        )
    if proposal_file:
        from tf_rcnn.data.proposals import load_proposals

        proposals = load_proposals(proposal_file)
    return InputPipeline(
        records,
        label_map,
        training=training,
        batch_size=batch_size,
        scales=tuple(d.scales),
        max_size=d.max_size,
        scale_jitter=d.scale_jitter if training else None,
        random_flip=bool(d.random_flip) and training,
        size_divisor=d.size_divisor,
        max_instances=d.max_instances,
        pixel_mean=mean,
        pixel_std=std,
        with_masks=config.model.type == "mask_rcnn",
        mask_crop_size=d.mask_crop_size,
        proposals=proposals,
        max_proposals=d.max_proposals,
        seed=d.seed,
        deterministic=d.deterministic,
    )


def build_optimizer_from_config(config: ml_collections.ConfigDict, global_batch: int):
    """``config.train`` -> a Keras optimizer with its warmup/decay schedule.

    The learning rate follows the linear scaling rule from ``train.base_batch_size``.
    """
    from tf_rcnn.training.optimizers import build_optimizer
    from tf_rcnn.training.schedules import build_schedule
    from tf_rcnn.training.strategy import scale_learning_rate

    t = config.train
    lr = scale_learning_rate(t.base_learning_rate, t.base_batch_size, global_batch)
    if lr != t.base_learning_rate:
        logging.info("Linear scaling rule: lr %.5f for batch %d -> %.5f for batch %d",
                     t.base_learning_rate, t.base_batch_size, lr, global_batch)
    schedule = build_schedule(
        t.schedule,
        base_lr=lr,
        total_steps=t.total_steps,
        warmup_steps=t.warmup_steps,
        warmup_factor=t.warmup_factor,
        steps=tuple(t.decay_steps),
        gamma=t.decay_gamma,
    )
    return build_optimizer(
        t.optimizer,
        learning_rate=schedule,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        weight_decay_norm=t.weight_decay_norm,
        exclude_bias_from_decay=t.exclude_bias_from_decay,
    )


def initialize_model(model: TwoStageDetector, config: ml_collections.ConfigDict) -> None:
    """Creates every variable with one small inference call (call it under the strategy scope).

    The dummy image side is twice the data pipeline's size divisor, so every pyramid level of the
    backbone exists.
    """
    import tensorflow as tf

    side = max(2 * int(config.data.size_divisor), 64)
    inputs = {"images": tf.zeros([1, side, side, 3], tf.float32)}
    if model.rpn is None:
        inputs["proposals"] = tf.constant([[[0.0, 0.0, side / 2, side / 2]]], tf.float32)
    model(inputs, training=False)
