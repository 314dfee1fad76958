"""Evaluating a trained run on its validation split: what ``eval.py`` runs.

``evaluate_checkpoint`` restores the run (``tf_rcnn.models.checkpoint.restore_detector``: the
run's ``config.json`` and ``label_map.json`` unless a recipe is given; every variable must fit),
reads the validation split through the model's label map (the same ids, else the same names:
``tf_rcnn.label_map.match_label_map``), runs the model over it, scores it against the reader's
records (``records_to_coco``: what the reader skipped is not ground truth, what it repaired is
used as repaired) and writes into ``output_dir``:
``metrics.json`` (``bbox/AP`` ... all 12 COCO stats, ``segm/AP`` ... for Mask R-CNN, ``voc/mAP``
for VOC data, ``rpn/AR@N`` when asked), ``detections.json`` (COCO results: dataset category
ids, ``[x, y, w, h]`` in original-image pixels, RLE ``segmentation`` for Mask R-CNN, and each
image's ``file_name``: the COCO json's, the CSV's ``image`` column, the path under the VOC root)
and ``detections.png`` (a grid of drawn validation images, masks as translucent overlays).
"""

from __future__ import annotations

import json
import os

import ml_collections
from absl import logging

from tf_rcnn import visualize as vis
from tf_rcnn.config import ConfigError
from tf_rcnn.data.builder import build_input_pipeline, load_split, split_flag
from tf_rcnn.data.records import records_to_coco
from tf_rcnn.data.tfrecords import load_image
from tf_rcnn.evaluation.coco_evaluator import COCOEvaluator
from tf_rcnn.evaluation.mask_pasting import MaskPastingEvaluator
from tf_rcnn.evaluation.proposal_recall import ProposalRecallEvaluator
from tf_rcnn.evaluation.runner import run_evaluation
from tf_rcnn.evaluation.voc_evaluator import VOCEvaluator
from tf_rcnn.models.builder import with_tta
from tf_rcnn.models.checkpoint import restore_detector
from tf_rcnn.models.tta import TTADetector


def _require_every_mask(config: ml_collections.ConfigDict, records: list) -> None:
    """Mask AP against the filled boxes the reader put in for missing or malformed masks
    would not be a mask metric: every instance needs its own mask, or none has one."""
    lacking = sum(1 for r in records for segm in r.segmentations if segm is None)
    if lacking:
        total = sum(r.num_instances for r in records)
        raise ConfigError(
            f"{split_flag(config, 'val')}: {lacking} of {total} annotations have no usable "
            "mask (a missing or malformed 'segmentation'; the reader's log line lists them). "
            "Mask AP needs one (polygons or RLE) on every annotation: fix them, or drop every "
            "segmentation to score boxes only.")


