"""Publishing and lazy remote reading, end to end, against the loopback fake Hub (tests/_fake_hub.py)
driven by the real huggingface_hub client, and against file:// URLs.

Request counts are part of the contract: a cached shard costs no request, a record read in range
mode costs one ranged request per record array once the shard's index is known.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from _fake_hub import HTTPX2_DATA_DEPRECATION_FILTER, iter_fake_hub, set_offline
from _stores import write_store
from click.testing import CliRunner

from relabel_store import load_relabel
from relabel_store.cli.main import main
from relabel_store.errors import (
    ConfigurationError,
    CorruptDataError,
    IncompleteStoreError,
    RemoteError,
    StoreNotFoundError,
    UnsafePathError,
)
from relabel_store.format.manifest import Manifest, ManifestEntry, verify_store
from relabel_store.publish.card import dataset_card, size_category
from relabel_store.publish.push import OWNED_NAME, push
from relabel_store.read import registry
from relabel_store.read.hub_names import parse_hf_url
from relabel_store.read.resolve import resolve
from relabel_store.write.samples import write_sample_photos

pytestmark = pytest.mark.filterwarnings(HTTPX2_DATA_DEPRECATION_FILTER)

REPO = "relabel/maps"
N = 40
SHARD = 16  # records per shard: 3 shards per record array
LITE0 = ["--model", "tf_efficientnet_lite0", "--checkpoint", "efficientnet-lite0", "--input-size", "224", "--workers", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("stores")
    write_store(base / "v1.relabel.zarr", N, shard_records=SHARD, seed=1)
    write_store(base / "v2.relabel.zarr", N, shard_records=SHARD, seed=2)
    write_store(base / "open.relabel.zarr", 20, shard_records=SHARD, finalize=False)
    return {"v1": base / "v1.relabel.zarr", "v2": base / "v2.relabel.zarr", "open": base / "open.relabel.zarr"}  # fmt: skip


@pytest.fixture
def hub(monkeypatch, tmp_path):
    monkeypatch.setenv("RELABEL_STORE_REGISTRY", str(tmp_path / "registry.json"))
    yield from iter_fake_hub(monkeypatch, tmp_path)


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def seed(hub, root: Path, repo: str = REPO, branch: str = "main") -> str:
    return hub.commit_files(repo, files_of(root), branch=branch)


def same_records(a, b) -> None:
    assert len(a) == len(b)
    rows = list(range(len(a)))
    x, y = a.get_rows(rows), b.get_rows(rows)
    assert x.keys == y.keys
    for u, v in zip(x[1:], y[1:], strict=True):
        np.testing.assert_array_equal(u, v)


def cache_files(cache: Path) -> list[str]:
    if not cache.exists():
        return []
    return sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())


def shard_path(store, array: str, row_key: str) -> str:
    """The shard file of ``array`` holding the record with key ``row_key``."""
    row = int(store._rows[store.index_of(row_key)])
    return f"{array}/c.{row // SHARD}.0.0.0"


# -- push ---------------------------------------------------------------------------------------


def test_push_cli_creates_repo_card_and_verifies(hub, stores):
    result = CliRunner().invoke(main, ["push", str(stores["v1"]), REPO, "--private"])
    assert result.exit_code == 0, result.output
    head = hub.head(REPO)
    assert f"commit: {head}" in result.output
    assert f"{hub.url}/datasets/{REPO}/tree/{head}" in result.output
    assert "verified" in result.output

    remote = hub.files(REPO)
    local = files_of(stores["v1"])
    assert set(remote) == {*local, "README.md", ".gitattributes"}
    for path, data in local.items():
        assert hub.file_bytes(REPO, path) == data
    assert remote["values/c.0.0.0.0"]["lfs"]  # binary shards go to LFS
    assert hub.is_private(REPO)
    store = load_relabel(stores["v1"])
    card = dataset_card(store.metadata, store.manifest, repo_id=REPO)
    assert hub.file_bytes(REPO, "README.md").decode() == card

    # The manifest went last: the final commit holds the manifest and the card only.
    commits = [r for r in hub.requests if r.method == "POST" and "/commit/" in r.path]
    assert len(commits) == 2


def test_repush_sends_nothing(hub, stores):
    first = push(stores["v1"], REPO)
    hub.reset_log()
    again = push(stores["v1"], REPO)
    assert again.commit == first.commit and again.uploaded == [] and again.commits == 0
    assert hub.count("POST", "/commit/") == 0 and hub.count("PUT", server="cdn") == 0
    assert len(hub.requests) <= 6  # create (409), tree, paths-info, revision, tree at the commit


def test_push_resumes_after_interruption(hub, stores):
    # The second commit fails (403 is not retried by the client): batch 1 is on the Hub.
    fault = hub.add_fault(method="POST", path="/commit/", status=403, skip=1)
    result = CliRunner().invoke(main, ["push", str(stores["v1"]), REPO, "--batch-files", "8"])
    assert result.exit_code == 2 and "interrupted in batch 2" in result.output
    assert "Re-run the same command" in result.output
    assert fault.hits == 1
    first = set(hub.files(REPO))
    assert "manifest.json" not in first and len(first - {".gitattributes", OWNED_NAME}) == 8
    assert OWNED_NAME in first  # what this push may delete, should another push replace it
    with pytest.raises(IncompleteStoreError, match="upload did not finish"):
        load_relabel(REPO)

    hub.clear_faults()
    hub.reset_log()
    done = push(stores["v1"], REPO, batch_files=8)
    local = files_of(stores["v1"])
    assert set(done.uploaded) == set(local) - first
    assert len(done.skipped) == 8
    # Nothing from batch 1 is sent again, nor the LFS objects the failed batch 2 had uploaded
    # before its commit was refused: only batches 3 and later put bytes on the wire.
    order = ["zarr.json", *sorted(p for p in local if p not in ("zarr.json", "manifest.json"))]
    lfs = {p for p, f in hub.files(REPO).items() if f["lfs"]}
    assert hub.count("PUT", server="cdn") == len(lfs & set(order[16:]))
    same_records(load_relabel(REPO), load_relabel(stores["v1"]))
    assert OWNED_NAME not in hub.files(REPO)  # removed with the manifest's commit


def test_push_refuses_unfinalized_or_damaged_store(hub, stores, tmp_path):
    result = CliRunner().invoke(main, ["push", str(stores["open"]), REPO])
    assert result.exit_code == 2 and "not finalized" in result.output

    broken = tmp_path / "broken.relabel.zarr"
    write_store(broken, 20, shard_records=SHARD)
    shard = broken / "values/c.0.0.0.0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match=r"altered: values/c\.0\.0\.0\.0"):
        push(broken, REPO)
    assert hub.requests == []  # refused before any request


def test_push_fails_loudly_when_remote_differs(hub, stores):
    """Someone commits to the branch during the push: the check after the upload catches it."""
    commits = []

    def concurrent_commit(rec) -> bool:
        if rec.method == "POST" and "/commit/" in rec.path:
            commits.append(rec.path)
            if len(commits) == 2:  # just before our final (manifest) commit
                hub.commit_files(REPO, {"values/c.1.0.0.0": b"\0not the shard"})
        return False

    hub.add_fault(match=concurrent_commit)
    with pytest.raises(CorruptDataError, match=r"values/c\.1\.0\.0\.0"):
        push(stores["v1"], REPO)


def test_push_to_branch_and_subfolder(hub, stores):
    res = push(stores["v2"], f"hf://datasets/{REPO}/train", revision="dev")
    assert res.destination == f"hf://datasets/{REPO}@{res.commit}/train"
    assert hub.head(REPO, "dev") == res.commit
    assert "train/manifest.json" in hub.files(REPO, "dev")
    assert "train/manifest.json" not in hub.files(REPO, "main")
    same_records(load_relabel(f"hf://datasets/{REPO}@dev/train"), load_relabel(stores["v2"]))
    same_records(load_relabel(res.destination), load_relabel(stores["v2"]))


def test_size_categories():
    assert size_category(999) == "n<1K"
    assert size_category(1_000) == "1K<n<10K"
    assert size_category(1_281_167) == "1M<n<10M"
    assert size_category(10**10) == "1B<n<10B"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A store from the real producer: `generate` with the offline lite0 annotator, two photos."""
    base = tmp_path_factory.mktemp("generated")
    write_sample_photos(base / "imagenet-photos", ["chelsea", "coffee"])
    out = base / "photos.relabel.zarr"
    result = CliRunner().invoke(main, ["generate", str(base / "imagenet-photos"), "-o", str(out), *LITE0])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_dataset_card_of_a_generated_store(hub, generated):
    pushed = push(generated, f"hf://datasets/{REPO}/train", license="cc-by-4.0")
    readme = hub.file_bytes(REPO, "README.md", revision=pushed.commit).decode()
    meta = load_relabel(generated).metadata
    weights = meta.annotator["weights"]
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["license"] == "cc-by-4.0" and "imagenet" in front["tags"]
    assert front["task_categories"] == ["image-classification"]
    assert front["size_categories"] == ["n<1K"]
    assert front["annotations_creators"] == ["machine-generated"]
    assert front["source_datasets"] == ["extended|imagenet-photos"]
    assert front["pretty_name"] == "ReLabel maps for imagenet-photos" and front["viewer"] is False

    rows = dict(re.findall(r"^\| ([^|]+?) \| (.+) \|$", readme, re.M))
    assert (
        rows["records"] == "2" and rows["grid"] == "15 x 15 cells, top-5 of 1000 classes per cell"
    )
    assert rows["annotator"] == (
        "`tf_efficientnet_lite0`, 7 x 7 feature grid (bilinear to the store's grid) for a square "
        "image; wider or taller images get wider or taller grids, each resampled to the store's grid"
    )
    assert rows["annotator weights"] == (
        f"{weights['source']} (`efficientnet-lite0-57934424.pth`), sha256 `{weights['sha256']}`"
    )
    assert len(weights["sha256"]) == 64
    assert rows["annotator input"] == (
        "the pixel count of 224 x 224 px, aspect ratio kept (sides changed in steps of 32, the long "
        "side at most 2.0x the short side), no crop, bicubic"
    )
    assert rows["label space"] == "`imagenet-1k` (class identifiers `n01440764` ... `n15075141`)"
    assert rows["manifest digest"] == f"`{pushed.digest}`"
    assert "unknown" not in readme and "?" not in "".join(rows.values())
    assert f'load_relabel("hf://datasets/{REPO}/train")' in readme and "2101.05022" in readme


