"""The fsspec backend: a store at any fsspec URL (``s3://``, ``gs://``, ``file://``, ...).

Reads are explicit about sizes (no fsspec read-ahead: its default 5 MiB block would turn a record
read into a multi-megabyte transfer). On the local file system, symlinks and other non-regular
files inside the store are refused, exactly as for a local store: a ``file://`` URL must not read
anything outside the store.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, BinaryIO

from relabel_store.errors import ConfigurationError, CorruptDataError, RemoteError, redact
from relabel_store.format._io import regular_file_stat
from relabel_store.format.manifest import safe_relpath
from relabel_store.read.sources import (
    Remote,
    is_offline,
    network_retries,
    network_timeout,
    offline_error,
)

__all__ = ["FsspecRemote"]

_DOWNLOAD_CHUNK = 1 << 20


#: The package providing fsspec's backend for a protocol, named when it is missing.
_BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs",
             "abfs": "adlfs", "abfss": "adlfs", "http": "aiohttp", "https": "aiohttp",
             "ssh": "paramiko", "sftp": "paramiko", "hdfs": "pyarrow"}  # fmt: skip


def open_filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec file system and root path of ``url``, with relabel-store's connect and read
    timeouts and retry count (:func:`network_timeout`) for HTTP(S) and S3 unless
    ``storage_options`` sets its own. An unknown protocol, or one whose fsspec package is not
    installed, is one :class:`ConfigurationError` naming what to install."""
    import fsspec

    options = dict(storage_options or {})
    protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
    try:
        if protocol in ("http", "https"):
            aiohttp = importlib.import_module("aiohttp")  # fsspec's HTTP backend needs it
            client = dict(options.get("client_kwargs") or {})
            limit = network_timeout()
            client.setdefault("timeout", aiohttp.ClientTimeout(sock_connect=limit, sock_read=limit))
            options["client_kwargs"] = client
        elif protocol in ("s3", "s3a"):
            config = dict(options.get("config_kwargs") or {})
            config.setdefault("connect_timeout", network_timeout())
            config.setdefault("read_timeout", network_timeout())
            config.setdefault("retries", {"max_attempts": network_retries() + 1})
            options["config_kwargs"] = config
        fs, root = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        package = _BACKENDS.get(protocol)
        fix = f"`pip install {package}`" if package else "install fsspec's backend for it"
        raise ConfigurationError(
            f"cannot reach {protocol}:// URLs: their fsspec backend is not installed "
            f"({redact(str(exc))}). "
            f"Run {fix}."
        ) from None
    except ValueError as exc:
        raise ConfigurationError(
            f"cannot open {protocol}:// URLs ({redact(str(exc))}): not a protocol fsspec knows. "
            "Give a local "
            "path, a Hub name (org/name or hf://datasets/org/name), or an fsspec URL such as "
            "s3://, gs://, az://, http(s):// or file://."
        ) from None
    return fs, str(root).rstrip("/")


class FsspecRemote(Remote):
    """A store at an fsspec URL; ``storage_options`` go to fsspec."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")  # credentials and all: only fsspec sees it
        self.storage_options = dict(storage_options or {})
        self.location = redact(self.url)
        self._fs: tuple[int, Any, str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fs"] = None
        return state

    def _filesystem(self) -> tuple[Any, str]:
        cur = self._fs
        if cur is None or cur[0] != os.getpid():
            fs, root = open_filesystem(self.url, self.storage_options)
            cur = self._fs = (os.getpid(), fs, root)
        return cur[1], cur[2]

    def _path(self, path: str) -> tuple[Any, str]:
        """The file system and full path of store file ``path``; on the local file system, only
        a regular file reached without symlinks (UnsafePathError otherwise)."""
        if is_offline():
            raise offline_error(f"{self.location}/{path}")
        from fsspec.implementations.local import LocalFileSystem

        fs, root = self._filesystem()
        path = safe_relpath(path)
        if isinstance(fs, LocalFileSystem):
            regular_file_stat(root, path)
        return fs, f"{root}/{path}"

    def _tried(self, path: str, read: Callable[[], bytes]) -> bytes:
        """``read()``, tried again up to :func:`network_retries` times when the transfer fails
        (a timeout, a dropped connection), then one :class:`RemoteError` saying why."""
        tries = network_retries() + 1
        for attempt in range(tries):
            try:
                return read()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
                raise
            except Exception as exc:  # a backend's transfer error (aiohttp's, botocore's)
                if attempt + 1 == tries:
                    raise RemoteError(
                        f"{self.location}/{path}: the transfer failed {tries} times "
                        f"({self._reason(exc)})"
                    ) from None
        raise AssertionError("unreachable")

    def fetch(self, path: str) -> bytes | None:
        fs, p = self._path(path)
        try:
            return self._tried(path, lambda: bytes(fs.cat_file(p)))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except PermissionError as exc:
            raise RemoteError(f"{self.location}/{path}: {redact(str(exc))}") from None

    def download(self, path: str, out: BinaryIO, max_bytes: int) -> None:
        fs, p = self._path(path)
        tries = network_retries() + 1
        try:
            for attempt in range(tries):
                try:
                    out.seek(0)
                    out.truncate()
                    with fs.open(p, "rb", block_size=_DOWNLOAD_CHUNK) as f:
                        left = max_bytes
                        while left > 0 and (chunk := f.read(min(_DOWNLOAD_CHUNK, left))):
                            out.write(chunk)
                            left -= len(chunk)
                    return
                except FileNotFoundError:
                    raise
                except Exception as exc:  # a backend's transfer error (aiohttp's, botocore's)
                    if attempt + 1 == tries:
                        raise RemoteError(
                            f"{self.location}/{path}: the transfer failed {tries} times "
                            f"({self._reason(exc)}). Files already downloaded and verified stay "
                            "in the cache: re-running the same command resumes where it stopped."
                        ) from None
        except RemoteError:
            raise
        except FileNotFoundError:
            raise CorruptDataError(
                f"{self.location}/{path}: the manifest lists this file but it does not exist; "
                "the upload is incomplete or damaged."
            ) from None
        except OSError as exc:
            raise RemoteError(
                f"{self.location}/{path}: {redact(str(exc))}. Files already downloaded and "
                "verified stay in "
                "the cache: re-running the same command resumes where it stopped."
            ) from None

    def _reason(self, exc: BaseException) -> str:
        """Why a transfer failed, naming the host; never the URL's credentials."""
        from urllib.parse import urlsplit

        host = urlsplit(self.url).hostname or "the server"
        port = urlsplit(self.url).port
        where = f"{host}:{port}" if port else host
        if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
            return (
                f"{where} did not answer within {network_timeout():g} s ({type(exc).__name__}); "
                "the network or the server stalled. Set RELABEL_STORE_TIMEOUT (seconds) higher "
                "for a slow link"
            )
        return f"from {where}: {type(exc).__name__}: {redact(str(exc))}"

    def read_range(self, path: str, start: int, stop: int) -> bytes:
        fs, p = self._path(path)
        try:
            return self._tried(path, lambda: bytes(fs.cat_file(p, start=start, end=stop)))
        except (FileNotFoundError, PermissionError) as exc:
            raise RemoteError(f"{self.location}/{path}: {redact(str(exc))}") from None

    def close(self) -> None:
        self._fs = None