def evaluate_checkpoint(
    checkpoint: str,
    output_dir: str,
    config: ml_collections.ConfigDict | str | None = None,
    num_images: int | None = None,
    proposal_recall: bool = False,
    visualize: int | None = None,
    precision: str = "float32",
    tta: bool = False,
) -> dict[str, float]:
    """Restores a trained run and evaluates it on its validation split; returns the metrics.

    Args:
        checkpoint: a run directory (its newest checkpoint) or a checkpoint prefix.
        output_dir: where ``metrics.json``, ``detections.json`` and ``detections.png`` go.
        config: the recipe (path or ConfigDict) with any overrides; default: the run's
            ``config.json``.
        num_images: evaluate only the first N validation images.
        proposal_recall: also report RPN recall (``rpn/AR@100``, ``rpn/AR@1000``).
        visualize: images drawn into ``detections.png`` (default ``eval.visualize``).
        precision: the type the detector computes in (``float32``, ``bfloat16``,
            ``float16``), to measure what a reduced-precision export gives.
        tta: test-time augmentation with the config's ``test.tta`` values
            (``tf_rcnn.models.tta``); also on when the config sets ``test.tta.enabled``.
    """
    model, config, label_map = restore_detector(checkpoint, config, precision=precision)
    model = with_tta(model, config, tta)
    if proposal_recall and isinstance(model, TTADetector):
        raise ConfigError("--proposal_recall measures the RPN's proposals, which test-time "
                          "augmentation does not change: run it without --tta (and with "
                          "--config.test.tta.enabled=False).")
    with_masks = model.needs_masks and "coco" in config.eval.metrics
    # The model's classes found in the data (same ids, else same names, else an error); a
    # split without a usable box is an error, never a metric.
    records, label_map, _ = load_split(config, "val", label_map=label_map,
                                       with_masks=with_masks, num_images=num_images,
                                       require_boxes=True)
    pipeline = build_input_pipeline(config, records, label_map, training=False,
                                    needs_proposals=model.needs_proposals)

    evaluators = []
    coco = masker = None
    if "coco" in config.eval.metrics:
        if with_masks and not all(r.has_masks for r in records):
            logging.warning("%s has no instance masks: reporting box AP only (no segm/AP).",
                            split_flag(config, "val"))
            with_masks = False
        if with_masks:
            _require_every_mask(config, records)
        # The ground truth is the reader's records: exactly what it kept or repaired (COCO's
        # own area, iscrowd and segmentation carried), for every dataset kind.
        coco = COCOEvaluator(
            gt_dataset=records_to_coco(records, label_map, with_masks=with_masks),
            iou_types=("bbox", "segm") if with_masks else ("bbox",), label_map=label_map)
        if with_masks:
            # Box-relative 28x28 masks -> original-image masks (kept for the drawn images).
            count = config.eval.visualize if visualize is None else visualize
            masker = MaskPastingEvaluator(
                coco, {r.image_id: (r.height, r.width) for r in records},
                keep_masks_for=[r.image_id for r in records[:count or 0]],
                rule=model.roi_heads.paste_rule)
        evaluators.append(masker if with_masks else coco)
    voc = None
    if "voc" in config.eval.metrics:
        # The VOC reader stores continuous boxes [ymin - 1, xmin - 1, ymax, xmax], whose plain
        # width equals the devkit's inclusive "+1" width: no further +1 here.
        voc = VOCEvaluator([label_map.name(i) for i in range(1, label_map.num_classes + 1)],
                           use_plus_one=False)
        for record in records:
            voc.add_ground_truth(record.image_id, record.boxes, record.classes,
                                 getattr(record, "difficult", None))
        evaluators.append(voc)
    recall = ProposalRecallEvaluator() if proposal_recall else None

    per_image = run_evaluation(model, pipeline.dataset(), evaluators, recall)
    metrics: dict[str, float] = {}
    for evaluator in evaluators:
        metrics.update(evaluator.evaluate())
    if recall is not None:
        metrics.update(recall.evaluate())
    metrics["num_images"] = float(len(per_image))

    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2, sort_keys=True)
    if coco is not None:
        coco.write_detections(os.path.join(output_dir, "detections.json"))

    count = config.eval.visualize if visualize is None else visualize
    if count:
        names = {i: label_map.name(i) for i in range(1, label_map.num_classes + 1)}
        drawn = []
        for record in records[:count]:
            det = per_image.get(int(record.image_id))
            if det is None:
                continue
            image = load_image(record)
            masks = None if masker is None else masker.kept_masks.get(int(record.image_id))
            image, boxes, masks = vis.upscale_for_drawing(image, det["boxes"], masks)
            drawn.append(vis.draw_detections(
                image, boxes, det["classes"], det["scores"], names, masks=masks,
                score_threshold=config.eval.score_threshold_visualize))
        if drawn:
            path = os.path.join(output_dir, "detections.png")
            vis.save_image(path, vis.draw_grid(drawn))
            logging.info("Wrote %s", path)
    logging.info("Metrics: %s", json.dumps(metrics, sort_keys=True))
    return metrics
