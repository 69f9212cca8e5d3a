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
"$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[deep,test]"
echo "SegToolkit installed in $VENV"
