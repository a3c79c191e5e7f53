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
    for part in ("loaders/__init__.py", "cli/main.py", "py.typed", "read/registry.json"):
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


def test_install_page_lists_every_extra_as_pyproject_declares_it():
    """docs/install.md's table names every extra and each package it installs, as pyproject
    declares them, so that a reader picks the extra that really provides a feature."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    rows = {}
    for line in (REPO / "docs" / "install.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("extra", "---"):
            rows[cells[0].strip("`*")] = cells[1]
    extras = project["optional-dependencies"]
    assert set(rows) == {"(none)", *extras}
    name = re.compile(r"^[A-Za-z0-9_.-]+")
    for extra, requirements in [("(none)", project["dependencies"]), *extras.items()]:
        for requirement in requirements:
            package = name.match(requirement)[0]
            inner = re.fullmatch(r"relabel-store\[(.+)\]", requirement.split(";")[0].strip())
            wanted = [f"`{e}`" for e in inner[1].split(",")] if inner else [package]
            for word in wanted:
                assert word in rows[extra], f"docs/install.md: {extra} installs {word}"
