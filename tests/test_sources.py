"""Conformance tests every Source and every Remote passes.

Sources: local directory, verified cache over a file:// URL and over the (fake) Hub, and range
reads over both. Same bytes for every file, None for absent files (without a request), unsafe
paths refused, blobs sliceable, pickle round-trip without open handles (stores are pickled into
spawned DataLoader workers), and use after fork.

Remotes (the byte access below the cache): the Hub, a file:// URL and an in-memory fsspec file
system. Same bytes, None for absent files, downloads that stop at the byte budget they are given,
exact ranges, pickling without connections, and huggingface_hub's offline switch honoured.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _fake_hub import HTTPX2_DATA_DEPRECATION_FILTER, iter_fake_hub, set_offline
from _stores import write_store

from relabel_store.errors import CorruptDataError, RemoteError, UnsafePathError
from relabel_store.read.reader import RelabelStore
from relabel_store.read.remote import open_remote
from relabel_store.read.resolve import resolve
from relabel_store.read.sources import Remote, Source
from relabel_store.read.sources.cached import ShardCacheSource
from relabel_store.read.sources.fsspec import FsspecRemote
from relabel_store.read.sources.hub import HubRemote
from relabel_store.read.sources.local import LocalSource
from relabel_store.read.sources.ranged import RangeBlob, RangeSource

pytestmark = pytest.mark.filterwarnings(HTTPX2_DATA_DEPRECATION_FILTER)

REPO = "relabel/conformance"
KINDS = ["local", "cache-file", "range-file", "cache-hub", "range-hub"]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("conformance") / "s.relabel.zarr"
    write_store(path, 40, shard_records=16, failed=frozenset({3}))
    return path


def store_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def seed_hub(hub, repo: str, root: Path, branch: str = "main") -> str:
    return hub.commit_files(repo, store_bytes(root), branch=branch)


class Case:
    def __init__(self, kind: str, source: Source, hub=None) -> None:
        self.kind, self.source, self.hub = kind, source, hub

    def requests(self) -> int:
        return len(self.hub.requests) if self.hub is not None else 0


@pytest.fixture(params=KINDS)
def case(request, store_dir, tmp_path, monkeypatch):
    kind = request.param
    cache = tmp_path / "cache"
    mode = kind.split("-")[0]
    if kind == "local":
        yield Case(kind, LocalSource(store_dir))
    elif kind.endswith("-file"):
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        yield Case(kind, open_remote(resolve(store_dir.as_uri()), mode=mode, cache_dir=cache))
    else:
        gen = iter_fake_hub(monkeypatch, tmp_path)
        hub = next(gen)
        sha = seed_hub(hub, REPO, store_dir)
        source = open_remote(resolve(f"hf://datasets/{REPO}@{sha}"), mode=mode, cache_dir=cache)
        yield Case(kind, source, hub)
        source.close()
        gen.close()


def test_kinds(case):
    expected = {
        "local": LocalSource,
        "cache-file": ShardCacheSource,
        "cache-hub": ShardCacheSource,
        "range-file": RangeSource,
        "range-hub": RangeSource,
    }[case.kind]
    assert type(case.source) is expected
    assert isinstance(case.source.location, str) and case.source.location
    assert repr(case.source).startswith(type(case.source).__name__)


def test_same_bytes_for_every_file(case, store_dir):
    files = store_bytes(store_dir)
    assert case.source.list_files() == sorted(files)
    for path, data in files.items():
        assert case.source.read(path) == data, path
        blob = case.source.open_blob(path)
        assert blob is not None and len(blob) == len(data), path
        assert bytes(blob[0 : len(blob)]) == data
        n = len(data)
        for a, b in [(0, 1), (3, 17), (n // 2, n), (n - 5, n), (n, n)]:
            assert bytes(blob[a:b]) == data[a:b], (path, a, b)


def test_absent_files_are_none_without_requests(case):
    if case.hub is not None:
        case.hub.reset_log()
    assert case.source.read("indices/c.999.0.0.0") is None
    assert case.source.open_blob("values/c.999.0.0.0") is None
    assert case.source.read("no/such/file.json") is None
    assert case.requests() == 0


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", "a//b", "C:/x", "a\\b"])
def test_unsafe_paths_refused(case, bad):
    with pytest.raises(UnsafePathError):
        case.source.read(bad)
    with pytest.raises(UnsafePathError):
        case.source.open_blob(bad)


def test_reader_on_every_source_matches_local(case, store_dir):
    local = RelabelStore(LocalSource(store_dir))
    store = RelabelStore(case.source)
    assert len(store) == len(local) == 39
    rows = list(range(len(local)))
    a, b = store.get_rows(rows), local.get_rows(rows)
    assert a.keys == b.keys
    for x, y in zip(a[1:], b[1:], strict=True):
        np.testing.assert_array_equal(x, y)
    rec = store.get("img_00007")
    np.testing.assert_array_equal(rec.values, local.get("img_00007").values)


def test_pickle_round_trip(case, store_dir):
    files = store_bytes(store_dir)
    blob = case.source.open_blob("values/c.1.0.0.0")  # an open handle/connection in use
    assert blob is not None and len(blob) > 0
    payload = pickle.dumps(case.source)
    assert len(payload) < 64 * 1024  # configuration only: no cached bytes, no handles
    clone = pickle.loads(payload)
    assert type(clone) is type(case.source) and clone.location == case.source.location
    for path in ("zarr.json", "values/c.1.0.0.0", "manifest.json"):
        assert clone.read(path) == files[path]
    store = pickle.loads(pickle.dumps(RelabelStore(case.source)))
    assert store.get("img_00011").key == "img_00011"


def _child_read(conn, source, inherited) -> None:
    try:
        # the store opened before the fork (as a forked DataLoader worker uses it), then a
        # fresh one over the inherited source
        rec = inherited.get("img_00020")
        again = RelabelStore(source).get("img_00020")
        assert rec.values.tobytes() == again.values.tobytes()
        conn.send(hashlib.sha256(rec.values.tobytes() + rec.indices.tobytes()).hexdigest())
    except BaseException as exc:  # report, never run the parent's teardown here
        conn.send(f"error: {exc!r}")
    finally:
        conn.close()
        os._exit(0)


def test_fork_safety(case, store_dir):
    local = RelabelStore(LocalSource(store_dir)).get("img_00020")
    expected = hashlib.sha256(local.values.tobytes() + local.indices.tobytes()).hexdigest()
    parent = RelabelStore(case.source)
    parent.get("img_00001")  # state (open shards, connections) exists before the fork
    ctx = multiprocessing.get_context("fork")
    results = []
    for _ in range(2):
        here, there = ctx.Pipe()
        proc = ctx.Process(target=_child_read, args=(there, case.source, parent))
        proc.start()
        there.close()
        results.append(here.recv() if here.poll(30) else "timeout")
        proc.join(30)
    assert results == [expected, expected]
    assert parent.get("img_00020").values.tobytes() == local.values.tobytes()


def test_local_root(case, store_dir):
    src = case.source
    if case.kind == "local":
        assert src.local_root() == str(store_dir)
        return
    assert src.local_root() is None  # nothing fetched yet
    assert isinstance(src, ShardCacheSource)
    src.fetch()
    root = src.local_root()
    assert root is not None and store_bytes(Path(root)) == store_bytes(store_dir)


def test_range_blob_reads_only_what_is_asked(case):
    if not case.kind.startswith("range"):
        pytest.skip("range sources only")
    blob = case.source.open_blob("indices/c.0.0.0.0")
    assert isinstance(blob, RangeBlob)
    if case.hub is not None:
        case.hub.reset_log()
    blob[10:20]
    blob[100:150]
    assert blob.requests == 2
    if case.hub is not None:
        assert case.hub.bytes_sent(server="cdn") == 10 + 50
    with pytest.raises(ValueError):
        blob[0:10:2]


# -- remotes ------------------------------------------------------------------------------------

REMOTES = ["hub", "file", "memory"]


@pytest.fixture(params=REMOTES)
def remote(request, store_dir, tmp_path, monkeypatch) -> Iterator[Remote]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    if request.param == "file":
        yield FsspecRemote(store_dir.as_uri())
    elif request.param == "memory":
        import fsspec

        fs = fsspec.filesystem("memory")
        root = f"/conformance-{os.getpid()}-{id(tmp_path)}"
        for path, data in store_bytes(store_dir).items():
            fs.pipe_file(f"{root}/{path}", data)
        yield FsspecRemote(f"memory://{root}")
        fs.rm(root, recursive=True)
    else:
        gen = iter_fake_hub(monkeypatch, tmp_path)
        hub = next(gen)
        sha = seed_hub(hub, REPO, store_dir)
        yield HubRemote(REPO, sha, endpoint=hub.url)
        gen.close()


def test_remote_fetch(remote, store_dir):
    files = store_bytes(store_dir)
    for path in ("zarr.json", "manifest.json", "labels/c.0", "values/c.1.0.0.0"):
        assert remote.fetch(path) == files[path]
    assert remote.fetch("values/c.999.0.0.0") is None
    assert isinstance(remote.location, str) and remote.location in repr(remote)


def test_remote_download_stops_at_its_byte_budget(remote, store_dir, tmp_path):
    data = (store_dir / "values/c.1.0.0.0").read_bytes()
    for budget, expected in [(len(data) + 1, data), (len(data), data), (10, data[:10])]:
        out = tmp_path / "out"
        with open(out, "wb") as f:
            remote.download("values/c.1.0.0.0", f, budget)
        assert out.read_bytes() == expected, budget
    with open(out, "wb") as f, pytest.raises(CorruptDataError, match="manifest lists this file"):
        remote.download("values/c.999.0.0.0", f, 100)


def test_remote_read_range(remote, store_dir):
    data = (store_dir / "indices/c.0.0.0.0").read_bytes()
    n = len(data)
    for a, b in [(0, 1), (3, 17), (n // 2, n), (n - 20, n)]:
        assert remote.read_range("indices/c.0.0.0.0", a, b) == data[a:b], (a, b)


def test_remote_pickles_without_connections(remote, store_dir):
    remote.fetch("zarr.json")  # a connection / file system in use
    payload = pickle.dumps(remote)
    assert len(payload) < 4096
    clone = pickle.loads(payload)
    assert clone.location == remote.location
    assert clone.fetch("zarr.json") == (store_dir / "zarr.json").read_bytes()
    remote.close()
    assert remote.fetch("zarr.json") == (store_dir / "zarr.json").read_bytes()  # reconnects


def test_remote_honours_the_offline_switch(remote, monkeypatch):
    set_offline(monkeypatch)
    with pytest.raises(RemoteError, match="HF_HUB_OFFLINE"):
        remote.fetch("zarr.json")
