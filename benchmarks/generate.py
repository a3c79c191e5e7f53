"""Generation throughput: what feeds the annotator and what drains it, against generate end to end.

    python benchmarks/generate.py [--images 1024] [--size 475] [--annotator auto]

On ImageNet-like synthetic JPEGs (500x375 and similar, written first), in one run, rounds
interleaved, medians printed:

(a) input pipeline alone: the DataLoader generate builds (same workers, batch size, decoding,
    whole-image resize to uint8), each batch's memory touched once and nothing else;
(b) writer alone: the same maps written again through the public ``StoreWriter`` (all cores),
    shard by shard, then finalize;
(f) the annotator's forward pass alone on already decoded batches (on its device);
(c) ``generate`` end to end: workers, the forward pass, device-to-host copies, background
    writing, finalize, manifest.

``--annotator stand-in`` (the default without a GPU) is a near-free model with the output
contract of ``DenseAnnotator`` (features = the image averaged over each grid cell, a fixed random
head to 1,000 classes), so that (a) and (b) are the only real costs: target (c) >= 0.90 x
min(a, b). ``--annotator l2`` (the default on CUDA) is EfficientNet-L2 at 475 with random
weights (the speed is the weights'), bf16 autocast and channels_last: target (c) >= 300
images/s on one H100, printed with its ratio to (f). ``--gpu-decode`` also times torchvision's
GPU JPEG decoder on the same files against one CPU worker.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _jpegs import write_synthetic_jpegs
from torch import nn
from torch.utils.data import DataLoader

from relabel_store import StoreWriter, load_relabel
from relabel_store.format._shards import cores_per_process
from relabel_store.write.annotator import DenseAnnotator, WholeImageTransform
from relabel_store.write.generate import generate
from relabel_store.write.inputs import InputDataset, collate_inputs, open_inputs

L2 = "tf_efficientnet_l2.ns_jft_in1k_475"


class NearFreeAnnotator(nn.Module):
    """``DenseAnnotator``'s output contract at almost no cost: each cell's class ids come from
    its quantised mean colour (a few pixels of it: smooth regions of a few classes, like a real
    map's), its logits descend from its brightness."""

    def __init__(self, size: int, device: str, grid=(15, 15), k: int = 5) -> None:
        super().__init__()
        self.grid, self.k, self.num_classes = grid, k, 1000
        self.model = nn.Identity()  # what label_space_of() asks: 1,000 classes, ImageNet's
        self.model.num_classes = self.num_classes
        self.transform = WholeImageTransform((size, size))
        self.register_buffer("offsets", torch.arange(k) * 131)  # k distinct ids per cell
        self.to(device)

    @property
    def device(self) -> torch.device:
        return self.offsets.device

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        step = max(1, images.shape[-1] // (4 * self.grid[1]))  # 4x4 pixels per cell are plenty
        sparse = images.to(self.device)[..., ::step, ::step].float()
        cells = F.adaptive_avg_pool2d(sparse, self.grid)  # (B, 3, h, w)
        level = (cells / 32).long()
        base = level[:, 0] * 64 + level[:, 1] * 8 + level[:, 2]  # (B, h, w) in 0..511
        indices = (base[..., None] * 7 + self.offsets) % self.num_classes
        values = cells.mean(1)[..., None] / 16 - torch.arange(self.k, device=self.device)
        return values, indices

    def describe(self) -> dict:
        return {"model": "near-free stand-in", "preprocess": self.transform.describe()}


def build_annotator(
    kind: str, size: int, device: str, amp: str | None, compile: bool = False
) -> nn.Module:
    if kind == "stand-in":
        # Its few tensor ops on one thread, as in the main process of a GPU run (the CLI does
        # the same there): intra-op threads spinning on cores the workers need cost 8x here.
        torch.set_num_threads(1)
        return NearFreeAnnotator(size, device)
    import timm

    with torch.device(device):  # random init on the device: seconds instead of minutes for L2
        model = timm.create_model(L2 if kind == "l2" else kind, pretrained=False)
    return DenseAnnotator(
        model, input_size=size, model_name=kind, device=device, amp=amp, compile=compile
    )


def input_rate(inputs, annotator, batch_size: int, workers: int) -> float:
    loader = DataLoader(
        InputDataset(inputs, annotator.transform.resized),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_inputs,
        pin_memory=annotator.device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    started = time.perf_counter()
    count = 0
    for batch in loader:  # delivered means readable here: touch every page once, as any user must
        if batch.images is not None:
            batch.images.view(-1)[::4096].sum()
        count += len(batch)
    return count / (time.perf_counter() - started)


def forward_rate(annotator, batches: list[torch.Tensor]) -> float:
    annotator(batches[0])  # warm-up (cudnn autotuning, lazy init)
    sync = torch.cuda.synchronize if annotator.device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for images in batches:
        annotator(images)
    sync()
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def writer_rate(store_path: Path, out: Path) -> float:
    """Records/s writing ``store_path``'s maps again through the public StoreWriter."""
    store = load_relabel(store_path)
    meta = store.metadata
    batch = store.get_rows(range(len(store)))
    writer = StoreWriter.open(out, meta.__class__.from_json({**meta.to_json(), "complete": False,
                                                             "record_count": 0}))  # fmt: skip
    started = time.perf_counter()
    for s in range(writer.num_shards):
        r = writer.shard_rows(s)
        writer.write_shard(
            s, keys=batch.keys[r.start : r.stop], labels=batch.labels[r.start : r.stop],
            sizes=batch.sizes[r.start : r.stop], indices=batch.indices[r.start : r.stop],
            values=batch.values[r.start : r.stop],
        )  # fmt: skip
    writer.finalize()
    return len(store) / (time.perf_counter() - started)


def gpu_decode(files: list[Path], batch_size: int) -> tuple[float, float]:
    """(images/s of torchvision's batched GPU JPEG decoder, of one CPU decoder process)."""
    from torchvision.io import decode_jpeg, read_file

    data = [read_file(str(p)) for p in files]
    decode_jpeg(data[:batch_size], device="cuda")  # warm-up
    torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(0, len(data), batch_size):
        decode_jpeg(data[i : i + batch_size], device="cuda")
    torch.cuda.synchronize()
    gpu = len(data) / (time.perf_counter() - started)
    started = time.perf_counter()
    for d in data[:256]:
        decode_jpeg(d)
    return gpu, min(len(data), 256) / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=None, help="default 1024 (4096 on CUDA)")
    ap.add_argument("--size", type=int, default=475, help="annotator input size")
    ap.add_argument("--batch-size", type=int, default=None, help="default 32 (64 on CUDA)")
    ap.add_argument("--workers", type=int, default=None, help="default: the process's cores")
    ap.add_argument("--shard-records", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--annotator", default="auto", help="auto, stand-in, l2, or a timm name")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "none"])
    ap.add_argument("--gpu-decode", action="store_true", help="also time GPU JPEG decoding")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the backbone (generate --compile); the forward pass's warm-up "
        "compiles it, untimed",
    )
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    kind = args.annotator if args.annotator != "auto" else ("l2" if cuda else "stand-in")
    images = args.images or (4096 if cuda else 1024)
    batch_size = args.batch_size or (64 if cuda else 32)
    workers = cores_per_process() if args.workers is None else args.workers
    amp = None if args.amp == "none" else args.amp
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        folder = write_synthetic_jpegs(tmp / "jpegs", images)
        print(f"wrote {images} synthetic JPEGs in {time.perf_counter() - started:.1f} s")
        inputs = open_inputs(folder)
        annotator = build_annotator(kind, args.size, args.device, amp, args.compile)
        items = InputDataset(inputs, annotator.transform.resized)
        staged = min(images, 8 * batch_size)
        batches = [
            collate_inputs([items[i] for i in range(s, min(s + batch_size, staged))]).images
            for s in range(0, staged, batch_size)
        ]
        batches = [b.to(annotator.device) for b in batches]
        rates: dict[str, list[float]] = {"a": [], "b": [], "f": [], "c": []}
        for r in range(args.rounds):
            rates["a"].append(input_rate(inputs, annotator, batch_size, workers))
            rates["f"].append(forward_rate(annotator, batches))
            store = tmp / f"run{r}.relabel.zarr"
            result = generate(
                inputs, store, annotator, batch_size=batch_size, num_workers=workers,
                shard_records=args.shard_records, progress=False,
            )  # fmt: skip
            rates["c"].append(images / result.seconds)
            rates["b"].append(writer_rate(store, tmp / f"rewrite{r}.relabel.zarr"))
        a, b, f, c = (statistics.median(rates[x]) for x in "abfc")
        where = torch.cuda.get_device_name() if cuda else f"CPU ({cores_per_process()} cores)"
        print(
            f"{kind} @ {args.size}, {where}, batch {batch_size}, {workers} workers, "
            f"{images} images, shards of {args.shard_records}, amp {amp if cuda else 'n/a'}, "
            f"torch threads {torch.get_num_threads()}, median of {args.rounds} rounds:"
        )
        print(f"  (a) input pipeline alone: {a:8.1f} images/s")
        print(f"  (b) writer alone:         {b:8.1f} records/s")
        print(f"  (f) forward pass alone:   {f:8.1f} images/s")
        print(f"  (c) generate end to end:  {c:8.1f} images/s")
        bound = min(a, b, f)
        print(f"  (c) / min(a, b, f) = {c / bound:.2f}   (target >= 0.90)")
        if kind != "stand-in":
            print(f"  (c) / (f) = {c / f:.2f}")
        if kind == "l2":
            print(f"  L2 @ {args.size}: {c:.0f} images/s end to end (target >= 300 on one H100)")
        if args.gpu_decode and cuda:
            gpu, cpu = gpu_decode(sorted(folder.glob("*.jpg")), batch_size)
            print(f"  JPEG decoding: GPU (nvjpeg) {gpu:.0f} images/s; one CPU worker {cpu:.0f}")
        rows = np.array([rates[x] for x in "abfc"]).T.round(1).tolist()
        print(f"  rounds (a, b, f, c): {rows}")


if __name__ == "__main__":
    main()
