"""Throwaway virtual environments holding relabel-store as a regular ``pip install .`` lays it out.

The development venv installs the project in editable mode, which reads the package from ``src/``
and so hides mistakes a regular install would show (a module or data file missing from the
wheel). A venv from
:func:`installed_venv` takes seconds and no package index: the project is built and installed
without its dependencies, and the dependencies are reused from the running environment through a
``.pth`` line (Python does not process ``.pth`` files inside a folder added that way, so the
running environment's editable finder stays out).

With ``core_only=True`` the venv sees only what ``pip install relabel-store`` (no extras) would
install: the dependency closure of the installed wheel's own core requirements, resolved against
the running environment's installed distributions and linked, one top-level entry each, into a
folder of their own. torch, timm, datasets, matplotlib, ... are then not importable at all.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


def installed_venv(root: Path, *, reuse_packages: bool = True, core_only: bool = False) -> Path:
    """Create a venv under ``root`` with relabel-store installed from this checkout (no
    dependencies; ``reuse_packages`` makes the running environment's packages importable after
    its own, ``core_only`` only those a core install needs). Returns the venv's python."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    own = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    if reuse_packages and not core_only:
        # Every site-packages folder the running interpreter sees, also those a .pth line added
        # (so that this works from inside such a venv too).
        reused = [p for p in sys.path if Path(p).name == "site-packages" and Path(p).is_dir()]
        (own / "_reused_packages.pth").write_text("".join(f"{p}\n" for p in reused))
        _repoint_scripts(Path(sys.executable).parent, python)
    # setuptools builds in build/lib and packs everything found there: start from an empty one.
    # The wheel is built here, where setuptools is; the venv may hold nothing but the wheel.
    shutil.rmtree(REPO / "build" / "lib", ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(root), str(REPO)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (built,) = root.glob("relabel_store-*.whl")
    subprocess.run(
        [*pip, "--python", str(python), "install", "--quiet", "--no-deps", str(built)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    if core_only:
        (wheel,) = importlib.metadata.distributions(name="relabel-store", path=[str(own)])
        core = _link_distributions(_closure(wheel.requires or []), root / "core-packages")
        (own / "_core_packages.pth").write_text(f"{core}\n")
    return python


def _closure(requirements: list[str]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions that ``requirements`` (without extras of relabel-store's own)
    need, transitively, with markers evaluated for this interpreter and the extras asked for."""
    found: dict[str, importlib.metadata.Distribution] = {}
    extras_of: dict[str, set[str]] = {}
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        asked = extras_of.setdefault(name, set())
        if name in found and set(req.extras) <= asked:
            continue
        asked.update(req.extras)
        dist = found[name] = importlib.metadata.distribution(name)
        if dist.version not in req.specifier:
            raise RuntimeError(f"installed {name} {dist.version} does not satisfy {req}")
        for sub in dist.requires or []:
            todo += [(Requirement(sub), e) for e in ("", *asked)]
    return found


def _link_distributions(dists: dict[str, importlib.metadata.Distribution], folder: Path) -> Path:
    """Link every top-level module, package and .dist-info of ``dists`` into ``folder``, and
    refuse a top-level entry that another installed distribution shares (it would leak)."""
    folder.mkdir()
    owners: dict[Path, set[str]] = {}
    for dist in importlib.metadata.distributions():
        for entry in _top_level(dist):
            owners.setdefault(entry, set()).add(canonicalize_name(dist.metadata["Name"]))
    for name, dist in dists.items():
        for entry in _top_level(dist):
            if not owners[entry] <= dists.keys():
                raise RuntimeError(
                    f"{entry} of {name} is shared with {owners[entry] - dists.keys()}"
                )
            link = folder / entry.name
            if not link.exists():
                link.symlink_to(entry)
    return folder


def _top_level(dist: importlib.metadata.Distribution) -> set[Path]:
    """A distribution's entries in its site-packages folder (not scripts, caches or .pth)."""
    entries = set()
    for file in dist.files or []:
        top = file.parts[0]
        if top != ".." and top != "__pycache__" and not top.endswith(".pth"):
            entries.add(Path(dist.locate_file(top)))
    return entries


def _repoint_scripts(bin_dir: Path, python: Path) -> None:
    """Copy the console scripts of ``bin_dir`` (torchrun, mkdocs, ...) beside ``python``, run by it."""
    shebang = f"#!{sys.executable}\n".encode()
    for script in bin_dir.iterdir():
        target = python.parent / script.name
        if target.exists() or not script.is_file():
            continue
        with script.open("rb") as f:
            if f.read(len(shebang)) != shebang:
                continue
            body = f.read()
        target.write_bytes(f"#!{python}\n".encode() + body)
        target.chmod(0o755)


def clean_env() -> dict[str, str]:
    """The environment minus what would leak the running test session into a child one."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "PYTHONPATH"
    }
