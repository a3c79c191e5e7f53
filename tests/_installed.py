"""Throwaway virtual environments holding relabel-store as a regular ``pip install .`` lays it out.

The development venv installs the project in editable mode, which maps ``loaders/`` and ``cli/``
into the package at import time and so hides mistakes a regular install would show (the source
tree shadowing the installed package, a module or data file missing from the wheel). A venv from
:func:`installed_venv` takes seconds and no package index: the project is built and installed
without its dependencies, and the dependencies are reused from the running environment through a
``.pth`` line (Python does not process ``.pth`` files inside a folder added that way, so the
running environment's editable finder stays out).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def installed_venv(root: Path, *, reuse_packages: bool = True) -> Path:
    """Create a venv under ``root`` with relabel-store installed from this checkout (no
    dependencies; ``reuse_packages`` makes the running environment's packages importable after
    its own). Returns the venv's python."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    if reuse_packages:
        own = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        # Every site-packages folder the running interpreter sees, also those a .pth line added
        # (so that this works from inside such a venv too).
        reused = [p for p in sys.path if Path(p).name == "site-packages" and Path(p).is_dir()]
        (Path(own) / "_reused_packages.pth").write_text("".join(f"{p}\n" for p in reused))
        _repoint_scripts(Path(sys.executable).parent, python)
    # setuptools builds in build/lib and packs everything found there: start from an empty one.
    shutil.rmtree(REPO / "build" / "lib", ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", "--no-deps", "--no-build-isolation", str(REPO)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return python


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
