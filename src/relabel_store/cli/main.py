"""The ``relabel-store`` command line."""

from __future__ import annotations

import errno
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from relabel_store._extras import requires_extra
from relabel_store._progress import format_count
from relabel_store.cli._options import check_resume, in_existing_folder, store_writing_options
from relabel_store.cli.importer import import_
from relabel_store.cli.merge import merge
from relabel_store.cli.quality import echo_headline, quality
from relabel_store.cli.remote import pull, push
from relabel_store.errors import RelabelStoreError, redact
from relabel_store.write._run import OnError

if TYPE_CHECKING:
    from relabel_store.pooling import CropBox, Region

__all__ = ["generate", "info", "main", "show", "verify"]


class _Group(click.Group):
    """Turns every error a user can act on into one ``error:`` line and exit status 2 (130 for
    Ctrl-C) instead of a traceback: relabel-store's own errors, and the operating system's
    (permissions, a full disk, a missing file). Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (RelabelStoreError, OSError) as exc:
            click.echo(redact(f"error: {_one_line(exc)}{_os_fix(exc)}"), err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("error: interrupted; rerun the same command to resume", err=True)
            sys.exit(130)


def _os_fix(exc: BaseException) -> str:
    """What to do about the operating system's refusals, which name only the path."""
    if isinstance(exc, RelabelStoreError):
        return ""
    if isinstance(exc, PermissionError):
        return (
            ". Choose a location you may write to (or read, for an input), or fix its permissions."
        )
    if getattr(exc, "errno", None) == errno.ENOSPC:
        return ". Free some space there, or choose another location; a rerun resumes."
    return ""


def _one_line(exc: BaseException) -> str:
    """An error's message on one line: its lines joined with '; ' (a table of known names
    stays readable), runs of spaces collapsed."""
    lines = [" ".join(line.split()) for line in str(exc).splitlines()]
    text = ""
    for line in filter(None, lines):
        text += (" " if text.endswith((":", ".")) else "; ") + line if text else line
    return text or type(exc).__name__


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="relabel-store")
def main() -> None:
    """Generate, verify, publish and read ReLabel label-map stores."""


main.add_command(push)
main.add_command(pull)
main.add_command(import_)
main.add_command(merge)
main.add_command(quality)


