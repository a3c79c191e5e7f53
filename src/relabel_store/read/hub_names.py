"""How a store on the Hugging Face Hub is named: repo ids, commit shas and ``hf://`` URLs.

Syntax only, no requests. One home for these rules, shared by name resolution
(:mod:`relabel_store.read.resolve`), the registry and publishing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from relabel_store.errors import ConfigurationError
from relabel_store.format.manifest import safe_relpath

__all__ = [
    "HF_PREFIX",
    "HubTarget",
    "is_commit_sha",
    "is_repo_id",
    "parse_hf_url",
    "parse_repo_path",
]

HF_PREFIX = "hf://"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_SPECIAL_REF = re.compile(r"^(refs/pr/\d+|refs/convert/[\w-]+)(/|$)")


def is_repo_id(text: str) -> bool:
    """Whether ``text`` is a Hub repo id (``org/name``)."""
    return bool(_REPO_ID.match(text))


def is_commit_sha(text: str) -> bool:
    """Whether ``text`` is a full 40-hex commit sha (a revision that can never move)."""
    return bool(_COMMIT_SHA.match(text))


@dataclass(frozen=True)
class HubTarget:
    """A store in a Hub dataset repo: ``revision`` as asked (None: main), ``subdir`` in the repo."""

    repo_id: str
    revision: str | None = None
    subdir: str | None = None

    @property
    def url(self) -> str:
        """``hf://datasets/<org>/<name>[@<revision>][/<subdir>]``."""
        rev = f"@{quote(self.revision, safe='')}" if self.revision else ""
        sub = f"/{self.subdir}" if self.subdir else ""
        return f"{HF_PREFIX}datasets/{self.repo_id}{rev}{sub}"


def parse_hf_url(url: str, revision: str | None = None) -> HubTarget:
    """``hf://datasets/org/name[@rev][/subdir]`` -> :class:`HubTarget`."""
    if not url.startswith(HF_PREFIX):
        raise ConfigurationError(f"not an hf:// URL: {url!r}")
    rest = url[len(HF_PREFIX) :].strip("/")
    if not rest.startswith("datasets/"):
        raise ConfigurationError(
            f"{url!r}: stores live in dataset repos; write hf://datasets/<org>/<name>[@revision]"
        )
    return parse_repo_path(rest[len("datasets/") :], revision, url)


def parse_repo_path(rest: str, revision: str | None, original: str) -> HubTarget:
    """``org/name[@rev][/subdir]`` -> :class:`HubTarget`; ``revision`` must agree with ``@rev``."""
    parts = rest.split("/", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigurationError(f"{original!r}: expected <org>/<name> after hf://datasets/")
    org, name = parts[0], parts[1]
    tail = parts[2] if len(parts) > 2 else ""
    rev = None
    if "@" in name:
        name, rev_and_more = name.split("@", 1)
        rev_and_more = f"{rev_and_more}/{tail}" if tail else rev_and_more
        special = _SPECIAL_REF.match(rev_and_more)
        if special:  # refs/pr/1 may be written unencoded, as huggingface_hub accepts it
            rev, tail = special.group(1), rev_and_more[special.end() :]
        else:
            rev, _, tail = rev_and_more.partition("/")
            rev = unquote(rev)
        if not rev:
            raise ConfigurationError(f"{original!r}: empty revision after '@'")
    repo_id = f"{org}/{name}"
    if not is_repo_id(repo_id):
        raise ConfigurationError(f"{original!r}: {repo_id!r} is not a valid Hub repo id")
    if rev is not None and revision is not None and rev != revision:
        raise ConfigurationError(
            f"{original!r} names revision {rev!r} but revision={revision!r} was given"
        )
    subdir = safe_relpath(tail.strip("/")) if tail.strip("/") else None
    return HubTarget(repo_id, revision if revision is not None else rev, subdir)
