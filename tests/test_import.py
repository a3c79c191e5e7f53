"""`relabel-store import`: the published ReLabel and TokenLabeling maps, as miniatures.

Every file here is made by real ``torch.save`` (ReLabel's legacy serialization and the zip one),
packed into a tar under a top-level folder or laid out as the extracted folder. Maps are
asymmetric: class A owns the left half of every map, class B the right half, so reading them
back and pooling a left-half and a right-half box pins keys, labels, orientation and values.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from relabel_store import CropBox, RelabelStore, load_relabel, pool, verify_store
from relabel_store._progress import Progress, format_count
from relabel_store.cli.main import main
from relabel_store.errors import FormatError, InputError, StoreNotFoundError
from relabel_store.format.manifest import build_manifest, write_manifest
from relabel_store.read import registry
from relabel_store.write.importer import import_maps
from relabel_store.write.writer import StoreWriter

TOP = "imagenet_efficientnet_l2_sz475_top5"
#: wnid -> ImageNet-1k index (timm's order): the first, the second and the last class.
WNIDS = {"n01440764": 0, "n01443537": 1, "n15075141": 999}
A, B = 7, 42  # the classes of the left and the right half
BIN = Path(sys.executable).parent


def asymmetric_map(rng: np.random.Generator, grid: int, dtype: torch.dtype) -> torch.Tensor:
    """``[2, 5, grid, grid]``: top-1 is A left of the centre column, B right of it; distinct,
    descending top-5 per cell, the rest random classes with small logits."""
    cols = np.arange(grid)[None, :].repeat(grid, 0)
    top1 = np.where(cols < grid // 2 + 1, A, B)
    others = np.argsort(rng.random((grid, grid, 998)), axis=-1)[..., :4]
    others = np.setdiff1d(np.arange(1000), [A, B])[others]  # never A or B
    ids = np.concatenate([top1[..., None], others], axis=-1)
    logits = np.concatenate(
        [rng.uniform(9, 12, (grid, grid, 1)), -np.sort(-rng.normal(1, 1, (grid, grid, 4)))], -1
    )
    stacked = np.stack([logits, ids.astype(np.float64)]).transpose(0, 3, 1, 2)  # [2, 5, H, W]
    return torch.from_numpy(np.ascontiguousarray(stacked)).to(dtype)


def saved(obj: object, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def official_files(
    n_per_class: int = 3, grid: int = 15, dtype: torch.dtype = torch.float32, seed: int = 0
) -> dict[str, torch.Tensor]:
    """``{"<wnid>/<stem>.pt": tensor}`` in the release's layout. float16 maps are made the way
    TokenLabeling's ``generate_label.py`` makes them: ``torch.stack([value.half(),
    indices.half()]).permute(0, 3, 1, 2)`` of (H, W, 5) top-k outputs, a non-contiguous view."""
    rng = np.random.default_rng(seed)
    files = {}
    for wnid in WNIDS:
        for i in range(n_per_class):
            tensor = asymmetric_map(rng, grid, torch.float32)
            if dtype == torch.float16:
                value, indices = tensor.permute(0, 2, 3, 1)  # (H, W, 5) each, as topk returns
                tensor = torch.stack([value.half(), indices.half()]).permute(0, 3, 1, 2)
                assert not tensor.is_contiguous()
            files[f"{wnid}/{wnid}_{10026 + i}.pt"] = tensor.to(dtype)
    return files


def write_tar(path: Path, members: dict[str, bytes], *, top: str = TOP, gz: bool = False) -> Path:
    """A tar as GNU tar makes them: a folder entry per directory, then the files."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        folders = sorted(
            {str(Path(top, n).parent) for n in members if not n.startswith(("/", "."))}
        )
        for folder in [top, *[f for f in folders if f != top]]:
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name if name.startswith(("/", "..")) else f"{top}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0) if gz else raw.getvalue())
    return path


def serialized(files: dict[str, torch.Tensor]) -> dict[str, bytes]:
    """Alternate ReLabel's legacy serialization and the zip format."""
    return {n: saved(t, legacy=i % 2 == 0) for i, (n, t) in enumerate(files.items())}


