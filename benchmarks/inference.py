"""Inference speed of the detector families: full detector vs trunk, per-stage breakdown.

For each model (random weights; no download needed) at a given input size and test proposal
count it reports, from a fresh process so the first call and the peak memory are its own:

- ``first_call_s``: from the un-built model to the first detections, built the way every
  tf_rcnn command builds it (``build_with_dummy_inputs``: variables created by one small eager
  call), then tracing and one run: what a user waits for on the first image;
- ``full_s``: median of ``--runs`` calls of the whole detector (one traced ``tf.function``);
- ``trunk_s``: median of the backbone (+ FPN) alone, and ``ratio = full_s / trunk_s``;
- ``stages``: each later stage timed alone on the previous stage's materialised outputs (RPN
  head, anchors + proposal layer, R-FCN score maps, RoI pooling, box head + predictor, decoder
  with NMS, mask branch; a cascade's stages one by one); ``stages_sum_s`` vs ``full_s`` shows
  what the stage split costs;
- ``peak_rss_mb``: the process's peak resident memory (``ru_maxrss``).

With ``--jit_compile`` the trunk is an XLA-compiled function called from the detector's graph
(the proposal/NMS stages have data-dependent shapes and stay un-compiled).

    python benchmarks/inference.py                      # all five models, default sizes
    python benchmarks/inference.py --models=faster_r50_fpn --size=640 --proposals=1000
    python benchmarks/inference.py --models=faster_r50_fpn,cascade_r50_fpn --size=640 \
        --proposals=1000                                # Cascade R-CNN's cost beside Faster
    python benchmarks/inference.py --models=rfcn_r101 --size=600x1000 --proposals=300
    python benchmarks/inference.py --torchvision_python=/tmp/tvenv/bin/python
        # adds torchvision's fasterrcnn/maskrcnn_resnet50_fpn at the same size and proposal
        # count, in the same run (see benchmarks/peers/setup_torchvision.sh)

Prints a table and one ``RESULT {json}`` line. Timings on a shared machine are noisy; run alone.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from speed_common import MODELS, block, dataset_num_classes, median_time, run_result  # noqa: E402

_MODELS = flags.DEFINE_list("models", list(MODELS), f"Any of {sorted(MODELS)}.")
_SIZE = flags.DEFINE_string("size", None, "H or HxW (default: per model, 640 / 600x1000).")
_PROPOSALS = flags.DEFINE_integer("proposals", None, "Test proposals (default: per model).")
_RUNS = flags.DEFINE_integer("runs", 7, "Timed runs (after 2 warm-up calls).")
_JIT = flags.DEFINE_boolean("jit_compile", False, "XLA-compile the trunk.")
_SCORE = flags.DEFINE_float(
    "score_threshold", 0.05,
    "Decoder score threshold (0.05 = the library default and torchvision's; random weights "
    "give class scores near 1/(K+1), so 0.0 makes every RoI x class reach per-class NMS).")
_FULL = flags.DEFINE_boolean(
    "full_proposals", True,
    "Zero the RPN's box-delta conv and set its NMS IoU to 1.0 (here and in the torchvision "
    "peer), so exactly --proposals proposals (the top-scored anchors) reach the second stage. "
    "Random weights otherwise leave a data-dependent count (640x640: 6 here, 596 in "
    "torchvision), which would compare different amounts of work.")
_TV = flags.DEFINE_string("torchvision_python", None,
                          "Python of a venv with torch + torchvision (peer rows).")
_WORKER = flags.DEFINE_string("worker", None, "Internal: measure this model in this process.")


def _size(name: str) -> tuple[int, int]:
    if _SIZE.value is None:
        return MODELS[name][1]
    parts = [int(p) for p in _SIZE.value.lower().split("x")]
    return (parts[0], parts[-1])


def measure(name: str) -> dict:
    import tensorflow as tf

    from tf_rcnn.config import load_config_file
    from tf_rcnn.models import builder
    from tf_rcnn.models.roi_heads import pool_features

    recipe, _, default_proposals, _ = MODELS[name]
    height, width = _size(name)
    proposals = _PROPOSALS.value or default_proposals
    config = load_config_file(os.path.join(REPO, "configs", recipe))
    config.model.num_classes = dataset_num_classes(recipe)
    config.model.backbone.weights = None
    config.model.rpn.post_nms_topk_test = proposals
    config.model.roi_head.score_threshold = _SCORE.value
    if _FULL.value:
        config.model.rpn.nms_threshold = 1.0
    runs = _RUNS.value
    tf.keras.utils.set_random_seed(0)
    images = tf.random.normal([1, height, width, 3], stddev=50.0)
    image_shape = tf.constant([[height, width]], tf.int32)

    start = time.perf_counter()
    model = builder.build_model(config)
    model.build_with_dummy_inputs()
    trunk = tf.function(lambda x: model.extract_features(x, training=False),
                        jit_compile=_JIT.value, autograph=False)

    @tf.function(autograph=False)  # as the library's predict function and exports
    def full(x):
        features = trunk(x) if _JIT.value else model.extract_features(x, training=False)
        return model.detect_from_features(features, image_shape)

    block(full(images))
    first_call = time.perf_counter() - start
    if _FULL.value:  # after the first call: the traced functions read the variables
        deltas = model.rpn.head.deltas_conv
        deltas.set_weights([tf.zeros_like(w) for w in deltas.get_weights()])

    valid = model.propose(images)["proposal_valid"]
    result = {"model": name, "size": [height, width], "proposals": proposals,
              "proposals_to_box_head": int(tf.reduce_sum(tf.cast(valid, tf.int32))),
              "full_proposals": _FULL.value,
              "jit_compile": _JIT.value, "first_call_s": first_call}
    result["full_s"] = median_time(full, images, runs=runs)
    result["trunk_s"] = median_time(trunk, images, runs=runs)
    result["ratio"] = result["full_s"] / result["trunk_s"]

    # ---------------------------------------------------------------- per-stage breakdown
    features = trunk(images)
    stages = {}
    rpn, heads = model.rpn, model.roi_heads
    rpn_features = [features[n] for n in model.rpn_in_features]
    roi_features = [features[n] for n in model.roi_in_features]

    head_fn = tf.function(lambda f: rpn.head(f, training=False))
    stages["rpn_head"] = median_time(head_fn, rpn_features, runs=runs)
    logits, deltas = head_fn(rpn_features)

    @tf.function
    def propose(f, logits, deltas):
        anchors = rpn.anchor_generator(f)
        a = rpn.anchor_generator.num_anchors_per_location
        per_level = [tf.shape(x)[1] * tf.shape(x)[2] * a for x in f]
        return rpn.proposal_layer(logits, deltas, anchors, image_shape,
                                  num_anchors_per_level=per_level, training=False)

    stages["anchors_and_proposal_layer"] = median_time(propose, rpn_features, logits, deltas,
                                                        runs=runs)
    boxes, _, valid = propose(rpn_features, logits, deltas)

    if hasattr(heads, "score_maps"):  # R-FCN: per-image score maps, then PS pooling + voting
        maps_fn = tf.function(lambda f: heads.score_maps(f))
        stages["rfcn_score_maps"] = median_time(maps_fn, roi_features, runs=runs)
        maps = maps_fn(roi_features)
        pool_fn = tf.function(lambda m, b: heads.head.pool(m, b))
        stages["ps_roi_pool_and_vote"] = median_time(pool_fn, maps, boxes, runs=runs)
        class_logits, box_deltas = pool_fn(maps, boxes)
    elif hasattr(heads, "stages"):  # Cascade: each stage pools the previous stage's boxes
        for index, stage in enumerate(heads.stages):
            stage_fn = tf.function(
                lambda f, b, s=stage: s.predict_boxes(f, b, training=False))
            stages[f"stage{index + 1}_pool_head_predictor"] = median_time(
                stage_fn, roi_features, boxes, runs=runs)
            class_logits, box_deltas = stage_fn(roi_features, boxes)
            if index + 1 < heads.num_stages:
                refine_fn = tf.function(lambda d, b, v, s=stage: heads.refine_boxes(
                    s, d, b, v, image_shape))
                stages[f"stage{index + 1}_refine_boxes"] = median_time(
                    refine_fn, box_deltas, boxes, valid, runs=runs)
                boxes, valid = refine_fn(box_deltas, boxes, valid)
    else:
        pool_fn = tf.function(lambda f, b: pool_features(heads.pooler, f, b))
        stages["roi_pooling"] = median_time(pool_fn, roi_features, boxes, runs=runs)
        pooled = pool_fn(roi_features, boxes)
        box_fn = tf.function(
            lambda p: heads.box_predictor(heads.box_head(p, training=False), training=False))
        stages["box_head_and_predictor"] = median_time(box_fn, pooled, runs=runs)
        class_logits, box_deltas = box_fn(pooled)

    decode_fn = tf.function(lambda c, d, b, v: heads.decoder(c, d, b, v, image_shape))
    stages["decoder_and_nms"] = median_time(decode_fn, class_logits, box_deltas, boxes, valid,
                                             runs=runs)
    if hasattr(heads, "mask_head"):
        detections = decode_fn(class_logits, box_deltas, boxes, valid)

        @tf.function
        def masks(f, det_boxes, det_classes):
            return tf.sigmoid(heads.predict_masks(f, det_boxes, det_classes, training=False))

        stages["mask_branch"] = median_time(masks, roi_features,
                                             detections["detection_boxes"],
                                             detections["detection_classes"], runs=runs)
    result["stages"] = stages
    result["stages_sum_s"] = result["trunk_s"] + sum(stages.values())
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return result


def _torchvision_row(name: str) -> dict | None:
    peer = MODELS[name][3]
    if peer is None or not _TV.value:
        return None
    height, width = _size(name)
    if height != width:
        return None  # torchvision's transform resizes by the shorter side; keep squares
    script = os.path.join(REPO, "benchmarks", "peers", "torchvision_bench.py")
    return run_result([_TV.value, script, "infer", f"--model={peer}", f"--size={height}",
                        f"--proposals={_PROPOSALS.value or MODELS[name][2]}",
                        f"--runs={_RUNS.value}", f"--score_thresh={_SCORE.value}",
                        *(["--full_proposals"] if _FULL.value else [])])


def _print_table(rows: list[dict]) -> None:
    print(f"{'model':<34} {'size':>9} {'props':>5} {'full s':>7} {'trunk s':>7} "
          f"{'ratio':>5} {'1st call s':>10} {'peak MB':>8}")
    for r in rows:
        size = "x".join(str(s) for s in r["size"])
        trunk = r.get("trunk_s", r.get("backbone_fpn_s"))
        props = r.get("proposals_to_box_head", r["proposals"])
        print(f"{r['model']:<34} {size:>9} {props:>5} {r['full_s']:>7.3f} "
              f"{trunk:>7.3f} {r['full_s'] / trunk:>5.2f} {r['first_call_s']:>10.1f} "
              f"{r.get('peak_rss_mb', float('nan')):>8.0f}")
        for stage, seconds in r.get("stages", {}).items():
            print(f"    {stage:<30} {seconds * 1000:8.1f} ms")


def main(argv):
    del argv
    if _WORKER.value:
        print("RESULT " + json.dumps(measure(_WORKER.value)), flush=True)
        return
    unknown = [m for m in _MODELS.value if m not in MODELS]
    if unknown:
        raise app.UsageError(f"Unknown models {unknown}; choose from {sorted(MODELS)}.")
    rows = []
    passthrough = [f"--runs={_RUNS.value}", f"--score_threshold={_SCORE.value}",
                   f"--full_proposals={_FULL.value}"]
    if _SIZE.value:
        passthrough.append(f"--size={_SIZE.value}")
    if _PROPOSALS.value:
        passthrough.append(f"--proposals={_PROPOSALS.value}")
    if _JIT.value:
        passthrough.append("--jit_compile")
    for name in _MODELS.value:
        rows.append(run_result([sys.executable, os.path.abspath(__file__),
                                 f"--worker={name}", *passthrough]))
        peer = _torchvision_row(name)
        if peer is not None:
            peer["model"] = "torchvision " + peer["model"]
            peer["tf_rcnn_full_over_torchvision_full"] = rows[-1]["full_s"] / peer["full_s"]
            rows.append(peer)
    _print_table(rows)
    print("RESULT " + json.dumps(rows), flush=True)


if __name__ == "__main__":
    app.run(main)
