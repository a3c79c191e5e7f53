"""A CLI for clusters: steady progress lines when stderr is not a terminal (a SLURM log), a bar
on a terminal, and ``-h`` for help. ``RELABEL_STORE_PROGRESS_INTERVAL=0`` writes a line on every
update, so these runs stay small and fast."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from _installed import clean_env
from _stores import write_store
from click.testing import CliRunner

from relabel_store._progress import INTERVAL_VARIABLE, Progress
from relabel_store.cli.main import main
from relabel_store.write.samples import write_sample_photos

SIZE = r"[\d.]+ [kMG]?B"
BYTES_LINE = rf": {SIZE} of {SIZE} \([\d.]+%\), {SIZE}/s"


def lines_of(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_push_and_pull_write_steady_lines_in_a_log(tmp_path, monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    store = write_store(tmp_path / "s.relabel.zarr", n=40, shard_records=8).path
    remote = (tmp_path / "remote").as_uri()
    cli = CliRunner()

    pushed = cli.invoke(main, ["push", str(store), remote, "--batch-files", "2"])
    assert pushed.exit_code == 0, pushed.output
    lines = lines_of(pushed.stderr, "pushing to ")
    files = len([p for p in store.rglob("*") if p.is_file()]) - 1  # the manifest goes apart
    assert len(lines) == (files + 1) // 2 + 1  # one per batch, and the last one
    assert all(re.search(BYTES_LINE, line) for line in lines), lines
    assert ", ETA " in lines[0] and lines[-1].endswith(tuple("0123456789s"))
    assert "(100.0%)" in lines[-1] and ", done in " in lines[-1]
    assert "\r" not in pushed.stderr  # no bar in a log
    assert "batch 1/" in pushed.stderr  # the per-batch messages stay

    pulled = cli.invoke(main, ["pull", remote, "--to", str(tmp_path / "copy")])
    assert pulled.exit_code == 0, pulled.output
    lines = lines_of(pulled.stderr, "pulling ")
    assert len(lines) == files + 1  # one per file, and the last one
    assert all(re.search(BYTES_LINE, line) for line in lines), lines
    assert "(100.0%)" in lines[-1] and ", done in " in lines[-1]

    quiet = cli.invoke(main, ["pull", "-q", remote, "--to", str(tmp_path / "copy2")])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_lines_come_at_the_interval_not_on_every_update(monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "3600")
    log = io.StringIO()
    with Progress(100, desc="annotating", unit="images", stream=log) as bar:
        for _ in range(100):
            bar.update()
    assert log.getvalue().splitlines() == [
        line for line in log.getvalue().splitlines() if ", done in " in line
    ]
    assert log.getvalue().startswith("annotating: 100 of 100 images (100.0%), ")

    failed = io.StringIO()
    with pytest.raises(OSError), Progress(10, desc="pushing", stream=failed) as bar:
        bar.update(4)
        raise OSError("disk full")
    assert re.fullmatch(
        r"pushing: 4 of 10 records \(40.0%\), .*, stopped after \S+\n", failed.getvalue()
    )


def test_a_bad_interval_is_refused_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "soon")
    store = write_store(tmp_path / "s.relabel.zarr", n=8).path
    result = CliRunner().invoke(main, ["push", str(store), (tmp_path / "r").as_uri()])
    assert result.exit_code == 2
    assert f"{INTERVAL_VARIABLE}='soon'" in result.stderr and "unset it" in result.stderr


def test_push_and_pull_draw_a_bar_on_a_terminal(tmp_path):
    """The console script with its stderr on a pseudo-terminal, as a person runs it."""
    store = write_store(tmp_path / "s.relabel.zarr", n=40, shard_records=8).path
    remote = (tmp_path / "remote").as_uri()
    script = Path(sys.executable).parent / "relabel-store"
    for args in (["push", str(store), remote], ["pull", remote, "--to", str(tmp_path / "c")]):
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        try:
            result = subprocess.run(
                [str(script), *args], stderr=follower, stdout=subprocess.PIPE, text=True,
                env={**clean_env(), INTERVAL_VARIABLE: "0"}, timeout=120,
            )  # fmt: skip
            os.close(follower)
            shown = _drain(leader)
        finally:
            os.close(leader)
        assert result.returncode == 0, shown
        assert "100%|" in shown and "\r" in shown, shown  # tqdm's bar, redrawn in place
        assert not re.search(BYTES_LINE, shown), shown  # and no log lines


def _drain(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other end is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_generate_writes_steady_lines_in_a_log(tmp_path, monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    photos = tmp_path / "photos"
    write_sample_photos(photos, class_folders=True)
    result = CliRunner().invoke(
        main,
        ["generate", str(photos), "-o", str(tmp_path / "s.zarr"), "--model",
         "tf_efficientnet_lite0", "--checkpoint", "efficientnet-lite0", "--input-size", "224",
         "--workers", "0", "--batch-size", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stderr, "annotating: ")
    assert [line.split(" (")[0] for line in lines] == [
        "annotating: 2 of 6 images",
        "annotating: 4 of 6 images",
        "annotating: 6 of 6 images",
        "annotating: 6 of 6 images",
    ]
    assert re.search(r"images/s, ETA \S+$", lines[0]) and ", done in " in lines[-1]


def test_every_command_takes_h_for_help():
    cli = CliRunner()
    top = cli.invoke(main, ["-h"])
    assert top.exit_code == 0 and "Usage: main [OPTIONS] COMMAND" in top.output
    for name in main.commands:
        result = cli.invoke(main, [name, "-h"])
        assert result.exit_code == 0, (name, result.output)
        assert result.output.startswith(f"Usage: main {name} ") and "-h, --help" in result.output