@main.command()
@click.argument("input", required=False)
@click.option(
    "--model",
    default=None,
    help="timm classifier used as the annotator. Default: the model a --checkpoint written by "
    "save_checkpoint records, else tf_efficientnet_l2.ns_jft_in1k_475 (the paper's).",
)
@click.option(
    "--checkpoint",
    default=None,
    help="Weights: a .safetensors or torch state-dict file, or 'efficientnet-lite0' "
    "(offline ImageNet weights for --model tf_efficientnet_lite0). Default: timm's "
    "pretrained weights (needs a network).",
)
@click.option(
    "--grid",
    type=click.IntRange(min=1),
    default=15,
    show_default=True,
    help="Label-map cells per side.",
)
@click.option(
    "-k",
    "--top-k",
    "k",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Classes kept per cell.",
)
@click.option(
    "--input-size",
    type=click.IntRange(min=1),
    default=None,
    help="Square annotator input size. Default: the size the weights were trained or fine-tuned "
    "at (timm's pretrained config, lite0: 224, or what a --checkpoint records); the grid is "
    "reached by resampling the feature map.",
)
@click.option(
    "--input-mode",
    type=click.Choice(["auto", "aspect", "squash"]),
    default="auto",
    show_default=True,
    help="aspect: keep each image's aspect ratio (capped by --max-aspect; sized by "
    "--aspect-sizing); squash: resize the whole image to the square input (the paper's recipe, "
    "byte-identical to stores made before input modes). auto: aspect for models that take any "
    "input shape (CNNs), squash for fixed-grid transformers.",
)
@click.option(
    "--max-aspect",
    type=click.FloatRange(min=1.0),
    default=2.0,
    show_default=True,
    help="With --input-mode aspect: the long side is at most this many times the short side.",
)
@click.option(
    "--aspect-sizing",
    type=click.Choice(["area", "short"]),
    default="area",
    show_default=True,
    help="With --input-mode aspect: area keeps the square input's pixel count (a 4:3 photo at "
    "224: 192x256), for sharper targets; short puts the short side at the input size "
    "(224x288), which localises wide pairs of objects better (see docs/generating.md).",
)
@click.option(
    "--tta",
    type=click.Choice(["none", "flip"]),
    default="none",
    show_default=True,
    help="flip: average the logits of each image and of its mirror (twice the compute).",
)
@click.option(
    "--hf-dataset",
    default=None,
    help="A Hugging Face datasets name or save_to_disk folder instead of INPUT.",
)
@click.option("--split", default=None, help="Split of --hf-dataset (e.g. train).")
@click.option("--image-column", default="image", show_default=True)
@click.option("--key-column", default=None, help="Column holding sample keys (default: file stem).")
@click.option(
    "--key-mode",
    type=click.Choice(["stem", "relpath"]),
    default="stem",
    show_default=True,
    help="Keys from file paths: the file stem, or the path below INPUT without its suffix (for "
    "file names that repeat across folders, as in Places365). Loaders use the same mode.",
)
@click.option("--label-column", default="auto", show_default=True)
@click.option(
    "--kind",
    type=click.Choice(["auto", "imagefolder", "folder", "list"]),
    default="auto",
    show_default=True,
    help="How to read INPUT: class folders, a plain folder, or a file list.",
)
@click.option("--dataset-name", default=None, help="Name recorded in the metadata.")
@click.option(
    "--parent",
    default=None,
    help="Store whose labels trained this annotator (Label Refinery lineage). Default: the store "
    "a --checkpoint written by save_checkpoint records.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--amp",
    type=click.Choice(["auto", "bf16", "fp16", "none"]),
    default="auto",
    show_default=True,
    help="Autocast precision on CUDA (CPU always runs float32).",
)
@click.option(
    "--compile",
    "compile_model",
    is_flag=True,
    help="torch.compile the annotator's backbone: the first batch waits for the compilation "
    "(about a minute for a big model), every later one runs faster. Pays on long GPU runs of "
    "big models (EfficientNet-L2 @ 475 on an H200: +21% images/s after an 82 s compile).",
)
@click.option(
    "--slice",
    "slice_",
    default=None,
    metavar="I/N",
    help="Annotate only slice I of N (shards s with s % N == I) into a partial store at -o (a "
    "folder or an fsspec URL); `relabel-store merge` makes the N slices one store. For a SLURM "
    "array: --slice $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT.",
)
@click.option(
    "--staging",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --slice and a URL: the local folder the slice is written in before each shard "
    "is uploaded (default: a folder in the cache).",
)
@store_writing_options
def generate(input: str | None, output: Path | str, model: str, checkpoint: str | None, grid: int,
             k: int, input_size: int | None, input_mode: str, max_aspect: float,
             aspect_sizing: str, tta: str,
             hf_dataset: str | None, split: str | None,
             image_column: str, key_column: str | None, key_mode: str, label_column: str,
             kind: str,
             dataset_name: str | None, parent: str | None, batch_size: int,
             workers: int | None, shard_records: int, on_error: OnError,
             device: str, amp: str, compile_model: bool, slice_: str | None,
             staging: Path | None,
             resume: bool, overwrite: bool, quiet: bool) -> None:  # fmt: skip
    """Annotate the images of INPUT and write a label-map store.

    INPUT is an ImageNet-style folder (`<class>/<image>`), a plain folder of images, or a text
    file listing image paths; or use --hf-dataset. Rerunning the same command after an
    interruption resumes where it stopped; the finished store is identical. Rerunning it on a
    finished store says so and exits 0. One process writes a store at a time.
    """
    from relabel_store.errors import InputSizeWarning
    from relabel_store.format.keys import check_key_mode
    from relabel_store.write.refinery import parent_of

    with requires_extra("generate", "relabel-store generate"):
        from relabel_store.write.annotator import load_annotator
        from relabel_store.write.generate import generate as run
        from relabel_store.write.inputs import open_inputs

    source_arg = input if hf_dataset is None else hf_dataset
    if source_arg is None or (input is not None and hf_dataset is not None):
        raise click.UsageError("give either INPUT or --hf-dataset (exactly one)")
    if input is not None and kind == "auto" and not Path(input).exists():
        # open_inputs would take a bare name for a Hub dataset and wait on the network
        raise click.UsageError(
            f"no such file or folder: {input}. For a Hugging Face dataset, give "
            f"--hf-dataset {input}."
        )
    from relabel_store.write.slices import Slice

    part = Slice.parse(slice_) if slice_ is not None else None
    if isinstance(output, str) and part is None:
        raise click.UsageError(
            f"-o {output}: only a slice (--slice I/N) is written to a URL; write a whole store "
            "to a local folder and publish it with `relabel-store push`"
        )
    check_resume(output, resume=resume, overwrite=overwrite)
    source = open_inputs(
        source_arg,
        kind="hf" if hf_dataset else kind,
        split=split,
        image_column=image_column,
        key_column=key_column,
        label_column=None if label_column == "none" else label_column,
        key_mode=check_key_mode(key_mode),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputSizeWarning)
        annotator = load_annotator(
            model, checkpoint, grid=(grid, grid), k=k, input_size=input_size, device=device,
            amp=None if amp == "none" else amp, compile=compile_model,
            input_mode=input_mode, tta=tta, max_aspect=max_aspect, aspect_sizing=aspect_sizing,
        )  # fmt: skip
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)
    if annotator.input_mode == "squash":
        ctx = click.get_current_context()
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("max_aspect", "aspect_sizing")
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            why = "" if input_mode == "squash" else f" (--input-mode auto chose it for {model})"
            raise click.UsageError(
                f"{' and '.join(given)} shape aspect-kept inputs, but this annotator squashes "
                f"every image to the square input{why}: drop {' and '.join(given)}, or use "
                "--input-mode aspect with a model that takes any input shape"
            )
    trained_on = (annotator.weights.get("training") or {}).get("trained_on")
    lineage = parent_of(parent, trained_on)
    result = run(
        source,
        output,
        annotator,
        batch_size=batch_size,
        num_workers=workers,
        shard_records=shard_records,
        dataset={"name": dataset_name or Path(source_arg).name, "split": split},
        parent=lineage,
        on_error=on_error,
        overwrite=overwrite,
        progress=False if quiet else None,
        slice=part,
        staging=staging,
    )
    if not quiet and result.slice is not None:
        click.echo(result.summary())
    elif not quiet and result.digest is not None:
        click.echo(result.summary())
        if result.records:
            echo_headline(output)