def check_store(store: RelabelStore, files: dict[str, torch.Tensor], exact: bool) -> None:
    """Every map read back, labelled by its wnid, pooling to A on the left and B on the right."""
    assert len(store) == len(files)
    meta = store.metadata
    assert meta.label_space == "imagenet-1k" and meta.num_classes == 1000
    for name, tensor in files.items():
        wnid, stem = name.split("/")[0], Path(name).stem
        rec = store[stem]
        assert rec.label == WNIDS[wnid] and meta.class_identifiers[rec.label] == wnid
        expected_ids = tensor[1].permute(1, 2, 0).numpy().astype(np.uint16)
        expected_values = tensor[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(rec.indices, expected_ids)
        if exact:
            np.testing.assert_array_equal(rec.values, expected_values)
        else:
            np.testing.assert_array_equal(rec.values, expected_values.astype(np.float16))
        left = pool(rec.indices, rec.values, CropBox(0.0, 0.0, 0.5, 1.0), num_classes=1000)
        right = pool(rec.indices, rec.values, CropBox(0.5, 0.0, 1.0, 1.0), num_classes=1000)
        assert left.argmax() == A and right.argmax() == B
        assert left[A] > 0.5 and right[B] > 0.5


# --------------------------------------------------------------------------------------------
# the two formats, from a tar and from a folder
# --------------------------------------------------------------------------------------------


def test_relabel_tar_both_serializations(tmp_path):
    files = official_files()
    members = serialized(files)
    # Legacy and zip, as measured (9,353 and 10,537 B). The legacy format names the storage by
    # its memory address, written twice in decimal: its size moves by a few bytes run to run.
    zipped = {n: b for n, b in members.items() if b.startswith(b"PK")}
    legacy = {n: b for n, b in members.items() if n not in zipped}
    assert zipped and legacy
    assert {len(b) for b in zipped.values()} == {10537}
    assert all(abs(len(b) - 9353) <= 6 for b in legacy.values())
    tar = write_tar(tmp_path / "relabel_imagenet.tar", members)
    out = tmp_path / "imagenet.relabel.zarr"
    result = CliRunner().invoke(main, ["import", str(tar), "-o", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "9 (0 skipped)" in result.output and "relabel format" in result.output
    assert "of 9 labelled records" in result.output  # labels are wnids: quality can check them
    assert "float16:" in result.output and "--values float32" in result.output
    assert verify_store(out).ok
    store = load_relabel(out)
    check_store(store, files, exact=False)
    meta = store.metadata
    assert meta.grid == (15, 15) and meta.k == 5 and meta.values_dtype == "float16"
    assert meta.annotator["model"] == "tf_efficientnet_l2_ns_475"
    assert meta.annotator["preprocess"] == {"input_size": [475, 475], "resize_mode": "whole-image"}
    assert "weights" in meta.annotator["unknown"]
    source = meta.dataset["source"]
    assert source["sha256"] == hashlib.sha256(tar.read_bytes()).hexdigest()
    assert source["size"] == tar.stat().st_size and source["file"] == tar.name
    assert source["format"] == "relabel" and source["members"] == 9
    rounding = meta.dataset["values"]
    assert rounding["source"] == "float32" and rounding["stored"] == "float16"
    assert 0 < rounding["max_pooled_target_difference"] < 1e-3 and rounding["maps"] >= 1
    assert (out / "errors.jsonl").read_text() == ""
    info = CliRunner().invoke(main, ["info", str(out)])
    assert "tf_efficientnet_l2_ns_475 at 475x475" in info.output and "imagenet-1k" in info.output


def test_relabel_float32_values_are_exact(tmp_path):
    files = official_files(n_per_class=2)
    tar = write_tar(tmp_path / "relabel_imagenet.tar", serialized(files))
    result = import_maps(tar, tmp_path / "s.zarr", values="float32", workers=0, progress=False)
    store = load_relabel(tmp_path / "s.zarr")
    assert store.metadata.values_dtype == "float32" and store.get_row(0).values.dtype == np.float32
    check_store(store, files, exact=True)
    assert result.rounding["max_pooled_target_difference"] is None
    assert "exact" in result.summary()


def test_tokenlabeling_folder(tmp_path):
    files = official_files(grid=14, dtype=torch.float16)
    folder = tmp_path / "label_top5_train_nfnet"
    for name, tensor in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(saved(tensor))
    link = folder / "n01440764" / "n01440764_link.pt"  # links are reported, never followed
    link.symlink_to(folder / next(iter(files)))
    result = import_maps(folder, tmp_path / "s.zarr", workers=0, progress=False)
    store = load_relabel(tmp_path / "s.zarr")
    assert result.format == "tokenlabeling" and store.metadata.grid == (14, 14)
    assert result.skipped == 1 and "symbolic link" in (tmp_path / "s.zarr/errors.jsonl").read_text()
    check_store(store, files, exact=True)  # float16 maps are stored as they are
    assert store.metadata.annotator["model"] == "dm_nfnet_f6"
    assert "preprocess.resize_mode" in store.metadata.annotator["unknown"]
    assert store.metadata.dataset["source"]["kind"] == "folder"
    assert "sha256" not in store.metadata.dataset["source"]
    assert result.rounding["max_pooled_target_difference"] is None
    assert verify_store(tmp_path / "s.zarr").ok


def test_relabel_folder_and_gzip_tar_give_the_same_records(tmp_path):
    files = official_files(n_per_class=2)
    members = serialized(files)
    folder = tmp_path / TOP
    for name, data in members.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    import_maps(folder, tmp_path / "folder.zarr", workers=0, progress=False)
    tgz = write_tar(tmp_path / "maps.tar.gz", members, gz=True)
    result = import_maps(tgz, tmp_path / "tgz.zarr", workers=0, progress=False)
    assert result.source["compression"] == "gzip"
    assert result.source["sha256"] == hashlib.sha256(tgz.read_bytes()).hexdigest()
    a, b = load_relabel(tmp_path / "folder.zarr"), load_relabel(tmp_path / "tgz.zarr")
    check_store(a, files, exact=False)
    batch_a, batch_b = a.get_rows(range(len(a))), b.get_rows(range(len(b)))
    assert batch_a.keys == batch_b.keys
    np.testing.assert_array_equal(batch_a.indices, batch_b.indices)
    np.testing.assert_array_equal(batch_a.values, batch_b.values)


def test_forcing_a_format_refuses_the_other(tmp_path):
    tar = write_tar(tmp_path / "r.tar", serialized(official_files(n_per_class=1)))
    with pytest.raises(InputError, match=r"tokenlabeling format .*float32 \[2, 5, 15, 15\]"):
        import_maps(tar, tmp_path / "s.zarr", format="tokenlabeling", workers=0, progress=False)
    assert not (tmp_path / "s.zarr").exists()


# --------------------------------------------------------------------------------------------
# malformed and hostile members
# --------------------------------------------------------------------------------------------


class _Exploit:
    """Pickles to a call of os.system: loading it without weights_only would run the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def hostile_tar(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, str]]:
    """Good maps plus one member of every bad kind; returns the expected reason per bad name."""
    files = official_files(n_per_class=2)
    members = serialized(files)
    good = next(iter(files.values()))
    nan = good.clone()
    nan[0, 0, 3, 3] = float("nan")
    fractional, out_of_range = good.clone(), good.clone()
    fractional[1, 2, 0, 0] = 3.5
    out_of_range[1, 4, 5, 5] = 1000
    w = "n01440764"
    bad = {
        f"{w}/{w}_shape.pt": (
            saved(torch.zeros(2, 5, 14, 14)),
            "needs torch.float32 [2, 5, 15, 15]",
        ),
        f"{w}/{w}_nan.pt": (saved(nan), "NaN"),
        f"{w}/{w}_fraction.pt": (saved(fractional), "whole numbers"),
        f"{w}/{w}_range.pt": (saved(out_of_range), "outside 0..999"),
        f"{w}/{w}_exploit.pt": (saved(_Exploit(tmp_path / "pwned")), "weights_only"),
        f"{w}/{w}_dict.pt": (saved({"maps": good}), "holds a dict"),
        f"{w}/{w}_garbage.pt": (b"these bytes are no torch file", "torch.load"),
        "n01443537/n01440764_10026.pt": (saved(good), "duplicate key 'n01440764_10026'"),
        "README.txt": (b"maps of ImageNet", "not a .pt file"),
        "../escape.pt": (saved(good), "unsafe member name"),
        "/etc/n01440764_abs.pt": (saved(good), "unsafe member name"),
    }
    tar = write_tar(tmp_path / "hostile.tar", {**members, **{n: d for n, (d, _) in bad.items()}})
    with tarfile.open(tar, "a") as tf:  # a link, whatever it points to, is never followed
        link = tarfile.TarInfo(f"{TOP}/{w}/{w}_link.pt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    expected = {
        (n if n.startswith(("/", "..")) else f"{TOP}/{n}"): why for n, (_, why) in bad.items()
    }
    expected[f"{TOP}/{w}/{w}_link.pt"] = "symbolic link"
    return tar, files, expected


def test_malformed_members_are_reported_by_name_and_skipped(tmp_path):
    tar, files, expected = hostile_tar(tmp_path)
    out = tmp_path / "s.zarr"
    result = import_maps(tar, out, workers=0, progress=False)
    assert not (tmp_path / "pwned").exists(), "a pickled object was executed"
    assert result.records == len(files) and result.skipped == len(expected)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    reasons = {e["path"]: e["reason"] for e in errors}
    assert set(reasons) == set(expected)
    for name, why in expected.items():
        assert why in reasons[name], (name, reasons[name])
    check_store(load_relabel(out), files, exact=False)
    assert verify_store(out).ok


def test_on_error_fail_stops_at_the_first_bad_member(tmp_path):
    tar, _, _ = hostile_tar(tmp_path)
    with pytest.raises(InputError, match=r"n01440764_10026.pt.*duplicate key.*--on-error skip"):
        import_maps(tar, tmp_path / "s.zarr", on_error="fail", workers=0, progress=False)
    assert not (tmp_path / "s.zarr").exists()  # the scan found it: nothing was written
    nan = official_files(n_per_class=1)
    broken = next(iter(nan.values()))
    broken[0, 0, 0, 0] = float("inf")
    tar = write_tar(tmp_path / "inf.tar", serialized(nan))
    result = CliRunner().invoke(
        main, ["import", str(tar), "-o", str(tmp_path / "t.zarr"), "--workers", "0",
               "--on-error", "fail"]
    )  # fmt: skip
    assert result.exit_code == 2 and "NaN or infinite" in result.output
    assert "n01440764_10026.pt" in result.output


def test_damaged_tar_is_refused(tmp_path):
    members = serialized(official_files(n_per_class=2))
    tar = write_tar(tmp_path / "r.tar", members)
    data = tar.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged or truncated"):
        import_maps(cut, tmp_path / "s.zarr", workers=0, progress=False)
    with tarfile.open(tar) as tf:
        last = tf.getmembers()[-1]
    end = last.offset_data + -(-last.size // 512) * 512
    cut.write_bytes(data[:end])  # ends right after the last member: no end-of-archive marker
    with pytest.raises(InputError, match="damaged or truncated"):
        import_maps(cut, tmp_path / "s.zarr", workers=0, progress=False)
    (tmp_path / "notes.tar").write_text("not a tar at all")
    with pytest.raises(InputError, match="not a tar archive"):
        import_maps(tmp_path / "notes.tar", tmp_path / "s.zarr", workers=0, progress=False)


# --------------------------------------------------------------------------------------------
# resuming, worker processes, progress
# --------------------------------------------------------------------------------------------


def store_bytes(store: Path) -> dict[str, bytes]:
    """Every file's bytes, with the creation time taken out of the metadata."""
    out = {}
    for p in sorted(store.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            data = p.read_bytes()
            if p.relative_to(store).as_posix() == "zarr.json":
                group = json.loads(data)
                del group["attributes"]["relabel"]["created_at"]
                data = json.dumps(group).encode()
            out[p.relative_to(store).as_posix()] = data
    return out


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_same_bytes_and_workers_change_nothing(tmp_path):
    files = official_files(n_per_class=40)
    tar = write_tar(tmp_path / "relabel_imagenet.tar", serialized(files))
    args = ["--shard-records", "2", "-q"]
    reference = tmp_path / "reference.zarr"
    import_maps(tar, reference, workers=2, shard_records=2, progress=False)  # worker processes

    out = tmp_path / "s.zarr"
    command = [str(BIN / "relabel-store"), "import", str(tar), "-o", str(out), "--workers", "0"]
    proc = subprocess.Popen([*command, *args])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "_progress").glob("shard-*.json"))) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / "_progress").glob("shard-*.json")))
    assert 3 <= done < 60, "the run should have been killed part-way"
    assert not (out / "manifest.json").exists()
    resumed = subprocess.run(
        [*command, *args, "--resume"], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert store_bytes(out) == store_bytes(reference)
    assert verify_store(out).ok


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_decoding_workers_die_with_a_killed_import(tmp_path):
    """kill -9 (or the OOM killer) of the importing process must not leave its workers running,
    each holding its share of memory, on the node."""
    tar = write_tar(tmp_path / "r.tar", serialized(official_files(n_per_class=40)))
    out = tmp_path / "s.zarr"
    command = [str(BIN / "relabel-store"), "import", str(tar), "-o", str(out)]
    proc = subprocess.Popen([*command, "--workers", "2", "--shard-records", "2", "-q"])
    deadline = time.monotonic() + 300
    children: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None and len(children) < 2:
        path = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        children = [int(c) for c in path.read_text().split()] if path.exists() else []
        time.sleep(0.01)
    assert len(children) >= 2, "the import should have started its decoding workers"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.05)
    assert not [c for c in children if _alive(c)]


