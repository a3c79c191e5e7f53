"""Teacher ensembles: `relabel-store merge --ensemble` and relabel_store.write.ensemble."""

from __future__ import annotations

import re

import numpy as np
import pytest
from _stores import data_files, described_annotator, random_maps
from click.testing import CliRunner

from relabel_store import StoreMetadata, StoreWriter, load_relabel, verify_store
from relabel_store.cli.main import main
from relabel_store.errors import ConfigurationError, InputError
from relabel_store.write import ensemble as ensemble_module
from relabel_store.write.ensemble import combine_maps, ensemble_stores

C = 40  # classes: few, so that members' top-k overlap often


def _dense(indices, values, num_classes, fill):
    """(M, C) dense logits of top-k rows (M, K), absent classes at ``fill`` (M,)."""
    dense = np.repeat(fill[:, None], num_classes, axis=1).astype(np.float64)
    np.put_along_axis(dense, indices.astype(np.int64), values.astype(np.float64), axis=1)
    return dense


@pytest.mark.parametrize("missing", ["zero", "kth"])
def test_combine_maps_is_the_weighted_mean_over_the_union_then_top_k(missing):
    rng = np.random.default_rng(3)
    members = [random_maps(rng, 6, (3, 4), k, C) for k in (5, 3, 5)]
    weights = [0.5, 0.2, 0.3]
    ids, vals = combine_maps([m[0] for m in members], [m[1] for m in members], weights, 4,
                             missing=missing)  # fmt: skip
    assert ids.shape == vals.shape == (6, 3, 4, 4)
    flat = [(i.reshape(-1, i.shape[-1]), v.reshape(-1, v.shape[-1])) for i, v in members]
    mean = np.zeros((flat[0][0].shape[0], C))
    union = np.zeros_like(mean, bool)
    for (i, v), w in zip(flat, weights, strict=True):
        fill = v.min(axis=1).astype(np.float64) if missing == "kth" else np.zeros(len(v))
        mean += w * _dense(i, v, C, fill)
        np.put_along_axis(union, i.astype(np.int64), True, axis=1)
    mean[~union] = -np.inf  # only classes some member lists are candidates
    expected = np.argsort(-mean, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(ids.reshape(-1, 4), expected)
    np.testing.assert_allclose(
        vals.reshape(-1, 4), np.take_along_axis(mean, expected, axis=1), rtol=1e-5, atol=1e-4
    )
    assert (np.diff(vals, axis=-1) <= 0).all()


def _member(path, seed, keys, labels, sizes, *, k=5, grid=(4, 4), model="teacher"):
    """A finalized store of the same images (keys, labels, sizes) with its own random maps,
    written by the StoreWriter as generate writes one."""
    rng = np.random.default_rng(seed)
    idx, vals = random_maps(rng, len(keys), grid, k, C)
    annotator = {**described_annotator(grid, k, C), "model": model}
    meta = StoreMetadata(grid=grid, k=k, num_classes=C, rows=len(keys), shard_records=8,
                         class_names=tuple(f"class {c}" for c in range(C)),
                         annotator=annotator, dataset={"name": "photos", "split": "train"})  # fmt: skip
    with StoreWriter.open(path, meta) as writer:
        for s in range(writer.num_shards):
            r = writer.shard_rows(s)
            writer.write_shard(s, keys=keys[r.start : r.stop], labels=labels[r.start : r.stop],
                               sizes=sizes[r.start : r.stop], indices=idx[r.start : r.stop],
                               values=vals[r.start : r.stop])  # fmt: skip
        writer.finalize()
    return path


@pytest.fixture
def members(tmp_path):
    rng = np.random.default_rng(0)
    keys = [f"img_{i:03d}" for i in rng.permutation(20)]
    labels = rng.integers(-1, C, 20).astype(np.int32)
    sizes = rng.integers(50, 500, (20, 2)).astype(np.int32)
    return [
        _member(tmp_path / "a.relabel.zarr", 1, keys, labels, sizes, model="teacher-a"),
        _member(tmp_path / "b.relabel.zarr", 2, keys, labels, sizes, k=3, model="teacher-b"),
    ], (keys, labels, sizes)


def test_an_ensemble_store_holds_the_combined_maps_and_its_lineage(tmp_path, members):
    (a, b), _ = members
    out = tmp_path / "ens.relabel.zarr"
    result = ensemble_stores([a, b], out, weights=[3, 1], shard_records=8, progress=False)
    assert result.records == 20 and result.members == 2 and verify_store(out).ok
    store, sa, sb = load_relabel(out), load_relabel(a), load_relabel(b)
    assert store.metadata.k == 5 and store.metadata.grid == (4, 4)
    ra, rb, rs = sa.get_rows(range(20)), sb.get_rows(range(20)), store.get_rows(range(20))
    assert rs.keys == ra.keys and np.array_equal(rs.labels, ra.labels)
    assert np.array_equal(rs.sizes, ra.sizes)
    ids, vals = combine_maps([ra.indices, rb.indices], [ra.values, rb.values], [0.75, 0.25], 5)
    assert np.array_equal(rs.indices, ids)
    assert np.array_equal(rs.values, vals.astype(np.float16))
    ann = store.metadata.annotator
    assert ann["kind"] == "ensemble" and ann["missing"] == "zero"
    assert [m["weight"] for m in ann["members"]] == [0.75, 0.25]
    assert [m["weight_given"] for m in ann["members"]] == [3.0, 1.0]
    assert [m["digest"] for m in ann["members"]] == [sa.manifest.digest, sb.manifest.digest]
    assert [m["annotator"]["model"] for m in ann["members"]] == ["teacher-a", "teacher-b"]
    assert [m["location"] for m in ann["members"]] == ["a.relabel.zarr", "b.relabel.zarr"]
    # the same call again: already complete
    again = ensemble_stores([a, b], out, weights=[3, 1], shard_records=8, progress=False)
    assert again.already_complete and again.digest == result.digest


def test_an_interrupted_ensemble_resumes_to_the_same_bytes(tmp_path, members, monkeypatch):
    (a, b), _ = members
    whole = tmp_path / "whole.relabel.zarr"
    ensemble_stores([a, b], whole, shard_records=8, progress=False)
    calls = {"n": 0}
    real = ensemble_module.combine_maps

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "resumed.relabel.zarr"
    monkeypatch.setattr(ensemble_module, "combine_maps", failing)
    with pytest.raises(KeyboardInterrupt):
        ensemble_stores([a, b], out, shard_records=8, progress=False)
    monkeypatch.setattr(ensemble_module, "combine_maps", real)
    assert not (out / "manifest.json").exists()
    result = ensemble_stores([a, b], out, shard_records=8, progress=False)
    assert result.combined_now == 12  # the first shard (8 records) was kept
    assert data_files(out) == data_files(whole)


def test_stores_of_other_images_or_grids_are_refused(tmp_path, members):
    (a, b), (keys, labels, sizes) = members
    other = _member(tmp_path / "c.relabel.zarr", 3, [*keys[:-1], "img_999"], labels, sizes)
    with pytest.raises(InputError, match=r"do not hold the same keys.*img_999"):
        ensemble_stores([a, other], tmp_path / "x", progress=False)
    coarse = _member(tmp_path / "d.relabel.zarr", 4, keys, labels, sizes, grid=(2, 2))
    with pytest.raises(InputError, match="grid"):
        ensemble_stores([a, coarse], tmp_path / "y", progress=False)
    relabelled = _member(tmp_path / "e.relabel.zarr", 5, keys, (labels + 1) % C, sizes)
    with pytest.raises(InputError, match="different labels"):
        ensemble_stores([a, relabelled], tmp_path / "z", progress=False)
    resized = _member(tmp_path / "f.relabel.zarr", 6, keys, labels, sizes + 1)
    with pytest.raises(InputError, match="different image sizes"):
        ensemble_stores([a, resized], tmp_path / "w", progress=False)
    with pytest.raises(ConfigurationError, match="2 weights for 3 stores"):
        ensemble_stores([a, b, a], tmp_path / "v", weights=[1, 2], progress=False)
    with pytest.raises(ConfigurationError, match="at least two stores"):
        ensemble_stores([a], tmp_path / "u", progress=False)
    with pytest.raises(ConfigurationError, match=r"k must be in 1\.\.5"):
        ensemble_stores([a, b], tmp_path / "t", k=6, progress=False)


def test_merge_ensemble_from_the_command_line(tmp_path, members):
    (a, b), _ = members
    out = tmp_path / "ens.relabel.zarr"
    runner = CliRunner()
    result = runner.invoke(main, ["merge", "--ensemble", str(a), str(b), "-o", str(out),
                                  "--weights", "2,1", "--missing", "kth", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_relabel(out).metadata.annotator["missing"] == "kth"
    info = runner.invoke(main, ["info", str(out)])
    assert "ensemble of 2 stores" in info.output
    assert info.output.count("  member:    weight") == 2 and "a.relabel.zarr" in info.output
    refused = runner.invoke(main, ["merge", str(a), str(b), "-o", str(tmp_path / "n")])
    assert refused.exit_code == 2 and "--ensemble" in refused.output
    bad = runner.invoke(main, ["merge", "--ensemble", str(a), str(b), "-o", str(tmp_path / "m"),
                               "--weights", "1,x"])  # fmt: skip
    assert bad.exit_code == 2 and "comma-separated numbers" in bad.output


def test_the_dataset_card_lists_the_members(tmp_path, members):
    from relabel_store.publish.card import dataset_card

    (a, b), _ = members
    out = tmp_path / "ens.relabel.zarr"
    ensemble_stores([a, b], out, weights=[1, 3], progress=False)
    store = load_relabel(out)
    card = dataset_card(store.metadata, store.manifest, repo_id="org/ensemble")
    rows = dict(re.findall(r"^\| ([^|]+?) \| (.+) \|$", card, re.M))
    assert rows["annotator"].startswith("ensemble of 2 stores (`relabel-store merge --ensemble`)")
    member = rows["ensemble member 2"]
    assert member.startswith("weight 0.75: `teacher-b`") and "b.relabel.zarr" in member
    assert load_relabel(b).manifest.digest in member