# -- reading: forms, pinning, counts ----------------------------------------------------------------


def test_location_parsing():
    t = parse_hf_url("hf://datasets/org/name@v1.0/sub/dir")
    assert (t.repo_id, t.revision, t.subdir) == ("org/name", "v1.0", "sub/dir")
    t = parse_hf_url("hf://datasets/org/name@refs/pr/3/x")
    assert (t.revision, t.subdir) == ("refs/pr/3", "x")
    assert parse_hf_url("hf://datasets/org/name@refs%2Fpr%2F3").revision == "refs/pr/3"
    assert resolve("org/name@abc").target.revision == "abc"
    assert resolve("org/name", revision="dev").target.revision == "dev"
    with pytest.raises(ConfigurationError, match="dataset repos"):
        parse_hf_url("hf://org/name")
    with pytest.raises(UnsafePathError):
        parse_hf_url("hf://datasets/org/name@main/../x")
    with pytest.raises(ConfigurationError, match="revision"):
        resolve("hf://datasets/org/name@a", revision="b")


def test_revision_pinning_and_forms(hub, stores):
    sha1 = seed(hub, stores["v1"])
    sha2 = seed(hub, stores["v2"])
    v1, v2 = load_relabel(stores["v1"]), load_relabel(stores["v2"])

    same_records(load_relabel(REPO, revision=sha1), v1)
    same_records(load_relabel(f"hf://datasets/{REPO}@{sha1}"), v1)
    same_records(load_relabel(f"{REPO}@{sha1}"), v1)
    same_records(load_relabel(REPO), v2)
    branch = load_relabel(f"hf://datasets/{REPO}@main")
    assert branch.source.location == f"hf://datasets/{REPO}@{sha2}"  # pinned at open

    # A new commit on main does not change a store opened before it.
    seed(hub, stores["v1"])
    same_records(branch, v2)

    # Cached, at a pinned commit: re-opening and reading everything costs no request at all.
    hub.reset_log()
    again = load_relabel(REPO, revision=sha1)
    same_records(again, v1)
    assert hub.requests == []
    # A branch name costs exactly one request (to resolve it) once its commit is cached.
    load_relabel(REPO, revision="main")
    hub.reset_log()
    load_relabel(REPO, revision="main")
    assert [r.path for r in hub.requests] == [f"/api/datasets/{REPO}/revision/main"]


