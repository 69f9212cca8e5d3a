#!/usr/bin/env bash
# Create (or reuse) the virtual environment and install SegToolkit with everything the demo and tests need.
# torch is installed first and pinned through constraints.txt so pip never swaps in a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SEGTOOLKIT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$(grep '^torch==' constraints.txt)"
"$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[deep,cohort,test]"
# nnunetv2 and dynamic-network-architectures pull torchvision through timm; a PyPI torchvision does not import
# beside a CPU torch (and breaks timm's import), while nnU-Net's predictor and networks work without it.
if ! "$VENV/bin/python" -c "import torchvision" >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip uninstall --quiet --yes torchvision >/dev/null 2>&1 || true
fi
echo "SegToolkit installed in $VENV"
