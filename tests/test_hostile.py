"""Hostile stores that are correctly signed: a publisher who edits what the writer made and then
recomputes the manifest, so every checksum passes. Only the reader's own limits stand between
such a store and gigabytes of memory, minutes of work or NaN training targets.

Every test ends in one error of a relabel-store class naming the problem (one ``error:`` line
from the CLI), or in exactly the data that was written; memory (tracemalloc, which sees numpy's
allocations) and time are bounded and asserted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
import zstandard
from _stores import Written, write_store
from click.testing import CliRunner

from relabel_store import CorruptDataError, FormatError, StoreMetadata, load_relabel
from relabel_store.cli.main import main
from relabel_store.errors import ConfigurationError
from relabel_store.format.manifest import build_manifest, write_manifest
from relabel_store.format.metadata import MANIFEST_NAME


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Written:
    path = tmp_path_factory.mktemp("pristine") / "s.zarr"
    return write_store(path, 40, shard_records=16, num_classes=1000, failed=frozenset({5}))


@pytest.fixture
def written(pristine, tmp_path) -> Written:
    """A finalized store of 40 records (one failed) in 3 shards, this test's own copy."""
    path = tmp_path / "s.zarr"
    shutil.copytree(pristine.path, path)
    return dataclasses.replace(pristine, path=path)


def reseal(path: Path) -> None:
    """Recompute the manifest over the store's current files: the store is 'correctly signed'."""
    write_manifest(path, build_manifest(path))


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def edit_metadata(path: Path, **fields) -> None:
    edit_json(path / "zarr.json", lambda g: g["attributes"]["relabel"].update(fields))


