"""Fault injection: damaged, hostile and half-written stores, and `generate` under kills and races.

Every test holds relabel-store to two promises. No read returns a wrong number: each record reads
back exactly as it was written, or raises. Nothing outside the store is touched: the symlinks
planted here point at canaries outside the store, watched with inotify (``_watch.py``), and a
test fails if any of them is opened. Faults of remote stores live in test_remote_faults.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from _stores import Written, data_files, described_annotator, write_store
from _watch import OpenWatch
from click.testing import CliRunner

from relabel_store import (
    CorruptDataError,
    FormatError,
    StoreMetadata,
    StoreWriter,
    UnsafePathError,
    load_relabel,
    verify_store,
)
from relabel_store.cli.main import main
from relabel_store.errors import (
    ConfigurationError,
    InputError,
    RelabelStoreError,
    StoreLockedError,
)
from relabel_store.format.manifest import build_manifest, write_manifest
from relabel_store.write.samples import write_sample_photos

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Written:
    path = tmp_path_factory.mktemp("pristine") / "s.zarr"
    return write_store(path, 40, shard_records=16, failed=frozenset({5}))


@pytest.fixture
def written(pristine, tmp_path) -> Written:
    """A finalized store of 40 records (one failed) in 3 shards, this test's own copy."""
    path = tmp_path / "s.zarr"
    shutil.copytree(pristine.path, path)
    return dataclasses.replace(pristine, path=path)


def read_all(path: Path, w: Written) -> tuple[int, list[CorruptDataError]]:
    """Read every record one by one and as one batch. Returns how many read back exactly, and
    the errors of those refused; fails the test on any record that differs from what was
    written."""
    store = load_relabel(path)
    exact, refused = 0, []
    for row, key in enumerate(w.keys):
        if key in w.failed:
            assert key not in store
            continue
        try:
            rec = store.get(key)
        except CorruptDataError as exc:
            refused.append(exc)
            continue
        np.testing.assert_array_equal(rec.indices, w.indices[row])
        np.testing.assert_array_equal(rec.values, w.values[row])
        assert (rec.label, rec.size) == (w.labels[row], tuple(w.sizes[row]))
        exact += 1
    keys = [k for k in w.keys if k not in w.failed]
    try:
        batch = store.get_many(keys)
    except CorruptDataError:
        assert refused, "the batch was refused but every single record read"
    else:
        assert not refused, "single records were refused but the batch read"
        rows = [w.keys.index(k) for k in keys]
        np.testing.assert_array_equal(batch.indices, w.indices[rows])
        np.testing.assert_array_equal(batch.values, w.values[rows])
    return exact, refused


def reseal(path: Path) -> None:
    """Rewrite the manifest over the store's current files, as a writer that produced these
    exact files would have: the store is then consistent with its own manifest."""
    write_manifest(path, build_manifest(path))


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


# -- local reads: a finalized store is exactly its manifest ---------------------------------------


@pytest.mark.parametrize("array", ["indices", "values"])
@pytest.mark.parametrize("fault", ["deleted", "renamed", "truncated"])
def test_a_missing_or_cut_shard_is_corruption_not_zeros(written, array, fault):
    shard = written.path / array / "c.1.0.0.0"
    if fault == "deleted":
        shard.unlink()
    elif fault == "renamed":
        shard.rename(shard.with_name("c.1.0.0.0.orig"))
    else:
        shard.write_bytes(shard.read_bytes()[:-100])
    with OpenWatch(*written.path.glob(f"{array}/c.1.0.0.0*")) as watch:
        exact, refused = read_all(written.path, written)
        assert not (fault == "renamed" and watch.opened()), "a file the manifest omits was read"
    assert exact == 39 - 16 and len(refused) == 16  # shard 1 holds rows 16..31, none failed
    message = str(refused[0])
    assert f"{array}/c.1.0.0.0" in message and "relabel-store verify" in message
    assert ("missing" if fault != "truncated" else "the manifest says") in message


@pytest.mark.parametrize("chunk", ["keys/c.0.0", "rows/c.0", "labels/c.0", "sizes/c.0.0"])
def test_a_missing_key_index_chunk_refuses_the_store(written, chunk):
    (written.path / chunk).unlink()
    with pytest.raises(CorruptDataError, match=f"{chunk}: the manifest lists this file"):
        load_relabel(written.path)


