"""`generate --slice I/N` on separate "nodes" and `merge`: the merged store is a single run's.

The nodes are separate processes writing to folders they do not share (and, for one slice, to
an S3-compatible server started here: moto's ThreadedMotoServer on 127.0.0.1, port 0).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _stores import data_files
from click.testing import CliRunner

from relabel_store import load_relabel, verify_store
from relabel_store.cli.main import main
from relabel_store.errors import InputError
from relabel_store.write import slices
from relabel_store.write.samples import write_sample_photos

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
FAST = [
    "--model", "tf_efficientnet_lite0", "--checkpoint", "efficientnet-lite0",
    "--input-size", "224", "--workers", "0", "--batch-size", "2", "--shard-records", "2",
]  # fmt: skip
#: The same threads in every process, so that every node computes the same logits.
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def photos(root: Path) -> Path:
    """Six real photos in class folders, plus a file that is no image (it goes to errors.jsonl)."""
    write_sample_photos(root, class_folders=True)
    (next(root.rglob("*.jpg")).parent / "notes.jpg").write_text("not an image")
    return root


def node(*args: str, env: dict[str, str] | None = None) -> None:
    """``relabel-store ARGS`` in a process of its own: one "node"."""
    result = subprocess.run(
        [str(BIN / "relabel-store"), *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, **ENV, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A single-process store and the two slices of the same run, each made by its own
    process in its own folder."""
    root = tmp_path_factory.mktemp("slices")
    data = photos(root / "photos")
    node("generate", str(data), "-o", str(root / "single.zarr"), *FAST, "-q")
    for i in range(2):
        node("generate", str(data), "-o", str(root / f"node{i}" / "part.zarr"), *FAST,
             "--slice", f"{i}/2", "-q")  # fmt: skip
    return root


def test_two_nodes_then_merge_equal_a_single_run(runs, tmp_path):
    parts = [str(runs / f"node{i}" / "part.zarr") for i in range(2)]
    # a slice holds only its share of the 4 shards (7 inputs, 2 per shard)
    for i, part in enumerate(parts):
        done = sorted(p.name for p in Path(part, "_progress").glob("shard-*.json"))
        assert done == [f"shard-{s:06d}.json" for s in range(i, 4, 2)]
        assert not Path(part, "manifest.json").exists()
    merged = tmp_path / "merged.zarr"
    result = run_cli("merge", *parts[::-1], "-o", str(merged))
    assert result.exit_code == 0, result.output
    assert "6 (1 skipped" in result.output and "2 merged" in result.output
    assert data_files(merged) == data_files(runs / "single.zarr")
    assert verify_store(merged).ok
    single, store = load_relabel(runs / "single.zarr"), load_relabel(merged)
    assert store.metadata.annotator == single.metadata.annotator
    assert [json.loads(x)["key"] for x in (merged / "errors.jsonl").read_text().splitlines()] == [
        "notes"
    ]
    again = run_cli("merge", *parts, "-o", str(merged))
    assert again.exit_code == 0 and "already complete" in again.output


def test_an_interrupted_merge_resumes(runs, tmp_path, monkeypatch):
    parts = [runs / f"node{i}" / "part.zarr" for i in range(2)]
    merged = tmp_path / "merged.zarr"
    copy, copied = slices._copy_shard, []

    def fail_third(part, shard, writer, layouts):
        if len(copied) == 2:
            raise KeyboardInterrupt
        copy(part, shard, writer, layouts)
        copied.append(shard)

    monkeypatch.setattr(slices, "_copy_shard", fail_third)
    with pytest.raises(KeyboardInterrupt):
        slices.merge(parts, merged, progress=False)
    assert not (merged / "manifest.json").exists()
    monkeypatch.setattr(slices, "_copy_shard", copy)
    result = slices.merge(parts, merged, progress=False)
    assert result.shards_copied == 2  # the other two were kept
    assert data_files(merged) == data_files(runs / "single.zarr")


