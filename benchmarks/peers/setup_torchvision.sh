#!/usr/bin/env bash
# Make a venv with CPU torch 2.13.0 + torchvision 0.28.0 usable on a CPU-only machine.
#
#   bash benchmarks/peers/setup_torchvision.sh [VENV]        # default VENV=/tmp/tvenv
#   VENV/bin/python benchmarks/peers/check_shim.py          # kernels vs NumPy references
#   VENV/bin/python benchmarks/peers/torchvision_bench.py infer --model=fasterrcnn_resnet50_fpn
#
# PyPI's torchvision 0.28.0 wheel is installed with --no-deps (its requirement would pull a CUDA
# torch), and its CUDA-linked _C.so is replaced at import time by our own CPU operator shim
# (torchvision_cpu_ops.cpp, compiled here with torch.utils.cpp_extension; see tv_shim.py).
# Nothing in the repository is written: build artefacts go to VENV/tv_shim/.
#
# Environment:
#   PYTHON       interpreter used to create the venv (default: python3; must be 3.11 for the wheels)
#   TORCH_WHEEL  explicit path of the torch wheel (default: `pip install torch==2.13.0`, which the
#                machine's pip config resolves to the local CPU wheel in /opt/wheels)
# Idempotent: re-running skips what is already installed and built.
set -euo pipefail

VENV="${1:-/tmp/tvenv}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
pip_() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }

installed() {  # installed NAME VERSION_PREFIX -> 0 if NAME's version starts with VERSION_PREFIX
  "$VPY" - "$1" "$2" <<'EOF' 2>/dev/null
import importlib.metadata as md, sys
try:
    v = md.version(sys.argv[1])
except md.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if v == sys.argv[2] or v.startswith(sys.argv[2] + "+") else 1)
EOF
}

if installed torch "$TORCH_VERSION"; then
  echo "== torch $TORCH_VERSION already installed"
else
  echo "== installing torch $TORCH_VERSION (CPU wheel)"
  if [ -n "${TORCH_WHEEL:-}" ]; then
    pip_ "$TORCH_WHEEL"
  else
    pip_ "torch==$TORCH_VERSION"
  fi
fi
for pkg in numpy pillow ninja; do
  "$VPY" -c "import importlib.metadata as m; m.version('$pkg')" 2>/dev/null || { echo "== installing $pkg"; pip_ "$pkg"; }
done

# Refuse to go on with a CUDA build (e.g. if the local CPU wheel was not picked up).
"$VPY" -c "import torch, sys; sys.exit('torch is not a CPU build: %s' % torch.version.cuda if torch.version.cuda else 0)"

if installed torchvision "$TORCHVISION_VERSION"; then
  echo "== torchvision $TORCHVISION_VERSION already installed"
else
  echo "== installing torchvision $TORCHVISION_VERSION --no-deps"
  pip_ --no-deps "torchvision==$TORCHVISION_VERSION"
fi

echo "== building the CPU operator shim (skipped when up to date)"
"$VPY" "$HERE/tv_shim.py" build
echo "== smoke test"
"$VPY" "$HERE/tv_shim.py" smoke
