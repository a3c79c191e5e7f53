#!/usr/bin/env bash
# The main job on the embedded default: real photos, the offline annotator, a local store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/demo.py "$@"