def test_slices_that_disagree_are_refused_with_every_difference(runs, tmp_path):
    part0, part1 = (runs / f"node{i}" / "part.zarr" for i in range(2))

    def refused(*parts: Path) -> str:
        with pytest.raises(InputError) as exc:
            slices.merge(parts, tmp_path / "out.zarr", progress=False)
        return str(exc.value)

    assert "1 of 2 slices are missing: 1/2" in refused(part0)
    assert "slice 0/2 is given 2 times" in refused(part0, part0)
    # an unfinished slice, and one holding a shard of another slice's share
    bad = tmp_path / "bad.zarr"
    shutil.copytree(part1, bad)
    (bad / "_progress" / "shard-000003.json").unlink()
    shutil.copy(part0 / "_progress" / "shard-000000.json", bad / "_progress")
    message = refused(part0, bad)
    assert "not finished: 1 of 2 shards missing (first: [3])" in message
    assert "outside its share (first: [0]): slices overlap" in message
    # another annotator setting (grid), listed by name; nothing was written
    other = tmp_path / "other.zarr"
    result = run_cli("generate", str(runs / "photos"), "-o", str(other), *FAST, "--grid", "7",
                     "--slice", "1/2", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "grid: [15, 15] -> [7, 7]" in refused(part0, other)
    assert not (tmp_path / "out.zarr").exists()
    cli = run_cli("merge", str(part0), str(other), "-o", str(tmp_path / "out.zarr"))
    assert cli.exit_code == 2 and "grid" in cli.output
    # a finalized store is not a slice; a slice is refused by load_relabel as incomplete
    assert "not a slice" in refused(runs / "single.zarr")
    with pytest.raises(Exception, match="incomplete"):
        load_relabel(part0)


def test_a_rerun_slice_resumes_and_a_different_slice_is_refused(runs, tmp_path):
    part = tmp_path / "part.zarr"
    shutil.copytree(runs / "node1" / "part.zarr", part)
    (part / "_progress" / "shard-000003.json").unlink()  # as if killed before the last shard
    args = ["generate", str(runs / "photos"), "-o", str(part), *FAST]
    result = run_cli(*args, "--slice", "1/2")
    assert result.exit_code == 0, result.output
    assert "slice:     1/2" in result.output and "complete" in result.output
    assert (part / "_progress" / "shard-000003.json").exists()
    result = run_cli(*args, "--slice", "1/2")
    assert "already complete: nothing to do" in result.output
    wrong = run_cli(*args, "--slice", "0/2")
    assert wrong.exit_code == 2 and "holds slice 1/2, not 0/2" in wrong.output
    assert run_cli(*args, "--slice", "2/2").exit_code == 2
    url = run_cli("generate", str(runs / "photos"), "-o", "s3://bucket/store", *FAST)
    assert url.exit_code == 2 and "only a slice" in url.output


# -- object storage -------------------------------------------------------------------------------


@pytest.fixture
def s3_server(monkeypatch):
    """An S3-compatible server on 127.0.0.1 (moto's ThreadedMotoServer, port 0), with a bucket;
    the environment points botocore (s3fs) at it, as a user's AWS_ENDPOINT_URL would."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("slices")
    yield env
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_a_slice_written_to_object_storage_merges_into_a_single_runs_store(
    runs, tmp_path, s3_server
):
    import s3fs

    url = "s3://slices/imagenet/part-1"
    staging = tmp_path / "staging"
    node("generate", str(runs / "photos"), "-o", url, *FAST, "--slice", "1/2",
         "--staging", str(staging), "-q", env=s3_server)  # fmt: skip
    fs = s3fs.S3FileSystem()
    held = sorted(p.split("part-1/", 1)[1] for p in fs.find(url))
    assert held == [
        "_progress/shard-000001.json", "_progress/shard-000003.json", "_progress/slice.json",
        "indices/c.1.0.0.0", "indices/c.3.0.0.0", "indices/zarr.json",
        "values/c.1.0.0.0", "values/c.3.0.0.0", "values/zarr.json", "zarr.json",
    ]  # fmt: skip
    assert not list(staging.glob("*/c.*"))  # uploaded shards leave the staging folder
    merged = tmp_path / "merged.zarr"
    result = run_cli("merge", str(runs / "node0" / "part.zarr"), url, "-o", str(merged))
    assert result.exit_code == 0, result.output
    assert data_files(merged) == data_files(runs / "single.zarr")
    # a rerun in a fresh staging folder resumes from what the bucket holds: nothing to do
    fs.rm(f"{url}/_progress/shard-000003.json")
    rerun = run_cli("generate", str(runs / "photos"), "-o", url, *FAST, "--slice", "1/2",
                    "--staging", str(tmp_path / "fresh"))  # fmt: skip
    assert rerun.exit_code == 0, rerun.output
    assert fs.exists(f"{url}/_progress/shard-000003.json")
    assert sorted(p.name for p in (tmp_path / "fresh" / "_progress").glob("shard-*")) == [
        "shard-000001.json",
        "shard-000003.json",
    ]
    again = tmp_path / "again.zarr"
    assert run_cli("merge", str(runs / "node0" / "part.zarr"), url, "-o", str(again)).exit_code == 0
    assert data_files(again) == data_files(runs / "single.zarr")
    assert np.array_equal(load_relabel(again).keys, load_relabel(merged).keys)
