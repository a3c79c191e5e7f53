"""Optional dependencies: which extra provides which package, and the error when one is missing.

``pip install relabel-store`` installs what reading a store and pooling need (numpy, zarr, the
codecs, huggingface-hub and fsspec, click). Everything else comes with an extra, and the modules
that need it import it inside :func:`requires_extra`, which turns a missing package into a
:class:`~relabel_store.errors.MissingExtraError` naming the ``pip install`` that fixes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from relabel_store.errors import MissingExtraError

EXTRAS: dict[str, dict[str, str]] = {
    "torch": {"torch": "torch", "torchvision": "torchvision", "PIL": "pillow"},
    "generate": {
        "torch": "torch",
        "torchvision": "torchvision",
        "PIL": "pillow",
        "timm": "timm",
        "safetensors": "safetensors",
    },
    "hf": {"torch": "torch", "torchvision": "torchvision", "PIL": "pillow", "datasets": "datasets"},
    "show": {"matplotlib": "matplotlib", "PIL": "pillow"},
    "dali": {
        "torch": "torch",
        "torchvision": "torchvision",
        "PIL": "pillow",
        "nvidia": "nvidia-dali-cuda120",
    },
    "photos": {"skimage": "scikit-image", "sklearn": "scikit-learn", "PIL": "pillow"},
}
"""Per extra of pyproject.toml: the top-level modules it provides, and their distributions."""


@contextmanager
def requires_extra(extra: str, feature: str | None = None) -> Iterator[None]:
    """Imports inside this block that fail for a package of ``extra`` raise MissingExtraError.

    ``feature`` names what needs the package (``"relabel-store generate"``); nested blocks let
    the outermost, the feature the user asked for, name the extra to install. Any other
    ImportError passes through unchanged.
    """
    provided = EXTRAS[extra]
    try:
        yield
    except ImportError as exc:
        module = exc.module if isinstance(exc, MissingExtraError) else exc.name
        if not isinstance(exc, ModuleNotFoundError | MissingExtraError) or module is None:
            raise
        top = module.partition(".")[0]
        if top not in provided:
            raise
        what = feature or f"this part of relabel-store ({extra})"
        raise MissingExtraError(
            f"{what} needs the optional package {provided[top]!r}, which is not installed: "
            f"pip install 'relabel-store[{extra}]'",
            module=module,
            extra=extra,
        ) from exc