def test_cache_mode_request_counts(hub, stores, tmp_path):
    sha = seed(hub, stores["v1"])
    cache = tmp_path / "c"
    hub.reset_log()
    store = load_relabel(REPO, revision=sha, cache_dir=cache)
    opened = len(hub.requests)
    assert hub.count(path="/indices/c.") == hub.count(path="/values/c.") == 0  # no shard yet

    hub.reset_log()
    key = "img_00005"
    store.get(key)
    # first touch: each of the two shards is downloaded whole (302 to the cdn + the file)
    shards = {shard_path(store, "indices", key), shard_path(store, "values", key)}
    assert hub.count("GET", server="hub") == 2 and hub.count("GET", server="cdn") == 2
    assert {r.path.split(f"{sha}/")[1] for r in hub.requests if r.server == "hub"} == shards

    hub.reset_log()
    same_shard = [
        k for k in store.keys.tolist() if shard_path(store, "values", k.decode()) in shards
    ]
    for k in same_shard:
        store.get(k.decode())
    assert hub.requests == []  # a cached shard costs zero requests
    assert opened <= 40


def test_range_mode_request_counts(hub, stores, tmp_path):
    sha = seed(hub, stores["v1"])
    store = load_relabel(REPO, revision=sha, mode="range", cache_dir=tmp_path / "c")
    local = load_relabel(stores["v1"])
    keys = [k.decode() for k in store.keys.tolist()]
    by_shard: dict[str, list[str]] = {}
    for k in keys:
        by_shard.setdefault(shard_path(store, "values", k), []).append(k)
    first, *rest = next(ks for ks in by_shard.values() if len(ks) >= 4)

    hub.reset_log()
    rec = store.get(first)
    np.testing.assert_array_equal(rec.values, local.get(first).values)
    ranged = [r for r in hub.requests if r.range]
    # first touch of a shard file: the Hub's redirect to the cdn, the shard index, the record
    assert len(hub.requests) == len(ranged) == 6
    assert hub.count(status=302) == 2 and hub.count(server="cdn", status=206) == 4

    for k in rest[:3]:
        hub.reset_log()
        rec = store.get(k)
        np.testing.assert_array_equal(rec.indices, local.get(k).indices)
        # cold record, shard index known: one ranged request per record array, nothing else
        assert [(r.server, r.status) for r in hub.requests] == [("cdn", 206)] * 2
        assert hub.bytes_sent() < 2 * 4 * 15 * 15 * 5  # no read-ahead beyond the record

    # Another process on the node: the shard index comes from the disk cache.
    hub.reset_log()
    other = load_relabel(REPO, revision=sha, mode="range", cache_dir=tmp_path / "c")
    assert hub.requests == []
    other.get(rest[3])
    assert len([r for r in hub.requests if r.status == 206]) == 2


