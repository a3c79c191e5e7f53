"""Publishing to a branch of a Hugging Face Hub dataset repo, with huggingface_hub.

Each change is one ``create_commit``; LFS/Xet files are compared by their sha256, regular files
by their git blob id, both from the repo's listing (no download). The last change also writes the
dataset card (``README.md`` at the repo root) when it differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relabel_store.errors import RemoteError
from relabel_store.format.manifest import ManifestEntry
from relabel_store.publish.card import CARD_NAME
from relabel_store.publish.destinations import Destination, RemoteFile, Upload
from relabel_store.read.hub_names import HubTarget
from relabel_store.read.sources.hub import endpoint_url, hub_errors, request_limits

__all__ = ["HubDestination", "git_blob_id"]

# huggingface_hub 2.4's non-Xet LFS upload passes a file object as `data=` to httpx2, which
# deprecates that; the warning is the client library's business, not our users'.
_HTTPX2_DATA_WARNING = r"Use 'content=<\.\.\.>' to upload raw bytes/text content\."


def git_blob_id(data: Path | bytes) -> str:
    """The git blob id of a file or of bytes (what the Hub reports for a regular file)."""
    if isinstance(data, bytes):
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    h = hashlib.sha1(b"blob %d\0" % data.stat().st_size)
    with open(data, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _quiet_client_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_HTTPX2_DATA_WARNING, category=DeprecationWarning)
        yield


class HubDestination(Destination):
    """``target``'s branch (``revision``, default main; created from main if needed) and
    subfolder of a Hub dataset repo, created if needed (``private`` when new). ``card`` is the
    dataset card to keep at the repo root (None: leave it alone)."""

    def __init__(
        self,
        target: HubTarget,
        *,
        token: str | None = None,
        endpoint: str | None = None,
        private: bool = False,
        card: str | None = None,
    ) -> None:
        from huggingface_hub import HfApi

        self.repo_id = target.repo_id
        self.branch = target.revision or "main"
        self.subdir = target.subdir
        self.endpoint = endpoint_url(endpoint)
        self.private = private
        self.card = card
        self.location = HubTarget(self.repo_id, self.branch, self.subdir).url
        self.commit: str | None = None  # the last commit made or found
        self._prefix = f"{self.subdir}/" if self.subdir else ""
        self._api = HfApi(endpoint=self.endpoint, token=token)
        self._token = token

    def open(self) -> dict[str, RemoteFile]:
        with hub_errors(self.location):
            self._api.create_repo(
                self.repo_id, repo_type="dataset", private=self.private, exist_ok=True
            )
            if self.branch != "main":
                self._api.create_branch(
                    self.repo_id, branch=self.branch, repo_type="dataset", exist_ok=True
                )
        return self.list_files()

    def read(self, path: str) -> bytes | None:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_backoff

        url = hf_hub_url(
            self.repo_id,
            self._prefix + path,
            repo_type="dataset",
            revision=self.commit or self.branch,
            endpoint=self.endpoint,
        )
        with hub_errors(f"{self.location}/{path}"):
            try:
                headers = build_hf_headers(token=self._token, library_name="relabel-store")
                r = http_backoff("GET", url, headers=headers, **request_limits())
                hf_raise_for_status(r)
            except EntryNotFoundError:
                return None
            return r.content

    def list_files(self) -> dict[str, RemoteFile]:
        from huggingface_hub import RepoFile
        from huggingface_hub.errors import EntryNotFoundError

        revision = self.commit or self.branch
        out = {}
        with hub_errors(self.location):
            try:
                items = list(
                    self._api.list_repo_tree(
                        self.repo_id,
                        path_in_repo=self.subdir,
                        recursive=True,
                        revision=revision,
                        repo_type="dataset",
                    )
                )
            except EntryNotFoundError:  # the subfolder does not exist yet
                return {}
        for item in items:
            if isinstance(item, RepoFile) and item.path.startswith(self._prefix):
                lfs = item.lfs
                out[item.path[len(self._prefix) :]] = RemoteFile(
                    size=item.size,
                    sha256=lfs.sha256 if lfs is not None else None,
                    blob_id=None if lfs is not None else item.blob_id,
                )
        return out

    def holds(self, found: RemoteFile | None, entry: ManifestEntry, local: Path | bytes) -> bool:
        if found is None or found.size != entry.size:
            return False
        if found.sha256 is not None:
            return found.sha256 == entry.sha256
        return found.blob_id == git_blob_id(local)

    def change(
        self, add: list[Upload], delete: list[str], message: str, *, last: bool = False
    ) -> str | None:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        ops: list[Any] = [CommitOperationDelete(self._prefix + p) for p in delete]
        ops += [
            CommitOperationAdd(
                self._prefix + e.path, local if isinstance(local, bytes) else str(local)
            )
            for e, local in add
        ]
        if last and self.card is not None and self._card_differs():
            ops.insert(0, CommitOperationAdd(CARD_NAME, self.card.encode()))
            message += " + dataset card"
        if not ops:
            return None
        try:
            with hub_errors(self.location), _quiet_client_warnings():
                info = self._api.create_commit(
                    self.repo_id,
                    ops,
                    commit_message=message,
                    revision=self.branch,
                    repo_type="dataset",
                )
        except RuntimeError as exc:  # huggingface_hub's LFS upload failures
            raise RemoteError(f"{self.location}: {exc}") from exc
        self.commit = info.oid
        return info.oid

    def _card_differs(self) -> bool:
        assert self.card is not None
        with hub_errors(self.location):
            current = self._api.get_paths_info(
                self.repo_id, [CARD_NAME], revision=self.branch, repo_type="dataset"
            )
        return not current or getattr(current[0], "blob_id", None) != git_blob_id(
            self.card.encode()
        )

    def published(self) -> tuple[str, str, str | None]:
        if self.commit is None:
            with hub_errors(self.location):
                self.commit = self._api.repo_info(
                    self.repo_id, repo_type="dataset", revision=self.branch
                ).sha
        assert self.commit is not None
        sub = f"/{self.subdir}" if self.subdir else ""
        location = HubTarget(self.repo_id, self.commit, self.subdir).url
        url = f"{self.endpoint}/datasets/{self.repo_id}/tree/{self.commit}{sub}"
        return location, url, self.commit

    def __repr__(self) -> str:
        return f"HubDestination({self.location!r})"