@contextlib.contextmanager
def bounded(mb: float = 30, seconds: float = 20) -> Iterator[None]:
    """Assert the block allocates at most ``mb`` MB at its peak and takes at most ``seconds``
    (generous: the machine is shared)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    took = time.perf_counter() - started
    assert peak < mb * 1e6, f"{peak / 1e6:.0f} MB allocated"
    assert took < seconds, f"took {took:.1f} s"


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- 1. limits before work ------------------------------------------------------------------------


def _zstd_zeros(nbytes: int) -> bytes:
    """A checksummed zstd frame of ``nbytes`` zeros, streamed (never ``nbytes`` in memory)."""
    import io

    out = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True)
    with cctx.stream_writer(out, size=nbytes, closefd=False) as w:
        block = bytes(1 << 20)
        for _ in range(nbytes >> 20):
            w.write(block)
    return out.getvalue()


def test_a_tiny_key_table_that_decodes_to_a_gigabyte_is_refused_unread(written):
    # The attack: a 2^20 x 1024 key table (1 GiB decoded) shipped as a ~32 KB zstd frame, with
    # metadata and arrays claiming 2^20 records. `info` used to decode it all.
    n, width = 1 << 20, 1024
    path = written.path
    edit_metadata(path, rows=n, record_count=n)
    for name in ("indices", "values", "rows", "labels", "sizes"):
        edit_json(path / name / "zarr.json", lambda a: a["shape"].__setitem__(0, n))

    def keys(a):
        a["shape"] = [n, width]
        a["chunk_grid"]["configuration"]["chunk_shape"] = [n, width]

    edit_json(path / "keys" / "zarr.json", keys)
    frame = _zstd_zeros(n * width)
    assert len(frame) < 64_000
    (path / "keys" / "c.0.0").write_bytes(frame)
    reseal(path)
    with bounded():
        with pytest.raises(CorruptDataError, match=f"claims {n} records, but the manifest lists 3"):
            load_relabel(path)
        line = one_error_line(CliRunner().invoke(main, ["info", str(path)]))
    assert f"claims {n} records" in line


def test_a_key_chunk_larger_than_the_array_is_refused(written):
    # 39 keys in a chunk claiming 2^20 rows: the frame would have to decode to 2^20 x 9 bytes.
    edit_json(
        written.path / "keys" / "zarr.json",
        lambda a: a["chunk_grid"]["configuration"].__setitem__("chunk_shape", [1 << 20, 9]),
    )
    reseal(written.path)
    with bounded(), pytest.raises(FormatError, match=r"chunks \(1048576, 9\) \(at most 39 rows\)"):
        load_relabel(written.path)


def test_key_index_chunks_decode_on_many_threads_and_a_damaged_one_is_named(tmp_path, monkeypatch):
    """The key index's chunks decode on every core at open: the same arrays as on one, and a
    chunk that decodes to the wrong size (its manifest entry resealed) fails the open naming
    that chunk, whichever thread decoded it."""
    import relabel_store.read.reader as reader
    import relabel_store.write.writer as writer

    monkeypatch.setattr(writer, "KEY_CHUNK_ROWS", 16)
    w = write_store(tmp_path / "s.zarr", 90)
    assert len(list((w.path / "rows").glob("c.*"))) == 6
    opened = {}
    for threads in (1, 4):
        monkeypatch.setattr(reader, "cores_per_process", lambda t=threads: t)
        opened[threads] = load_relabel(w.path)
    for name in ("_keys", "_rows", "_labels", "_sizes"):
        np.testing.assert_array_equal(getattr(opened[1], name), getattr(opened[4], name))
    assert sorted(opened[4].keys.tolist()) == sorted(k.encode() for k in w.keys)
    (w.path / "rows" / "c.3").write_bytes(zstandard.ZstdCompressor().compress(bytes(8)))
    reseal(w.path)
    with pytest.raises(
        CorruptDataError,
        match=r"rows/c\.3: cannot decode chunk \(zstd frame holds 8 bytes, expected 128\)",
    ):
        load_relabel(w.path)


def _claim_grid(path: Path, grid: int, k: int = 5) -> None:
    edit_metadata(path, grid=[grid, grid], k=k)

    def shape(a):
        a["shape"][1:] = [grid, grid, k]
        a["chunk_grid"]["configuration"]["chunk_shape"][1:] = [grid, grid, k]
        a["codecs"][0]["configuration"]["chunk_shape"][1:] = [grid, grid, k]

    for name in ("indices", "values"):
        edit_json(path / name / "zarr.json", shape)
    reseal(path)


@pytest.mark.parametrize(
    ("grid", "k", "message"),
    [
        (10_000, 5, "grid must be two integers in 1..256, got (10000, 10000)"),
        (200, 100, "a record of grid 200x200 and k=100 holds 4000000 entries; at most 1048576"),
    ],
)
def test_a_huge_grid_fails_at_open_in_every_command(written, tmp_path, grid, k, message):
    _claim_grid(written.path, grid, k)
    store = str(written.path)
    key = sorted(set(written.keys) - written.failed)[0]
    with bounded():
        with pytest.raises(FormatError) as err:
            load_relabel(store)
        assert message in str(err.value)
        for command in (["info", store], ["quality", store],
                        ["show", store, key, "-o", str(tmp_path / "m.png")]):  # fmt: skip
            assert message in one_error_line(CliRunner().invoke(main, command))


def test_shards_too_small_for_their_claimed_index_are_refused(written):
    edit_metadata(written.path, shard_records=1 << 20)

    def shards(a):
        a["chunk_grid"]["configuration"]["chunk_shape"][0] = 1 << 20

    for name in ("indices", "values"):
        edit_json(written.path / name / "zarr.json", shards)
    reseal(written.path)
    with bounded(), pytest.raises(CorruptDataError, match="too few to hold the index of a shard"):
        load_relabel(written.path)


def test_a_store_claiming_10_12_rows_reads_its_records_without_allocating_for_them(written):
    # `rows` (records + failures) may be anything up to 2^40; nothing may allocate by it.
    rows = 10**12
    edit_metadata(written.path, rows=rows)
    for name in ("indices", "values"):
        edit_json(written.path / name / "zarr.json", lambda a: a["shape"].__setitem__(0, rows))
    reseal(written.path)
    order = [i for i, k in enumerate(written.keys) if k not in written.failed]
    with bounded():
        store = load_relabel(written.path)
        seen = 0
        for positions, ids, _ in store.shard_blocks():
            for p, got in zip(positions.tolist(), ids, strict=True):
                want = written.keys.index(store.keys[p].decode())
                np.testing.assert_array_equal(got, written.indices[want])
                seen += 1
        assert seen == len(order) == len(store)
        torch = pytest.importorskip("torch")
        from relabel_store.loaders.maps import DeviceMaps

        maps = DeviceMaps.load(store, device="cpu")
        assert tuple(maps.indices.shape) == (len(store), 15, 15, 5)
        assert isinstance(maps.indices, torch.Tensor)


# -- 2. values: NaN/inf logits and class ids out of range ------------------------------------------


def _poison(path: Path, row: int, what: str) -> None:
    """Rewrite one record through zarr-python (the writer's own encoder), then reseal."""
    if what == "id":
        arr = zarr.open_array(path / "indices", mode="r+")
        ids = np.asarray(arr[row])
        ids[3, 4, 0] = 1000  # num_classes is 1000: ids are 0..999
        arr[row] = ids
    else:
        arr = zarr.open_array(path / "values", mode="r+")
        vals = np.asarray(arr[row])
        vals[7, 7, 2] = {"nan": np.nan, "inf": np.inf}[what]
        arr[row] = vals
    reseal(path)


@pytest.mark.parametrize("what", ["id", "nan", "inf"])
def test_bad_values_are_corrupt_data_naming_the_record(written, tmp_path, what):
    row = 20  # in shard 1
    key = written.keys[row]
    _poison(written.path, row, what)
    store = load_relabel(written.path)
    problem = "class id 1000, outside 0..999" if what == "id" else "NaN or infinite"
    named = f"record {key!r} (row {store.index_of(key)}, shard 1) holds"
    with bounded():
        for read in (
            lambda: store.get(key),
            lambda: store.get_many(sorted(set(written.keys) - written.failed)),
            lambda: list(store.shard_blocks()),
        ):
            with pytest.raises(CorruptDataError) as err:
                read()
            assert named in str(err.value) and problem in str(err.value)
    good = written.keys[0]  # the other records still read exactly
    np.testing.assert_array_equal(store.get(good).values, written.values[0])
    result = CliRunner().invoke(main, ["verify", str(written.path)])
    assert result.exit_code == 1 and named in result.output and problem in result.output
    assert "Traceback" not in result.output
    line = one_error_line(CliRunner().invoke(main, ["show", str(written.path), key, "-o",
                                                    str(tmp_path / "m.png")]))  # fmt: skip
    assert named in line


def test_the_writer_never_writes_bad_values(tmp_path):
    meta = StoreMetadata(grid=(2, 2), k=2, num_classes=10, rows=2, shard_records=2)
    from relabel_store import StoreWriter

    ids = np.tile(np.array([1, 0], np.uint16), (2, 2, 2, 1))
    for bad_ids, bad_vals, message in (
        (ids + 9, np.zeros((2, 2, 2, 2)), r"class ids must be in 0\.\.9"),
        (ids, np.full((2, 2, 2, 2), np.nan), "finite"),
    ):
        with (
            StoreWriter.open(tmp_path / "s.zarr", meta, overwrite=True) as w,
            pytest.raises(ConfigurationError, match=message),
        ):
            w.write_shard(0, keys=["a", "b"], labels=[0, 0], sizes=[(4, 4)] * 2,
                          indices=bad_ids, values=bad_vals)  # fmt: skip


# -- 9. manifest_version and algorithm -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("manifest_version", 2, "has manifest_version 2; this relabel-store"),
        ("manifest_version", None, "has manifest_version None"),
        ("algorithm", "md5", "checksums its files with 'md5'; relabel-store checks sha256 only"),
    ],
)
def test_manifest_version_and_algorithm_are_checked(written, field, value, message):
    edit_json(written.path / MANIFEST_NAME, lambda m: m.update({field: value}))
    with pytest.raises(FormatError, match=message):
        load_relabel(written.path)
    line = one_error_line(CliRunner().invoke(main, ["verify", str(written.path)]))
    assert message.split(";")[0] in line
    edit_json(written.path / MANIFEST_NAME, lambda m: m.pop(field))
    with pytest.raises(FormatError, match=f"not a valid relabel-store manifest: '{field}'"):
        load_relabel(written.path)


