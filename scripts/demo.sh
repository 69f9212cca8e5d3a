#!/usr/bin/env bash
# Set up (if needed) and run the main job on the built-in phantom: `bash scripts/demo.sh [-o DIR]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec "${SEGTOOLKIT_VENV:-.venv}/bin/segtoolkit" demo "$@"
