"""Round trips, the fast reader against zarr-python, resumption, and refusals."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import zarr
from _stores import data_files, write_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relabel_store import (
    CorruptDataError,
    FormatError,
    IncompleteStoreError,
    RecordNotFoundError,
    RowOutOfRangeError,
    StoreMetadata,
    StoreNotFoundError,
    StoreWriter,
    load_relabel,
)
from relabel_store.errors import InputError
from relabel_store.format.manifest import build_manifest, write_manifest


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(0, 40),
    grid=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    k=st.integers(1, 4),
    shard_records=st.integers(1, 17),
    data=st.data(),
)
def test_round_trip(tmp_path_factory, n, grid, k, shard_records, data):
    failed = (
        data.draw(st.frozensets(st.integers(0, max(n - 1, 0)), max_size=n // 3))
        if n
        else frozenset()
    )
    path = tmp_path_factory.mktemp("rt") / "s.zarr"
    w = write_store(
        path, n, grid=grid, k=k, num_classes=10, shard_records=shard_records, failed=failed
    )
    store = load_relabel(path)
    assert len(store) == n - len(failed)
    assert store.metadata.record_count == len(store) and store.metadata.complete
    expected = sorted(key for key in w.keys if key not in w.failed)
    assert [k.decode() for k in store.keys] == expected
    for row, key in enumerate(w.keys):
        if key in w.failed:
            assert key not in store
            with pytest.raises(RecordNotFoundError):
                store.get(key)
            continue
        rec = store.get(key)
        np.testing.assert_array_equal(rec.indices, w.indices[row])
        np.testing.assert_array_equal(rec.values, w.values[row])
        assert rec.label == w.labels[row] and rec.size == tuple(w.sizes[row])
        assert store.get_row(store.index_of(key)).key == key
    if expected:
        batch = store.get_many(expected[::-1])
        for i, key in enumerate(expected[::-1]):
            row = w.keys.index(key)
            np.testing.assert_array_equal(batch.indices[i], w.indices[row])
            np.testing.assert_array_equal(batch.values[i], w.values[row])
            assert batch.labels[i] == w.labels[row] and batch.keys[i] == key


def test_fast_reader_matches_zarr_python_on_every_record(tmp_path):
    w = write_store(tmp_path / "s.zarr", 70, shard_records=32, failed=frozenset({3, 40}))
    store = load_relabel(w.path)
    group = zarr.open_group(str(w.path), mode="r")
    zkeys = group["keys"][:]
    zrows = group["rows"][:]
    assert len(zkeys) == len(store)
    for i in range(len(store)):
        key = bytes(zkeys[i]).rstrip(b"\0").decode()
        rec = store.get_row(i)
        assert rec.key == key
        p = int(zrows[i])
        np.testing.assert_array_equal(rec.indices, group["indices"][p])
        np.testing.assert_array_equal(rec.values, group["values"][p])
        assert rec.label == group["labels"][i]
        assert rec.size == tuple(group["sizes"][i])
    # failed rows hold fill values in zarr, and are not indexed
    assert not group["indices"][w.keys.index(sorted(w.failed)[0])].any()


def test_resume_after_interruption_gives_identical_store(tmp_path):
    full = write_store(tmp_path / "full.zarr", 60, shard_records=16)
    # a run killed after two shards, leaving a zarr temp file behind...
    write_store(tmp_path / "part.zarr", 60, shard_records=16, shards=[0, 2], finalize=False)
    (tmp_path / "part.zarr" / "indices" / "c.1.0.0.0.abc.partial").write_bytes(b"junk")
    with pytest.raises(IncompleteStoreError, match="never finalized"):
        load_relabel(tmp_path / "part.zarr")
    # ...resumed: the same command writes the missing shards and finalizes
    meta = StoreMetadata.from_json(
        json.loads((full.path / "zarr.json").read_text())["attributes"]["relabel"]
    )
    with StoreWriter.open(tmp_path / "part.zarr", meta) as w:
        assert w.completed_shards() == {0, 2}
    write_store(tmp_path / "part.zarr", 60, shard_records=16, shards=[1, 3])
    assert data_files(full.path) == data_files(tmp_path / "part.zarr")
    assert load_relabel(full.path).manifest.digest != ""  # both complete
    a, b = load_relabel(full.path), load_relabel(tmp_path / "part.zarr")
    assert [e for e in a.manifest.entries if e.path != "zarr.json"] == [
        e for e in b.manifest.entries if e.path != "zarr.json"
    ]


def test_resume_with_different_settings_is_refused(tmp_path):
    write_store(tmp_path / "s.zarr", 20, shard_records=8, shards=[0], finalize=False)
    other = StoreMetadata(grid=(15, 15), k=3, num_classes=1000, rows=20, shard_records=8)
    with pytest.raises(InputError, match="different settings"):
        StoreWriter.open(tmp_path / "s.zarr", other)


def test_finalize_with_missing_shards_is_refused(tmp_path):
    write_store(tmp_path / "s.zarr", 20, shard_records=8, shards=[0], finalize=False)
    meta = StoreMetadata.from_json(
        json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())["attributes"]["relabel"]
    )
    with pytest.raises(IncompleteStoreError, match="2 of 3 shards"):
        StoreWriter.open(tmp_path / "s.zarr", meta).finalize()


def test_writer_refuses_foreign_folder_and_finished_store(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    meta = StoreMetadata(grid=(2, 2), k=1, num_classes=3, rows=1)
    with pytest.raises(InputError, match="not a relabel-store store"):
        StoreWriter.open(tmp_path / "photos", meta)
    w = write_store(tmp_path / "s.zarr", 4, grid=(2, 2), k=1, num_classes=3)
    with pytest.raises(InputError, match="already holds a finalized store"):
        StoreWriter.open(w.path, meta)
    StoreWriter.open(w.path, meta, overwrite=True)  # explicit overwrite starts over
    assert not (w.path / "manifest.json").exists()


def test_unknown_major_version_is_refused(tmp_path):
    w = write_store(tmp_path / "s.zarr", 5)
    group = json.loads((w.path / "zarr.json").read_text())
    group["attributes"]["relabel"]["format_version"] = "2.0"
    (w.path / "zarr.json").write_text(json.dumps(group))
    write_manifest(w.path, build_manifest(w.path))  # as a future writer would seal it
    with pytest.raises(FormatError, match=r"format version '2\.0'.*Upgrade"):
        load_relabel(w.path)


def test_a_plain_zarr_group_is_not_a_store(tmp_path):
    zarr.create_group(str(tmp_path / "g.zarr"), zarr_format=3)
    with pytest.raises(FormatError, match="no relabel-store metadata"):
        load_relabel(tmp_path / "g.zarr")


def test_missing_store(tmp_path):
    with pytest.raises(StoreNotFoundError) as exc:
        load_relabel(tmp_path / "nope")
    assert isinstance(exc.value, FileNotFoundError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no zarr\\.json"):
        load_relabel(tmp_path / "empty")


def test_missing_key_and_row_out_of_range(tmp_path):
    store = load_relabel(write_store(tmp_path / "s.zarr", 10).path)
    with pytest.raises(KeyError, match="'nope' is not in store"):
        store.get("nope")
    with pytest.raises(RecordNotFoundError):
        store["img_99999"]
    for bad in (10, -1, 2**40):
        with pytest.raises(IndexError, match=r"0 <= row < 10"):
            store.get_row(bad)
    with pytest.raises(RowOutOfRangeError):
        store.get_rows([0, 10])


def test_rows_of_looks_up_many_keys_at_once(tmp_path):
    w = write_store(tmp_path / "s.zarr", 40)
    store = load_relabel(w.path)
    wanted = [w.keys[7], "img_99999", w.keys[0], "", w.keys[39]]
    rows = store.rows_of(wanted)
    assert rows.dtype == np.int64 and rows.tolist()[1::2] == [-1, -1]
    for key, row in zip(wanted[::2], rows[::2].tolist(), strict=True):
        assert store.get_row(row).key == key
    assert store.rows_of([]).shape == (0,)
    # Keys longer than any stored key (a real key with a suffix, as a Hub ImageNet path gives)
    # are absent, beside keys that are found, and do not match the real key they start with.
    longer = [w.keys[5] + "_n01440764", w.keys[5], w.keys[5] + "x" * 40]
    assert store.rows_of(longer).tolist() == [-1, store.index_of(w.keys[5]), -1]


@pytest.mark.parametrize("damage", ["swapped", "repeated"])
def test_a_key_table_out_of_order_is_refused_at_open(tmp_path, damage):
    """Lookups are binary searches: unsorted or repeated keys would find another record."""
    w = write_store(tmp_path / "s.zarr", 30)
    keys = zarr.open_array(str(w.path / "keys"), mode="r+")
    table = keys[:]
    table[[3, 4]] = table[[4, 3]] if damage == "swapped" else table[[3, 3]]
    keys[:] = table
    write_manifest(w.path, build_manifest(w.path))  # as a faulty writer would seal it
    with pytest.raises(
        CorruptDataError, match=r"keys.*sorted and unique.*key 4 .*relabel-store verify"
    ):
        load_relabel(w.path)


def test_corrupted_chunk_raises_naming_the_file(tmp_path):
    w = write_store(tmp_path / "s.zarr", 20, shard_records=32)
    shard = w.path / "values" / "c.0.0.0.0"
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF  # inside the first inner chunk, not the index
    shard.write_bytes(bytes(data))
    store = load_relabel(w.path)
    failures = 0
    for i in range(len(store)):
        try:
            store.get_row(i)
        except CorruptDataError as exc:
            assert "values/c.0.0.0.0" in str(exc) and str(w.path) in str(exc)
            failures += 1
    assert failures == 1
    data[-3] ^= 0xFF  # the shard index itself
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="index checksum"):
        load_relabel(w.path).get_row(0)


def test_store_pickles_for_spawned_workers(tmp_path):
    store = load_relabel(write_store(tmp_path / "s.zarr", 10).path)
    store.get_row(0)  # opens a memory map that must not be pickled
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.get_row(3).values, store.get_row(3).values)


def test_keys_are_compact(tmp_path):
    store = load_relabel(write_store(tmp_path / "s.zarr", 30).path)
    assert store.keys.dtype.itemsize == len("img_00000")
    assert store.keys.nbytes == 30 * 9
    with pytest.raises(ValueError):
        store.keys[0] = b"x"


def test_empty_store(tmp_path):
    store = load_relabel(write_store(tmp_path / "s.zarr", 0).path)
    assert len(store) == 0 and "x" not in store


def test_copying_a_store_keeps_it_readable(tmp_path):
    w = write_store(tmp_path / "s.zarr", 12)
    shutil.copytree(w.path, tmp_path / "copy.zarr")
    os.utime(tmp_path / "copy.zarr")
    assert len(load_relabel(tmp_path / "copy.zarr")) == 12


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=6000),
    dtype=st.sampled_from(["u1", "<u2", "<u4"]),
    cname=st.sampled_from(["zstd", "lz4", "blosclz"]),
    shuffle=st.sampled_from([0, 1, 2]),
    level=st.integers(0, 9),
)
def test_own_blosc_decoder_matches_numcodecs(data, dtype, cname, shuffle, level):
    from numcodecs import Blosc as NumcodecsBlosc

    from relabel_store.format._codecs import Blosc

    item = np.dtype(dtype).itemsize
    array = np.frombuffer(data[: len(data) // item * item] or bytes(item), dtype)
    frame = NumcodecsBlosc(cname=cname, clevel=level, shuffle=shuffle).encode(array)
    ours = Blosc(cname, level, shuffle, item, 0, array.nbytes)
    assert bytes(ours.decode(frame, array.nbytes)) == array.tobytes()
    if len(array) == 1 or array.nbytes < 128:
        return
    # and our encoder writes what numcodecs writes, for the records it takes a fast path on
    assert ours.encode(array[None]) == [bytes(frame)]


@settings(max_examples=30, deadline=None)
@given(
    records=st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=40),
    dtype=st.sampled_from(["<u2", "<f2", "<f4", "u1"]),
    cname=st.sampled_from(["zstd", "lz4"]),
    shuffle=st.sampled_from([0, 1]),
    level=st.integers(1, 9),
    crc=st.booleans(),
)
def test_batch_decoder_matches_the_single_one(records, dtype, cname, shuffle, level, crc):
    """Blosc frames of every kind, with and without a trailing crc32c: the batch path decodes
    exactly what the single decoder does, or refuses the batch (never a different answer)."""
    import google_crc32c
    from numcodecs import Blosc

    from relabel_store.format._codecs import BatchRefused, _blosc_plan, decode_plans
    from relabel_store.format._codecs import Blosc as OurBlosc

    width = 16 * 8  # eight copies of each 16 bytes: records above Blosc's minimum size

    def decode(frames: list[bytes], trailer: int) -> np.ndarray:
        out = np.empty((len(frames), width), np.uint8)
        decode_plans([_blosc_plan(frames, width, trailer)], 2, [out])
        return out

    arrays = [np.frombuffer(r * 8, dtype) for r in records]
    frames = [Blosc(cname=cname, clevel=level, shuffle=shuffle).encode(a) for a in arrays]
    if crc:
        frames = [f + google_crc32c.value(f).to_bytes(4, "little") for f in frames]
    try:
        got = decode(frames, 4 if crc else 0)
    except BatchRefused:  # only frames of another compressor go the slow way
        assert cname != "zstd"
        got = None
    else:
        assert cname == "zstd"
    for i, (a, f) in enumerate(zip(arrays, frames, strict=True)):
        ours = OurBlosc(cname, level, shuffle, np.dtype(dtype).itemsize, 0, width)
        single = bytes(ours.decode(f[:-4] if crc else f, width))
        assert single == a.tobytes()
        if got is not None:
            assert got[i].tobytes() == single
    if crc and len(frames[0]) > 30:  # one flipped byte: the batch is refused, not misread
        bad = bytearray(frames[-1])
        bad[26] ^= 0x40
        with pytest.raises(BatchRefused):
            decode([*frames[:-1], bytes(bad)], 4)


@pytest.mark.parametrize("threads", [1, 2])
def test_batch_reads_match_single_reads(tmp_path, monkeypatch, threads):
    """get_rows over many shards, in random order, repeated rows, failed (fill-value) rows
    present in the arrays: the same records single reads give, on one thread or on a pool."""
    import relabel_store.read.reader as reader

    monkeypatch.setattr(reader, "cores_per_process", lambda: threads)
    monkeypatch.setattr(reader, "_BATCH", 96)  # several batches per call
    w = write_store(tmp_path / "s.zarr", 300, grid=(6, 5), k=3, shard_records=64)
    store = load_relabel(w.path)
    rng = np.random.default_rng(1)
    rows = rng.integers(0, len(store), 500)
    batch = store.get_rows(rows)
    for i, row in enumerate(rows.tolist()):
        rec = store.get_row(row)
        assert batch.keys[i] == rec.key
        np.testing.assert_array_equal(batch.indices[i], rec.indices)
        assert batch.values[i].tobytes() == rec.values.tobytes()
    # the physical rows of failed images hold only fill values: read as zeros
    failed = write_store(tmp_path / "f.zarr", 130, shard_records=64, failed=frozenset(range(64)))
    opened = load_relabel(failed.path)
    zeros = opened._indices.get_many(np.arange(130))
    assert not zeros[:64].any() and zeros[64:].any()
    np.testing.assert_array_equal(zeros[64:], failed.indices[64:])


def test_a_large_stores_key_index_is_mapped_from_the_cache(tmp_path, monkeypatch):
    """Above MIN_RECORDS the key index is decoded once into the cache and memory-mapped by every
    later open (shared pages, not a private copy per process); a damaged or foreign cache file
    is written anew, never trusted."""
    from relabel_store.read import _key_index

    monkeypatch.setenv("RELABEL_STORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_key_index, "MIN_RECORDS", 50)
    w = write_store(tmp_path / "s.zarr", 90, shard_records=32, failed=frozenset({4}))
    monkeypatch.setenv(_key_index.ENV, "0")
    held = load_relabel(w.path)
    monkeypatch.delenv(_key_index.ENV)
    first, again = load_relabel(w.path), load_relabel(w.path)
    (cached,) = (tmp_path / "cache" / "key-index").iterdir()
    assert cached.name == f"{first.manifest.digest}.keyindex"
    for store in (first, again):
        assert isinstance(store._keys, np.memmap) and isinstance(store._rows, np.memmap)
        np.testing.assert_array_equal(store.keys, held.keys)
        np.testing.assert_array_equal(store.sizes, held.sizes)
        np.testing.assert_array_equal(store._labels, held._labels)
        np.testing.assert_array_equal(store._rows, held._rows)
        batch, expected = store.get_rows(range(len(store))), held.get_rows(range(len(held)))
        assert batch.keys == expected.keys and (batch.labels == expected.labels).all()
    for damage in (b"", b"RLKEYIX1" + b"\xff" * 8, cached.read_bytes()[:-4096]):
        cached.write_bytes(damage)
        store = load_relabel(w.path)
        np.testing.assert_array_equal(store.keys, held.keys)
        assert cached.stat().st_size > 4096 * 4
    # keys out of order in the cached file (header intact): refused at open, not misread
    data = bytearray(cached.read_bytes())
    width = held.keys.dtype.itemsize
    first, second = data[4096 : 4096 + width], data[4096 + width : 4096 + 2 * width]
    data[4096 : 4096 + 2 * width] = second + first
    cached.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="sorted and unique"):
        load_relabel(w.path)
    small = write_store(tmp_path / "small.zarr", 20)
    assert not isinstance(load_relabel(small.path)._keys, np.memmap)


def _read_in_child(store, rows, out) -> None:
    out.put(store.get_rows(rows).indices.tobytes())


def test_batch_reads_in_a_forked_child_after_the_parent_made_its_pool(tmp_path, monkeypatch):
    """A forked DataLoader worker has none of its parent's decoding threads: it makes its own
    pool instead of waiting forever on threads that do not exist in it."""
    import multiprocessing

    import relabel_store.read.reader as reader

    monkeypatch.setattr(reader, "cores_per_process", lambda: 2)
    store = load_relabel(write_store(tmp_path / "s.zarr", 200, grid=(4, 4), k=2).path)
    rows = np.arange(0, 200, 1)
    expected = store.get_rows(rows).indices.tobytes()  # the parent's pool now exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(store, rows, queue))
    child.start()
    try:
        assert queue.get(timeout=60) == expected
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()


@pytest.mark.parametrize("hard", ["same", "higher"])
def test_shard_cache_follows_the_open_file_limit(tmp_path, hard):
    """Every open shard holds a file: where the process may not open one file per shard, the
    cache keeps what fits beside 256 spare files and evicts the rest (reads still right); where
    the hard limit allows, the soft limit is raised and every shard stays open."""
    import subprocess
    import sys

    write_store(tmp_path / "s.zarr", 200, shard_records=2)  # 100 shards of each array
    script = f"""
