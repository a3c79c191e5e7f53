"""What importing relabel-store costs a fresh process: wall time and peak resident memory.

    python benchmarks/startup.py [--repeat 7]

Every DataLoader worker spawned (not forked), every JAX or HF job and every CLI call pays this.
Each line runs in a new interpreter, ``--repeat`` times, side by side in one run: the
interpreter alone, ``import relabel_store``, reading and pooling one record (the core install's
job), ``relabel-store --help``, and for scale ``import torch`` and ``import
relabel_store.loaders`` (which needs torch). Prints the median wall time and the median peak
RSS of each. Target: reading and pooling never import torch, so they cost a small fraction of
``import torch``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _synthetic import imagenet_like_keys, write_synthetic_store

READ_AND_POOL = """
import sys
from relabel_store import CropBox, load_relabel, pool
store = load_relabel(sys.argv[1])
record = store.get_row(0)
pool(record.indices, record.values, CropBox(0.1, 0.2, 0.7, 0.9), num_classes=1000)
assert "torch" not in sys.modules
"""
# What the relabel-store console script runs.
CLI_HELP = """
import sys
from relabel_store.cli.main import main
sys.argv = ["relabel-store", "--help"]
main()
"""


# Prepended to every case: report the process's own peak resident memory (VmHWM) on exit.
# (rusage of a child would count the parent's pages copied at fork.)
PEAK = """
import atexit, os
def _peak():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    os.write(2, f"peak-kb {kb}\\n".encode())
atexit.register(_peak)
"""


def measure(code: str, argv: list[str], repeat: int) -> tuple[float, float]:
    """Median wall seconds and median peak RSS (MB) of a fresh ``python -c code`` run."""
    walls, peaks = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", PEAK + code, *argv],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        walls.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(f"{code!r} failed:\n{result.stderr}")
        peaks.append(int(result.stderr.split("peak-kb ")[-1]) / 1024)
    return statistics.median(walls), statistics.median(peaks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.relabel.zarr"
        write_synthetic_store(store, imagenet_like_keys(64))
        cases = [
            ("python -c pass", "pass", []),
            ("import relabel_store", "import relabel_store", []),
            ("read + pool one record", READ_AND_POOL, [str(store)]),
            ("relabel-store --help", CLI_HELP, []),
            ("import torch", "import torch", []),
            ("import relabel_store.loaders", "import relabel_store.loaders", []),
        ]
        print(f"{'':32} {'wall (median)':>14} {'peak RSS':>10}")
        for name, code, argv in cases:
            wall, peak = measure(code, argv, args.repeat)
            print(f"{name:32} {wall * 1000:11.0f} ms {peak:7.0f} MB")


if __name__ == "__main__":
    main()
