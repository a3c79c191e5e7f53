"""Hostile networks: a Hub (or CDN) that stalls mid-answer or keeps dropping the connection.

Against the loopback fake Hub driven by the real huggingface_hub client, with a short configured
timeout (``RELABEL_STORE_TIMEOUT``): every stall and every run of drops ends, within bounded time,
in one :class:`RemoteError` naming the host and the reason (one ``error:`` line from the CLI).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _fake_hub import HTTPX2_DATA_DEPRECATION_FILTER, iter_fake_hub
from _stores import write_store
from click.testing import CliRunner

from relabel_store import load_relabel
from relabel_store.cli.main import main
from relabel_store.errors import ConfigurationError, RemoteError
from relabel_store.read.sources import hub as hub_source
from relabel_store.read.sources import network_retries, network_timeout

pytestmark = pytest.mark.filterwarnings(HTTPX2_DATA_DEPRECATION_FILTER)

REPO = "relabel/hostile"
KEY = "img_00007"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "s.relabel.zarr"
    write_store(path, 40, shard_records=16, seed=3)
    return path


@pytest.fixture
def hub(monkeypatch, tmp_path):
    monkeypatch.setenv("RELABEL_STORE_TIMEOUT", "1")
    monkeypatch.setenv("RELABEL_STORE_RETRIES", "1")
    monkeypatch.setattr(hub_source, "RESUME_DELAYS_S", (0.01, 0.01, 0.01))
    yield from iter_fake_hub(monkeypatch, tmp_path)


def seed(hub, store_dir: Path) -> str:
    files = {p.relative_to(store_dir).as_posix(): p.read_bytes()
             for p in store_dir.rglob("*") if p.is_file()}  # fmt: skip
    return hub.commit_files(REPO, files)


@pytest.mark.parametrize("mode", ["cache", "range"])
def test_a_cdn_that_stalls_mid_body_is_one_remote_error_within_seconds(hub, store_dir, tmp_path,
                                                                       mode):  # fmt: skip
    sha = seed(hub, store_dir)
    store = load_relabel(REPO, revision=sha, mode=mode, cache_dir=tmp_path / "cache")
    hub.add_fault(server="cdn", method="GET", stall_s=120, times=None)
    started = time.monotonic()
    with pytest.raises(RemoteError) as err:
        store.get(KEY)
    took = time.monotonic() - started
    message = str(err.value)
    assert (
        "127.0.0.1:" in message and "did not answer within 1 s (read timeout, 2 tries)" in message
    )
    assert "RELABEL_STORE_TIMEOUT" in message and f"hf://datasets/{REPO}@{sha}/" in message
    assert took < 20, f"a stall took {took:.0f} s to fail"


def test_a_hub_that_stalls_at_open_is_one_cli_error_line(hub, store_dir, tmp_path):
    sha = seed(hub, store_dir)
    hub.add_fault(server="hub", path="zarr.json", method="GET", stall_s=120, times=None)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["info", f"hf://datasets/{REPO}@{sha}"],
                                env={"RELABEL_STORE_CACHE": str(tmp_path / "c")})  # fmt: skip
    took = time.monotonic() - started
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (
        result.output
    )
    assert "did not answer within 1 s" in lines[0] and "Traceback" not in result.output
    assert took < 20


def test_a_connection_that_always_drops_is_retried_a_bounded_number_of_times(hub, store_dir,
                                                                             tmp_path):  # fmt: skip
    sha = seed(hub, store_dir)
    fault = hub.add_fault(server="hub", path="zarr.json", method="GET", abort=True, times=None)
    started = time.monotonic()
    with pytest.raises(RemoteError) as err:
        load_relabel(REPO, revision=sha, cache_dir=tmp_path / "cache")
    assert time.monotonic() - started < 20
    assert "connection to 127.0.0.1:" in str(err.value) and "kept dropping" in str(err.value)
    # the 7 zarr.json are fetched in parallel at open; each is tried 4 times at most
    assert fault.hits <= 7 * (len(hub_source.RESUME_DELAYS_S) + 1)


def test_timeouts_are_configurable_and_checked(monkeypatch):
    monkeypatch.delenv("RELABEL_STORE_TIMEOUT", raising=False)
    assert network_timeout() == 15.0 and network_retries() == 2
    monkeypatch.setenv("RELABEL_STORE_TIMEOUT", "2.5")
    assert network_timeout() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("RELABEL_STORE_TIMEOUT", bad)
        with pytest.raises(ConfigurationError, match="RELABEL_STORE_TIMEOUT"):
            network_timeout()


# -- fsspec over HTTP: credentials, stalls, drops ---------------------------------------------------


@pytest.fixture
def http_store(store_dir, monkeypatch):
    pytest.importorskip("aiohttp")
    from _http_store import HttpStore

    monkeypatch.setenv("RELABEL_STORE_TIMEOUT", "1")
    monkeypatch.setenv("RELABEL_STORE_RETRIES", "1")
    server = HttpStore(store_dir.parent).start()
    yield server
    server.stop()


def everything_written(root: Path) -> str:
    """Every file name and every byte under ``root``, as text, to grep for a secret."""
    parts = []
    for p in sorted(root.rglob("*")):
        parts.append(p.as_posix())
        if p.is_file() and not p.is_symlink():
            parts.append(p.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def test_credentials_in_a_url_never_leave_it(http_store, store_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    url = http_store.url(store_dir.name)
    secret = http_store.password
    cache = tmp_path / "cache"
    local = load_relabel(store_dir)
    store = load_relabel(url, cache_dir=cache)
    assert secret not in store.source.location and "reader:***@127.0.0.1" in store.source.location
    assert secret not in repr(store)
    got = store.get(KEY)
    assert (got.values == local.get(KEY).values).all()
    runner = CliRunner()
    env = {"RELABEL_STORE_CACHE": str(cache)}
    outputs = [runner.invoke(main, ["info", url], env=env)]
    outputs.append(runner.invoke(main, ["pull", url, "--to", str(tmp_path / "pulled")], env=env))
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    http_store.drop = True  # errors too: a shard that keeps dropping
    outputs.append(
        runner.invoke(main, ["pull", url], env={"RELABEL_STORE_CACHE": str(tmp_path / "c2")})
    )
    assert outputs[-1].exit_code == 2 and "error: " in outputs[-1].stderr
    for result in outputs:
        text = result.output + (result.stderr or "")
        assert secret not in text, text
    assert "reader:***@" in outputs[0].output
    assert secret not in everything_written(tmp_path)  # the caches, the pulled store
    assert (cache / "url").exists()


def test_an_http_server_that_stalls_or_drops_is_one_remote_error(http_store, store_dir, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    url = http_store.url(store_dir.name)
    for fault in ("stall", "drop"):
        store = load_relabel(url, cache_dir=tmp_path / fault)
        http_store.stall_s, http_store.drop = (120, False) if fault == "stall" else (0, True)
        started = time.monotonic()
        with pytest.raises(RemoteError) as err:
            store.get(KEY)
        took = time.monotonic() - started
        assert "the transfer failed 2 times" in str(err.value), err.value
        assert f"127.0.0.1:{http_store.port}" in str(err.value)
        assert http_store.password not in str(err.value)
        assert took < 20, f"{fault}: {took:.0f} s"
        http_store.stall_s, http_store.drop = 0, False