import resource
import numpy as np
from relabel_store import load_relabel
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300 if {hard!r} == "same" else max(hard, 1000)))
store = load_relabel({str(tmp_path / "s.zarr")!r})
singles = [store.get_row(i) for i in range(len(store))] * 2
batch = store.get_rows(np.arange(len(store)))
assert all((r.values == v).all() for r, v in zip(singles, batch.values))
print(store._indices.max_open, len(store._indices._shards), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    max_open, held, soft = map(int, out.stdout.split())
    if hard == "same":  # (300 - 256) // 2 shards of each array: evicted and reopened
        assert (max_open, held, soft) == (22, 22, 300)
    else:
        assert (max_open, held) == (100, 100) and soft == 2 * 100 + 256


def test_batches_read_ahead_after_a_cold_batch(tmp_path, monkeypatch):
    """A batch whose chunks came from the disk (here: any copy counts as slow) makes the next
    batch ask for every chunk's pages first; what it reads is what single reads give."""
    from relabel_store.read import reader

    write_store(tmp_path / "s.zarr", 120, shard_records=8)
    store = load_relabel(tmp_path / "s.zarr")
    store._indices._prefetch = store._values._prefetch = True  # the real madvise, once
    assert (store.get_rows([5, 3]).values == store.get_many(store.keys[[5, 3]]).values).all()
    calls = []
    monkeypatch.setattr(reader, "_COLD_SECONDS", -1.0)  # every batch looks cold
    monkeypatch.setattr(reader, "_will_need", lambda spans: calls.append(len(spans)))
    # Whether that batch looked cold depends on the machine's load: start from a warm one.
    store._indices._prefetch = store._values._prefetch = False
    rows = np.random.default_rng(0).permutation(len(store))
    first = store.get_rows(rows[:60])
    assert calls == []  # the first batch does not know yet
    second = store.get_rows(rows[60:])
    assert calls == [60, 60]  # both arrays read ahead
    for batch, part in ((first, rows[:60]), (second, rows[60:])):
        for i, row in enumerate(part):
            single = store.get_row(int(row))
            assert (batch.indices[i] == single.indices).all()
            assert (batch.values[i] == single.values).all()
