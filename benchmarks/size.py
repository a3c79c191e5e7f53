"""Store size on real label maps, and the codec study behind the format's choice.

    python benchmarks/size.py [--images 300] [--input-size 224 475] [--store STORE ...]

Generates stores with the real offline annotator (tf_efficientnet_lite0, 15x15 grid, top-5) over
real photos and crops/flips/rescalings of them: at 224, its trained size and the default (7x7
features for a square image, 6x8 for a 4:3 one, resampled to 15x15), and at 475, where its features are 15x15 like the paper's
EfficientNet-L2 (no resampling: the closest to L2's maps in structure). For each it prints bytes
per record on disk and the projection to ImageNet's 1,281,167 images (the original release is
12 GB), then re-encodes the same maps with alternative codecs and layouts, all lossless (the
float16 logits are kept bit for bit): bytes per record, one-thread encoding time per record
(relabel-store's shard encoder, as the writer runs it) and the fast reader's decoding time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from _photoset import write_photoset
from zarr.codecs import BloscCodec, Crc32cCodec, TransposeCodec, ZstdCodec

from relabel_store import load_relabel
from relabel_store.errors import FormatError
from relabel_store.format._layout import ArrayLayout
from relabel_store.format._shards import ShardEncoder
from relabel_store.read.reader import _ShardedArray
from relabel_store.read.sources.local import LocalSource
from relabel_store.write.annotator import load_annotator
from relabel_store.write.generate import generate
from relabel_store.write.inputs import open_inputs

IMAGENET = 1_281_167


def zstd(level: int) -> dict:
    return {"compressors": [ZstdCodec(level=level, checksum=True)]}


def shuffled(cname: str, clevel: int) -> dict:
    return {
        "compressors": [BloscCodec(cname=cname, clevel=clevel, shuffle="shuffle"), Crc32cCodec()]
    }


def blosc(cname: str, clevel: int) -> dict:
    return {
        "compressors": [BloscCodec(cname=cname, clevel=clevel, shuffle="noshuffle"), Crc32cCodec()]
    }


VARIANTS = {
    "v1.0: ids zstd 19, logits blosc zstd 9 (=22)": (zstd(19), shuffled("zstd", 9)),
    "now:  ids zstd 13, logits blosc zstd 7 (=13)": (zstd(13), shuffled("zstd", 7)),
    "ids zstd 9, logits blosc zstd 5 (=9)": (zstd(9), shuffled("zstd", 5)),
    "ids zstd 5, logits blosc zstd 3 (=5)": (zstd(5), shuffled("zstd", 3)),
    "ids zstd 3, logits blosc zstd 2 (=3)": (zstd(3), shuffled("zstd", 2)),
    "zstd 9 for both, no shuffle": (zstd(9), zstd(9)),
    "ids zstd -1 (literals stored raw: faster to decode)": (zstd(-1), shuffled("zstd", 7)),
    "ids blosc lz4hc 9, logits blosc zstd 7 + shuffle": (blosc("lz4hc", 9), shuffled("zstd", 7)),
    "blosc lz4hc 9 (ids) + shuffle (logits)": (blosc("lz4hc", 9), shuffled("lz4hc", 9)),
    "blosc lz4hc 9 + shuffle for both": (shuffled("lz4hc", 9), shuffled("lz4hc", 9)),
    "transpose to (k, y, x) + zstd 9": (
        {"filters": [TransposeCodec(order=(0, 3, 1, 2))], **zstd(9)},
        {"filters": [TransposeCodec(order=(0, 3, 1, 2))], **zstd(9)},
    ),
}


def variant(root: Path, name: str, data: np.ndarray, codecs: dict) -> tuple[int, float, float]:
    """Bytes of one sharded array written with ``codecs``, and µs per record to encode it (one
    thread) and to read it back (fast reader); NaN where relabel-store does not handle it."""
    n = data.shape[0]
    arr = zarr.create_array(
        str(root / name), shape=data.shape, dtype=data.dtype, chunks=(1, *data.shape[1:]),
        shards=(n, *data.shape[1:]), fill_value=0, **codecs,
    )  # fmt: skip
    arr[...] = data
    files = (root / name).rglob("*")
    size = sum(p.stat().st_size for p in files if p.is_file() and p.name != "zarr.json")
    encode = read = float("nan")
    try:
        encoder = ShardEncoder.read(root, name)
        with ThreadPoolExecutor(1) as pool:
            started = time.perf_counter()
            encoder.start(data, pool)()
            encode = (time.perf_counter() - started) / n * 1e6
        layout = ArrayLayout.parse(name, (root / name / "zarr.json").read_bytes(), str(root))
        reader = _ShardedArray(LocalSource(root), layout, None, 1)
        for i in range(n):  # warm: shard index and pages cached
            reader.get(i)
        started = time.perf_counter()
        for _ in range(5):
            for i in range(n):
                reader.get(i)
        read = (time.perf_counter() - started) / (5 * n) * 1e6
    except FormatError:  # a layout relabel-store neither writes nor reads
        pass
    return size, encode, read


def study(store_path: Path, tmp: Path) -> None:
    store = load_relabel(store_path)
    ann = store.metadata.annotator
    files = {e.path: e.size for e in store.manifest.entries}
    n = len(store)
    maps = sum(s for p, s in files.items() if p.startswith(("indices/c", "values/c")))
    per = maps / n + 40  # + keys (~16 B), rows (8), labels (4), sizes (8), manifest: ~40 B
    size = ann["preprocess"]["input_size"]
    print(
        f"\n{ann['model']} at {size[0]}x{size[1]} (features {ann['feature_grid']}, resampled: "
        f"{ann['resample']}), {n} real maps: {maps / n:.0f} B/record of maps, {per:.0f} B with "
        f"the key index: {per * IMAGENET / 1e9:.2f} GB for {IMAGENET:,} records"
    )
    batch = store.get_rows(range(n))
    idx, val = batch.indices, batch.values
    print(f"raw maps: {(idx.nbytes + val.nbytes) / n:.0f} B/record. Codecs on the same maps:")
    print(
        f"  {'variant':<46}{'ids B':>7}{'logits B':>9}{'total':>7}{'GB':>6}"
        f"{'encode µs':>11}{'read µs':>9}"
    )
    for label, (ci, cv) in VARIANTS.items():
        root = tmp / f"v{abs(hash((str(store_path), label)))}"
        si, ei, ri = variant(root, "indices", idx, ci)
        sv, ev, rv = variant(root, "values", val, cv)
        total = (si + sv) / n
        print(
            f"  {label:<46}{si / n:>7.0f}{sv / n:>9.0f}{total:>7.0f}"
            f"{(total + 40) * IMAGENET / 1e9:>6.2f}{ei + ev:>11.0f}{ri + rv:>9.1f}"
        )
    v16 = val.view(np.uint16)
    print(
        "  entropy of the float16 logits' bytes: high "
        f"{_entropy(v16 >> 8):.2f} bits, low {_entropy(v16 & 255):.2f} bits (of 8): the low "
        f"byte alone is >= {_entropy(v16 & 255) * val[0].size / 8:.0f} B/record incompressible"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--input-size", type=int, nargs="+", default=[224, 475])
    ap.add_argument("--store", type=Path, nargs="+", help="study these stores instead")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stores = args.store or []
        if not stores:
            photos = write_photoset(tmp / "photos", args.images)
            for size in args.input_size:
                annotator = load_annotator(
                    "tf_efficientnet_lite0", "efficientnet-lite0", input_size=size
                )
                path = tmp / f"real{size}.relabel.zarr"
                t = time.perf_counter()
                generate(
                    open_inputs(photos), path, annotator, batch_size=args.batch_size,
                    shard_records=args.images, progress=False,
                )  # fmt: skip  # one full shard: no empty shard-index slots skew the figure
                print(
                    f"annotated {args.images} images at {size} in {time.perf_counter() - t:.0f} s"
                )
                stores.append(path)
        for path in stores:
            study(path, tmp)


def _entropy(x: np.ndarray) -> float:
    _, counts = np.unique(x, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


if __name__ == "__main__":
    main()