def _annotator_line(ann: Mapping[str, Any]) -> str:
    if ann.get("kind") == "ensemble":
        members = ann.get("members") or []
        return (
            f"ensemble of {len(members)} stores (weighted mean of logits per cell, a class a "
            f"member does not list counts as {ann.get('missing', 'zero')})"
        )
    size = ann.get("preprocess", {}).get("input_size", "?")
    if isinstance(size, list | tuple):
        size = "x".join(map(str, size))
    sha = (ann.get("weights") or {}).get("sha256")
    line = f"{ann.get('model', '?')} at {size}" + (f", weights sha256 {sha[:16]}…" if sha else "")
    return line + _input_line(ann)


def _input_line(ann: Mapping[str, Any]) -> str:
    """How images were fed (input mode, TTA); stores from before input modes say nothing."""
    mode = ann.get("input_mode")
    if mode is None:
        return ""
    if mode == "aspect":
        preprocess = ann.get("preprocess") or {}
        cap = preprocess.get("max_aspect")
        mode += f" (long side <= {cap}x short)" if cap else ""
        if preprocess.get("aspect_sizing") == "area":
            mode += ", the square input's pixel count"
        elif preprocess.get("short_side"):  # short, and stores from before aspect_sizing
            mode += f", short side {preprocess['short_side']}"
    tta = ann.get("tta")
    return f"; input {mode}" + (f", tta {tta}" if tta and tta != "none" else "")