def test_files_zarr_left_out_are_fill_values_when_the_manifest_agrees(tmp_path):
    # A shard whose images all failed holds only fill values, and a chunk of labels that are
    # all 0 equals its fill value: zarr writes neither file, and the manifest does not list them.
    meta = StoreMetadata(grid=(2, 2), k=2, num_classes=10, rows=6, shard_records=2)
    rng = np.random.default_rng(0)
    idx = np.stack([rng.permutation(10)[:2] for _ in range(24)]).reshape(6, 2, 2, 2)
    vals = np.sort(rng.normal(size=(6, 2, 2, 2)), axis=-1)[..., ::-1].astype(np.float16)
    with StoreWriter.open(tmp_path / "s.zarr", meta) as w:
        for s in range(3):
            rows = w.shard_rows(s)
            w.write_shard(
                s,
                keys=[f"k{r}" for r in rows],
                labels=[0, 0],
                sizes=[(5, 7), (5, 7)],
                indices=idx[rows.start : rows.stop],
                values=vals[rows.start : rows.stop],
                errors=[{"reason": "broken"}] * 2 if s == 1 else None,
            )
        w.finalize()
    files = {e.path for e in load_relabel(tmp_path / "s.zarr").manifest.entries}
    assert "indices/c.1.0.0.0" not in files and "labels/c.0" not in files
    store = load_relabel(tmp_path / "s.zarr")
    assert [k.decode() for k in store.keys] == ["k0", "k1", "k4", "k5"]
    for key, row in (("k0", 0), ("k5", 5)):
        np.testing.assert_array_equal(store.get(key).indices, idx[row])
        assert store.get(key).label == 0


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        ("indices/zarr.json", '"separator": "."', '"separator": "/"'),
        ("values/zarr.json", '"little"', '"lyttle"'),
        ("zarr.json", '"class 3"', '"class three"'),
        ("keys/zarr.json", '"shape": [\n    39', '"shape": [\n    38'),
    ],
)
def test_metadata_that_differs_from_the_manifest_is_refused_at_open(written, file, old, new):
    path = written.path / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(CorruptDataError, match=f"{file}: its content differs from the manifest"):
        load_relabel(written.path)


def _endian(array: dict, value: str) -> None:
    array["codecs"][0]["configuration"]["codecs"][0]["configuration"]["endian"] = value


MISREADABLE = {
    "unknown endian": ("values", lambda a: _endian(a, "lyttle"), "unknown endian 'lyttle'"),
    "big-endian shard index": (
        "indices",
        lambda a: a["codecs"][0]["configuration"]["index_codecs"][0].update(
            configuration={"endian": "big"}
        ),
        "shard index",
    ),
    "slash separator": (
        "indices",
        lambda a: a["chunk_key_encoding"].update(configuration={"separator": "/"}),
        "separator",
    ),
    "storage transformer": (
        "values",
        lambda a: a.update(storage_transformers=[{"name": "x"}]),
        "storage transformers",
    ),
    "required extension": ("rows", lambda a: a.update(x_ext={"a": 1}), "does not understand"),
    "text fill value": ("labels", lambda a: a.update(fill_value="NaN"), "fill_value"),
    "two compressors": (
        "keys",
        lambda a: a["codecs"].insert(1, {"name": "gzip", "configuration": {"level": 1}}),
        "at most one",
    ),
    "float64 values": ("values", lambda a: a.update(data_type="float64"), "data_type"),
    "other chunk shape": (
        "values",
        lambda a: a["chunk_grid"]["configuration"].update(chunk_shape=[8, 15, 15, 5]),
        "shards",
    ),
}


@pytest.mark.parametrize("case", sorted(MISREADABLE))
def test_layouts_the_reader_could_misread_are_refused(written, case):
    # The manifest is resealed: only the reader's own checks stand between it and a misread.
    array, edit, message = MISREADABLE[case]
    edit_json(written.path / array / "zarr.json", edit)
    reseal(written.path)
    with pytest.raises(FormatError, match=message):
        load_relabel(written.path)


def _claim(path: Path, rows: int, chunk: int | None = None) -> None:
    """Make a store claim ``rows`` records in its metadata and all its arrays."""

    def metadata(group):
        group["attributes"]["relabel"].update(rows=rows, record_count=rows)

    edit_json(path / "zarr.json", metadata)

    def shape(a, index_array: bool) -> None:
        a["shape"][0] = rows
        if chunk is not None and index_array:
            a["chunk_grid"]["configuration"]["chunk_shape"][0] = chunk

    for name in ("indices", "values", "keys", "rows", "labels", "sizes"):
        edit_json(
            path / name / "zarr.json",
            lambda a, n=name: shape(a, n in ("keys", "rows", "labels", "sizes")),
        )
    reseal(path)


