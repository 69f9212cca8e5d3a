#!/usr/bin/env bash
# Set up (if needed) and run the test suite: `bash scripts/test.sh [pytest options]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
VENV="${SEGTOOLKIT_VENV:-.venv}"
"$VENV/bin/ruff" check SegToolkitLib SegToolkit Testing benchmarks
exec "$VENV/bin/python" -m pytest "$@"
