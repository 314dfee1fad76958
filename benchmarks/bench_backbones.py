"""Backbone + neck forward speed (run by hand, never in tests).

    python benchmarks/bench_backbones.py

One 640x640 image through ResNet-50 + FPN (and the tiny demo backbone + FPN at 128x128, batch 8),
inside ``tf.function``, inference mode; prints the median and minimum of 5 timed runs after a
warm-up call, and parameter counts.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import tf_rcnn  # noqa: F401  (selects the TensorFlow backend)
from tf_rcnn.models.backbones import build_backbone
from tf_rcnn.models.necks.fpn import FPN


def bench(name: str, backbone_name: str, shape: tuple[int, int, int, int], out_channels: int):
    backbone = build_backbone(backbone_name)
    neck = FPN(in_strides=tuple(backbone.output_strides.values()), out_channels=out_channels)

    @tf.function
    def forward(images):
        return neck(backbone(images, training=False))

    images = tf.random.normal(shape)
    forward(images)  # warm-up / trace
    times = []
    for _ in range(5):
        start = time.perf_counter()
        out = forward(images)
        _ = [v.numpy() for v in out.values()]
        times.append(time.perf_counter() - start)
    params = backbone.count_params() + neck.count_params()
    print(f"{name}: median {np.median(times) * 1e3:.0f} ms, min {min(times) * 1e3:.0f} ms, "
          f"backbone {backbone.count_params():,} + FPN {neck.count_params():,} = {params:,} params")


if __name__ == "__main__":
    bench("R50-FPN 1x640x640", "resnet50", (1, 640, 640, 3), 256)
    bench("tiny-FPN 8x128x128", "tiny", (8, 128, 128, 3), 64)