def _ensemble_lines(ann: Mapping[str, Any]) -> list[str]:
    """One line per member of an ensemble store (``relabel-store merge --ensemble``)."""
    members = ann.get("members") or []
    lines = []
    for member in members:
        inner = member.get("annotator") or {}
        where = member.get("location") or "?"
        digest = str(member.get("digest") or "?")[:16]
        lines.append(
            f"  member:    weight {member.get('weight', '?'):.3g}, {_annotator_line(inner)} "
            f"[{where}, digest {digest}…]"
        )
    return lines


def _skipped(count: int) -> str:
    if count <= 0:
        return "0 skipped"
    return f"{count} skipped: inputs that could not be read, listed in errors.jsonl"


def _values_line(dtype: str, rounding: Any) -> str:
    """The stored dtype of the logits, and what storing an import's float32 maps as float16
    changed (the import's own measurement)."""
    line = f"{dtype} logits"
    worst = rounding.get("max_pooled_target_difference") if isinstance(rounding, Mapping) else None
    if isinstance(worst, int | float):
        line += (
            f" (the source's {rounding.get('source', '?')} rounded: pooled targets change by at"
            f" most {worst:.2g})"
        )
    elif isinstance(rounding, Mapping) and rounding.get("source"):
        line += f" (as the source holds them: {rounding['source']}, exact)"
    return line


def _source_line(source: Any) -> str:
    """Where an imported store's maps came from: file or folder, kind, format, size, sha256."""
    if not isinstance(source, Mapping):
        return str(source)
    where = source.get("file") or source.get("folder") or "?"
    parts = [str(source.get("kind", "?"))]
    if source.get("format"):
        parts.append(f"{source['format']} format")
    if isinstance(source.get("size"), int):
        parts.append(format_count(source["size"], "B"))
    if isinstance(source.get("members"), int):
        parts.append(f"{source['members']} members")
    line = f"{where} ({', '.join(parts)})"
    sha = source.get("sha256")
    return line + (f", sha256 {sha}" if sha else ", sha256 not recorded (a folder)")


@main.command()
@click.argument("store")
def info(store: str) -> None:
    """Summarise a store: records (and how many inputs were skipped), grid, k, classes, the
    stored values' dtype, annotator, the source of an imported store, size on disk, digest."""
    from relabel_store import load_relabel

    s = load_relabel(store)
    m = s.metadata
    size = s.manifest.total_bytes if s.manifest else 0
    lines = [
        f"store:       {s.source.location}",
        f"format:      {m.format} {m.format_version} (written by relabel-store {m.software_version})",
        f"records:     {len(s)} ({_skipped(m.rows - len(s))})",
        f"grid:        {m.grid[0]}x{m.grid[1]}, top-{m.k} of {m.num_classes} classes ({m.value_kind})",
        f"values:      {_values_line(m.values_dtype, m.dataset.get('values'))}",
        f"labels:      {m.label_space or 'unknown label space'}"
        + ("" if m.class_identifiers else " (no class identifiers)"),
        f"dataset:     {m.dataset.get('name') or '?'} / {m.dataset.get('split') or '-'}",
        f"annotator:   {_annotator_line(m.annotator)}",
        *([f"source:      {_source_line(src)}"] if (src := m.dataset.get("source")) else []),
        *_ensemble_lines(m.annotator),
        f"created:     {m.created_at}",
        f"size:        {format_count(size, 'B')} "
        f"({format_count(size / max(len(s), 1), 'B')} per record)",
        f"digest:      {s.manifest.digest if s.manifest else '-'}",
        "signatures:  "
        + (
            "yes (loaders check images against their records)"
            if s.has_signatures
            else "none (images are not checked by content; add them: relabel-store sign)"
        ),
    ]
    if m.parent:
        lines.append(
            f"parent:      {m.parent.get('digest', '?')} ({m.parent.get('location', '?')})"
        )
    click.echo("\n".join(lines))