def test_a_run_killed_while_finalizing_resumes(tmp_path, monkeypatch):
    """Finalize records the tar's sha256 before the manifest: a run stopped in between must
    resume with the same settings and end with the same bytes."""
    tar = write_tar(tmp_path / "r.tar", serialized(official_files(n_per_class=2)))
    import_maps(tar, tmp_path / "reference.zarr", workers=0, progress=False)
    out = tmp_path / "s.zarr"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("relabel_store.write.writer.write_manifest", killed)
        with pytest.raises(KeyboardInterrupt):
            import_maps(tar, out, workers=0, progress=False)
    assert json.loads((out / "zarr.json").read_text())["attributes"]["relabel"]["complete"]
    assert not (out / "manifest.json").exists()
    import_maps(tar, out, workers=0, progress=False)
    assert store_bytes(out) == store_bytes(tmp_path / "reference.zarr")
    assert verify_store(out).ok
    again = import_maps(tar, out, workers=0, progress=False)  # a requeued job: nothing to do
    assert again.already_complete and again.done_now == 0 and again.records == 6
    assert again.source["sha256"] and "already complete" in again.summary()
    assert store_bytes(out) == store_bytes(tmp_path / "reference.zarr")


def test_resuming_from_another_source_of_the_same_size_is_refused(tmp_path, monkeypatch, capsys):
    """A re-downloaded tar whose bytes differ but whose names and size do not: the shards
    written from the first would silently join maps of the second."""

    def tar_of(seed: int, path: Path) -> Path:
        members = {n: saved(t) for n, t in official_files(n_per_class=4, seed=seed).items()}
        return write_tar(path, members)

    original = tar_of(0, tmp_path / "a.tar")
    tar = tar_of(1, tmp_path / "relabel_imagenet.tar")
    tar.write_bytes(original.read_bytes())  # the store is started from the original's bytes
    reference = tmp_path / "reference.zarr"
    import_maps(tar, reference, workers=0, shard_records=2, progress=False)
    out = tmp_path / "s.zarr"
    calls = {"n": 0}
    real_write = StoreWriter.write_shard

    def killed_after_two(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real_write(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(StoreWriter, "write_shard", killed_after_two)
        with pytest.raises(KeyboardInterrupt):
            import_maps(tar, out, workers=0, shard_records=2, progress=False)
    other = tar_of(1, tmp_path / "b.tar").read_bytes()
    assert len(other) == tar.stat().st_size and other != tar.read_bytes()
    tar.write_bytes(other)  # "re-downloaded": same names, same size, other maps
    with pytest.raises(InputError, match=r"not the source this store was started from.*shard 0"):
        import_maps(tar, out, workers=0, shard_records=2, progress=False)
    tar.write_bytes(original.read_bytes())
    capsys.readouterr()
    import_maps(tar, out, workers=2, shard_records=2, progress=True)  # workers fingerprint too
    assert store_bytes(out) == store_bytes(reference)
    assert "importing (resumed: 2 of 6 shards written before)" in capsys.readouterr().err


def _as_written_before_class_names(store: Path) -> None:
    """Make ``store`` what an import of an earlier version wrote: no ``dataset.class_names``."""
    group = json.loads((store / "zarr.json").read_text())
    del group["attributes"]["relabel"]["dataset"]["class_names"]
    (store / "zarr.json").write_text(json.dumps(group))
    if (store / "manifest.json").exists():
        write_manifest(store, build_manifest(store))


def test_stores_of_an_earlier_version_still_resume_and_rerun(tmp_path, monkeypatch):
    """A field that later versions record (class_names) is no change of settings."""
    tar = write_tar(tmp_path / "r.tar", serialized(official_files(n_per_class=2)))
    done = tmp_path / "done.zarr"
    import_maps(tar, done, workers=0, shard_records=2, progress=False)
    _as_written_before_class_names(done)
    again = import_maps(tar, done, workers=0, shard_records=2, progress=False)
    assert again.already_complete
    out = tmp_path / "s.zarr"
    real_write = StoreWriter.write_shard
    calls = {"n": 0}

    def killed_after_one(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real_write(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(StoreWriter, "write_shard", killed_after_one)
        with pytest.raises(KeyboardInterrupt):
            import_maps(tar, out, workers=0, shard_records=2, progress=False)
    _as_written_before_class_names(out)
    resumed = import_maps(tar, out, workers=0, shard_records=2, progress=False)
    assert resumed.done_now == 4 and verify_store(out).ok


def test_progress_lines_when_not_on_a_terminal():
    stream = io.StringIO()
    with Progress(1000, desc="importing", unit="maps", interval=0.0, stream=stream) as bar:
        bar.update(250)
        bar.update(250)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("importing: 250 of 1,000 maps (25.0%), ")
    assert "maps/s, ETA " in lines[0]
    assert lines[-1].startswith("importing: 500 of 1,000 maps (50.0%)") and "done in" in lines[-1]
    quiet = io.StringIO()
    with Progress(10, desc="x", show=False, interval=0.0, stream=quiet) as bar:
        bar.update(5)
    assert quiet.getvalue() == ""
    sizes = io.StringIO()
    with Progress(12_000_000_000, desc="scanning", unit="B", interval=0.0, stream=sizes) as bar:
        bar.update(3_000_000_000)
    assert sizes.getvalue().startswith("scanning: 3.0 GB of 12.0 GB (25.0%), ")


# --------------------------------------------------------------------------------------------
# the format's float32 values (1.2)
# --------------------------------------------------------------------------------------------


def test_values_dtype_is_checked_and_unknown_ones_refused(tmp_path):
    tar = write_tar(tmp_path / "r.tar", serialized(official_files(n_per_class=1)))
    out = tmp_path / "s.zarr"
    import_maps(tar, out, values="float32", workers=0, progress=False)
    group_path = out / "zarr.json"
    group = json.loads(group_path.read_text())
    for dtype, refusal in [
        ("float16", "holds float32"),  # says float16, holds float32
        ("bfloat16", r"bfloat16.*Upgrade relabel-store"),  # from a newer minor version
    ]:
        group["attributes"]["relabel"]["values_dtype"] = dtype
        group_path.write_text(json.dumps(group))
        write_manifest(out, build_manifest(out))  # consistent, so only the dtype is wrong
        with pytest.raises(FormatError, match=refusal):
            RelabelStore.open(out)


def test_show_draws_an_imported_map_without_an_image_size(tmp_path):
    tar = write_tar(tmp_path / "r.tar", serialized(official_files(n_per_class=1)))
    import_maps(tar, tmp_path / "s.zarr", workers=0, progress=False)
    out = tmp_path / "map.png"
    result = CliRunner().invoke(
        main, ["show", str(tmp_path / "s.zarr"), "n01440764_10026", "--box", "0,0,0.5,1",
               "-o", str(out)]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000


# --------------------------------------------------------------------------------------------
# the named store
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offline", [True, False])
def test_unpublished_name_fails_at_once_saying_how_to_make_it(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("RELABEL_STORE_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("RELABEL_STORE_CACHE", str(tmp_path / "cache"))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(StoreNotFoundError) as err:
        load_relabel("imagenet-relabel")
    assert time.monotonic() - started < 2.0  # no request is even tried
    message = str(err.value)
    assert "relabel-store import relabel_imagenet.tar -o imagenet-relabel.relabel.zarr" in message
    assert "relabel_imagenet.tar?dl=1" in message and "EfficientNet-L2" in message
    assert 'registry.register("imagenet-relabel", path=' in message
    assert str(tmp_path / "registry.json") in message
    result = CliRunner().invoke(main, ["info", "imagenet-tokenlabeling"])
    assert result.exit_code == 2 and "label_top5_train_nfnet" in result.output


def test_user_registry_points_a_name_at_a_local_mirror(tmp_path, monkeypatch):
    user_file = tmp_path / "registry.json"
    monkeypatch.setenv("RELABEL_STORE_REGISTRY", str(user_file))
    tar = write_tar(tmp_path / "relabel_imagenet.tar", serialized(official_files(n_per_class=1)))
    store = tmp_path / "mirror" / "imagenet-relabel.relabel.zarr"
    import_maps(tar, store, workers=0, progress=False)
    monkeypatch.chdir(tmp_path / "mirror")
    entry = registry.register("imagenet-relabel", path="imagenet-relabel.relabel.zarr")
    assert entry.path == str(store) and entry.location == str(store)  # made absolute
    monkeypatch.chdir(tmp_path)
    assert len(load_relabel("imagenet-relabel")) == 3
    info = CliRunner().invoke(main, ["info", "imagenet-relabel"])
    assert info.exit_code == 0 and "tf_efficientnet_l2_ns_475" in info.output
    registry.register("nfnet-mirror", url=store.as_uri())  # or any fsspec URL
    assert len(load_relabel("nfnet-mirror", cache_dir=tmp_path / "cache")) == 3
    assert registry.unregister("imagenet-relabel")
    with pytest.raises(StoreNotFoundError, match="not published yet"):
        load_relabel("imagenet-relabel")


def test_registry_file_entries_are_checked(tmp_path, monkeypatch):
    user_file = tmp_path / "registry.json"
    monkeypatch.setenv("RELABEL_STORE_REGISTRY", str(user_file))
    for entry, message in [
        ({"path": "relative/store.zarr"}, "absolute"),
        ({"path": "/data/s.zarr", "url": "s3://b/s.zarr"}, "exactly one of"),
        ({"description": "nothing"}, "exactly one of"),
        ({"path": "/data/s.zarr", "revision": "main"}, "Hub entries only"),
    ]:
        user_file.write_text(json.dumps({"registry_version": 1, "stores": {"x": entry}}))
        with pytest.raises(FormatError, match=message):
            registry.known()


# --------------------------------------------------------------------------------------------
# the options generate and import share
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["generate", "import"])
@pytest.mark.parametrize(
    ("option", "value"), [("--workers", "-1"), ("--shard-records", "0"), ("--on-error", "ignore")]
)
def test_shared_options_refuse_bad_values_alike(tmp_path, command, option, value):
    out = tmp_path / "s.relabel.zarr"
    result = CliRunner().invoke(main, [command, str(tmp_path), "-o", str(out), option, value])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_import_resume_behaves_like_generate(tmp_path):
    """--resume insists on a store; on a finished one a requeued job ends with exit 0."""
    tar = write_tar(tmp_path / "r.tar", serialized(official_files(n_per_class=1)))
    out = tmp_path / "s.relabel.zarr"
    args = ["import", str(tar), "-o", str(out), "--workers", "0"]
    missing = CliRunner().invoke(main, [*args, "--resume"])
    assert missing.exit_code == 2 and f"no store at {out} to resume" in missing.output
    both = CliRunner().invoke(main, [*args, "--resume", "--overwrite"])
    assert both.exit_code == 2 and "contradict" in both.output
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert "already complete: nothing to do" in again.output


def test_summaries_and_info_write_sizes_one_way(tmp_path):
    tar = write_tar(tmp_path / "r.tar", serialized(official_files(n_per_class=2)))
    out = tmp_path / "s.relabel.zarr"
    result = CliRunner().invoke(main, ["import", str(tar), "-o", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output
    store = load_relabel(out)
    total = store.manifest.total_bytes
    size = f"{format_count(total, 'B')} ({format_count(total / len(store), 'B')} per record)"
    assert f"size:     {size}" in result.output.splitlines()
    assert f"size:        {size}" in CliRunner().invoke(main, ["info", str(out)]).output
    time_line = next(line for line in result.output.splitlines() if line.startswith("time:"))
    assert re.fullmatch(r"time:     \d+(\.\d)?s for 6 maps \(\S+ maps/s\)", time_line)


def test_the_importer_does_not_load_the_generation_machinery():
    """import reads published maps: no annotator, no DataLoader pipeline, no timm model code."""
    code = (
        "import sys, relabel_store.write.importer\n"
        "print(sorted(m for m in ('relabel_store.write.generate', 'relabel_store.write.annotator', "
        "'relabel_store.write.inputs', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_maps_under_no_wnid_folder_are_imported_unlabelled_and_counted(tmp_path):
    files = official_files(n_per_class=1)
    members = serialized(files)
    members["n99999999/n99999999_1.pt"] = saved(next(iter(files.values())))
    tar = write_tar(tmp_path / "r.tar", members)
    out = tmp_path / "s.zarr"
    result = CliRunner().invoke(main, ["import", str(tar), "-o", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "1 map under no ImageNet-1k wnid folder: label -1" in result.output
    assert load_relabel(out)["n99999999_1"].label == -1


def test_import_with_images_adds_their_signatures_and_loaders_check_them(tmp_path):
    """The release has no images; given ImageNet's folder, import signs every record, and a
    loader over another copy of the photos (same names) is refused, while the real ones pass."""
    from PIL import Image

    from relabel_store.errors import ImageMismatchError
    from relabel_store.images import image_signature
    from relabel_store.loaders import RelabelStream
    from relabel_store.write.samples import SAMPLE_PHOTOS, sample_photo

    files = official_files(n_per_class=2)
    tar = write_tar(tmp_path / "relabel_imagenet.tar", serialized(files))
    images = tmp_path / "train"
    for i, name in enumerate(sorted(files)):
        path = images / Path(name).with_suffix(".JPEG")
        path.parent.mkdir(parents=True, exist_ok=True)
        sample_photo(SAMPLE_PHOTOS[i % len(SAMPLE_PHOTOS)]).save(path, quality=90)
    out = tmp_path / "imported.zarr"
    args = ["import", str(tar), "-o", str(out), "--workers", "0", "--images", str(images)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"signed {len(files)} records" in result.output
    assert verify_store(out).ok
    store = load_relabel(out)
    key = "n01440764_10026"
    with Image.open(images / "n01440764" / f"{key}.JPEG") as photo:
        rgb = photo.convert("RGB")
    assert (store.signatures[store.index_of(key)] == image_signature(rgb)).all()
    stream = RelabelStream(store)
    assert stream((key, rgb, -1))[1].shape == (1000,)
    import skimage.data  # another photo than any of the store's, of the same size

    other = Image.fromarray(skimage.data.camera()).convert("RGB").resize(rgb.size)
    with pytest.raises(ImageMismatchError, match="another copy or version"):
        RelabelStream(store, check_images="all")((key, other, -1))


# --------------------------------------------------------------------------------------------
# hostile tars: over-long member names, absurd headers
# --------------------------------------------------------------------------------------------


def test_an_over_long_member_name_is_listed_and_the_import_goes_on(tmp_path):
    files = official_files(n_per_class=2)
    members = serialized(files)
    long_stem = "n01440764_" + "x" * 1090  # a 1,100-byte stem: no key may be that wide
    members[f"n01440764/{long_stem}.pt"] = next(iter(members.values()))
    tar = write_tar(tmp_path / "relabel_imagenet.tar", members)
    out = tmp_path / "s.zarr"
    for _ in range(2):  # a rerun finds the store complete, never trips over the name
        result = CliRunner().invoke(
            main, ["import", str(tar), "-o", str(out), "--workers", "0", "-q"]
        )
        assert result.exit_code == 0, result.output
        assert "--key-column" not in result.output
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and "keys are at most 1024 UTF-8 bytes" in json.dumps(errors[0])
    check_store(load_relabel(out), files, exact=False)
    assert verify_store(out).ok


@pytest.mark.parametrize("gz", [False, True])
def test_a_header_declaring_a_petabyte_is_one_error_line(tmp_path, gz):
    members = serialized(official_files(n_per_class=1))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i, (name, data) in enumerate(members.items()):
            info = tarfile.TarInfo(f"{TOP}/{name}")
            info.size = len(data)
            if i == 1:  # the PAX header overrides the size: 10^15 bytes
                info.pax_headers = {"size": str(10**15)}
            tf.addfile(info, io.BytesIO(data))
    tar = tmp_path / ("r.tar.gz" if gz else "r.tar")
    tar.write_bytes(gzip.compress(raw.getvalue(), mtime=0) if gz else raw.getvalue())
    started = time.monotonic()
    result = CliRunner().invoke(
        main, ["import", str(tar), "-o", str(tmp_path / "s.zarr"), "--workers", "0", "-q"]
    )
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in result.output and "damaged or truncated" in lines[0]
    if not gz:
        assert "declares 1000000000000000 bytes, more than the" in lines[0]
    assert time.monotonic() - started < 30
