#!/usr/bin/env bash
# Create or reuse .venv and install relabel-store with everything the demo and tests need.
# Idempotent: re-installs only when pyproject.toml changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.relabel-store-installed
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # This pair is on the machines' local disk (see docs/development.md); install it first so the
  # project's "torch>=" requirement is already satisfied and pip never fetches another build.
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
