"""Generation throughput: the whole `generate` pipeline against the model's forward pass alone.

    python benchmarks/generate.py [--images 64] [--batch-size 16] [--rounds 3]

Same model (tf_efficientnet_lite0 with its real ImageNet weights, at 475x475: a 15x15 grid),
same batch size, same real JPEGs, in one run, rounds interleaved. "forward only" feeds
already-decoded, already-resized tensors to the annotator; "generate" is everything a user runs:
decoding and resizing in DataLoader workers, the forward pass, top-k, compression, writing shards,
finalize and the manifest. Target: generate >= 0.90 x forward-only images/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _photoset import write_photoset

from relabel_store.annotator import load_annotator
from relabel_store.generate import generate
from relabel_store.inputs import InputDataset, collate_inputs, open_inputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="generate's DataLoader workers")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = write_photoset(tmp / "photos", args.images)
        inputs = open_inputs(photos)
        annotator = load_annotator("tf_efficientnet_lite0", "efficientnet-lite0", input_size=475)
        items = InputDataset(inputs, annotator.transform)
        batches = [
            collate_inputs(
                [items[i] for i in range(s, min(s + args.batch_size, len(items)))]
            ).images
            for s in range(0, len(items), args.batch_size)
        ]
        annotator(batches[0])  # warm up
        forward, full = [], []
        for r in range(args.rounds):
            t0 = time.perf_counter()
            for images in batches:
                annotator(images)
            forward.append(args.images / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            generate(
                inputs, tmp / f"run{r}.relabel.zarr", annotator, batch_size=args.batch_size,
                num_workers=args.workers, progress=False,
            )  # fmt: skip
            full.append(args.images / (time.perf_counter() - t0))
        f, g = statistics.median(forward), statistics.median(full)
        print(
            f"tf_efficientnet_lite0 @ 475, batch {args.batch_size}, {args.images} real JPEGs, "
            f"torch threads {torch.get_num_threads()}, median of {args.rounds} rounds:"
        )
        print(f"  forward only: {f:6.2f} images/s")
        print(f"  generate:     {g:6.2f} images/s   ratio {g / f:.2f}   (target >= 0.90)")


if __name__ == "__main__":
    main()
