"""The loopback FakeHub (tests/_fake_hub.py) behaves like the Hub where relabel-store relies on it.

Driven by the real huggingface_hub client: a commit of regular and LFS files lands as the Hub
would store it, listings page like the Hub's, LFS downloads are redirected to another origin,
ranges are answered as HTTP says, and the fault hooks the remote tests use do what they claim.
"""

from __future__ import annotations

import hashlib

import httpx2
import pytest
from _fake_hub import HTTPX2_DATA_DEPRECATION_FILTER, TEST_TOKEN, FakeHub, iter_fake_hub
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import get_session

pytestmark = pytest.mark.filterwarnings(HTTPX2_DATA_DEPRECATION_FILTER)

REPO = "relabel/fake-store"
FILES = {
    "zarr.json": b'{"zarr_format": 3, "node_type": "group"}',
    "indices/c.0.0.0.0": bytes(range(256)) * 8,  # binary (NUL byte) => LFS, as on the Hub
    "manifest.json": b'{"files": []}',
}
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    yield from iter_fake_hub(monkeypatch, tmp_path)


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.url, token=TEST_TOKEN)


def _commit(api: HfApi) -> str:
    api.create_repo(REPO, repo_type="dataset", private=True, exist_ok=True)
    ops = [CommitOperationAdd(path, data) for path, data in FILES.items()]
    return api.create_commit(REPO, ops, commit_message="seed", repo_type="dataset").oid


def test_commit_through_the_client_stores_regular_and_lfs_files(hub, api):
    sha = _commit(api)
    assert len(sha) == 40 and hub.head(REPO) == sha and hub.is_private(REPO)
    api.create_repo(REPO, repo_type="dataset", exist_ok=True)  # 409, swallowed by the client
    assert hub.count("POST", "/api/repos/create", status=409) == 1
    # preupload -> LFS batch -> PUT to the cdn -> verify -> NDJSON commit; Xet never used
    assert hub.count("PUT", server="cdn") == hub.count("POST", "/info/lfs/objects/verify") == 1
    assert not [r for r in hub.requests if "xet" in r.path.lower()]
    stored = hub.files(REPO)
    assert {p for p, f in stored.items() if f["lfs"]} == {"indices/c.0.0.0.0"}
    for path, data in FILES.items():
        assert hub.file_bytes(REPO, path) == data

    tree = {e.path: e for e in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)}
    assert set(tree) == {*FILES, ".gitattributes", "indices"}
    lfs = tree["indices/c.0.0.0.0"].lfs
    assert lfs is not None and lfs.sha256 == hashlib.sha256(FILES["indices/c.0.0.0.0"]).hexdigest()
    regular = tree["manifest.json"]
    assert regular.lfs is None
    assert regular.blob_id == hashlib.sha1(b"blob 13\0" + FILES["manifest.json"]).hexdigest()
    assert api.repo_info(REPO, repo_type="dataset", revision="main").sha == sha

    api.create_branch(REPO, branch="dev", repo_type="dataset")
    assert hub.head(REPO, "dev") == sha


def test_private_repo_needs_the_token(hub, api):
    _commit(api)
    anonymous = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(HfHubHTTPError):
        anonymous.repo_info(REPO, repo_type="dataset", revision="main")


def test_lfs_download_redirects_to_another_origin_without_the_token(hub, api):
    sha = _commit(api)
    hub.reset_log()
    url = f"{hub.url}/datasets/{REPO}/resolve/{sha}/indices/c.0.0.0.0"
    r = get_session().get(url, headers=AUTH)
    assert r.status_code == 200 and r.content == FILES["indices/c.0.0.0.0"]
    first, second = hub.requests
    assert (first.server, first.status, first.authorized) == ("hub", 302, True)
    assert (second.server, second.status, second.authorized) == ("cdn", 200, False)


def test_range_semantics(hub):
    data = bytes(range(32, 128)) * 11  # text: a regular file, served by the hub itself
    hub.commit_files(REPO, {"r.bin": data})
    url = f"{hub.url}/datasets/{REPO}/resolve/main/r.bin"
    for spec, status, body in [
        ("bytes=10-19", 206, data[10:20]),
        ("bytes=1000-", 206, data[1000:]),
        ("bytes=-5", 206, data[-5:]),
        ("bytes=1020-5000", 206, data[1020:]),
        ("bytes=2000-", 416, b""),
        (None, 200, data),
    ]:
        r = get_session().get(url, headers={"Range": spec} if spec else {})
        assert (r.status_code, r.content) == (status, body), spec
    assert r.headers["X-Repo-Commit"] == hub.head(REPO)


def test_tree_pagination(monkeypatch, tmp_path):
    with FakeHub(tree_page_size=3) as small_pages:
        from _fake_hub import fake_hub_env

        fake_hub_env(monkeypatch, tmp_path, small_pages)
        small_pages.commit_files(REPO, {f"shards/s{i}.bin": bytes([0, i]) for i in range(7)})
        api = HfApi(endpoint=small_pages.url, token=TEST_TOKEN)
        files = api.list_repo_files(REPO, repo_type="dataset")
        assert len(files) == 8  # 7 shards + .gitattributes
        # 9 entries (with the "shards" folder) at 3 per page => 3 pages, linked by `Link: rel=next`
        assert small_pages.count("GET", "/tree/main") == 3


def test_faults(hub, api):
    sha = _commit(api)
    url = f"{hub.url}/datasets/{REPO}/resolve/{sha}/zarr.json"
    hub.add_fault(path="/zarr.json", status=403)
    assert get_session().get(url, headers=AUTH).status_code == 403
    assert get_session().get(url, headers=AUTH).status_code == 200  # times=1 by default

    hub.add_fault(path="/zarr.json", rewrite_range=lambda _: "bytes=0-3")
    r = get_session().get(url, headers={**AUTH, "Range": "bytes=5-9"})
    assert (r.status_code, r.headers["Content-Range"]) == (
        206,
        f"bytes 0-3/{len(FILES['zarr.json'])}",
    )

    hub.add_fault(path="/zarr.json", abort=True)
    with pytest.raises(httpx2.RemoteProtocolError):
        get_session().get(url, headers=AUTH)
    assert [r.fault for r in hub.requests[-4:]] == ["status", None, "range", "abort"]

    hub.add_fault(method="PUT", server="cdn", drop=True)
    with pytest.raises(RuntimeError, match="Error while uploading"):
        api.create_commit(
            REPO, [CommitOperationAdd("x.bin", b"\0lost")], commit_message="x", repo_type="dataset"
        )
    assert "x.bin" not in hub.files(REPO)


def test_lfs_upload_deprecation_warning_comes_from_the_client(hub, api):
    """Why pushes need HTTPX2_DATA_DEPRECATION_FILTER: remove it once this test fails."""
    api.create_repo(REPO, repo_type="dataset")
    with pytest.warns(DeprecationWarning, match=r"Use 'content=<\.\.\.>' to upload raw bytes"):
        api.create_commit(
            REPO, [CommitOperationAdd("x.bin", b"\0lfs")], commit_message="x", repo_type="dataset"
        )
    assert hub.files(REPO)["x.bin"]["lfs"]
