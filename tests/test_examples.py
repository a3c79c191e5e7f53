"""examples/train_timm.py: a real timm training loop on ReLabel soft targets, on CPU."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from relabel_store import load_relabel, quality_report
from relabel_store.cli.main import main
from relabel_store.write.annotator import load_annotator
from relabel_store.write.generate import generate
from relabel_store.write.inputs import open_inputs
from relabel_store.write.samples import write_sample_photos

ROOT = Path(__file__).resolve().parent.parent


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(
        f"_example_{name}", ROOT / "examples" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_timm = _load_example("train_timm")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path]:
    """What examples/demo.py builds: the six photos in ImageNet layout and their real store."""
    root = tmp_path_factory.mktemp("demo-out")
    photos = root / "photos"
    write_sample_photos(photos, class_folders=True)
    annotator = load_annotator("tf_efficientnet_lite0", checkpoint="efficientnet-lite0")
    store = root / "photos.relabel.zarr"
    generate(open_inputs(photos), store, annotator, batch_size=6, num_workers=0, progress=False)
    return photos, store


@pytest.mark.slow
def test_train_timm_loss_goes_down(demo):
    photos, store = demo
    args = ["--img-size", "64", "--batch-size", "6", "--lr", "3e-3", "--workers", "0", "-q"]
    losses = train_timm.main([str(photos), str(store), *args, "--steps", "40", "--seed", "0"])
    assert len(losses) == 40 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    # Soft targets over 1000 classes: a model that ignores them (uniform output) scores exactly
    # ln(1000) = 6.91 on any target, and the floor is the targets' own entropy (about 6 for these
    # crops), so the loss moves by a few tenths; how much the first steps already learn varies
    # with the seed. The run is seeded; the bounds hold across seeds 0-7 (measured).
    assert last < first, (first, last)
    assert last < math.log(1000) - 0.15, (first, last)


@pytest.mark.slow
def test_train_timm_with_timm_mixup_and_an_odd_batch(demo):
    photos, store = demo
    common = [str(photos), str(store), "--img-size", "48", "--workers", "0", "-q"]
    losses = train_timm.main([*common, "--mix", "timm", "--batch-size", "6", "--steps", "3"])
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    losses = train_timm.main([*common, "--batch-size", "5", "--steps", "3"])  # CutMix, odd batch
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def test_train_timm_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_timm.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "RelabelDataset" in out and "--steps" in out and "--mix" in out


@pytest.mark.slow
def test_a_label_refinery_round_on_the_sample_photos(demo, tmp_path):
    """Train on round 0's targets, save, annotate with the result, compare the two stores."""
    photos, round0 = demo
    checkpoint = tmp_path / "round1.safetensors"
    train = [str(photos), str(round0), "--img-size", "64", "--batch-size", "6", "--workers", "0"]
    train_timm.main([*train, "--steps", "4", "-q", "--save", str(checkpoint)])

    def generate_cli(out: Path, *extra: str):
        args = ["generate", str(photos), "-o", str(out), "--checkpoint", str(checkpoint)]
        return CliRunner().invoke(main, [*args, "--workers", "0", *extra])

    round1 = tmp_path / "round1.relabel.zarr"
    result = generate_cli(round1)
    assert result.exit_code == 0, result.output
    assert "label quality" in result.output
    meta = load_relabel(round1).metadata
    # the model and the size it was trained at come from the checkpoint's record
    assert meta.annotator["model"] == "resnet10t"
    assert meta.annotator["preprocess"]["input_size"] == [64, 64]
    assert meta.annotator["weights"]["training"]["input_size"] == [64, 64]
    # the parent: digest first, then a location that means something on another machine
    assert list(meta.parent) == ["digest", "location", "location_kind", "annotator"]
    assert meta.parent == {
        "digest": load_relabel(round0).manifest.digest,
        "location": round0.name,
        "location_kind": "local",
        "annotator": "tf_efficientnet_lite0",
    }
    named = generate_cli(tmp_path / "named.zarr", "--parent", str(round0), "-q")
    assert named.exit_code == 0, named.output
    assert load_relabel(tmp_path / "named.zarr").metadata.parent == meta.parent
    wrong = generate_cli(tmp_path / "wrong.zarr", "--parent", str(round1), "-q")
    assert wrong.exit_code == 2 and "the checkpoint was trained on the store" in wrong.output
    # four steps from scratch teach little: the report says so before anyone trains on it
    before, after = quality_report(round0), quality_report(round1)
    assert np.median(after.crop_top1) < np.median(before.crop_top1)
