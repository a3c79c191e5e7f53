"""Stores as users meet them after `relabel-store import`: no image sizes, a recorded source.

The stores here come from the importer's real code path, over tars of maps made by real
``torch.save`` in the published release's layout (the helpers of test_import.py).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from _stores import write_store
from click.testing import CliRunner
from test_import import official_files, serialized, write_tar

from relabel_store import CropBox, load_relabel, pool
from relabel_store.cli.main import main
from relabel_store.errors import ArgumentTypeError, RecordNotFoundError
from relabel_store.report.quality import quality_report


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A tar of 9 published-layout float32 maps, imported through the CLI; (tar, store, output)."""
    root = tmp_path_factory.mktemp("imported")
    tar = write_tar(root / "relabel_imagenet.tar", serialized(official_files()))
    out = root / "imagenet.relabel.zarr"
    result = CliRunner().invoke(main, ["import", str(tar), "-o", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output
    return tar, out, result.output


# -- quality and the import summary draw real crops on records without sizes ----------------------


def test_imported_records_have_no_size(imported):
    _, out, _ = imported
    assert (load_relabel(out).sizes == 0).all()  # what the importer writes: the release has none


def test_quality_draws_real_crops_for_records_without_size(imported):
    _, out, _ = imported
    report = quality_report(out, crops=8)
    assert report.unsized == report.sampled == 9
    # Before: every box collapsed to the whole image, so each crop figure repeated its record's.
    assert not np.allclose(report.crop_top1, np.repeat(report.whole_top1, 8))
    # The maps hold class A on the left, B on the right: whole images are split between them,
    # while crops inside one half are sure of it.
    assert report.whole_top1.max() < 0.3 and report.crop_top1.max() > 0.9
    lines = "\n".join(report.lines())
    assert "all 9 sampled records record no image size" in lines and "square image" in lines
    assert "square image" in report.headline()[1]


def test_crops_of_unsized_records_are_random_resized_crops_of_a_square(imported, monkeypatch):
    """The boxes themselves: RandomResizedCrop's area (8-100%) and aspect (3/4-4/3) on the unit
    square, inside it, and not all alike."""
    from relabel_store.report import quality

    _, out, _ = imported
    seen: list[CropBox] = []

    def recording_pool(ids, logits, box, **kwargs):
        seen.append(box)
        return pool(ids, logits, box, **kwargs)

    monkeypatch.setattr(quality, "pool", recording_pool)
    quality_report(out, crops=20)
    crops = np.array(
        [(b.x0, b.y0, b.x1, b.y1) for b in seen if (b.x0, b.y0, b.x1, b.y1) != (0, 0, 1, 1)]
    )
    assert len(crops) >= 9 * 19  # a centred fallback may equal the whole square, rarely
    w, h = crops[:, 2] - crops[:, 0], crops[:, 3] - crops[:, 1]
    assert (crops >= 0).all() and (crops <= 1).all()
    assert (w * h).min() >= 0.08 - 1e-3 and (w * h).max() <= 1
    assert (w / h).min() >= 3 / 4 - 1e-3 and (w / h).max() <= 4 / 3 + 1e-3
    assert np.std(w * h) > 0.1


def test_a_store_with_sizes_says_nothing_about_squares(tmp_path):
    written = write_store(tmp_path / "s.zarr", 12, shard_records=4)
    report = quality_report(written.path)
    assert report.unsized == 0 and report.crop_note is None
    assert "square" not in "\n".join(report.lines() + report.headline())


def test_the_import_summary_says_what_was_assumed(imported):
    *_, output = imported
    assert "crops drawn on a square image: no image sizes recorded" in output


# -- keys round-trip through get ------------------------------------------------------------------


def test_keys_round_trip_through_get(imported, tmp_path):
    written = write_store(tmp_path / "s.zarr", 20, shard_records=8)
    for path in (imported[1], written.path):
        store = load_relabel(path)
        for key in store.keys:
            assert isinstance(key, np.bytes_)
            assert store.get(key).key == key.decode() and key in store
            assert store[key].key == store.get(key.decode()).key
        batch = store.get_many(store.keys[:3])
        assert batch.keys == [k.decode() for k in store.keys[:3]]
        assert store.rows_of(store.keys).tolist() == list(range(len(store)))


def test_keys_of_another_type_are_refused_by_name(imported):
    store = load_relabel(imported[1])
    with pytest.raises(ArgumentTypeError, match=r"a key is a str .*got int"):
        store.get(3)  # type: ignore[arg-type]
    with pytest.raises(RecordNotFoundError, match="'nope' is not in"):
        store.get(b"nope")
    assert 3 not in store


# -- info: values dtype, source, skipped --------------------------------------------------------


def test_info_shows_values_source_and_skipped(imported):
    tar, out, _ = imported
    info = CliRunner().invoke(main, ["info", str(out)])
    assert info.exit_code == 0, info.output
    sha = hashlib.sha256(tar.read_bytes()).hexdigest()
    assert "records:     9 (0 skipped)" in info.output
    assert "values:      float16 logits (the source's float32 rounded" in info.output
    assert (
        "source:      relabel_imagenet.tar (tar, relabel format, " in info.output
        and f"9 members), sha256 {sha}" in info.output
    )


def test_info_of_a_lossless_import_with_skipped_members(tmp_path):
    files = serialized(official_files(n_per_class=2))
    files["n01440764/n01440764_broken.pt"] = b"not a tensor"
    tar = write_tar(tmp_path / "relabel_imagenet.tar", files)
    out = tmp_path / "s.zarr"
    args = ["import", str(tar), "-o", str(out), "--workers", "0", "--values", "float32"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    info = CliRunner().invoke(main, ["info", str(out)]).output
    assert (
        "records:     6 (1 skipped: inputs that could not be read, listed in errors.jsonl)" in info
    )
    assert "values:      float32 logits (as the source holds them: float32, exact)" in info


def test_info_of_a_generated_store_has_no_source_line(tmp_path):
    written = write_store(tmp_path / "s.zarr", 12, shard_records=4)
    info = CliRunner().invoke(main, ["info", str(written.path)]).output
    assert "values:      float16 logits\n" in info and "source:" not in info