# -- 3. remote open downloads what reading needs ---------------------------------------------------


@pytest.mark.parametrize("mode", ["cache", "range"])
def test_remote_open_never_downloads_extra_files_the_manifest_lists(written, tmp_path, mode,
                                                                    monkeypatch):  # fmt: skip
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    junk = written.path / "extras" / "junk.bin"
    junk.parent.mkdir()
    junk.write_bytes(np.random.default_rng(0).bytes(8 << 20))  # 8 MB listed, never needed
    reseal(written.path)
    cache = tmp_path / "cache"
    key = written.keys[20]
    with bounded(mb=40):
        store = load_relabel(written.path.as_uri(), mode=mode, cache_dir=cache)
        np.testing.assert_array_equal(store.get(key).values, written.values[20])
    cached = {p.relative_to(cache).as_posix().split("/files/")[-1] for p in cache.rglob("*")
              if p.is_file() and "/files/" in p.as_posix()}  # fmt: skip
    assert "extras/junk.bin" not in cached and "errors.jsonl" not in cached
    shards = {p for p in cached if p.startswith(("indices/c.", "values/c."))}
    assert shards == (set() if mode == "range" else {"indices/c.1.0.0.0", "values/c.1.0.0.0"})
    assert store.source.bytes_downloaded < 1 << 20
    from relabel_store.read.pull import pull

    done = pull(written.path.as_uri(), to=tmp_path / "pulled")  # pull takes every listed file
    assert (
        done.report.ok and (tmp_path / "pulled" / "extras" / "junk.bin").stat().st_size == 8 << 20
    )


