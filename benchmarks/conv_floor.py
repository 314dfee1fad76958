"""The convolution floor: the detector's dominant layers alone, tf_rcnn's TensorFlow against
PyTorch, in multiply-adds per second.

After the trunk, the R50-FPN detectors spend their time in a few convolution and matrix shapes
(the FPN and RPN 3x3 convs on P2, the box head's fc6, the mask head's four 3x3 convs on 100
RoIs). This times each shape alone, in float32 on this machine, with TensorFlow as tf_rcnn runs
it (NHWC ``tf.nn.conv2d`` + bias + ReLU in one traced function, oneDNN) and, with
``--torchvision_python``, with PyTorch as torchvision runs it (NCHW ``nn.Conv2d`` /
``nn.Linear`` under ``torch.no_grad``). Same work by construction: the multiply-add count of
each row is computed from its shape, and GMAC/s = that count / median seconds.

It answers two questions the end-to-end numbers cannot:

- how close both frameworks are to each other (and to this CPU's peak) on the work they share,
  which bounds how far any full-detector ratio can go below 1;
- whether batching raises the per-image rate of the dominant conv (``--batches``), which bounds
  what batched serving can gain per image.

    python benchmarks/conv_floor.py
    python benchmarks/conv_floor.py --torchvision_python=/tmp/tvenv/bin/python --runs=5

Prints a table and one ``RESULT {json}`` line. Run alone: a busy machine changes the numbers.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "peers")]  # speed_common / torchvision_bench

# name -> (kind, batch, height, width, in channels, out channels, kernel); "fc" rows use
# batch = rows and in/out = features. Shapes of R50-FPN at 640x640 with 1000 proposals and 100
# detections.
SHAPES = {
    "fpn_p2_output_3x3": ("conv", 1, 160, 160, 256, 256, 3),
    "rpn_p2_3x3": ("conv", 1, 160, 160, 256, 256, 3),
    "res2_3x3": ("conv", 1, 160, 160, 64, 64, 3),
    "res4_1x1_expand": ("conv", 1, 40, 40, 256, 1024, 1),
    "box_head_fc6": ("fc", 1000, 1, 1, 7 * 7 * 256, 1024, 1),
    "mask_head_3x3": ("conv", 100, 14, 14, 256, 256, 3),
}


def macs(kind: str, n: int, h: int, w: int, cin: int, cout: int, k: int) -> float:
    """Multiply-adds of one call ('same' padding, stride 1)."""
    if kind == "fc":
        return float(n) * cin * cout
    return float(n) * h * w * cin * cout * k * k


def rows(batches: list[str]) -> list[tuple[str, tuple]]:
    """The shapes, then the FPN P2 3x3 conv at each batch size of ``batches``."""
    out = list(SHAPES.items())
    _, _, h, w, cin, cout, k = SHAPES["fpn_p2_output_3x3"]
    out += [(f"fpn_p2_3x3_batch{b}", ("conv", int(b), h, w, cin, cout, k)) for b in batches]
    return out


def measure_tf(runs: int, batches: list[str]) -> dict[str, float]:
    """Median seconds per row with TensorFlow (NHWC, as tf_rcnn's layers run)."""
    import tensorflow as tf
    from speed_common import median_time

    result = {}
    for name, (kind, n, h, w, cin, cout, k) in rows(batches):
        if kind == "fc":
            x = tf.random.normal([n, cin])
            weight = tf.random.normal([cin, cout], stddev=0.01)
            bias = tf.zeros([cout])
            fn = tf.function(lambda x=x, weight=weight, bias=bias: tf.nn.relu(
                tf.matmul(x, weight) + bias))
        else:
            x = tf.random.normal([n, h, w, cin])
            weight = tf.random.normal([k, k, cin, cout], stddev=0.01)
            bias = tf.zeros([cout])
            fn = tf.function(lambda x=x, weight=weight, bias=bias: tf.nn.relu(tf.nn.bias_add(
                tf.nn.conv2d(x, weight, 1, "SAME"), bias)))
        result[name] = median_time(fn, runs=runs)
    return result


def measure_torch(runs: int, batches: list[str]) -> dict[str, float]:
    """Median seconds per row with PyTorch (NCHW, as torchvision's layers run). Runs in the
    peer's venv, which has no absl: see the ``torch-worker`` entry at the bottom."""
    import torch
    from torchvision_bench import timed_runs

    torch.set_grad_enabled(False)
    result = {}
    for name, (kind, n, h, w, cin, cout, k) in rows(batches):
        if kind == "fc":
            x = torch.randn(n, cin)
            layer = torch.nn.Linear(cin, cout)
        else:
            x = torch.randn(n, cin, h, w)
            layer = torch.nn.Conv2d(cin, cout, k, padding=k // 2)
        layer.eval()
        result[name] = statistics.median(
            timed_runs(lambda x=x, layer=layer: torch.relu(layer(x)), runs))
    return result


def main(argv: list[str]) -> None:
    del argv
    batches = list(_BATCHES.value)
    tf_times = measure_tf(_RUNS.value, batches)
    torch_times = {}
    if _TV.value:
        proc = subprocess.run([_TV.value, os.path.abspath(__file__), "torch-worker",
                               str(_RUNS.value), ",".join(batches)],
                              capture_output=True, text=True)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"The PyTorch worker failed:\n{proc.stderr[-3000:]}")
        torch_times = json.loads(lines[-1][len("RESULT "):])
    table = []
    print(f"{'shape':<24} {'GMAC':>7} {'tf ms':>8} {'tf GMAC/s':>10} {'torch ms':>9} "
          f"{'torch GMAC/s':>13} {'tf/torch':>9} {'rate vs batch 1 (tf / torch)':>29}")
    base_rate, torch_base = None, None
    for name, shape in rows(batches):
        work = macs(*shape) / 1e9
        t = tf_times[name]
        row = {"shape": name, "gmac": work, "tf_s": t, "tf_gmac_per_s": work / t}
        line = f"{name:<24} {work:>7.2f} {1e3 * t:>8.1f} {work / t:>10.1f}"
        if name in torch_times:
            tt = torch_times[name]
            row.update(torch_s=tt, torch_gmac_per_s=work / tt, tf_over_torch=t / tt)
            line += f" {1e3 * tt:>9.1f} {work / tt:>13.1f} {t / tt:>9.2f}"
        else:
            line += f" {'-':>9} {'-':>13} {'-':>9}"
        if name.startswith("fpn_p2_3x3_batch"):
            # Per-image rate against the first batch size (work per image is the same).
            base_rate = base_rate or row["tf_gmac_per_s"]
            row["tf_rate_vs_first_batch"] = row["tf_gmac_per_s"] / base_rate
            line += f" {row['tf_rate_vs_first_batch']:>9.2f}x"
            if "torch_gmac_per_s" in row:
                torch_base = torch_base or row["torch_gmac_per_s"]
                row["torch_rate_vs_first_batch"] = row["torch_gmac_per_s"] / torch_base
                line += f" / {row['torch_rate_vs_first_batch']:.2f}x"
        print(line)
        table.append(row)
    print("RESULT " + json.dumps({"rows": table, "runs": _RUNS.value}))


if __name__ == "__main__" and sys.argv[1:2] == ["torch-worker"]:
    # The peer's venv: torch only, no absl. Arguments: runs, comma-separated batch sizes.
    print("RESULT " + json.dumps(measure_torch(int(sys.argv[2]), sys.argv[3].split(","))))
    sys.exit(0)

from absl import app, flags  # noqa: E402

_RUNS = flags.DEFINE_integer("runs", 5, "Timed calls per shape (median), after 2 warm-ups.")
_BATCHES = flags.DEFINE_list("batches", ["1", "4", "8"],
                             "Batch sizes for the batching rows (FPN P2 3x3 conv).")
_TV = flags.DEFINE_string("torchvision_python", None,
                          "Python of a venv with torch (benchmarks/peers/setup_torchvision.sh).")

if __name__ == "__main__":
    app.run(main)
