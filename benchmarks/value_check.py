"""What the reader's value check (class ids in range, finite logits) costs per record.

Reads every record of a synthetic store one by one (``get_row``) and in batches of 256
(``get_rows``, what the loaders use), with the check on and off, alternating in one run so the
ratio is measured side by side. Prints microseconds per record (best of 5 passes).

    python benchmarks/value_check.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _synthetic import imagenet_like_keys, write_synthetic_store

from relabel_store import load_relabel
from relabel_store.read.reader import RelabelStore


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_synthetic_store(
            Path(tmp) / "s.zarr", imagenet_like_keys(4096), shard_records=1024
        )
        store = load_relabel(path)
        checked = RelabelStore._values_ok

        def passes(n: int = 5) -> tuple[float, float]:
            one = batch = float("inf")
            for _ in range(n):
                t = time.perf_counter()
                for i in range(len(store)):
                    store.get_row(i)
                one = min(one, (time.perf_counter() - t) / len(store))
                t = time.perf_counter()
                for s in range(0, len(store), 256):
                    store.get_rows(range(s, min(s + 256, len(store))))
                batch = min(batch, (time.perf_counter() - t) / len(store))
            return one * 1e6, batch * 1e6

        results: dict[str, list[tuple[float, float]]] = {"checked": [], "unchecked": []}
        for label in ("checked", "unchecked") * 3:
            RelabelStore._values_ok = checked if label == "checked" else (lambda *_: True)  # type: ignore[method-assign]
            results[label].append(passes())
        RelabelStore._values_ok = checked  # type: ignore[method-assign]
        for label, runs in results.items():
            one = min(r[0] for r in runs)
            batch = min(r[1] for r in runs)
            print(f"{label:9s} get_row {one:6.2f} us/record   get_rows(256) {batch:6.2f} us/record")


if __name__ == "__main__":
    main()