def test_corrupted_shard_is_reported_and_never_cached(hub, stores, tmp_path):
    sha = seed(hub, stores["v1"])
    cache = tmp_path / "c"
    store = load_relabel(REPO, revision=sha, cache_dir=cache)
    key = "img_00030"
    bad = shard_path(store, "values", key)
    hub.corrupt(REPO, bad)
    for _ in range(2):  # a second attempt downloads again: nothing bad was kept
        with pytest.raises(CorruptDataError) as err:
            store.get(key)
        assert f"hf://datasets/{REPO}@{sha}/{bad}" in str(err.value)
        assert "nothing was cached" in str(err.value)
    listed = cache_files(cache)
    assert not any(p.endswith(bad) for p in listed)
    assert not any(p.endswith(".tmp") for p in listed)
    # other shards are fine
    good = next(
        k.decode() for k in store.keys.tolist() if shard_path(store, "values", k.decode()) != bad
    )
    store.get(good)

    # range mode cannot hash a whole shard, but the format's checksums still catch it
    ranged = load_relabel(REPO, revision=sha, mode="range", cache_dir=tmp_path / "r")
    with pytest.raises(CorruptDataError, match=bad.replace(".", r"\.")):
        ranged.get(key)

    hub.uncorrupt()
    np.testing.assert_array_equal(store.get(key).values, load_relabel(stores["v1"]).get(key).values)


