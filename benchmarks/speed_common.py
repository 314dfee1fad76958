"""What the speed benchmarks (``inference.py``, ``train.py``) share: the detector table and the
runner of one measurement in a fresh process."""

import json
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (recipe in configs/, default inference size (H, W), default test proposals,
#          torchvision peer model or None)
MODELS = {
    "faster_r50_fpn": ("faster_rcnn_r50_fpn_coco.py", (640, 640), 1000,
                       "fasterrcnn_resnet50_fpn"),
    "faster_r50_c4": ("faster_rcnn_r50_c4_coco.py", (640, 640), 1000, None),
    "rfcn_r101": ("rfcn_r101_voc.py", (600, 1000), 300, None),
    "mask_r50_fpn": ("mask_rcnn_r50_fpn_coco.py", (640, 640), 1000, "maskrcnn_resnet50_fpn"),
}


def dataset_num_classes(recipe: str) -> int:
    """The class count of a recipe's dataset (VOC 20, COCO 80, shapes 3): recipes take it from
    the data, which the speed measurements do not load."""
    return 20 if "voc" in recipe else 3 if "shapes" in recipe else 80


def run_result(args: list[str]) -> dict:
    """Runs ``args`` (a measuring process) from the repo root; returns its ``RESULT {json}``."""
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])
