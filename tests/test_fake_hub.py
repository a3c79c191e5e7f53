"""Drive the real huggingface_hub client against the in-process FakeHub (tests/_fake_hub.py).

These tests pin down the request patterns the rest of the project relies on (see DESIGN.md,
"Lazy remote access"): what an upload costs, that a cached download at a pinned 40-char revision
makes no request at all, what a small-block HfFileSystem range read puts on the wire, that old
revisions stay readable after a new commit, and that offline mode serves from the cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from _fake_hub import (
    HTTPX2_DATA_DEPRECATION_FILTER,
    TEST_TOKEN,
    FakeHub,
    fake_hub_env,
    iter_fake_hub,
    set_offline,
)
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    HfFileSystem,
    hf_hub_download,
)
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

# The legacy (non-Xet) LFS upload in huggingface_hub 2.4 passes a file object as `data=` to
# httpx2, which emits a DeprecationWarning from inside the client (see HTTPX2_DATA_DEPRECATION_FILTER
# in _fake_hub.py and test_lfs_upload_deprecation_warning_comes_from_the_client below).
pytestmark = pytest.mark.filterwarnings(HTTPX2_DATA_DEPRECATION_FILTER)

REPO = "relabel/fake-store"
BIG = 10 * 1024 * 1024 + 4096  # over the Hub's 10 MiB regular-file limit => LFS by size
BIG_TEXT = (b"0123456789abcdef" * (BIG // 16 + 1))[:BIG]


@pytest.fixture
def hub(monkeypatch, tmp_path):
    yield from iter_fake_hub(monkeypatch, tmp_path)


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.url, token=TEST_TOKEN)


def _make_folder(root: Path) -> dict[str, bytes]:
    files = {
        "README.md": b"---\nlicense: apache-2.0\n---\n# fake store\n",
        "store/zarr.json": b'{"zarr_format": 3, "node_type": "group"}',
        "store/indices/c.0": bytes(range(256)) * 8,  # binary sample (NUL byte) => LFS
        "store/values/shard.zst": b"zstd-ish payload",  # matched by .gitattributes => LFS
        "big.bin.part": BIG_TEXT,  # text, no .gitattributes pattern => LFS by size
        "manifest.json": b'{"files": []}',
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _push(api: HfApi, tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    folder = tmp_path / "upload"
    files = _make_folder(folder)
    api.create_repo(REPO, repo_type="dataset", exist_ok=True, private=True)
    info = api.upload_folder(folder_path=folder, repo_id=REPO, repo_type="dataset")
    return info.oid, files


def test_create_repo_and_upload_folder(hub, api, tmp_path):
    sha, files = _push(api, tmp_path)
    assert len(sha) == 40

    # exist_ok on an existing repo: the 409 is swallowed by the client
    api.create_repo(REPO, repo_type="dataset", exist_ok=True)
    assert hub.count("POST", "/api/repos/create", status=409) == 1

    # the upload went through preupload -> LFS batch -> PUT to the cdn (+ verify) -> NDJSON commit
    lfs_paths = {"store/indices/c.0", "store/values/shard.zst", "big.bin.part"}
    assert hub.count("POST", "/api/datasets/relabel/fake-store/preupload/main") == 1
    assert hub.count("POST", "/datasets/relabel/fake-store.git/info/lfs/objects/batch") == 1
    assert hub.count("PUT", server="cdn") == len(lfs_paths)
    assert hub.count("POST", "/info/lfs/objects/verify") == len(lfs_paths)
    assert hub.count("POST", "/api/datasets/relabel/fake-store/commit/main") == 1
    # README.md front matter is validated twice: by upload_folder (before hashing) and again by
    # create_commit (hf_api.py `_prepare_upload_folder_additions` and `create_commit`)
    assert hub.count("POST", "/api/validate-yaml") == 2
    assert not [r for r in hub.requests if "xet" in r.path.lower()]  # Xet never used

    # server-side state: LFS vs regular as decided by preupload
    stored = hub.files(REPO)
    assert {p for p, f in stored.items() if f["lfs"]} == lfs_paths
    for path, data in files.items():
        assert hub.file_bytes(REPO, path) == data

    # listing through the client
    assert sorted(api.list_repo_files(REPO, repo_type="dataset")) == sorted(
        [*files, ".gitattributes"]
    )
    tree = {e.path: e for e in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)}
    assert {"store", "store/indices", "store/values"} <= set(tree)
    big = tree["big.bin.part"]
    assert big.size == BIG
    assert big.lfs.sha256 == hashlib.sha256(files["big.bin.part"]).hexdigest()
    assert tree["manifest.json"].lfs is None and tree["manifest.json"].size == len(
        files["manifest.json"]
    )

    info = api.dataset_info(REPO, files_metadata=True)
    assert info.sha == sha and info.private is True
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes["big.bin.part"] == BIG

    paths = api.get_paths_info(REPO, ["manifest.json", "store", "missing"], repo_type="dataset")
    assert [type(p).__name__ for p in paths] == ["RepoFile", "RepoFolder"]


def test_reupload_of_unchanged_files_makes_no_commit(hub, api, tmp_path):
    sha, _ = _push(api, tmp_path)
    hub.reset_log()
    again = api.upload_folder(folder_path=tmp_path / "upload", repo_id=REPO, repo_type="dataset")
    # preupload returns the remote oids; the client drops unchanged files and skips the commit
    assert again.oid == sha
    assert hub.count("POST", "/commit/") == 0
    assert hub.count("PUT", server="cdn") == 0


def test_hf_hub_download_pinned_revision_cold_then_warm(hub, api, tmp_path):
    sha, files = _push(api, tmp_path)
    hub.reset_log()

    # cold, regular file: HEAD + GET on /resolve (the hub serves the bytes itself)
    path = hf_hub_download(
        REPO, "manifest.json", repo_type="dataset", revision=sha, endpoint=hub.url
    )
    assert Path(path).read_bytes() == files["manifest.json"]
    assert [(r.server, r.method, r.status) for r in hub.requests] == [
        ("hub", "HEAD", 200),
        ("hub", "GET", 200),
    ]
    hub.reset_log()

    # cold, LFS file: HEAD answered with a cross-origin 302 (not followed), then GET on the cdn
    path = hf_hub_download(
        REPO, "big.bin.part", repo_type="dataset", revision=sha, endpoint=hub.url
    )
    assert Path(path).read_bytes() == files["big.bin.part"]
    reqs = hub.requests
    assert [(r.server, r.method, r.status) for r in reqs] == [
        ("hub", "HEAD", 302),
        ("cdn", "GET", 200),
    ]
    assert reqs[1].bytes_sent == BIG
    assert not reqs[1].authorized  # the client drops the token when following the redirect off-hub
    hub.reset_log()

    # warm, pinned 40-char revision: answered from the cache with zero requests (DESIGN.md's claim)
    for name in ("manifest.json", "big.bin.part"):
        again = hf_hub_download(REPO, name, repo_type="dataset", revision=sha, endpoint=hub.url)
        assert Path(again).read_bytes() == files[name]
    assert hub.requests == []

    # warm, branch name: still one HEAD per call, to resolve the branch
    hf_hub_download(REPO, "manifest.json", repo_type="dataset", revision="main", endpoint=hub.url)
    assert [(r.method, r.status) for r in hub.requests] == [("HEAD", 200)]


def test_hffs_range_read_small_block(hub, api, tmp_path):
    sha, files = _push(api, tmp_path)
    hub.reset_log()
    fs = HfFileSystem(endpoint=hub.url, token=TEST_TOKEN, block_size=64, skip_instance_cache=True)

    with fs.open(f"hf://datasets/{REPO}@{sha}/big.bin.part", "rb") as f:
        f.seek(100)
        assert f.read(100) == files["big.bin.part"][100:200]
        # a second read inside the fetched block costs nothing
        before = len(hub.requests)
        f.seek(150)
        assert f.read(20) == files["big.bin.part"][150:170]
        assert len(hub.requests) == before

    reqs = hub.requests
    # open: repo_info (revision exists?) + tree of the parent (size) ; read: one ranged GET that the
    # hub redirects to the cdn, which answers 206 with readahead = the 100 bytes + one block
    assert [(r.server, r.method, r.status) for r in reqs] == [
        ("hub", "GET", 200),  # /api/datasets/{repo}/revision/{sha}
        ("hub", "GET", 200),  # /api/datasets/{repo}/tree/{sha}
        ("hub", "GET", 302),  # /datasets/{repo}/resolve/{sha}/big.bin.part
        ("cdn", "GET", 206),
    ]
    assert "/revision/" in reqs[0].path and "/tree/" in reqs[1].path
    assert reqs[2].range == reqs[3].range == "bytes=100-263"
    assert reqs[3].bytes_sent == 164
    assert hub.bytes_sent(server="cdn") == 164

    # a regular (non-LFS) file is served by the hub directly: one 206, no redirect
    hub.reset_log()
    with fs.open(f"hf://datasets/{REPO}@{sha}/store/zarr.json", "rb", block_size=8) as f:
        f.seek(2)
        assert f.read(5) == files["store/zarr.json"][2:7]
    ranged = [r for r in hub.requests if r.range]
    assert [(r.server, r.status, r.range, r.bytes_sent) for r in ranged] == [
        ("hub", 206, "bytes=2-14", 13)
    ]

    # ls / info / find at the same revision
    root = f"datasets/{REPO}@{sha}"
    assert fs.info(f"{root}/big.bin.part")["size"] == BIG
    assert set(fs.ls(root, detail=False)) == {
        f"{root}/{p}"
        for p in ("README.md", ".gitattributes", "big.bin.part", "manifest.json", "store")
    }
    assert fs.find(f"{root}/store") == sorted(
        f"{root}/{p}" for p in files if p.startswith("store/")
    )


def test_hffs_default_block_size_reads_ahead_5_mib(hub, api, tmp_path):
    sha, files = _push(api, tmp_path)
    hub.reset_log()
    fs = HfFileSystem(endpoint=hub.url, token=TEST_TOKEN, skip_instance_cache=True)
    with fs.open(f"datasets/{REPO}@{sha}/big.bin.part", "rb") as f:
        f.seek(100)
        assert f.read(100) == files["big.bin.part"][100:200]
    # fsspec's default block size (5 MiB) turns a 100-byte read into a 5 MiB transfer
    assert hub.bytes_sent(server="cdn") == 100 + 5 * 2**20


def test_second_commit_old_revision_stays_pinned(hub, api, tmp_path):
    old_sha, files = _push(api, tmp_path)
    new_manifest = b'{"files": ["v2"]}'
    new_big = os.urandom(2048)
    info = api.create_commit(
        REPO,
        repo_type="dataset",
        operations=[
            CommitOperationAdd("manifest.json", new_manifest),
            CommitOperationAdd("store/indices/c.0", new_big),
        ],
        commit_message="v2",
    )
    new_sha = info.oid
    assert new_sha != old_sha and api.dataset_info(REPO).sha == new_sha

    def get(name: str, rev: str) -> bytes:
        return Path(hf_hub_download(REPO, name, repo_type="dataset", revision=rev)).read_bytes()

    # hf_hub_download without endpoint=: goes through the patched constants (fake_hub_env)
    assert get("manifest.json", old_sha) == files["manifest.json"]
    assert get("store/indices/c.0", old_sha) == files["store/indices/c.0"]
    assert get("manifest.json", "main") == new_manifest
    assert get("store/indices/c.0", new_sha) == new_big

    fs = HfFileSystem(endpoint=hub.url, token=TEST_TOKEN, skip_instance_cache=True)
    assert fs.cat(f"datasets/{REPO}@{old_sha}/manifest.json") == files["manifest.json"]
    assert fs.cat(f"datasets/{REPO}/manifest.json") == new_manifest

    # a branch made at the old commit keeps serving the old bytes
    api.create_branch(REPO, branch="v1", revision=old_sha, repo_type="dataset")
    assert get("manifest.json", "v1") == files["manifest.json"]
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": new_sha, "v1": old_sha}
    assert [c.commit_id for c in api.list_repo_commits(REPO, repo_type="dataset")][:2] == [
        new_sha,
        old_sha,
    ]


def test_offline_mode_serves_from_cache(hub, api, tmp_path, monkeypatch):
    sha, _ = _push(api, tmp_path)
    by_branch = hf_hub_download(REPO, "manifest.json", repo_type="dataset", revision="main")
    pinned = hf_hub_download(REPO, "big.bin.part", repo_type="dataset", revision=sha)

    set_offline(monkeypatch)
    hub.reset_log()
    assert hf_hub_download(REPO, "manifest.json", repo_type="dataset", revision="main") == by_branch
    assert hf_hub_download(REPO, "big.bin.part", repo_type="dataset", revision=sha) == pinned
    assert hf_hub_download(REPO, "manifest.json", repo_type="dataset", revision=sha) == by_branch
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "store/zarr.json", repo_type="dataset", revision="main")
    assert hub.requests == []  # offline mode never touches the network


def test_corrupted_bytes_are_not_detected_by_plain_http_download(hub, api, tmp_path):
    sha, files = _push(api, tmp_path)
    hub.corrupt(REPO, "big.bin.part")
    hub.corrupt(REPO, "manifest.json")
    for name in ("big.bin.part", "manifest.json"):
        got = Path(hf_hub_download(REPO, name, repo_type="dataset", revision=sha)).read_bytes()
        # same size, same ETag => the client caches the bad bytes: only a sha256 check catches it
        assert len(got) == len(files[name]) and got != files[name]
    assert hub.file_bytes(REPO, "big.bin.part") == files["big.bin.part"]


def test_interrupted_push_leaves_main_untouched_and_resumes(hub, api, tmp_path):
    folder = tmp_path / "upload"
    _make_folder(folder)
    api.create_repo(REPO, repo_type="dataset")
    head = hub.head(REPO)

    # 1. an LFS upload is lost in transit: the verify step catches it, no commit is made
    dropped = hub.drop_uploads(times=1)
    with pytest.raises(RuntimeError, match="Error while uploading"):
        api.upload_folder(folder_path=folder, repo_id=REPO, repo_type="dataset")
    assert dropped.hits == 1 and hub.head(REPO) == head

    # 2. the commit call itself fails (403 is not retried by the client)
    failing = hub.add_fault(method="POST", path="/commit/main", status=403)
    with pytest.raises(HfHubHTTPError):
        api.upload_folder(folder_path=folder, repo_id=REPO, repo_type="dataset")
    assert failing.hits == 1 and hub.head(REPO) == head

    # 3. retry: objects uploaded by the failed attempts are not sent again
    hub.reset_log()
    api.upload_folder(folder_path=folder, repo_id=REPO, repo_type="dataset")
    assert hub.head(REPO) != head
    assert hub.count("PUT", server="cdn") == 0


def test_download_retries_after_aborted_transfer(hub, api, tmp_path):
    sha, files = _push(api, tmp_path)
    hub.add_fault(method="GET", server="cdn", abort=True)  # cut the body in half, once
    hub.reset_log()
    path = hf_hub_download(REPO, "big.bin.part", repo_type="dataset", revision=sha)
    assert Path(path).read_bytes() == files["big.bin.part"]
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert [r.fault for r in cdn] == ["abort", None]
    # http_get retries after 1 s.  It resumes with `Range: bytes=N-` only for bytes it has written,
    # and it writes in 10 MiB chunks (constants.DOWNLOAD_CHUNK_SIZE): a cut before the first full
    # chunk restarts from zero.
    assert cdn[1].range is None and cdn[1].bytes_sent == BIG


def test_range_semantics(hub):
    """Range forms the client sends: closed (HfFileSystem blocks), open-ended (resume), suffix."""
    from huggingface_hub.utils import get_session

    data = bytes(range(256)) * 4
    hub.commit_files(REPO, {"r.txt": data}, lfs=False)
    url = f"{hub.url}/datasets/{REPO}/resolve/main/r.txt"
    session = get_session()
    for spec, status, body in [
        ("bytes=10-19", 206, data[10:20]),
        ("bytes=1000-", 206, data[1000:]),
        ("bytes=-5", 206, data[-5:]),
        ("bytes=1020-5000", 206, data[1020:]),
        ("bytes=2000-", 416, b""),
        (None, 200, data),
    ]:
        r = session.get(url, headers={"Range": spec} if spec else {})
        assert (r.status_code, r.content) == (status, body), spec
        assert r.headers["Content-Length"] == str(len(body))
    assert r.headers["X-Repo-Commit"] == hub.head(REPO)


def test_tree_pagination(monkeypatch, tmp_path):
    with FakeHub(tree_page_size=3) as small_pages:
        fake_hub_env(monkeypatch, tmp_path, small_pages)
        small_pages.commit_files(REPO, {f"shards/s{i}.bin": bytes([i]) for i in range(7)})
        api = HfApi(endpoint=small_pages.url, token=TEST_TOKEN)
        files = api.list_repo_files(REPO, repo_type="dataset")
        assert len(files) == 8  # 7 shards + .gitattributes
        # 9 entries (with the "shards" folder) at 3 per page => 3 pages, linked by `Link: rel=next`
        assert small_pages.count("GET", "/tree/main") == 3


def test_lfs_upload_deprecation_warning_comes_from_the_client(hub, api):
    """Why the module needs HTTPX2_DATA_DEPRECATION_FILTER: remove it once this test fails."""
    api.create_repo(REPO, repo_type="dataset")
    with pytest.warns(DeprecationWarning, match=r"Use 'content=<\.\.\.>' to upload raw bytes"):
        api.upload_file(
            path_or_fileobj=b"\0lfs", path_in_repo="x.bin", repo_id=REPO, repo_type="dataset"
        )
    assert hub.files(REPO)["x.bin"]["lfs"]


def test_multipart_lfs_upload_and_direct_lfs_serving(monkeypatch, tmp_path):
    """The Hub's multipart LFS transfer, and a hub that serves LFS bytes without a redirect."""
    with FakeHub(multipart_chunk_size=1024 * 1024, lfs_redirect=False) as hub:
        fake_hub_env(monkeypatch, tmp_path, hub)
        api = HfApi(endpoint=hub.url, token=TEST_TOKEN)
        api.create_repo(REPO, repo_type="dataset")
        data = os.urandom(2 * 1024 * 1024 + 10)
        info = api.upload_file(
            path_or_fileobj=data, path_in_repo="x.bin", repo_id=REPO, repo_type="dataset"
        )
        assert hub.count("PUT", server="cdn") == 3  # ceil(size / chunk_size) parts
        assert hub.count("POST", "/info/lfs/objects/complete/") == 1
        assert hub.file_bytes(REPO, "x.bin") == data

        hub.reset_log()
        path = hf_hub_download(REPO, "x.bin", repo_type="dataset", revision=info.oid)
        assert Path(path).read_bytes() == data
        assert [(r.server, r.method, r.status) for r in hub.requests] == [
            ("hub", "HEAD", 200),
            ("hub", "GET", 200),
        ]
        sha256 = hashlib.sha256(data).hexdigest()
        assert Path(path).resolve().name == sha256  # blob named after X-Linked-Etag
