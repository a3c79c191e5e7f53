"""relabel-store as users get it from a regular ``pip install .``, not the editable dev install."""

from __future__ import annotations

import re
import subprocess

import pytest
from _installed import REPO, clean_env, installed_venv

# One quick test from each module that exercises the mapped-in packages: the loaders, the HF
# transform and the CLI.
QUICK = (
    "test_dataset_targets_are_label_pooling_of_the_record"
    " or test_parquet_round_trip_targets_are_label_pooling"
    " or test_verify_cli_reports_missing_extra_resized"
)


@pytest.mark.slow
def test_the_suite_runs_against_a_regular_install(tmp_path):
    python = installed_venv(tmp_path)
    (package,) = python.parent.parent.glob("lib/python*/site-packages/relabel_store")
    for part in ("loaders/__init__.py", "cli/main.py", "py.typed", "registry.json"):
        assert (package / part).is_file(), part
    # From the repository root, where the source folder would shadow the installed package:
    # every test module is collected (imported), and a few tests that need the mapped-in
    # packages run against the install.
    result = subprocess.run(
        [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-k", QUICK],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed[1]) >= 3 and "error" not in summary, result.stdout[-3000:]
