"""The checksum manifest, `relabel-store verify` and `info`, and path validation."""

from __future__ import annotations

import json

import pytest
from _stores import write_store
from click.testing import CliRunner

from relabel_store import FormatError, UnsafePathError, load_relabel, verify_store
from relabel_store.cli.main import main
from relabel_store.format.manifest import Manifest, safe_relpath


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("m") / "s.zarr", 40, shard_records=16).path


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_manifest_lists_every_file_with_size_and_sha(store_path):
    manifest = load_relabel(store_path).manifest
    assert [e.path for e in manifest.entries] == [
        f for f in _files(store_path) if f != "manifest.json"
    ]
    for e in manifest.entries:
        assert (store_path / e.path).stat().st_size == e.size
    assert verify_store(store_path).ok
    raw = json.loads((store_path / "manifest.json").read_text())
    assert raw["digest"] == manifest.digest and len(raw["files"]) == len(manifest.entries)


def test_verify_detects_a_flipped_byte_in_any_file(tmp_path):
    src = write_store(tmp_path / "s.zarr", 20, shard_records=8).path
    for rel in [f for f in _files(src) if f != "manifest.json"]:
        p = src / rel
        original = p.read_bytes()
        if not original:  # errors.jsonl of a run without failures
            continue
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01
        p.write_bytes(bytes(flipped))
        report = verify_store(src)
        assert report.altered == [rel], rel
        assert not report.ok
        p.write_bytes(original)
    assert verify_store(src).ok


def test_verify_cli_reports_missing_extra_resized(tmp_path):
    src = write_store(tmp_path / "s.zarr", 20, shard_records=8).path
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", str(src)])
    assert ok.exit_code == 0 and "ok:" in ok.output
    (src / "indices" / "c.1.0.0.0").unlink()
    (src / "notes.txt").write_text("hello")
    with open(src / "sizes" / "c.0.0", "ab") as f:
        f.write(b"\0")
    bad = runner.invoke(main, ["verify", str(src)])
    assert bad.exit_code == 1
    assert "missing: indices/c.1.0.0.0" in bad.output
    assert "extra: notes.txt" in bad.output
    assert "resized: sizes/c.0.0" in bad.output


def test_verify_refuses_an_unfinalized_store(tmp_path):
    path = write_store(tmp_path / "s.zarr", 20, shard_records=8, shards=[0], finalize=False).path
    result = CliRunner().invoke(main, ["verify", str(path)])
    assert result.exit_code == 2 and "never finalized" in result.output


def test_info_summarises(store_path):
    result = CliRunner().invoke(main, ["info", str(store_path)])
    assert result.exit_code == 0, result.output
    digest = load_relabel(store_path).manifest.digest
    for text in ("records:     40", "15x15, top-5 of 1000", "synthetic / train", digest):
        assert text in result.output


@pytest.mark.parametrize(
    "path", ["../x", "/etc/passwd", "a/../../x", "a//b", "./a", "C:/x", "a\\..\\x", "", "a/\x00"]
)
def test_escaping_paths_are_refused(path):
    with pytest.raises(UnsafePathError):
        safe_relpath(path)


def test_manifest_with_escaping_entry_is_refused(store_path, tmp_path):
    raw = json.loads((store_path / "manifest.json").read_text())
    raw["files"].append({"path": "../outside", "size": 1, "sha256": "0" * 64})
    with pytest.raises(UnsafePathError, match="escapes the store"):
        Manifest.from_bytes(json.dumps(raw).encode())


def test_manifest_digest_must_match_entries(store_path):
    raw = json.loads((store_path / "manifest.json").read_text())
    raw["files"][0]["size"] += 1
    with pytest.raises(FormatError, match="does not match"):
        Manifest.from_bytes(json.dumps(raw).encode())
