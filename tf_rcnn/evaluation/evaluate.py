"""Evaluating a checkpoint on a recipe's validation split: what ``eval.py`` runs.

``evaluate_checkpoint`` restores the checkpoint strictly (every variable must fit), runs the
model over the validation split, and writes into ``output_dir``:
``metrics.json`` (``bbox/AP`` ... all 12 COCO stats, ``segm/AP`` ... for Mask R-CNN, ``voc/mAP``
for VOC data, ``rpn/AR@N`` when asked), ``detections.json`` (COCO results: dataset category
ids, ``[x, y, w, h]`` in original-image pixels, RLE ``segmentation`` for Mask R-CNN) and
``detections.png`` (a grid of drawn validation images, masks as translucent overlays).
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from tf_rcnn import visualize as vis
from tf_rcnn.config import ConfigError
from tf_rcnn.data.records import LabelMap, records_to_coco
from tf_rcnn.evaluation.coco_evaluator import COCOEvaluator
from tf_rcnn.evaluation.mask_pasting import MaskPastingEvaluator
from tf_rcnn.evaluation.proposal_recall import ProposalRecallEvaluator
from tf_rcnn.evaluation.runner import run_evaluation
from tf_rcnn.evaluation.voc_evaluator import VOCEvaluator
from tf_rcnn.models import builder
from tf_rcnn.training.checkpoints import load_weights_partial, resolve_checkpoint_path


def upscale_for_drawing(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None = None,
                        min_side: int = 384) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Enlarges small images by an integer factor (nearest neighbour) so labels stay legible;
    boxes ``[D, 4]`` and full-image masks ``[D, H, W]`` follow."""
    factor = max(1, -(-min_side // max(image.shape[:2])))
    if factor == 1:
        return image, boxes, masks
    image = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    if masks is not None:
        masks = np.repeat(np.repeat(masks, factor, axis=1), factor, axis=2)
    return image, np.asarray(boxes, np.float32) * factor, masks


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    checkpoint: str,
    output_dir: str,
    num_images: int | None = None,
    proposal_recall: bool = False,
    visualize: int | None = None,
) -> dict[str, float]:
    """Restores ``checkpoint`` into the recipe's model and evaluates it; returns the metrics."""
    checkpoint = resolve_checkpoint_path(checkpoint)
    run_dir = os.path.dirname(checkpoint)
    label_map = None
    label_map_file = os.path.join(run_dir, "label_map.json")
    if os.path.exists(label_map_file):
        label_map = LabelMap.from_json(label_map_file)
    records, label_map, annotation_file = builder.load_split(config, "val", label_map=label_map)
    if num_images is not None:
        records = records[:num_images]
    pipeline = builder.build_input_pipeline(config, records, label_map, training=False)

    model = builder.build_model(config, label_map=label_map.to_dict())
    builder.initialize_model(model, config)
    load_weights_partial(model, checkpoint, skip_mismatch=False)
    logging.info("Restored %s", checkpoint)

    evaluators = []
    coco = masker = None
    if "coco" in config.eval.metrics:
        with_masks = config.model.type == "mask_rcnn"
        iou_types = ("bbox", "segm") if with_masks else ("bbox",)
        if annotation_file is not None:
            coco = COCOEvaluator(annotation_file, iou_types=iou_types, label_map=label_map)
        elif with_masks:
            raise ConfigError("Mask AP needs a COCO annotation file with segmentations; this "
                              "dataset has none (use --config.eval.metrics='(\"voc\",)').")
        else:
            # VOC or custom data: the COCO ground truth is built from the records.
            coco = COCOEvaluator(gt_dataset=records_to_coco(records, label_map),
                                 iou_types=iou_types, label_map=label_map)
        if with_masks:
            # Box-relative 28x28 masks -> original-image masks (kept for the drawn images).
            count = config.eval.visualize if visualize is None else visualize
            masker = MaskPastingEvaluator(
                coco, {r.image_id: (r.height, r.width) for r in records},
                keep_masks_for=[r.image_id for r in records[:count or 0]])
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
            image = np.asarray(Image.open(record.image_path).convert("RGB"))
            masks = None if masker is None else masker.kept_masks.get(int(record.image_id))
            image, boxes, masks = upscale_for_drawing(image, det["boxes"], masks)
            drawn.append(vis.draw_detections(
                image, boxes, det["classes"], det["scores"], names, masks=masks,
                score_threshold=config.eval.score_threshold_visualize))
        if drawn:
            path = os.path.join(output_dir, "detections.png")
            vis.save_image(path, vis.draw_grid(drawn))
            logging.info("Wrote %s", path)
    logging.info("Metrics: %s", json.dumps(metrics, sort_keys=True))
    return metrics