def _box(value: str | None) -> CropBox | None:
    from relabel_store.pooling import CropBox

    if value is None:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: expected four comma-separated numbers x0,y0,x1,y1 (normalised, 0..1)"
        ) from None
    return CropBox(x0, y0, x1, y1)


@main.command()
@click.argument("store")
@click.argument("key")
@click.option(
    "--image",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The original image of KEY, drawn under the map.",
)
@click.option(
    "--box",
    default=None,
    help="Crop box x0,y0,x1,y1 (normalised 0..1): also show its pooled soft target.",
)
@click.option("--flip", is_flag=True, help="The crop was mirrored (with --box).")
@click.option(
    "--rotate",
    type=float,
    default=None,
    metavar="DEG",
    help="Then turn the crop by DEG degrees about its centre, counterclockwise, as "
    "RandomRotation does (with --box): shows the rotated region, its sampling points and "
    "its pooled target.",
)
@click.option("--top", default=5, show_default=True, help="Classes in the bar chart.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    callback=in_existing_folder,
    help="PNG file to write.",
)
def show(store: str, key: str, image: Path | None, box: str | None, flip: bool,
         rotate: float | None, top: int, output: Path) -> None:  # fmt: skip
    """Draw the label map of KEY: top-1 class per cell, and a crop's pooled target."""
    from dataclasses import replace

    from relabel_store import load_relabel

    with requires_extra("show", "relabel-store show"):
        from PIL import Image

        from relabel_store.report.show import render_label_map, rotated_region

    crop = _box(box)
    if flip:
        if crop is None:
            raise click.UsageError("--flip needs --box")
        crop = replace(crop, flipped=True)
    opened = load_relabel(store)
    region: CropBox | Region | None = crop
    if rotate is not None:
        if crop is None:
            raise click.UsageError("--rotate needs --box")
        size = opened.get(key).size  # (0, 0): not recorded; the photo's size is then taken
        if not all(size) and image is not None:
            with Image.open(image) as photo:
                size = (photo.height, photo.width)
        if not all(size):
            raise click.UsageError(
                f"--rotate turns the crop in pixels, but record {key!r} has no recorded image "
                "size: pass its original image with --image"
            )
        region = rotated_region(crop, rotate, size)
    out = render_label_map(opened, key, output, image=image, box=region, top=top)
    click.echo(f"wrote {out}")


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("images", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Processes decoding the images (0: in this process).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def sign(store: Path, images: Path, workers: int, quiet: bool) -> None:
    """Add image signatures to STORE from IMAGES, the images its maps were made from.

    Loaders compare each training image with its record's signature (another copy of the
    photos, an EXIF turn, a crop before the library, wrong keys are refused); stores written
    before format 1.3 and imported stores have none. IMAGES is keyed as the store was (its
    key mode). The manifest is rewritten last, so `verify` passes after.
    """
    with requires_extra("generate", "relabel-store sign"):
        from relabel_store.write.sign import sign_store

    result = sign_store(store, images, workers=workers, progress=False if quiet else None)
    if not quiet:
        click.echo(result.summary())


@main.command()
@click.argument("store", type=click.Path(file_okay=False, path_type=Path))
def verify(store: Path) -> None:
    """Check every file of STORE against its manifest, then every record's values (class ids
    in range, finite logits); exit 1 on any difference."""
    from relabel_store.errors import CorruptDataError
    from relabel_store.format.manifest import verify_store
    from relabel_store.read.reader import RelabelStore

    report = verify_store(store)
    lines = report.lines()
    if report.ok:  # the files are the manifest's: now what they hold (one pass, shard by shard)
        try:
            with RelabelStore.open(store) as opened:
                for _ in opened.shard_blocks():
                    pass
        except CorruptDataError as exc:
            lines.append(f"bad values: {exc}")
    for line in lines:
        click.echo(line)
    if lines:
        click.echo(
            f"FAILED: {len(lines)} problem(s) in {store}. A copy pulled from the Hub "
            "or a URL: delete it and pull it again; a store made here: rerun its generate or "
            "import with --overwrite.",
            err=True,
        )
        sys.exit(1)
    click.echo(f"ok: {report.checked} files match manifest digest {report.digest}")