# -- 8. one-line errors: protocols ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["info", "foo://x/s.zarr"], "cannot open foo:// URLs (Protocol not known: foo)"),
        (["info", "s3://bucket/s.zarr"], "Run `pip install s3fs`."),
        (["push", "{store}", "gs://bucket/s.zarr"], "Run `pip install gcsfs`."),
    ],
)
def test_unknown_protocols_and_missing_backends_are_one_line(written, command, message):
    """Run in a process where fsspec's S3 and GCS packages cannot be imported (the dev extra
    installs s3fs: it is blocked there rather than uninstalled)."""
    args = [a.format(store=written.path) for a in command]
    script = (
        "import sys; sys.modules['s3fs'] = sys.modules['gcsfs'] = None; "
        "from relabel_store.cli.main import main; main(sys.argv[1:])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and message in lines[0]


# -- 5. caches: no link followed, private permissions ----------------------------------------------


def _cache_layout(store_path: Path, cache: Path, mode: str = "cache") -> tuple[Path, Path]:
    """Open the store by its file:// URL once; return its cache entry and URL home, then empty
    the cache (the test plants links where they were)."""
    store = load_relabel(store_path.as_uri(), mode=mode, cache_dir=cache)
    entry = store.source.entry.directory
    store.close()
    shutil.rmtree(cache)
    return entry, entry.parent


@pytest.mark.parametrize("planted", ["files", "locks", "ranges", "entry", "url home"])
def test_links_planted_in_the_cache_are_never_followed(written, tmp_path, planted, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cache = tmp_path / "cache"
    mode = "range" if planted == "ranges" else "cache"
    entry, home = _cache_layout(written.path, cache, mode)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not the cache's")
    link = {"files": entry / "files", "locks": entry / "locks", "ranges": entry / "ranges",
            "entry": entry, "url home": home}[planted]  # fmt: skip
    if planted in ("files", "locks", "ranges"):
        entry.mkdir(parents=True, mode=0o700)
        if planted == "locks":  # the metadata is cached already: the link is met at a shard
            load_relabel(written.path.as_uri(), cache_dir=cache).close()
            shutil.rmtree(entry / "locks")
    else:
        link.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(Exception) as err:
        store = load_relabel(written.path.as_uri(), mode=mode, cache_dir=cache)
        store.get(written.keys[20])
    assert type(err.value).__name__ == "UnsafePathError", err.value
    assert "symbolic link" in str(err.value) and "never follows" in str(err.value)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]  # nothing written there
    info = CliRunner().invoke(main, ["info", written.path.as_uri()],
                              env={"RELABEL_STORE_CACHE": str(cache)})  # fmt: skip
    if planted == "locks":  # info reads cached metadata only: it takes no lock
        assert info.exit_code == 0, info.output
    else:
        assert "symbolic link" in one_error_line(info)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


@pytest.mark.parametrize("mode", ["cache", "range"])
def test_the_cache_is_private(written, tmp_path, mode, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    old = os.umask(0o002)  # a permissive umask: the cache must not inherit it
    try:
        cache = tmp_path / "cache"
        store = load_relabel(written.path.as_uri(), mode=mode, cache_dir=cache)
        np.testing.assert_array_equal(store.get(written.keys[20]).values, written.values[20])
    finally:
        os.umask(old)
    found = list(cache.rglob("*"))
    assert any(p.name.endswith(".tail") for p in found) == (mode == "range")
    assert any(p.name.endswith(".lock") for p in found)
    wrong = [(p, oct(p.stat().st_mode & 0o777)) for p in found
             if (p.stat().st_mode & 0o777) != (0o700 if p.is_dir() else 0o600)]  # fmt: skip
    assert wrong == []


# -- 7. push never deletes what it did not write ----------------------------------------------------


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory) -> tuple[Path, Path]:
    """v1 (40 records, 3 shards) and v2 (20 records, 2 shards): v1 has files v2 does not."""
    root = tmp_path_factory.mktemp("push")
    v1, v2 = root / "v1.zarr", root / "v2.zarr"
    write_store(v1, 40, shard_records=16, seed=1)
    write_store(v2, 20, shard_records=16, seed=2)
    return v1, v2


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_push_never_deletes_a_users_file_in_the_store_folders(two_stores, tmp_path):
    from relabel_store.publish.push import push

    v1, v2 = two_stores
    dest = tmp_path / "bucket" / "s.zarr"
    push(v1, dest.as_uri())
    (dest / "labels" / "my_train_labels.csv").write_text("key,label\n")  # the user's own
    before = files_of(dest)
    with pytest.raises(ConfigurationError) as err:
        push(v2, dest.as_uri())
    assert "labels/my_train_labels.csv" in str(err.value) and "Nothing was sent" in str(err.value)
    assert files_of(dest) == before  # nothing sent, nothing deleted
    line = one_error_line(CliRunner().invoke(main, ["push", str(v2), dest.as_uri(), "--dry-run"]))
    assert "labels/my_train_labels.csv" in line


def test_push_says_what_it_deletes_before_deleting_and_dry_run_shows_the_plan(two_stores, tmp_path,
                                                                              monkeypatch):  # fmt: skip
    from relabel_store.publish.destinations.fsspec import FsspecDestination

    v1, v2 = two_stores
    dest = tmp_path / "bucket" / "s.zarr"
    runner = CliRunner()
    assert runner.invoke(main, ["push", str(v1), dest.as_uri()]).exit_code == 0
    stale = sorted(set(files_of(v1)) - set(files_of(v2)))
    assert stale == ["indices/c.2.0.0.0", "values/c.2.0.0.0"]
    before = files_of(dest)
    plan = runner.invoke(main, ["push", str(v2), dest.as_uri(), "--dry-run"])
    assert plan.exit_code == 0, plan.output
    assert "dry run: nothing sent, nothing deleted" in plan.stdout
    assert f"delete: 2 file(s) an earlier push wrote: {', '.join(stale)}" in plan.stdout
    assert files_of(dest) == before

    events: list[str] = []
    change = FsspecDestination.change

    def spy(self, add, delete, message, *, last=False):
        events.append(f"change deletes {sorted(delete)}")
        return change(self, add, delete, message, last=last)

    monkeypatch.setattr(FsspecDestination, "change", spy)
    from relabel_store.publish.push import push

    done = push(v2, dest.as_uri(), log=events.append)
    said = next(i for i, e in enumerate(events) if "will delete 2 file(s)" in e)
    deleted = next(
        i for i, e in enumerate(events) if e.startswith("change") and all(p in e for p in stale)
    )
    assert said < deleted and events[said].endswith(", ".join(stale))
    assert done.deleted == stale and files_of(dest) == files_of(v2)


def test_an_interrupted_replacement_resumes_and_deletes_only_the_old_stores_files(two_stores,
                                                                                 tmp_path,
                                                                                 monkeypatch):  # fmt: skip
    from relabel_store.errors import RemoteError
    from relabel_store.publish.destinations.fsspec import FsspecDestination
    from relabel_store.publish.push import OWNED_NAME, push

    v1, v2 = two_stores
    dest = tmp_path / "bucket" / "s.zarr"
    push(v1, dest.as_uri())
    change = FsspecDestination.change
    calls = []

    def fail_second(self, add, delete, message, *, last=False):
        calls.append(message)
        if len(calls) == 2:
            raise RemoteError("the connection dropped (injected)")
        return change(self, add, delete, message, last=last)

    with monkeypatch.context() as m:
        m.setattr(FsspecDestination, "change", fail_second)
        with pytest.raises(RemoteError, match="interrupted in batch 2"):
            push(v2, dest.as_uri(), batch_files=2)
    assert not (dest / "manifest.json").exists() and (dest / OWNED_NAME).exists()
    (dest / "values" / "notes.txt").write_text("mine")  # still refused after the interruption
    with pytest.raises(ConfigurationError, match=r"values/notes\.txt"):
        push(v2, dest.as_uri())
    (dest / "values" / "notes.txt").unlink()
    done = push(v2, dest.as_uri())
    assert done.deleted == ["indices/c.2.0.0.0", "values/c.2.0.0.0"]
    assert files_of(dest) == files_of(v2)  # the record is gone too


# -- 8. one-line errors: checkpoints that are not weights --------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"my notes about the model\n", "is not a checkpoint: it is neither a .safetensors file"),
        (b"\x80\x02" + bytes(range(101, 140)) * 9, "it is not a torch checkpoint"),
        (b"\x80\x65" + bytes(range(101, 140)) * 9, "it starts with b'\\x80e"),
    ],
)
def test_a_checkpoint_that_is_not_weights_is_one_line(tmp_path, content, message):
    pytest.importorskip("timm")
    from relabel_store.write.samples import write_sample_photos

    photos = tmp_path / "photos"
    write_sample_photos(photos, class_folders=True)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    result = CliRunner().invoke(main, ["generate", str(photos), "-o", str(tmp_path / "s.zarr"),
                                       "--model", "resnet10t", "--checkpoint", str(notes),
                                       "--grid", "2", "-k", "2", "--workers", "0", "-q"])  # fmt: skip
    line = one_error_line(result)
    assert message in line and "notes.txt" in line


