"""relabel-store as users get it from a regular ``pip install .``, not the editable dev install."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from _installed import REPO, clean_env, installed_venv

pytestmark = pytest.mark.slow

# One quick test from each module that exercises the mapped-in packages: the loaders, the HF
# transform and the CLI.
QUICK = (
    "test_dataset_targets_are_label_pooling_of_the_record"
    " or test_parquet_round_trip_targets_are_label_pooling"
    " or test_verify_cli_reports_missing_extra_resized"
)

REPORT = """
import json, importlib.resources, relabel_store, relabel_store.loaders, relabel_store.cli.main
files = importlib.resources.files("relabel_store")
print(json.dumps({
    "package": relabel_store.__file__,
    "loaders": relabel_store.loaders.__file__,
    "cli": relabel_store.cli.main.__file__,
    "data": [n for n in ("py.typed", "registry.json") if files.joinpath(n).is_file()],
}))
"""


@pytest.fixture(scope="module")
def python(tmp_path_factory) -> Path:
    return installed_venv(tmp_path_factory.mktemp("installed"))


def test_the_install_holds_the_mapped_packages_and_data(python):
    # -P: a plain `python -c` from the repository root would import the source folder instead.
    result = subprocess.run(
        [str(python), "-P", "-c", REPORT], cwd=REPO, env=clean_env(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    site = python.parent.parent
    for name in ("package", "loaders", "cli"):
        assert Path(found[name]).is_relative_to(site), found
    assert found["data"] == ["py.typed", "registry.json"]


def test_the_suite_runs_against_it_from_the_repository_root(python):
    # Every test module is collected (imported), and a few tests from the modules that need the
    # mapped-in packages run: the source folder must not shadow the installed package.
    result = subprocess.run(
        [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-k", QUICK],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed[1]) >= 3 and "error" not in summary, result.stdout[-3000:]
