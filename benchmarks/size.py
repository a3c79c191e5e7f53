"""Store size on real label maps, and the codec study behind the format's choice.

    python benchmarks/size.py [--images 300]

Generates a store with the real offline annotator (tf_efficientnet_lite0 at 475, 15x15 grid,
top-5) over real photos and crops/flips/rescalings of them, prints bytes per record on disk and
the projection to ImageNet's 1,281,167 images (target <= 3.0 GB; the original release is 12 GB),
then re-encodes the same maps with alternative codecs and layouts, printing size and decode time
per record for each, all lossless (the float16 logits are kept bit for bit).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from _photoset import write_photoset
from zarr.codecs import BloscCodec, Crc32cCodec, TransposeCodec, ZstdCodec

from relabel_store import load_relabel
from relabel_store.annotator import load_annotator
from relabel_store.generate import generate
from relabel_store.inputs import open_inputs

IMAGENET = 1_281_167


def variant_size(root: Path, name: str, data: np.ndarray, codecs: dict) -> tuple[int, float]:
    """Bytes of one sharded array written with ``codecs``, and its fast-read µs per record."""
    n = data.shape[0]
    arr = zarr.create_array(
        str(root / name),
        shape=data.shape,
        dtype=data.dtype,
        chunks=(1, *data.shape[1:]),
        shards=(n, *data.shape[1:]),
        fill_value=0,
        **codecs,
    )
    arr[...] = data
    size = sum(
        p.stat().st_size for p in (root / name).rglob("*") if p.is_file() and p.name != "zarr.json"
    )
    started = time.perf_counter()
    for _ in range(3):
        for i in range(min(n, 200)):
            arr[i]
    decode = (time.perf_counter() - started) / (3 * min(n, 200)) * 1e6
    return size, decode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--store", type=Path, help="generate here, or reuse the store found here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store_path = args.store or tmp / "real.relabel.zarr"
        if not (store_path / "manifest.json").exists():
            photos = write_photoset(tmp / "photos", args.images)
            annotator = load_annotator(
                "tf_efficientnet_lite0", "efficientnet-lite0", input_size=475
            )
            t = time.perf_counter()
            result = generate(
                open_inputs(photos), store_path, annotator, batch_size=args.batch_size,
                shard_records=args.images, progress=False,
            )  # fmt: skip  # one full shard: no empty shard-index slots skew the figure
            print(f"generated {result.records} records in {time.perf_counter() - t:.0f} s")
        store = load_relabel(store_path)
        files = {e.path: e.size for e in store.manifest.entries}
        n = len(store)
        maps = sum(s for p, s in files.items() if p.startswith(("indices/c", "values/c")))
        rest = sum(files.values()) - maps
        print(f"record arrays: {maps / n:.0f} B/record; everything else: {rest} B in total")
        per = maps / n + 40  # + keys (~16 B), rows (8), labels (4), sizes (8), manifest: ~40 B
        print(f"bytes per record on disk (maps + key index, ~40 B): {per:.0f} B")
        print(
            f"projection to {IMAGENET:,} records: {per * IMAGENET / 1e9:.2f} GB (target <= 3.0 GB)"
        )

        batch = store.get_rows(range(n))
        idx, val = batch.indices, batch.values
        raw = idx.nbytes / n + val.nbytes / n
        print(f"\nraw maps: {raw:.0f} B/record. Codec study on the same maps (lossless):")
        print(f"{'variant':<44}{'indices B':>10}{'values B':>10}{'total B':>9}{'GB':>7}")
        zstd = lambda level: {"compressors": [ZstdCodec(level=level, checksum=True)]}  # noqa: E731
        shuffled = {
            "compressors": [
                BloscCodec(cname="zstd", clevel=9, shuffle="shuffle"),
                Crc32cCodec(),
            ]
        }
        variants = {
            "ids zstd 19, logits blosc zstd 9 + shuffle (v1)": (zstd(19), shuffled),
            "zstd 3": (zstd(3), zstd(3)),
            "zstd 9": (zstd(9), zstd(9)),
            "zstd 19": (zstd(19), zstd(19)),
            "transpose to (k, y, x) + zstd 9": (
                {"filters": [TransposeCodec(order=(0, 3, 1, 2))], **zstd(9)},
                {"filters": [TransposeCodec(order=(0, 3, 1, 2))], **zstd(9)},
            ),
            "blosc zstd 9 + byte shuffle": (
                {"compressors": [BloscCodec(cname="zstd", clevel=9, shuffle="shuffle")]},
                {"compressors": [BloscCodec(cname="zstd", clevel=9, shuffle="shuffle")]},
            ),
            "blosc zstd 9 + bit shuffle": (
                {"compressors": [BloscCodec(cname="zstd", clevel=9, shuffle="bitshuffle")]},
                {"compressors": [BloscCodec(cname="zstd", clevel=9, shuffle="bitshuffle")]},
            ),
            "blosc lz4hc 9 + byte shuffle": (
                {"compressors": [BloscCodec(cname="lz4hc", clevel=9, shuffle="shuffle")]},
                {"compressors": [BloscCodec(cname="lz4hc", clevel=9, shuffle="shuffle")]},
            ),
        }
        for label, (ci, cv) in variants.items():
            d = tmp / label.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
            si, _ = variant_size(d, "indices", idx, ci)
            sv, _ = variant_size(d, "values", val, cv)
            total = (si + sv) / n
            gb = (total + 40) * IMAGENET / 1e9
            print(f"{label:<44}{si / n:>10.0f}{sv / n:>10.0f}{total:>9.0f}{gb:>7.2f}")
        v16 = val.view(np.uint16)
        print(
            "entropy of the float16 logits' bytes: high "
            f"{_entropy(v16 >> 8):.2f} bits, low {_entropy(v16 & 255):.2f} bits (of 8): the low "
            f"byte alone is >= {_entropy(v16 & 255) * val[0].size / 8:.0f} B/record incompressible"
        )


def _entropy(x: np.ndarray) -> float:
    _, counts = np.unique(x, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


if __name__ == "__main__":
    main()