# -- 8. one-line errors: a lock held by a dead writer's orphaned children ---------------------------

_HOLDER = """
import multiprocessing, os, sys, time
from pathlib import Path
from relabel_store.format._lock import WriteLock

root = Path(sys.argv[1])
lock = WriteLock.acquire(root)
child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
child.start()  # like a decode worker: forked while the lock is held
(root / "child.pid").write_text(str(child.pid))
time.sleep(600)
"""


def test_a_dead_writers_orphaned_children_do_not_hold_its_lock(tmp_path):
    import signal
    import subprocess
    import sys

    from relabel_store.errors import StoreLockedError
    from relabel_store.format._lock import WriteLock

    root = tmp_path / "s.zarr"
    (root / "_progress").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(root)])
    child = None
    try:
        deadline = time.monotonic() + 60
        while not (root / "child.pid").exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        child = int((root / "child.pid").read_text())
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid}"):
            WriteLock.acquire(root)  # the live writer holds it
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        os.kill(child, 0)  # the orphan is alive...
        WriteLock.acquire(root).release()  # ...and the lock is free at once
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


# -- 8. one-line errors: a disk that fills while the store is created ------------------------------


@pytest.mark.parametrize("truncated", [False, True])
def test_a_store_whose_creation_hit_a_full_disk_resumes(tmp_path, monkeypatch, truncated):
    import errno

    from relabel_store import StoreWriter

    path = tmp_path / "s.zarr"
    meta = StoreMetadata(grid=(15, 15), k=5, num_classes=1000, rows=20, shard_records=8)
    create_array = zarr.Group.create_array

    def full_disk(self, name, *args, **kwargs):
        if name == "values":
            raise OSError(errno.ENOSPC, "No space left on device", str(path / "values"))
        return create_array(self, name, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(zarr.Group, "create_array", full_disk)
        with pytest.raises(OSError, match="No space left"):
            StoreWriter.open(path, meta)
    assert (path / "zarr.json").exists() and not (path / "values" / "zarr.json").exists()
    if truncated:  # the group's own file cut short by the full disk
        raw = (path / "zarr.json").read_bytes()
        (path / "zarr.json").write_bytes(raw[: len(raw) // 2])
    with StoreWriter.open(path, meta) as writer:  # resumes: the creation is simply redone
        w = write_store(path, 20, shard_records=8, writer=writer)
    store = load_relabel(path)
    assert len(store) == 20
    row = 13
    np.testing.assert_array_equal(store.get(w.keys[row]).values, w.values[row])