def _escaping_manifest() -> bytes:
    entries = (ManifestEntry("../../x", 3, "0" * 64), ManifestEntry("zarr.json", 2, "1" * 64))
    return json.dumps(Manifest(entries).to_json()).encode()


def test_path_escaping_manifest_is_refused_before_writing(hub, tmp_path):
    hub.commit_files(REPO, {"manifest.json": _escaping_manifest(), "zarr.json": b"{}"})
    cache = tmp_path / "c"
    for mode in ("cache", "range"):
        with pytest.raises(UnsafePathError, match=r"\.\./\.\./x"):
            load_relabel(REPO, mode=mode, cache_dir=cache)
    assert cache_files(cache) == []
    assert not (tmp_path / "x").exists()

    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "manifest.json").write_bytes(_escaping_manifest())
    with pytest.raises(UnsafePathError):
        load_relabel(remote.as_uri(), cache_dir=cache)
    assert cache_files(cache) == []


def test_offline_from_cache(hub, stores, monkeypatch):
    sha = seed(hub, stores["v1"])
    online = load_relabel(REPO)  # by branch name; default cache under HF_HOME
    online.get_rows(list(range(N - 1)))  # touch every shard

    set_offline(monkeypatch)
    hub.reset_log()
    offline = load_relabel(REPO)  # the branch resolves through the cache's refs/
    assert offline.source.location == f"hf://datasets/{REPO}@{sha}"
    same_records(offline, load_relabel(stores["v1"]))
    assert load_relabel(f"hf://datasets/{REPO}@{sha}").get("img_00001")
    with pytest.raises(RemoteError, match="HF_HUB_OFFLINE"):
        load_relabel(REPO, revision="other-branch")
    assert hub.requests == []

    # range mode offline: whole shards already cached are read locally
    assert load_relabel(REPO, mode="range").get("img_00002")
    assert hub.requests == []


def test_offline_uncached_shard_is_a_clear_error(hub, stores, monkeypatch, tmp_path):
    seed(hub, stores["v1"])
    store = load_relabel(REPO, cache_dir=tmp_path / "c")  # metadata cached, no shard
    set_offline(monkeypatch)
    with pytest.raises(RemoteError, match="HF_HUB_OFFLINE"):
        store.get("img_00001")


# -- concurrency -----------------------------------------------------------------------------------


def _slow_cdn(hub) -> None:
    def slow(rec) -> bool:
        if rec.server == "cdn":
            time.sleep(0.15)  # widen the race window (requests are served one at a time here)
        return False

    hub.add_fault(match=slow)


def test_threads_download_each_shard_once(hub, stores, tmp_path):
    sha = seed(hub, stores["v1"])
    store = load_relabel(REPO, revision=sha, cache_dir=tmp_path / "c")
    _slow_cdn(hub)
    hub.reset_log()
    results, errors = [], []

    def work() -> None:
        try:
            results.append(store.get("img_00017").values.tobytes())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert hub.count("GET", server="cdn") == 2  # one shard of indices, one of values


def _proc_read(sha: str, cache: str, key: str, conn) -> None:
    try:
        conn.send(load_relabel(REPO, revision=sha, cache_dir=cache).get(key).values.tobytes())
    except BaseException as exc:
        conn.send(repr(exc))
    finally:
        conn.close()
        os._exit(0)


