"""The writer's own shard encoding against zarr-python's, and writing shards in the background."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr
from _stores import random_maps, write_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from relabel_store import ConfigurationError, StoreMetadata, StoreWriter, load_relabel
from relabel_store.format._shards import ShardEncoder
from relabel_store.format.metadata import INDICES, VALUES

_SEP = {"name": "default", "configuration": {"separator": "."}}


def _files(root: Path, array: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / array).glob("c.*"))}


def _maps(rng, n, record, incompressible):
    h, w, k = record
    idx, val = random_maps(rng, n, (h, w), k, num_classes=1000)
    if incompressible:  # no compressor shrinks these: c-blosc stores them another way
        val = rng.integers(0, 2**16, val.shape, dtype=np.uint16).view(np.float16)
        val[~np.isfinite(val)] = 1
    return idx, val


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 40),
    record=st.sampled_from([(15, 15, 5), (1, 1, 1), (3, 5, 2), (40, 40, 12)]),
    shard=st.integers(1, 16),
    empty=st.sets(st.integers(0, 39), max_size=10),
    incompressible=st.booleans(),
    values=st.sampled_from(
        [
            [BloscCodec(cname="zstd", clevel=c, shuffle="shuffle"), Crc32cCodec()]
            for c in range(1, 10)
        ]
        + [
            [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
            [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"), Crc32cCodec()],
            [ZstdCodec(level=3, checksum=False)],
        ]
    ),
    ids_level=st.sampled_from([1, 13, 19]),
)
def test_shards_are_byte_for_byte_what_zarr_python_writes(
    tmp_path_factory, n, record, shard, empty, incompressible, values, ids_level
):
    rng = np.random.default_rng(n)
    idx, val = _maps(rng, n, record, incompressible)
    for row in empty:  # rows of fill values (failed images): zarr-python stores no chunk
        if row < n:
            idx[row], val[row] = 0, 0
    if n > 1:
        val[n - 1] = -0.0  # equal to the fill value as a number, not bit for bit: stored
        idx[n - 1] = 0
    root = tmp_path_factory.mktemp("codecs")
    codecs = {INDICES: [ZstdCodec(level=ids_level, checksum=True)], VALUES: values}
    pool = ThreadPoolExecutor(3)
    for name, data in ((INDICES, idx), (VALUES, val)):
        for target in ("zarr", "ours"):
            zarr.create_array(
                str(root / target / name),
                shape=data.shape,
                dtype=data.dtype,
                chunks=(1, *record),
                shards=(shard, *record),
                compressors=codecs[name],
                fill_value=0,
                chunk_key_encoding=_SEP,
            )
        zarr.open_array(str(root / "zarr" / name), mode="r+")[...] = data
        encoder = ShardEncoder.read(root / "ours", name)
        for s in range(-(-n // shard)):
            blob = encoder.start(data[s * shard : (s + 1) * shard], pool)()
            if blob is not None:
                (root / "ours" / name / encoder.chunk_key(s)).write_bytes(blob)
        assert _files(root / "ours", name) == _files(root / "zarr", name), name
    pool.shutdown()


def test_thread_count_does_not_change_a_byte(tmp_path):
    one = write_store(tmp_path / "one.zarr", 70, shard_records=32, failed=frozenset({5}))
    meta = load_relabel(one.path).metadata
    many = StoreWriter.open(
        tmp_path / "many.zarr", StoreMetadata.from_json({**meta.to_json(), "complete": False,
                                                         "record_count": 0}), threads=7
    )  # fmt: skip
    assert many.threads == 7
    for s in range(many.num_shards):
        r = many.shard_rows(s)
        many.write_shard(
            s,
            keys=one.keys[r.start : r.stop],
            labels=one.labels[r.start : r.stop],
            sizes=one.sizes[r.start : r.stop],
            indices=one.indices[r.start : r.stop],
            values=one.values[r.start : r.stop],
            errors=[{"reason": "broken"} if i == 5 else None for i in r],
        )
    many.finalize()
    for array in (INDICES, VALUES):
        assert _files(one.path, array) == _files(tmp_path / "many.zarr", array)


def _shard_data(w: StoreWriter, s: int, seed: int = 0) -> dict:
    r = w.shard_rows(s)
    idx, val = random_maps(np.random.default_rng(seed + s), len(r), w.metadata.grid, w.metadata.k)
    return {
        "keys": [f"k{i:04d}" for i in r],
        "labels": [0] * len(r),
        "sizes": [(10, 10)] * len(r),
        "indices": idx,
        "values": val,
    }


def _meta(rows: int = 40) -> StoreMetadata:
    return StoreMetadata(grid=(4, 4), k=2, num_classes=1000, rows=rows, shard_records=8)


def test_background_writes_equal_foreground_writes(tmp_path):
    fg = StoreWriter.open(tmp_path / "fg.zarr", _meta())
    for s in range(fg.num_shards):
        fg.write_shard(s, **_shard_data(fg, s))
    fg.finalize()
    bg_writer = StoreWriter.open(tmp_path / "bg.zarr", _meta())
    with bg_writer.background(max_pending=1) as bg:
        for s in range(bg_writer.num_shards):
            bg.submit(s, **_shard_data(bg_writer, s))
    assert bg_writer.completed_shards() == set(range(5))
    bg_writer.finalize()
    for array in (INDICES, VALUES):
        assert _files(tmp_path / "fg.zarr", array) == _files(tmp_path / "bg.zarr", array)


def test_a_failed_background_write_surfaces_in_the_callers_thread(tmp_path):
    w = StoreWriter.open(tmp_path / "s.zarr", _meta())
    bad = _shard_data(w, 1)
    bad["indices"] = bad["indices"] + 5000  # class ids beyond num_classes: write_shard refuses
    bg = w.background(max_pending=1)
    bg.submit(0, **_shard_data(w, 0))
    bg.submit(1, **bad)
    with pytest.raises(ValueError, match=r"class ids must be in 0\.\.999"):
        for s in range(2, 5):  # the queue holds one shard: these block until the error is seen
            bg.submit(s, **_shard_data(w, s))
    with pytest.raises(ValueError, match="class ids"):
        bg.close()
    done = w.completed_shards()
    assert 0 in done and 1 not in done and not done - {0, 2}


def test_an_error_in_the_block_still_writes_the_queued_shards(tmp_path):
    w = StoreWriter.open(tmp_path / "s.zarr", _meta())
    release = threading.Event()
    with pytest.raises(KeyError, match="annotating failed"), w.background(max_pending=2) as bg:
        bg.submit_call(0, lambda: release.wait() and _shard_data(w, 0))
        bg.submit(1, **_shard_data(w, 1))
        release.set()
        raise KeyError("annotating failed")
    assert w.completed_shards() == {0, 1}
    with pytest.raises(ConfigurationError, match="closed"):
        bg.submit(2, **_shard_data(w, 2))


def test_a_shards_extra_record_lives_and_dies_with_the_shard(tmp_path):
    """What a command records of a shard (the importer: its source's fingerprint) is kept with
    the shard itself, survives a reopen (a resume), and is gone with the finished store's
    progress; fields known only at the end go in with finalize(dataset=...)."""
    w = StoreWriter.open(tmp_path / "s.zarr", _meta(16))
    w.write_shard(0, **_shard_data(w, 0), extra={"source": "abc", "maps": 3})
    assert w.shard_extra(0) == {"source": "abc", "maps": 3}
    assert w.shard_extra(1) is None  # not written
    w.close()
    resumed = StoreWriter.open(tmp_path / "s.zarr", _meta(16))
    assert resumed.shard_extra(0) == {"source": "abc", "maps": 3}
    resumed.write_shard(1, **_shard_data(resumed, 1))
    assert resumed.shard_extra(1) is None  # written without one
    resumed.finalize(dataset={"source": {"sha256": "f" * 64}})
    store = load_relabel(tmp_path / "s.zarr")
    assert store.metadata.dataset["source"] == {"sha256": "f" * 64}
    assert not (tmp_path / "s.zarr" / "_progress").exists()
