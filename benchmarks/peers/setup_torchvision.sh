#!/usr/bin/env bash
# Make a venv with PyPI's default upstream torch 2.14.1 + torchvision 0.29.1 (the peer framework).
#
#   bash benchmarks/peers/setup_torchvision.sh [VENV]        # default VENV=/tmp/tvenv
#   VENV/bin/python benchmarks/peers/torchvision_bench.py infer --model=fasterrcnn_resnet50_fpn
#   VENV/bin/python benchmarks/peers/make_checkpoint_fixtures.py   # test fixtures, see its doc
#
# Plain `pip install torch==2.14.1 torchvision==0.29.1` with nothing patched, plus numpy, pillow
# and safetensors (for make_checkpoint_fixtures.py). These are PyPI's default Linux wheels, built
# with CUDA (about 5.5 GB with their nvidia-* dependencies). They run on a CPU-only machine:
# torchvision's compiled ops (nms, roi_align, ...) have CPU kernels.
# The venv lives outside the repository; nothing in the repository is written.
#
# Environment:
#   PYTHON   interpreter used to create the venv (default: python3; 3.10-3.13 have wheels)
# Idempotent: re-running skips what is already installed and only repeats the smoke test.
set -euo pipefail

VENV="${1:-/tmp/tvenv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
pip_() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }

installed() {  # installed NAME VERSION -> 0 if NAME is installed at VERSION (any +local suffix)
  "$VPY" - "$1" "$2" <<'EOF' 2>/dev/null
import importlib.metadata as md, sys
try:
    v = md.version(sys.argv[1])
except md.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if v == sys.argv[2] or v.startswith(sys.argv[2] + "+") else 1)
EOF
}

if installed torch "$TORCH_VERSION" && installed torchvision "$TORCHVISION_VERSION"; then
  echo "== torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION already installed"
else
  echo "== installing torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION (PyPI default wheels)"
  pip_ "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
for pkg in numpy pillow safetensors; do
  "$VPY" -c "import importlib.metadata as m; m.version('$pkg')" 2>/dev/null \
    || { echo "== installing $pkg"; pip_ "$pkg"; }
done

echo "== smoke test (CPU)"
"$VPY" - <<'EOF'
import torch
import torchvision
from torchvision.ops import nms, roi_align

boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
scores = torch.tensor([0.9, 0.8, 0.7])
keep = nms(boxes, scores, iou_threshold=0.5)
assert keep.tolist() == [0, 2], keep

# A linear ramp f(y, x) = 6y + x: bilinear sampling reproduces it exactly, so each output cell is
# the ramp at the centre of its bin. RoI (1, 1)-(3, 3), 2x2 bins of 1 pixel, 2x2 samples each.
feature = torch.arange(36.0).reshape(1, 1, 6, 6)
rois = torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]])
pooled = roi_align(feature, rois, output_size=(2, 2), spatial_scale=1.0, sampling_ratio=2,
                   aligned=False)
expected = torch.tensor([[[[10.5, 11.5], [16.5, 17.5]]]])
assert torch.allclose(pooled, expected), pooled

print(f"torch {torch.__version__} (CUDA build {torch.version.cuda}, "
      f"cuda available: {torch.cuda.is_available()}), torchvision {torchvision.__version__}")
print("nms and roi_align ran on the CPU: OK")
EOF
