"""Store keys: the one place where an image's file path becomes the key of its record.

``relabel-store generate`` and every loader derive keys here, so that a loader over the same
files finds the records ``generate`` wrote. Two modes (``KEY_MODES``):

- ``"stem"`` (default): the file name without its suffix:
  ``train/n01440764/n01440764_10026.JPEG`` -> ``n01440764_10026``.
- ``"relpath"``: the path relative to the dataset root, ``/``-separated, without the suffix:
  ``n01440764/n01440764_10026``. For datasets whose file names repeat across class folders
  (Places365: ``airfield/00000001.jpg`` and ``alley/00000001.jpg``).

Both modes take POSIX and Windows separators. ImageNet as the Hugging Face Hub serves it names
its files ``<name>_<wnid>.JPEG`` (``n01440764_10026_n01440764.JPEG``,
``ILSVRC2012_val_00000001_n01751748.JPEG``); that suffix is dropped, so every copy of ImageNet
gives the same keys (``n01440764_10026``, ``ILSVRC2012_val_00000001``). Only those two ImageNet
naming patterns are touched; other names are kept as they are.

Training code imports this module; it must not import generation code.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from relabel_store.errors import ConfigurationError

__all__ = ["KEY_MODES", "KeyMode", "check_key_mode", "key_from_path", "legacy_key"]

KeyMode = Literal["stem", "relpath"]
KEY_MODES: tuple[str, ...] = ("stem", "relpath")

# ImageNet file names as served on the Hub: the canonical name plus `_<wnid>`.
_HUB_IMAGENET = re.compile(r"^(n\d{8}_\d+|ILSVRC2012_(?:val|test)_\d{8})_n\d{8}$")


def check_key_mode(mode: object) -> KeyMode:
    """``mode`` if it is a key mode, else a :class:`ConfigurationError` listing them."""
    if mode not in KEY_MODES:
        raise ConfigurationError(f"key_mode must be one of {KEY_MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


def _parts(path: str | os.PathLike[str]) -> list[str]:
    """The components of a POSIX or Windows path (``\\`` counts as a separator); of a chained
    fsspec URL (``zip://a/b.jpg::hf://...``), those of the file inside."""
    file = os.fspath(path).split("::", 1)[0]
    return [p for p in file.replace("\\", "/").split("/") if p not in ("", ".")]


def _is_absolute(path: str | os.PathLike[str]) -> bool:
    """A POSIX or Windows absolute path (``/data/x.jpg``, ``C:\\data\\x.jpg``, ``\\\\host\\share``)."""
    text = os.fspath(path).split("::", 1)[0].replace("\\", "/")
    return text.startswith("/") or re.match(r"^[A-Za-z]:/", text) is not None


def _stem(name: str) -> str:
    """``PurePosixPath(name).stem`` without building a path object (keys are made by the
    million)."""
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name


def _canonical_stem(name: str) -> str:
    stem = _stem(name)
    match = _HUB_IMAGENET.match(stem)
    return match.group(1) if match else stem


def key_from_path(
    path: str | os.PathLike[str],
    mode: KeyMode = "stem",
    *,
    root: str | os.PathLike[str] | None = None,
) -> str:
    """The store key of the image file at ``path`` (see the module docs for the modes).

    For ``"relpath"``, ``path`` is relative to the dataset root, or lies below ``root`` when
    ``root`` is given; a path that leaves the root raises :class:`ConfigurationError`.
    """
    check_key_mode(mode)
    if mode == "relpath" and root is not None:
        path = os.path.relpath(path, root)
    elif mode == "relpath" and _is_absolute(path):
        raise ConfigurationError(
            f"key_mode='relpath' keys files by their path below the dataset root, and "
            f"{os.fspath(path)!r} is an absolute path: its key would hold the folders above the "
            "root, which match no record. Give the dataset root (root=..., the folder "
            "`relabel-store generate` was given), or paths relative to it."
        )
    parts = _parts(path)
    if not parts:
        raise ConfigurationError(f"cannot derive a store key from the empty path {path!r}")
    if mode == "stem":
        return _canonical_stem(parts[-1])
    if ".." in parts:
        where = f" (dataset root {os.fspath(root)!r})" if root is not None else ""
        raise ConfigurationError(
            f"key_mode='relpath' keys files by their path below the dataset root, and "
            f"{os.fspath(path)!r} leaves it{where}"
        )
    return "/".join([*parts[:-1], _canonical_stem(parts[-1])])


def legacy_key(key: str, path: str | os.PathLike[str]) -> str:
    """``key`` (from :func:`key_from_path`) with the file's own stem, Hub suffix included.

    Stores written before keys dropped the Hub's ImageNet suffix hold keys such as
    ``n01440764_10026_n01440764``; loaders fall back to this form for them.
    """
    head, _, _ = key.rpartition("/")
    stem = _stem(_parts(path)[-1])
    return f"{head}/{stem}" if head else stem
