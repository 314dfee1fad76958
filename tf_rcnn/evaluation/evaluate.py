"""Evaluating a trained run on its validation split: what ``eval.py`` runs.

``evaluate_checkpoint`` restores the run (``tf_rcnn.models.checkpoint.restore_detector``: the
run's ``config.json`` and ``label_map.json`` unless a recipe is given; every variable must fit),
runs the model over the validation split, and writes into ``output_dir``:
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
from tf_rcnn.data.builder import build_input_pipeline, load_split
from tf_rcnn.data.records import records_to_coco
from tf_rcnn.data.tfrecords import load_image
from tf_rcnn.evaluation.coco_evaluator import COCOEvaluator
from tf_rcnn.evaluation.mask_pasting import MaskPastingEvaluator
from tf_rcnn.evaluation.proposal_recall import ProposalRecallEvaluator
from tf_rcnn.evaluation.runner import run_evaluation
from tf_rcnn.evaluation.voc_evaluator import VOCEvaluator
from tf_rcnn.models.checkpoint import restore_detector


def _has_segmentations(ground_truth: dict, annotation_file: str) -> bool:
    """Whether mask AP can be computed: every annotation has a ``segmentation`` (True) or none
    has (False: a box-only file, so a Mask R-CNN is scored on its boxes alone)."""
    annotations = ground_truth.get("annotations") or []
    lacking = [a.get("id") for a in annotations if "segmentation" not in a]
    if not lacking:
        return True
    if len(lacking) == len(annotations):
        logging.warning("%s has no segmentations: reporting box AP only (no segm/AP).",
                        annotation_file)
        return False
    raise ConfigError(
        f"{annotation_file}: {len(lacking)} of {len(annotations)} annotations have no "
        f"'segmentation' (ids {lacking[:5]}); mask AP needs one (polygons or RLE) on every "
        "annotation. Fix the file, or drop them all to score boxes only.")


def evaluate_checkpoint(
    checkpoint: str,
    output_dir: str,
    config: ml_collections.ConfigDict | str | None = None,
    num_images: int | None = None,
    proposal_recall: bool = False,
    visualize: int | None = None,
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
    """
    model, config, label_map = restore_detector(checkpoint, config)
    records, label_map, annotation_file = load_split(config, "val", label_map=label_map,
                                                     with_masks=model.needs_masks)
    if num_images is not None:
        records = records[:num_images]
    pipeline = build_input_pipeline(config, records, label_map, training=False,
                                    needs_proposals=model.needs_proposals)

    evaluators = []
    coco = masker = None
    if "coco" in config.eval.metrics:
        with_masks = model.needs_masks
        if annotation_file is not None:
            with open(annotation_file) as f:
                ground_truth = json.load(f)
            if with_masks and not _has_segmentations(ground_truth, annotation_file):
                with_masks = False
            iou_types = ("bbox", "segm") if with_masks else ("bbox",)
            coco = COCOEvaluator(gt_dataset=ground_truth, iou_types=iou_types,
                                 label_map=label_map)
        elif with_masks and not all(r.has_masks for r in records):
            raise ConfigError("Mask AP needs a COCO annotation file with segmentations; this "
                              "dataset has none (use --config.eval.metrics='(\"voc\",)').")
        else:
            # VOC, custom or TFRecord data: the COCO ground truth is built from the records.
            iou_types = ("bbox", "segm") if with_masks else ("bbox",)
            coco = COCOEvaluator(gt_dataset=records_to_coco(records, label_map, with_masks),
                                 iou_types=iou_types, label_map=label_map)
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