@pytest.mark.parametrize(
    ("claim", "error", "message"),
    [
        ("keys only", FormatError, r"shape \(1000000000000, 9\), but its metadata implies"),
        (
            "every array",
            CorruptDataError,
            "claims 1000000000000 records, but the manifest lists 3 shard",
        ),
        ("one huge chunk", CorruptDataError, "claims 1000000000000 records"),
        ("huge shards", FormatError, "shard_records must be an integer in 1..1048576"),
    ],
)
def test_a_store_claiming_huge_sizes_fails_before_allocating(written, claim, error, message):
    path = written.path
    if claim == "keys only":
        edit_json(path / "keys" / "zarr.json", lambda a: a["shape"].__setitem__(0, 10**12))
        reseal(path)
    elif claim == "every array":
        _claim(path, 10**12)
    elif claim == "one huge chunk":
        _claim(path, 10**12, chunk=10**12)
    else:

        def shards(a):
            a["chunk_grid"]["configuration"]["chunk_shape"][0] = 10**9

        edit_json(
            path / "zarr.json", lambda g: g["attributes"]["relabel"].update(shard_records=10**9)
        )
        edit_json(path / "indices" / "zarr.json", shards)
        edit_json(path / "values" / "zarr.json", shards)
        reseal(path)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(error, match=message):
            load_relabel(path).get_row(0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated for a claim"
    assert time.perf_counter() - started < 10


# -- nothing outside the store is opened ----------------------------------------------------------

LINKED = ["errors.jsonl", "values/c.0.0.0.0", "keys/c.0.0", "zarr.json", "manifest.json", "indices"]


@pytest.mark.parametrize("target", LINKED)
def test_a_symlink_in_a_store_is_never_followed(written, tmp_path, target):
    # The link points at the store's own file, moved outside: following it would even pass the
    # manifest's checks. It must be refused without a single open of the canary.
    outside = tmp_path / "outside" / target
    outside.parent.mkdir(parents=True)
    (written.path / target).rename(outside)
    (written.path / target).symlink_to(outside)
    with OpenWatch(outside) as watch:
        if target in ("zarr.json", "manifest.json"):
            with pytest.raises(UnsafePathError, match=f"{target}: it is a symbolic link"):
                verify_store(written.path)
        else:
            report = verify_store(written.path)
            assert not report.ok and report.not_regular == [(target, "symbolic link")]
            assert f"not a regular file: {target} (symbolic link; not followed)" in report.lines()
        if target == "errors.jsonl":  # never read by the reader: records read back exactly
            assert read_all(written.path, written) == (39, [])
        else:
            with pytest.raises(UnsafePathError, match="symbolic link"):
                read_all(written.path, written)
        with pytest.raises(UnsafePathError, match="symbolic link"):
            build_manifest(written.path)
        result = CliRunner().invoke(main, ["verify", str(written.path)])
        assert result.exit_code in (1, 2) and "symbolic link" in result.output
        assert not watch.opened(), f"{outside} was opened through the store's symlink"


def test_a_fifo_in_a_store_is_refused_without_blocking(written):
    for name in ("errors.jsonl", "values/c.0.0.0.0"):
        (written.path / name).unlink()
        os.mkfifo(written.path / name)
    outcome: list[object] = []

    def check() -> None:
        outcome.append(verify_store(written.path).not_regular)
        store = load_relabel(written.path)
        try:
            store.get_rows(range(len(store)))
        except UnsafePathError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=check, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():  # a FIFO was opened for reading: unblock it, then fail
        for name in ("errors.jsonl", "values/c.0.0.0.0"):
            with open(os.open(written.path / name, os.O_WRONLY | os.O_NONBLOCK), "wb"):
                pass
        pytest.fail("opening a FIFO in the store blocked")
    assert outcome[0] == [("errors.jsonl", "FIFO"), ("values/c.0.0.0.0", "FIFO")]
    assert isinstance(outcome[1], UnsafePathError) and "FIFO" in str(outcome[1])


def test_a_writer_never_writes_or_reads_through_a_symlink(tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("outside")
    path = tmp_path / "s.zarr"
    write_store(path, 10, shard_records=4, finalize=False, shards=[0])
    meta = StoreMetadata.from_json(
        json.loads((path / "zarr.json").read_text())["attributes"]["relabel"]
    )
    with OpenWatch(canary) as watch:
        (path / "indices" / "c.1.0.0.0").symlink_to(canary)  # where the next shard goes
        with pytest.raises(UnsafePathError, match=r"indices/c\.1\.0\.0\.0: it is a symbolic link"):
            StoreWriter.open(path, meta)  # refused before anything is written
        (path / "indices" / "c.1.0.0.0").unlink()
        with StoreWriter.open(path, meta) as writer:
            write_store(path, 10, shard_records=4, finalize=False, shards=[1, 2], writer=writer)
            (path / "notes.json").symlink_to(canary)  # planted while the writer runs
            with pytest.raises(UnsafePathError, match=r"notes\.json: it is a symbolic link"):
                writer.finalize()
        assert not watch.opened() and canary.read_text() == "outside"
    assert not (path / "manifest.json").exists()


# -- generate: one writer at a time, re-runs, empty runs, settings ------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> list[str]:
    """CLI options for a real (randomly initialised) timm model that annotates in milliseconds."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=10)
    path = tmp_path_factory.mktemp("model") / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return ["--model", "resnet10t", "--checkpoint", str(path), "--input-size", "32",
            "--grid", "2", "-k", "2", "--workers", "0", "--batch-size", "2",
            "--shard-records", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_sample_photos(root, class_folders=True)  # 6 real photos: 3 shards of 2
    return root


def generate(*args: str):
    """``relabel-store generate`` in this process; stdout and stderr kept apart."""
    return CliRunner().invoke(main, ["generate", *args])


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


WRAPPER = """
import os, signal, sys, time
from pathlib import Path
from relabel_store.format._lock import WriteLock
from relabel_store.write.writer import StoreWriter

write_shard = StoreWriter.write_shard

def write_then_wait(self, shard, **kw):  # hold the lock, one shard written, until killed
    write_shard(self, shard, **kw)
    Path(os.environ["PAUSED"]).write_text("paused")
    time.sleep(600)

def die(self):  # kill -9 between writing the manifest and removing _progress/
    os.kill(os.getpid(), signal.SIGKILL)

if os.environ["FAULT"] == "pause":
    StoreWriter.write_shard = write_then_wait
else:
    WriteLock.release_and_remove_progress = die
from relabel_store.cli.main import main
sys.argv = ["relabel-store", *sys.argv[1:]]
main()
"""


def start_generate(tmp_path: Path, fault: str, *args: str) -> subprocess.Popen:
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    env = {**os.environ, "FAULT": fault, "PAUSED": str(tmp_path / "paused")}
    return subprocess.Popen([sys.executable, str(wrapper), "generate", *args], env=env)


@pytest.mark.slow
def test_a_second_writer_is_refused_at_once_and_a_kill_9_frees_the_store(
    tmp_path, photos, tiny_model
):
    out = tmp_path / "s.zarr"
    args = [str(photos), "-o", str(out), *tiny_model, "-q"]
    first = start_generate(tmp_path, "pause", *args)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "paused").exists():
            assert first.poll() is None and time.monotonic() < deadline, "first run never wrote"
            time.sleep(0.1)
        before = sorted((out / "_progress").iterdir())
        line = one_error_line(generate(*args))
        assert f"pid {first.pid} on {socket.gethostname()}, since " in line
        assert "being written by another process" in line
        assert sorted((out / "_progress").iterdir()) == before  # the refused run wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    resumed = generate(*args)  # the kernel dropped the dead holder's lock
    assert resumed.exit_code == 0, resumed.output
    reference = generate(str(photos), "-o", str(tmp_path / "ref.zarr"), *tiny_model, "-q")
    assert reference.exit_code == 0, reference.output
    assert data_files(out) == data_files(tmp_path / "ref.zarr")
    assert verify_store(out).ok and not (out / "_progress").exists()


@pytest.mark.slow
def test_rerun_after_a_kill_9_between_manifest_and_cleanup_reports_the_store_complete(
    tmp_path, photos, tiny_model
):
    out = tmp_path / "s.zarr"
    args = [str(photos), "-o", str(out), *tiny_model]
    killed = start_generate(tmp_path, "die", *args, "-q")
    assert killed.wait(timeout=600) == -signal.SIGKILL
    assert (out / "manifest.json").exists() and (out / "_progress").exists()
    again = generate(*args, "--resume")  # what a requeued job script runs
    assert again.exit_code == 0, again.output
    assert "(already complete: nothing to do)" in again.stdout and "records:  6" in again.stdout
    assert not (out / "_progress").exists() and verify_store(out).ok
    assert len(load_relabel(out)) == 6
    grid = args.index("--grid") + 1
    other = one_error_line(generate(*args[:grid], "3", *args[grid + 1 :]))
    assert "already holds a finalized store made with different settings" in other
    assert "grid: [2, 2] -> [3, 3]" in other and "--overwrite" in other


@pytest.mark.slow
def test_a_run_that_annotates_nothing_is_an_error(tmp_path, tiny_model):
    broken = tmp_path / "broken" / "cats"
    broken.mkdir(parents=True)
    for name in ("a", "b", "c"):
        (broken / f"{name}.jpg").write_text("not an image")
    out = tmp_path / "s.zarr"
    for _ in range(2):  # a rerun is refused the same way: the store never looks complete
        line = one_error_line(generate(str(broken.parent), "-o", str(out), *tiny_model, "-q"))
        assert "none of the 3 images could be annotated (first: a: " in line
        assert not (out / "manifest.json").exists()


def test_a_settings_mismatch_names_each_differing_field(tmp_path):
    long = {"model": "x" * 300, "dense_head": "y" * 2000}  # long values are cut in the message
    annotator = {**described_annotator(), **long}
    classes = tuple(f"class {i}" for i in range(1000))
    started = StoreMetadata(grid=(15, 15), k=5, num_classes=1000, rows=20, shard_records=8,
                            class_names=classes, annotator=annotator)  # fmt: skip
    write_store(tmp_path / "s.zarr", 20, shard_records=8, shards=[0], finalize=False)
    meta_path = tmp_path / "s.zarr" / "zarr.json"
    edit_json(meta_path, lambda g: g["attributes"].update(relabel=started.to_json()))
    renamed = (*classes[:3], "a cat", *classes[4:])
    other = StoreMetadata(grid=(7, 7), k=5, num_classes=1000, rows=20, shard_records=8,
                          class_names=renamed, annotator={**described_annotator(grid=(7, 7)), **long})  # fmt: skip
    with pytest.raises(InputError) as exc:
        StoreWriter.open(tmp_path / "s.zarr", other)
    message = str(exc.value)
    assert "annotator.grid: [15, 15] -> [7, 7]; " in message
    assert "grid: [15, 15] -> [7, 7]; " in message
    assert "class_names: 1 of 1000 entries differ, first [3]: 'class 3' -> 'a cat'" in message
    assert len(message) < 600 and "yyyy" not in message


def test_cli_errors_are_one_line(written, tmp_path, monkeypatch):
    from PIL import Image

    run = CliRunner().invoke
    store = str(written.path)
    key = sorted(k for k in written.keys if k not in written.failed)[0]
    png = str(tmp_path / "map.png")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (7, 5)).save(photo)
    line = one_error_line(run(main, ["show", store, key, "--image", str(photo), "-o", png]))
    assert "the image is 7x5 but record" in line and "pass the original image" in line

    def refused(*args, **kwargs):  # as a read-only folder would (root, running this, may write)
        raise PermissionError(13, "Permission denied", png)

    with monkeypatch.context() as m:  # the OS's errors are one line too, with what to do
        m.setattr("relabel_store.report.show.render_label_map", refused)
        line = one_error_line(run(main, ["show", store, key, "-o", png]))
    assert "Permission denied" in line and "Choose a location you may write to" in line
    (written.path / "indices" / "c.0.0.0.0").unlink()
    line = one_error_line(run(main, ["show", store, written.keys[0], "-o", png]))  # row 0
    assert "indices/c.0.0.0.0: the manifest lists this shard but it is missing" in line
    (written.path / "manifest.json").rename(tmp_path / "manifest.json")
    (written.path / "manifest.json").symlink_to(tmp_path / "manifest.json")
    for command in ("info", "verify"):
        assert "manifest.json: it is a symbolic link" in one_error_line(run(main, [command, store]))


def test_library_errors_are_project_classes_and_natural_builtins(tmp_path):
    w = write_store(tmp_path / "s.zarr", 8, shard_records=4, finalize=False, shards=[])
    meta = StoreMetadata.from_json(
        json.loads((w.path / "zarr.json").read_text())["attributes"]["relabel"]
    )
    with StoreWriter.open(w.path, meta) as writer:
        with pytest.raises(ConfigurationError) as exc:
            writer.write_shard(9, keys=[], labels=[], sizes=[], indices=[], values=[])
        assert isinstance(exc.value, ValueError)
        with pytest.raises(StoreLockedError) as locked:
            StoreWriter.open(w.path, meta)
        assert isinstance(locked.value, RuntimeError) and isinstance(
            locked.value, RelabelStoreError
        )
        assert f"pid {os.getpid()}" in str(locked.value)
    StoreWriter.open(w.path, meta).close()  # closed: the lock is free again