def test_processes_download_each_file_once(hub, stores, tmp_path):
    sha = seed(hub, stores["v1"])
    cache = str(tmp_path / "shared")
    _slow_cdn(hub)
    hub.reset_log()
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for _ in range(3):
        here, there = ctx.Pipe()
        proc = ctx.Process(target=_proc_read, args=(sha, cache, "img_00033", there))
        proc.start()
        there.close()
        pipes.append(here)
        procs.append(proc)
    got = [p.recv() if p.poll(60) else "timeout" for p in pipes]
    for proc in procs:
        proc.join(30)
    expected = load_relabel(stores["v1"]).get("img_00033").values.tobytes()
    assert got == [expected] * 3
    downloads = [r.path for r in hub.requests if r.server == "hub" and "/resolve/" in r.path]
    # No file is fetched twice across processes, except the manifest: each process checks it
    # before it writes anything to the cache.
    files = [p for p in downloads if not p.endswith("/manifest.json")]
    assert len(files) == len(set(files)) > 4
    assert not any(p.endswith(".tmp") for p in cache_files(Path(cache)))


def _spawned_read(store, key: str):
    return store.get(key).values.tobytes()


def test_store_pickles_into_spawned_worker_without_requests(hub, stores, tmp_path):
    sha = seed(hub, stores["v1"])
    store = load_relabel(REPO, revision=sha, cache_dir=tmp_path / "c")
    store.get("img_00009")
    hub.reset_log()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got = pool.apply(_spawned_read, (store, "img_00009"))
    assert got == load_relabel(stores["v1"]).get("img_00009").values.tobytes()
    assert hub.requests == []


# -- registry, pull, fsspec destinations ------------------------------------------------------------


def test_registry_names(hub, stores, tmp_path):
    sha = seed(hub, stores["v1"])
    assert "relabel-store import" in (registry.lookup("imagenet-relabel").make or "")
    entry = registry.register("tiny-relabel", REPO, sha, description="test store")
    assert entry.location == f"hf://datasets/{REPO}@{sha}"
    assert json.loads((tmp_path / "registry.json").read_text())["stores"]["tiny-relabel"]
    same_records(load_relabel("tiny-relabel"), load_relabel(stores["v1"]))

    with pytest.raises(StoreNotFoundError) as err:
        load_relabel("no-such-relabel")
    message = str(err.value)
    assert "imagenet-relabel" in message and "tiny-relabel" in message
    assert "registry.register(" in message and "RELABEL_STORE_REGISTRY" in message
    for typo in ("nope.relabel.zarr", "./nope", "~/nope"):  # paths, not names: no registry talk
        with pytest.raises(StoreNotFoundError, match="no such directory") as err:
            load_relabel(typo)
        assert "imagenet-relabel" not in str(err.value)
    registry.register("odd.zarr", REPO, sha)  # a registered name wins over the path rule
    same_records(load_relabel("odd.zarr"), load_relabel(stores["v1"]))

    digest = Manifest.from_bytes((stores["v1"] / "manifest.json").read_bytes()).digest
    registry.register("pinned", REPO, sha, digest=digest)
    assert load_relabel("pinned").manifest.digest == digest
    registry.register("wrong", REPO, sha, digest="0" * 64)
    with pytest.raises(CorruptDataError, match="pinned digest"):
        load_relabel("wrong")
    assert registry.unregister("wrong") and "wrong" not in registry.known()


def test_pull_cli(hub, stores, tmp_path):
    seed(hub, stores["v1"])
    runner = CliRunner()
    out = tmp_path / "pulled"
    result = runner.invoke(main, ["pull", REPO, "--to", str(out)])
    assert result.exit_code == 0, result.output
    assert "all match manifest digest" in result.output
    assert files_of(out) == files_of(stores["v1"])
    assert verify_store(out).ok
    hub.reset_log()
    again = runner.invoke(main, ["pull", REPO, "--to", str(out)])
    assert again.exit_code == 0 and "(0 downloaded)" in again.output
    assert len(hub.requests) == 1  # resolving main

    cached = runner.invoke(main, ["pull", REPO, "-q"])
    assert cached.exit_code == 0
    root = Path(cached.output.strip())
    assert files_of(root) == files_of(stores["v1"])
    assert load_relabel(REPO).source.local_root() == str(root)

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("x")
    refused = runner.invoke(main, ["pull", REPO, "--to", str(tmp_path / "other")])
    assert refused.exit_code == 2 and "not an interrupted pull" in refused.output


