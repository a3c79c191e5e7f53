#!/usr/bin/env bash
# Type-check relabel_store as `pip install .` lays it out (mypy, settings in pyproject.toml).
#
# `loaders/` and `cli/` only become `relabel_store.loaders` and `relabel_store.cli` when setuptools
# installs them (its package-dir mapping), which mypy cannot follow from the source tree. So the
# package is installed (no dependencies, no build isolation: about a second) into build/typecheck/,
# mypy checks that copy, and the paths it reports are mapped back to the source files.
set -euo pipefail
cd "$(dirname "$0")/.."
staged=build/typecheck
rm -rf "$staged"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
  --no-compile --target "$staged" .
MYPYPATH=$staged .venv/bin/python -m mypy -p relabel_store "$@" \
  | sed -e "s#^$staged/relabel_store/loaders/#loaders/#" \
    -e "s#^$staged/relabel_store/cli/#cli/#" \
    -e "s#^$staged/relabel_store/#relabel_store/#"
