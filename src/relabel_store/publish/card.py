"""The dataset card (``README.md``) ``push`` writes into a Hub repo, generated from a store's
metadata: YAML front matter for the Hub (license, task, size, sources, tags) and a description
of the maps, the annotator that made them (model, weights and their sha256, input size and
resizing, as :meth:`~relabel_store.write.annotator.DenseAnnotator.describe` records them), the label
space, how to load the store, and the ReLabel citation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relabel_store._progress import format_count
from relabel_store.format.manifest import Manifest
from relabel_store.format.metadata import StoreMetadata
from relabel_store.read.hub_names import HF_PREFIX, HubTarget

__all__ = ["CARD_NAME", "PAPER", "dataset_card", "size_category"]

CARD_NAME = "README.md"
PAPER = "https://arxiv.org/abs/2101.05022"


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` records."""
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
    ]
    for bound, label in bounds:
        if n < bound:
            return label
    return "1B<n<10B"


def dataset_card(
    meta: StoreMetadata,
    manifest: Manifest,
    *,
    repo_id: str,
    subdir: str | None = None,
    license: str = "other",
    pretty_name: str | None = None,
) -> str:
    """README.md for the store's Hub repo: YAML front matter plus a description generated from
    the store's metadata."""
    from huggingface_hub import DatasetCardData

    dataset = dict(meta.dataset)
    ann = dict(meta.annotator)
    ds_name = str(dataset.get("name") or "").strip()
    split = dataset.get("split")
    h, w = meta.grid
    tags = ["relabel", "label-maps", "soft-labels", "zarr"]
    if "imagenet" in ds_name.lower():
        tags.append("imagenet")
    name = pretty_name or (
        f"ReLabel maps for {ds_name}" + (f" ({split})" if split else "") if ds_name else repo_id
    )
    data = DatasetCardData(
        license=license,
        pretty_name=name,
        task_categories=["image-classification"],
        size_categories=[size_category(meta.record_count)],
        source_datasets=[f"extended|{ds_name}"] if ds_name else ["original"],
        annotations_creators=["machine-generated"],
        tags=tags,
        viewer=False,
    )
    location = HubTarget(repo_id, subdir=subdir).url
    load_call = (
        f'load_relabel("{location}")  # pin: "{HF_PREFIX}datasets/{repo_id}@<commit sha>/{subdir}"'
        if subdir
        else f'load_relabel("{repo_id}")  # pin: revision="<commit sha>"'
    )
    rows = [
        ("records", f"{meta.record_count:,}" + (f" ({meta.rows - meta.record_count} images failed, see `errors.jsonl`)" if meta.rows > meta.record_count else "")),
        ("grid", f"{h} x {w} cells, top-{meta.k} of {meta.num_classes} classes per cell"),
        ("values", f"{meta.value_kind} ({meta.values_dtype}), class ids uint16"),
        ("label space", _label_space(meta)),
        ("annotator", _annotator(ann)),
        ("annotator weights", _weights(ann.get("weights"))),
        ("annotator input", _preprocess(ann.get("preprocess"), ann)),
        ("source dataset", (ds_name or "unknown") + (f" / {split}" if split else "")),
        ("manifest digest", f"`{manifest.digest}`"),
        ("size", f"{format_count(manifest.total_bytes, 'B')} in {len(manifest.entries) + 1} files"),
        ("format", f"relabel-store {meta.format_version} (Zarr v3), written by relabel-store {meta.software_version} on {meta.created_at}"),
    ]  # fmt: skip
    for i, member in enumerate(ann.get("members") or [], start=1):
        rows.append((f"ensemble member {i}", _member(member)))
    if meta.parent:
        rows.append(("parent store", f"`{meta.parent.get('digest', '?')}` ({meta.parent.get('location', '?')})"))  # fmt: skip
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    body = f"""
# {name}

Dense **ReLabel** label maps ([Yun et al., CVPR 2021]({PAPER})): for every training image, an
annotator classifier applied at every spatial position gives the top-{meta.k} classes and their
logits in each cell of a {h} x {w} grid over the whole image. **LabelPooling** turns a map into a
soft multi-label target for whatever random crop your training pipeline took.

This repository is a [relabel-store](https://pypi.org/project/relabel-store/) store: a plain
Zarr v3 group plus `manifest.json` (size and sha256 of every file). Generated metadata:

| | |
|---|---|
{table}

## Load it

```python
from relabel_store import load_relabel

store = {load_call}
rec = store["<image key>"]  # key = file stem, e.g. "n01440764_10026"
rec.indices, rec.values  # ({h}, {w}, {meta.k}) class ids and logits
```

Shards are downloaded on first use into a verified local cache (each checked against the
manifest's sha256); `mode="range"` reads single records with HTTP range requests instead.
`relabel-store pull {repo_id} --to DIR` downloads and verifies the whole store.

Without relabel-store, with any Zarr v3 reader:

```python
import zarr

g = zarr.open_group("{location}", mode="r")
g.attrs["relabel"]  # metadata: grid, k, classes, annotator, ...
g["indices"][0], g["values"][0]  # top-k ids and logits of physical row 0
```

## Citation

```bibtex
@inproceedings{{yun2021relabel,
  title     = {{Re-labeling ImageNet: from Single to Multi-Labels, from Global to Localized Labels}},
  author    = {{Yun, Sangdoo and Oh, Seong Joon and Heo, Byeongho and Han, Dongyoon and Choe, Junsuk and Chun, Sanghyuk}},
  booktitle = {{IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)}},
  year      = {{2021}},
  note      = {{arXiv:2101.05022}}
}}
```
"""
    if license == "other":
        body += (
            "\n## License\n\nThe maps are derived from the source dataset's images; use them "
            "under the source dataset's terms.\n"
        )
    return f"---\n{data.to_yaml()}\n---\n{body}"


