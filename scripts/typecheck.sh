#!/usr/bin/env bash
# Type-check src/ with mypy (settings in pyproject.toml; strict on the core wings).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m mypy "$@"
