"""The label-quality report on stores whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from relabel_store import ConfigurationError, StoreMetadata, StoreWriter, quality_report
from relabel_store.cli.main import main

CLASSES = tuple(f"n{c:08d}" for c in range(100))


def _store(path, logit: float, *, labels, classes=None, dataset_classes=None, spread=False):
    """Maps of 4x4 cells, top-3: each cell lists the record's class (``classes``, default its
    label; ``spread``: one more per row of cells) with ``logit``, then two others with 0."""
    n = len(labels)
    classes = labels if classes is None else classes
    meta = StoreMetadata(
        grid=(4, 4), k=3, num_classes=100, rows=n, shard_records=8, class_identifiers=CLASSES,
        label_space="test", dataset={"name": "t", "class_names": dataset_classes},
    )  # fmt: skip
    w = StoreWriter.open(path, meta)
    for s in range(w.num_shards):
        r = w.shard_rows(s)
        idx = np.zeros((len(r), 4, 4, 3), np.uint16)
        for j, row in enumerate(r):
            first = (classes[row] + np.arange(4)[:, None] * spread) % 100  # (4, 1): per row
            idx[j, ..., 0] = first
            idx[j, ..., 1] = (first + 50) % 100
            idx[j, ..., 2] = (first + 51) % 100
        val = np.zeros(idx.shape, np.float16)
        val[..., 0] = logit
        w.write_shard(
            s, keys=[f"k{i:03d}" for i in r], labels=[labels[i] for i in r],
            sizes=[(300, 400)] * len(r), indices=idx, values=val,
        )  # fmt: skip
    w.finalize()
    return path


def test_confident_maps_that_match_the_labels(tmp_path):
    labels = [3, 7, 7, 12, 40, 41, 42, 99, 0, 5]
    path = _store(tmp_path / "s.zarr", 30.0, labels=labels, dataset_classes=CLASSES)
    report = quality_report(path, crops=3)
    assert report.sampled == report.records == 10 and report.crops_per_record == 3
    assert report.agreement == 1.0 and report.labelled == 10 and report.label_note is None
    assert report.whole_top1.min() > 0.99 and report.crop_top1.min() > 0.99
    assert report.outside_mass.max() < 1e-6
    assert set(report.distinct_top1) == {1} and set(report.distinct_ids) == {3}


def test_flat_maps_leave_their_mass_outside(tmp_path):
    # logits of 0 everywhere: every target is uniform over the 100 classes
    path = _store(tmp_path / "s.zarr", 0.0, labels=[1, 2, 3, 4], spread=True)
    report = quality_report(path)
    assert np.allclose(report.crop_top1, 0.01) and np.allclose(report.whole_top1, 0.01)
    # the 4 rows of cells list c..c+3 first, then 50 and 51 above each: c+50..c+54
    assert set(report.distinct_top1) == {4} and set(report.distinct_ids) == {9}
    assert np.allclose(report.outside_mass, 0.91)  # the 91 absent classes' share
    assert report.agreement is None and "class names" in report.label_note


def test_labels_are_mapped_by_class_identity_not_index(tmp_path):
    # the dataset names its 3 classes by wnid: its label 0 is the store's class 42, label 1 is 7
    dataset_classes = [CLASSES[42], CLASSES[7], "not-in-the-store"]
    path = _store(
        tmp_path / "s.zarr", 30.0, labels=[0, 1, 1, 2, -1], classes=[42, 7, 9, 5, 5],
        dataset_classes=dataset_classes,
    )  # fmt: skip
    report = quality_report(path, sample=None)
    assert report.labelled == 3  # label 2 names no store class, -1 is unknown
    assert report.agreement == pytest.approx(2 / 3)
    assert "not-in-the-store" in report.label_note


def test_a_sample_of_a_store_and_the_cli(tmp_path):
    path = _store(tmp_path / "s.zarr", 8.0, labels=list(range(40)), dataset_classes=CLASSES)
    report = quality_report(path, sample=10, seed=1)
    assert report.sampled == 10 and report.records == 40 and len(report.crop_top1) == 40
    assert quality_report(path, sample=10, seed=1).crop_top1.tolist() == report.crop_top1.tolist()
    with pytest.raises(ConfigurationError, match="crops must be >= 1"):
        quality_report(path, crops=0)
    plot = tmp_path / "quality.png"
    result = CliRunner().invoke(main, ["quality", str(path), "--sample", "0", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "agreement with labels:       100.0% (40 labelled)" in result.output
    assert "sample:                      all 40 records, 4 random crops each" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_plot_into_a_missing_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    path = _store(tmp_path / "s.zarr", 8.0, labels=list(range(40)), dataset_classes=CLASSES)
    monkeypatch.setattr("relabel_store.report.quality.quality_report", _never_called)
    for args in (
        ["quality", str(path), "--plot", str(tmp_path / "nope" / "q.png")],
        ["show", str(path), "img_00000", "-o", str(tmp_path / "nope" / "m.png")],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2
        assert f"the folder {tmp_path / 'nope'} does not exist" in result.output


def _never_called(*args, **kwargs):
    raise AssertionError("the report was computed before the output path was checked")