def _label_space(meta: StoreMetadata) -> str:
    name = f"`{meta.label_space}`" if meta.label_space else "unknown"
    ids = meta.class_identifiers
    return name + (f" (class identifiers `{ids[0]}` ... `{ids[-1]}`)" if ids else "")


def _annotator(ann: Mapping[str, Any]) -> str:
    """``describe()``'s model, and how its feature grid became the store's grid."""
    if ann.get("kind") == "ensemble":
        return (
            f"ensemble of {len(ann.get('members') or [])} stores (`relabel-store merge "
            f"--ensemble`): {ann.get('combine', '?')}; a class a member does not list counts as "
            f"{ann.get('missing_means', ann.get('missing', '?'))}"
        )
    out = f"`{ann.get('model') or 'unknown'}`"
    features, resample = ann.get("feature_grid"), ann.get("resample")
    if isinstance(features, list | tuple) and len(features) == 2:
        out += f", {features[0]} x {features[1]} feature grid"
        if resample and resample != "none":
            out += f" ({resample} to the store's grid)"
        if ann.get("input_mode") == "aspect":
            out += " for a square image; wider or taller images get wider or taller grids, each"
            out += " resampled to the store's grid"
    return out


def _weights(weights: Any) -> str:
    """``describe()``'s ``weights``: where they came from and their sha256."""
    if not isinstance(weights, Mapping) or not weights.get("source"):
        return "unknown"
    out = f"{weights['source']}" + (f" (`{weights['file']}`)" if weights.get("file") else "")
    sha = weights.get("sha256")
    return out + (f", sha256 `{sha}`" if sha else ", sha256 not recorded")


def _member(member: Mapping[str, Any]) -> str:
    """One ensemble member: its weight, annotator, input and store."""
    ann = member.get("annotator") or {}
    weight = member.get("weight")
    shown = f"{weight:.3g}" if isinstance(weight, int | float) else "?"
    return (
        f"weight {shown}: {_annotator(ann)}, {_preprocess(ann.get('preprocess'), ann)}; store "
        f"{member.get('location', '?')} (digest `{member.get('digest', '?')}`)"
    )


def _preprocess(preprocess: Any, ann: Mapping[str, Any] | None = None) -> str:
    """``describe()``'s ``preprocess``: input size, resizing and interpolation, and the
    annotator's test-time augmentation."""
    if not isinstance(preprocess, Mapping) or not preprocess.get("input_size"):
        return "unknown"
    size = preprocess["input_size"]
    px = " x ".join(str(v) for v in size) if isinstance(size, list | tuple) else str(size)
    mode = preprocess.get("resize_mode")
    if mode == "whole-image":
        how = "whole image resized, no crop"
    elif mode == "aspect":
        side, step = preprocess.get("short_side", "?"), preprocess.get("long_side_multiple")
        cap = f"at most {preprocess.get('max_aspect')}x the short side"
        if preprocess.get("aspect_sizing") == "area":
            px = f"the pixel count of {side} x {side}"
            how = f"aspect ratio kept (sides changed in steps of {step}, the long side {cap})"
        else:  # short, and stores from before aspect_sizing
            px = f"short side {side}"
            how = f"aspect ratio kept (long side longer in steps of {step}, {cap})"
        how += ", no crop"
    else:
        how = mode or "resize unknown"
    interp = preprocess.get("interpolation")
    tta = (ann or {}).get("tta")
    flip = ", logits averaged with the mirrored image's (TTA flip)" if tta == "flip" else ""
    return f"{px} px, {how}" + (f", {interp}" if interp else "") + flip