def test_push_and_read_file_url(stores, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    dest = tmp_path / "bucket" / "v1.relabel.zarr"
    url = dest.as_uri()
    first = push(stores["v1"], url)
    assert first.commit is None and manifest_last(first.uploaded)
    assert verify_store(dest).ok and files_of(dest) == files_of(stores["v1"])
    again = push(stores["v1"], url)
    assert again.uploaded == []

    # an interrupted copy: the manifest and one shard missing, another truncated
    (dest / "manifest.json").unlink()
    (dest / "indices/c.1.0.0.0").unlink()
    (dest / "values/c.2.0.0.0").write_bytes(b"partial")
    with pytest.raises(IncompleteStoreError):
        load_relabel(url, cache_dir=tmp_path / "c")
    resumed = push(stores["v1"], url)
    assert sorted(resumed.uploaded) == ["indices/c.1.0.0.0", "manifest.json", "values/c.2.0.0.0"]

    # replacing it with another store removes the stale files of the old one
    push(stores["v2"], url)
    assert files_of(dest) == files_of(stores["v2"])

    for mode in ("cache", "range"):
        same_records(
            load_relabel(url, mode=mode, cache_dir=tmp_path / "c"), load_relabel(stores["v2"])
        )
    with pytest.raises(ConfigurationError, match="Hub stores only"):
        load_relabel(url, revision="main")


def test_push_never_deletes_files_of_a_folder_that_holds_no_store(stores, tmp_path):
    """A user's folder with files where the store's go: refused, untouched. Files elsewhere
    (a dataset's own, another store in a subfolder) neither stop a push nor are touched."""
    folder = tmp_path / "mine"
    (folder / "indices").mkdir(parents=True)
    (folder / "indices" / "notes.bin").write_bytes(b"old")
    (folder / "notes.txt").write_text("mine")
    before = files_of(folder)
    with pytest.raises(ConfigurationError, match=r"holds 1 file\(s\) in the folders a store's"):
        push(stores["v1"], folder.as_uri())
    assert files_of(folder) == before
    shared = tmp_path / "shared"
    push(stores["v2"], (shared / "val").as_uri())  # another store in a subfolder, as docs show
    (shared / "data").mkdir()
    (shared / "data" / "train.parquet").write_bytes(b"the dataset")
    kept = {p: b for p, b in files_of(shared).items() if not p.startswith(("indices", "values"))}
    push(stores["v1"], shared.as_uri())
    same_records(load_relabel(shared), load_relabel(stores["v1"]))
    same_records(load_relabel(shared / "val"), load_relabel(stores["v2"]))
    assert all(files_of(shared)[p] == b for p, b in kept.items() if p != "manifest.json")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(ConfigurationError, match="is a file, not a folder"):
        push(stores["v1"], afile.as_uri())
    assert afile.read_text() == "mine"
    # a new Hub-style repo's own files are no obstacle
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "README.md").write_text("# my dataset")
    push(stores["v1"], fresh.as_uri())
    same_records(load_relabel(fresh), load_relabel(stores["v1"]))
    assert (fresh / "README.md").read_text() == "# my dataset"


def manifest_last(uploaded: list[str]) -> bool:
    return uploaded[-1] == "manifest.json"


def test_loader_reads_remote_store(hub, stores, tmp_path):
    torch = pytest.importorskip("torch")
    from relabel_store.loaders import RelabelDataset

    seed(hub, stores["v1"])

    keys = ["img_00001", "img_00020", "img_00035"]
    local = load_relabel(stores["v1"])
    sizes = [local.sizes[local.index_of(key)].tolist() for key in keys]  # the records' images

    class Base(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(keys)

        def __getitem__(self, i):
            return torch.zeros(3, *sizes[i], dtype=torch.uint8), 0

    from torchvision.transforms import v2

    ds = RelabelDataset(Base(), REPO, v2.Resize((8, 8)), key_fn=lambda i: keys[i])
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, num_workers=2, multiprocessing_context="fork"
    )
    ((_, target),) = list(loader)
    assert target.shape == (3, 1000)
    torch.testing.assert_close(target.sum(1), torch.ones(3, dtype=target.dtype))
