"""Remote faults: a malicious store or cache, a remote that sends too much or the wrong range, a
connection that drops, a download killed with SIGKILL.

Against real files, the loopback Hub driven by the real huggingface_hub client, and real
processes. Every test checks that no wrong number is returned (an error, or records equal to the
local store's) and, through a Python audit hook watching every ``open``, that nothing outside the
store, the cache or the destination is read or written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _fake_hub import HTTPX2_DATA_DEPRECATION_FILTER, iter_fake_hub
from _stores import write_store
from click.testing import CliRunner

from relabel_store import load_relabel
from relabel_store.cli.main import main
from relabel_store.errors import CorruptDataError, RemoteError, UnsafePathError
from relabel_store.format._io import sha256_file
from relabel_store.publish.push import push
from relabel_store.read.pull import pull
from relabel_store.read.sources import hub as hub_source

pytestmark = pytest.mark.filterwarnings(HTTPX2_DATA_DEPRECATION_FILTER)

REPO = "relabel/faults"
N, SHARD = 40, 16
KEY = "img_00007"

# -- watching every open() ----------------------------------------------------------------------

_WATCHED: list[tuple[str, bool]] | None = None
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple) -> None:
    seen = _WATCHED
    if seen is None or event != "open" or isinstance(args[0], int):
        return
    path, mode, flags = args
    writes = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & _WRITE_FLAGS)
    seen.append((os.path.realpath(os.fsdecode(path)), writes))  # a link resolves to its target


sys.addaudithook(_audit)


@contextlib.contextmanager
def contained(inside: Path, outside: Path) -> Iterator[list[tuple[str, bool]]]:
    """Record every file opened in the block; then assert nothing under ``outside`` was opened
    and every file opened for writing is under ``inside``."""
    global _WATCHED
    seen: list[tuple[str, bool]] = []
    _WATCHED = seen
    try:
        yield seen
    finally:
        _WATCHED = None
        touched = [p for p, _ in seen if Path(p).is_relative_to(outside.resolve())]
        assert touched == [], f"opened outside the store/cache: {touched}"
        written = [p for p, w in seen if w and not Path(p).is_relative_to(inside.resolve())]
        assert written == [], f"written outside the test folder: {written}"


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "s.relabel.zarr"
    write_store(path, N, shard_records=SHARD, seed=3)
    return path


@pytest.fixture
def hub(monkeypatch, tmp_path):
    yield from iter_fake_hub(monkeypatch, tmp_path)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder nothing may touch, holding a 'secret' file."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret").write_bytes(b"not part of any store\n")
    return out


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def seed(hub, store_dir: Path) -> str:
    return hub.commit_files(REPO, files_of(store_dir))


def shard_of(store, array: str, key: str) -> str:
    return f"{array}/c.{int(store._rows[store.index_of(key)]) // SHARD}.0.0.0"


def same_record(store, local, key: str) -> None:
    a, b = store.get(key), local.get(key)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)


def leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*.tmp")] if cache.exists() else []


def link_outside(store: Path, rel: str, outside: Path) -> Path:
    """Replace store file ``rel`` by a symlink to an identical copy outside the store (so only a
    check for links, not a checksum, can catch it)."""
    target = outside / rel.replace("/", "_")
    shutil.copyfile(store / rel, target)
    (store / rel).unlink()
    (store / rel).symlink_to(target)
    return target


# -- nothing outside the store: symlinks and special files --------------------------------------


def test_push_refuses_links_and_special_files(hub, store_dir, tmp_path, outside):
    linked = tmp_path / "linked.relabel.zarr"
    shutil.copytree(store_dir, linked)
    link_outside(linked, "values/c.1.0.0.0", outside)
    moved = tmp_path / "folder.relabel.zarr"
    shutil.copytree(store_dir, moved)
    shutil.move(moved / "indices", outside / "indices")
    (moved / "indices").symlink_to(outside / "indices")
    with contained(tmp_path, outside):
        for store in (linked, moved):
            with pytest.raises(UnsafePathError, match="symbolic link"):
                push(store, REPO)
    assert hub.requests == []  # refused before any request

    fifo_store = tmp_path / "fifo.relabel.zarr"
    shutil.copytree(store_dir, fifo_store)
    (fifo_store / "labels/c.0").unlink()
    os.mkfifo(fifo_store / "labels/c.0")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            push(fifo_store, REPO)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # blocked opening the FIFO: unblock it, then fail
        os.close(os.open(fifo_store / "labels/c.0", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("push opened a FIFO in the store")
    assert len(errors) == 1 and isinstance(errors[0], UnsafePathError)
    assert "should be a regular file" in str(errors[0])


def test_push_to_a_folder_never_writes_through_its_links(store_dir, tmp_path, outside):
    dest = tmp_path / "bucket" / "s.relabel.zarr"
    dest.mkdir(parents=True)
    (dest / "values").symlink_to(outside)
    with contained(tmp_path, outside), pytest.raises(UnsafePathError, match="symbolic link"):
        push(store_dir, dest.as_uri())
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def test_pull_never_writes_through_links(hub, store_dir, tmp_path, outside):
    seed(hub, store_dir)
    dest = tmp_path / "pulled"
    dest.mkdir()
    (dest / "values").symlink_to(outside)  # as if planted in an interrupted pull
    with contained(tmp_path, outside), pytest.raises(UnsafePathError, match="symbolic link"):
        pull(REPO, to=dest)
    with contained(tmp_path, outside):
        result = CliRunner().invoke(main, ["pull", REPO, "--to", str(dest)])
    assert result.exit_code == 2 and result.output.count("error: refusing") == 1
    assert "symbolic link" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]

    (dest / "values").unlink()
    done = pull(REPO, to=dest)
    assert done.report.ok and files_of(dest) == files_of(store_dir)


def test_cache_never_reads_through_links(hub, store_dir, tmp_path, outside):
    sha = seed(hub, store_dir)
    cache = tmp_path / "cache"
    local = load_relabel(store_dir)
    store = load_relabel(REPO, revision=sha, cache_dir=cache)
    same_record(store, local, KEY)
    shard = shard_of(store, "values", KEY)
    files = Path(store.source.local_root() or store.source.root)
    link_outside(files, shard, outside)
    with contained(tmp_path, outside):
        again = load_relabel(REPO, revision=sha, cache_dir=cache)
        with pytest.raises(UnsafePathError, match="symbolic link"):
            again.get(KEY)


@pytest.mark.parametrize("mode", ["cache", "range"])
def test_file_url_store_with_a_linked_chunk(store_dir, tmp_path, outside, mode, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    remote = tmp_path / "remote.relabel.zarr"
    shutil.copytree(store_dir, remote)
    local = load_relabel(store_dir)
    keys = [k.decode() for k in local.keys.tolist()]
    shard = shard_of(local, "values", KEY)
    link_outside(remote, shard, outside)
    cache = tmp_path / "cache"
    with contained(tmp_path, outside):
        store = load_relabel(remote.as_uri(), mode=mode, cache_dir=cache)
        with pytest.raises(UnsafePathError, match="symbolic link"):
            store.get(KEY)
        other = next(k for k in keys if shard_of(local, "values", k) != shard)
        same_record(store, local, other)  # the rest of the store still reads right
    assert not [p for p in cache.rglob("*") if p.as_posix().endswith(f"/files/{shard}")]


# -- a remote that sends too much, or the wrong bytes ---------------------------------------------


def test_oversized_remote_file_is_cut_at_its_manifest_size(hub, store_dir, tmp_path, outside):
    sha = seed(hub, store_dir)
    cache = tmp_path / "cache"
    local = load_relabel(store_dir)
    shard = shard_of(local, "values", KEY)
    size = (store_dir / shard).stat().st_size
    big = 48 << 20
    hub.corrupt(REPO, shard, data=os.urandom(1 << 20) * 48)
    store = load_relabel(REPO, revision=sha, cache_dir=cache)
    hub.reset_log()
    with contained(tmp_path, outside), pytest.raises(CorruptDataError) as err:
        store.get(KEY)
    assert f"more than the manifest's {size} bytes" in str(err.value) and shard in str(err.value)
    time.sleep(0.3)  # let the server notice the closed connection
    assert hub.bytes_sent(server="cdn") < big // 3  # stopped reading long before the end
    assert not (Path(store.source.root) / shard).exists() and leftovers(cache) == []


def test_range_mode_checks_a_shard_index_before_keeping_it(hub, store_dir, tmp_path, outside):
    sha = seed(hub, store_dir)
    cache = tmp_path / "cache"
    local = load_relabel(store_dir)
    shard = shard_of(local, "values", KEY)
    hub.corrupt(REPO, shard)  # flips the first, middle and last byte: the index crc32c fails
    with contained(tmp_path, outside):
        ranged = load_relabel(REPO, revision=sha, mode="range", cache_dir=cache)
        with pytest.raises(CorruptDataError, match="index checksum"):
            ranged.get(KEY)
    digest = sha256_file(store_dir / shard)
    assert [p for p in cache.rglob("*.tail") if p.name.startswith(digest)] == []  # nothing kept

    hub.uncorrupt()
    same_record(load_relabel(REPO, revision=sha, mode="range", cache_dir=cache), local, KEY)
    (kept,) = [p for p in cache.rglob("*.tail") if p.name.startswith(digest)]
    good = kept.read_bytes()
    kept.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))  # a damaged copy on disk
    hub.reset_log()
    with contained(tmp_path, outside):
        same_record(load_relabel(REPO, revision=sha, mode="range", cache_dir=cache), local, KEY)
    assert kept.read_bytes() == good  # discarded and fetched again
    assert hub.count(status=206) == 3  # the index again, then the record from each array


def test_ranged_answer_for_another_range_is_refused(hub, store_dir, tmp_path, outside):
    sha = seed(hub, store_dir)
    cache = tmp_path / "cache"
    local = load_relabel(store_dir)
    ranged = load_relabel(REPO, revision=sha, mode="range", cache_dir=cache)
    same_record(ranged, local, KEY)  # shard indexes known
    shard = shard_of(local, "values", KEY)
    other = next(
        k.decode()
        for k in local.keys.tolist()
        if k.decode() != KEY and shard_of(local, "values", k.decode()) == shard
    )

    def shifted(spec: str | None) -> str:  # the same length, 16 bytes earlier in the file
        start, end = (int(v) for v in (spec or "").removeprefix("bytes=").split("-"))
        return f"bytes={start - 16}-{end - 16}"

    fault = hub.add_fault(server="cdn", match=lambda r: bool(r.range), rewrite_range=shifted)
    with contained(tmp_path, outside), pytest.raises(CorruptDataError, match="Content-Range"):
        ranged.get(other)
    assert fault.hits == 1


# -- dropped connections ------------------------------------------------------------------------


def test_dropped_download_resumes_where_it_stopped(hub, store_dir, tmp_path, outside):
    sha = seed(hub, store_dir)
    cache = tmp_path / "cache"
    local = load_relabel(store_dir)
    store = load_relabel(REPO, revision=sha, cache_dir=cache)
    shard = shard_of(local, "values", KEY)
    size = (store_dir / shard).stat().st_size
    hub.add_fault(server="cdn", method="GET", abort=True)  # cut the first shard in half, once
    hub.reset_log()
    with contained(tmp_path, outside):
        same_record(store, local, KEY)
    first, *rest = [r for r in hub.requests if r.server == "cdn"]
    assert first.fault == "abort" and first.bytes_sent > 0
    resumed = rest[0]
    assert resumed.range == f"bytes={first.bytes_sent}-"  # asked only for what was missing
    assert first.bytes_sent + resumed.bytes_sent in (
        size,
        (store_dir / shard_of(local, "indices", KEY)).stat().st_size,
    )
    assert leftovers(cache) == []


def test_resumed_download_from_the_wrong_offset_is_refused(hub, store_dir, tmp_path, outside):
    sha = seed(hub, store_dir)
    cache = tmp_path / "cache"
    store = load_relabel(REPO, revision=sha, cache_dir=cache)
    hub.add_fault(server="cdn", method="GET", abort=True)
    hub.add_fault(server="cdn", match=lambda r: bool(r.range), rewrite_range=lambda _: "bytes=0-")
    with contained(tmp_path, outside), pytest.raises(CorruptDataError, match="Content-Range"):
        store.get(KEY)
    assert leftovers(cache) == []
    assert not [p for p in Path(store.source.root).rglob("c.*") if "values" in p.parts]


def test_connection_that_keeps_dropping_is_one_clear_error(hub, store_dir, tmp_path, outside, monkeypatch):  # fmt: skip
    monkeypatch.setattr(hub_source, "RESUME_DELAYS_S", (0.01, 0.01, 0.01))  # the suite's time
    sha = seed(hub, store_dir)
    cache = tmp_path / "cache"
    store = load_relabel(REPO, revision=sha, cache_dir=cache)
    shard = shard_of(store, "values", KEY)
    hub.add_fault(server="cdn", method="GET", abort=True, times=None)
    with contained(tmp_path, outside), pytest.raises(RemoteError) as err:
        store.get(KEY)
    message = str(err.value)
    assert f"hf://datasets/{REPO}@{sha}/" in message and "c." in message
    assert "re-running the same command resumes" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert not (Path(store.source.root) / shard).exists() and leftovers(cache) == []

    runner = CliRunner()
    pulled = tmp_path / "pulled"
    with contained(tmp_path, outside):
        result = runner.invoke(main, ["pull", REPO, "--to", str(pulled)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and result.output.count("error:") == 1
    assert "re-running the same command resumes" in result.output

    hub.clear_faults()
    result = runner.invoke(main, ["pull", REPO, "--to", str(pulled)])
    assert result.exit_code == 0, result.output
    assert files_of(pulled) == files_of(store_dir)
    lfs = sum(1 for f in hub.files(REPO).values() if f["lfs"])
    assert f"({lfs} downloaded)" in result.output  # only what the drops had kept out


# -- the token stays with the Hub -----------------------------------------------------------------


def test_token_never_sent_to_the_cdn(hub, store_dir, tmp_path, outside):
    with contained(tmp_path, outside):
        sha = push(store_dir, REPO).commit
        local = load_relabel(store_dir)
        same_record(load_relabel(REPO, revision=sha, cache_dir=tmp_path / "c"), local, KEY)
        ranged = load_relabel(REPO, revision=sha, mode="range", cache_dir=tmp_path / "r")
        for key in (KEY, "img_00008", "img_00021"):  # later ranges go straight to the cdn
            same_record(ranged, local, key)
        pull(REPO, to=tmp_path / "pulled")
    cdn = [r for r in hub.requests if r.server == "cdn"]
    resolves = [r for r in hub.requests if "/resolve/" in r.path]
    assert {r.method for r in cdn} == {"GET", "PUT"} and any(r.range for r in cdn)
    assert resolves and all(r.authorized for r in resolves)  # the token was in use
    assert not [r for r in cdn if r.authorized]


# -- killed downloads -------------------------------------------------------------------------------

_CHILD = """
import sys
from relabel_store import load_relabel
from relabel_store.format._io import sha256_file
load_relabel(sys.argv[1], revision=sys.argv[2], cache_dir=sys.argv[3]).get(sys.argv[4])
"""


@pytest.mark.slow
def test_temp_files_of_killed_downloads_are_removed(hub, store_dir, tmp_path, outside):
    sha = seed(hub, store_dir)
    cache = tmp_path / "cache"
    local = load_relabel(store_dir)
    load_relabel(REPO, revision=sha, cache_dir=cache)  # metadata cached: the child fetches shards
    hub.add_fault(server="cdn", method="GET", stall_s=120)  # half a shard, then a long pause
    child = subprocess.Popen([sys.executable, "-c", _CHILD, REPO, sha, str(cache), KEY])
    try:
        deadline = time.monotonic() + 120
        while not [p for p in leftovers(cache) if p.stat().st_size] and child.poll() is None:
            assert time.monotonic() < deadline, "the child never started its download"
            time.sleep(0.05)
        (temp,) = leftovers(cache)
        with contained(tmp_path, outside):
            load_relabel(REPO, revision=sha, cache_dir=cache)
        assert temp.exists()  # a live download's file is left alone
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
        assert temp.exists()
        with contained(tmp_path, outside):
            store = load_relabel(REPO, revision=sha, cache_dir=cache)
            assert not temp.exists()  # removed when the cache was next used
            hub.clear_faults()
            same_record(store, local, KEY)
        assert leftovers(cache) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
