"""The light install: reading a store and pooling need the core dependencies only, and every
feature that needs an extra says which ``pip install 'relabel-store[...]'`` provides it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from _installed import REPO, clean_env, installed_venv
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from relabel_store._extras import EXTRAS, requires_extra
from relabel_store.errors import MissingExtraError, RelabelStoreError

TESTS = Path(__file__).resolve().parent
HEAVY = ("torch", "torchvision", "timm", "datasets", "matplotlib", "PIL", "safetensors")


def _run(python: Path | str, *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [str(python), *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_import_and_the_core_modules_do_not_import_torch(tmp_path):
    code = (
        "import sys, relabel_store\n"
        "assert 'torch' not in sys.modules\n"
        "from relabel_store import CropBox, PoolingSpec, RelabelStore, StoreWriter, load_relabel, pool\n"
        "import relabel_store.cli.main, relabel_store.publish.push, relabel_store.read.pull\n"
        f"print(sorted(m for m in sys.modules if m.partition('.')[0] in {HEAVY!r}))\n"
    )
    assert _run(sys.executable, "-c", code, cwd=tmp_path).strip() == "[]"


def test_core_only_script_with_the_extras_refused(tmp_path):
    """torch and the other extras' packages made unimportable in this environment."""
    out = _run(sys.executable, str(TESTS / "_core_only.py"), str(tmp_path), "--block", cwd=tmp_path)
    assert out.strip().endswith("core-only: ok")


@pytest.mark.slow
def test_core_only_venv_reads_pools_and_runs_the_cli(tmp_path):
    """A venv holding only what `pip install relabel-store` installs: no torch to import."""
    python = installed_venv(tmp_path, core_only=True)
    out = _run(python, str(TESTS / "_core_only.py"), str(tmp_path), cwd=tmp_path)
    assert out.strip().endswith("core-only: ok")


def _extra_requirements(extra: str, table: dict[str, list[str]]) -> set[str]:
    """Distribution names an extra installs, following relabel-store[...] references."""
    names: set[str] = set()
    for spec in table[extra]:
        req = Requirement(spec)
        if canonicalize_name(req.name) == "relabel-store":
            for inner in req.extras:
                names |= _extra_requirements(inner, table)
        else:
            names.add(canonicalize_name(req.name))
    return names


def test_every_extra_named_in_errors_installs_its_packages():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    table = project["optional-dependencies"]
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    for extra, modules in EXTRAS.items():
        installs = _extra_requirements(extra, table)
        for module, dist in modules.items():
            assert canonicalize_name(dist) in installs, (extra, module, dist)
            assert canonicalize_name(dist) not in core, dist
    # [all] is everything the errors can name but the demo's photos.
    assert _extra_requirements("all", table) == set().union(
        *(_extra_requirements(e, table) for e in EXTRAS if e != "photos")
    )
    assert "all" in {e for r in table["dev"] for e in Requirement(r).extras}


def test_requires_extra_names_the_extra_of_the_outermost_feature():
    with (
        pytest.raises(MissingExtraError) as caught,
        requires_extra("generate", "generating"),
        requires_extra("torch", "the loaders"),
    ):
        raise ModuleNotFoundError("No module named 'torch.nn'", name="torch.nn")
    err = caught.value
    assert isinstance(err, RelabelStoreError) and isinstance(err, ImportError)
    assert (err.extra, err.module, err.name) == ("generate", "torch.nn", "torch.nn")
    assert str(err) == (
        "generating needs the optional package 'torch', which is not installed: "
        "pip install 'relabel-store[generate]'"
    )
    # A package the extra does not provide, or an ImportError that is not a missing module,
    # is a bug or a broken install: it passes through as it is.
    with pytest.raises(ModuleNotFoundError) as other, requires_extra("show"):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")
    assert not isinstance(other.value, MissingExtraError)
    with pytest.raises(ImportError) as broken, requires_extra("torch"):
        raise ImportError(
            "cannot import name 'v2' from 'torchvision.transforms'", name="torchvision"
        )
    assert not isinstance(broken.value, MissingExtraError)


def _refuse(monkeypatch, top: str) -> None:
    """Make ``top`` and its submodules unimportable in this process, as if not installed."""
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")] or [top]:
        monkeypatch.setitem(sys.modules, name, None)


def test_lazy_imports_of_optional_packages_name_their_extra(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from relabel_store.cli.main import main
    from relabel_store.write.samples import sample_photo

    _refuse(monkeypatch, "datasets")
    result = CliRunner().invoke(main, ["generate", "--hf-dataset", "x", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "pip install 'relabel-store[hf]'" in result.stderr, result.stderr

    _refuse(monkeypatch, "skimage")
    with pytest.raises(MissingExtraError, match=r"chelsea.*relabel-store\[photos\]"):
        sample_photo("chelsea")
