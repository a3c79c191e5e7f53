"""Train a timm model on ReLabel soft targets: your ImageFolder, your transforms, CutMix.

The only ReLabel-specific line is ``RelabelDataset(folder, store, train_transform)``: it keeps
timm's usual training transform, recovers the crop box and flip it drew for every sample, and
pools the image's label map into a soft target for exactly that crop (LabelPooling). Everything
else is an ordinary timm training loop: CutMix on the batch (soft targets mix like one-hot
ones), ``SoftTargetCrossEntropy``, AdamW.

Run on the demo store (``python examples/demo.py --out demo-out`` writes both):

    python examples/train_timm.py demo-out/photos demo-out/photos.relabel.zarr \\
        --img-size 96 --batch-size 6 --steps 30

``DATA`` is an ImageFolder (``<class>/<image>``); the store's keys are the image file stems, as
``relabel-store generate`` wrote them. ``main(argv)`` returns the loss of every step. Each step
also prints ``kl``, the loss minus the targets' own entropy: what training can still remove.

``--save model.safetensors`` keeps the trained model with a record of how it was trained (model,
input size, the store's digest and location): the annotator of a Label Refinery round.

    relabel-store generate demo-out/photos -o round1.relabel.zarr --checkpoint model.safetensors
    relabel-store quality round1.relabel.zarr

annotates at the size the model was trained at and records the store it learned from as the new
store's parent (``--parent STORE`` names it explicitly and is checked against the record).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import timm
import timm.data
import torch
from timm.loss import SoftTargetCrossEntropy
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from relabel_store import load_relabel
from relabel_store.loaders import RelabelDataset, timm_mixup
from relabel_store.write.refinery import store_lineage
from relabel_store.write.weights import save_checkpoint


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("data", type=Path, help="ImageFolder root: <class>/<image>")
    ap.add_argument("store", help="relabel store: local path, Hub repo, fsspec URL or name")
    ap.add_argument("--model", default="resnet10t", help="timm model, trained from scratch")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    ap.add_argument("--epochs", type=int, default=1, help="epochs (when --steps is not given)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument(
        "--mix",
        choices=["cutmix", "timm", "none"],
        default="cutmix",
        help="torchvision v2 CutMix, timm Mixup for soft targets (timm_mixup: SoftMixup), or none",
    )
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--save",
        type=Path,
        default=None,
        help="write the trained model here (.safetensors) for `relabel-store generate --checkpoint`",
    )
    ap.add_argument("-q", "--quiet", action="store_true", help="do not print every step")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[float]:
    args = parse_args(argv)
    random.seed(args.seed)  # timm's random crops draw from Python's random module
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    # The store: a local path here; a Hub repo or a registered name work the same way.
    store = load_relabel(args.store)
    num_classes = store.metadata.num_classes

    # Your usual data: an ImageFolder (timm's ImageDataset works too), and timm's usual training
    # transform (RandomResizedCrop, horizontal flip, colour jitter, normalisation).
    train_tf = timm.data.create_transform(args.img_size, is_training=True)
    folder = ImageFolder(str(args.data))
    # The one ReLabel line: the same transform, and a soft target for the crop it took.
    dataset = RelabelDataset(folder, store, train_tf)

    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=len(dataset) >= args.batch_size,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
        generator=torch.Generator().manual_seed(args.seed),
    )
    if args.mix == "cutmix":
        mix = v2.CutMix(alpha=1.0)  # (B, C) soft targets are mixed like one-hot ones
    elif args.mix == "timm":
        # timm's Mixup for soft targets: SoftMixup (timm's draws and image mixing, the (B, C)
        # targets mixed exactly; timm's own Mixup would read them as class indices), no smoothing.
        mix = timm_mixup(store, mixup_alpha=0.0, cutmix_alpha=1.0)
    else:
        mix = None

    model = timm.create_model(args.model, pretrained=False, num_classes=num_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    criterion = SoftTargetCrossEntropy()
    steps = args.steps or args.epochs * len(loader)
    if steps < 1:
        raise SystemExit(f"nothing to train on: {len(dataset)} images in {args.data}")
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )

    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    while len(losses) < steps:
        for images, targets in loader:  # targets: (B, C) float32, each row sums to 1
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if mix is not None and (args.mix == "cutmix" or len(images) % 2 == 0):
                images, targets = mix(images, targets)  # timm's Mixup needs an even batch
            loss = criterion(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if not args.quiet:
                # The loss minus the targets' own entropy: the part training can remove (KL).
                entropy = -(targets * targets.clamp_min(1e-12).log()).sum(1).mean().item()
                kl = losses[-1] - entropy
                print(f"step {len(losses):4d}/{steps}  loss {losses[-1]:.4f}  kl {kl:.4f}")
            if len(losses) == steps:
                break
    if not args.quiet:
        seconds = time.perf_counter() - started
        print(f"{steps} steps in {seconds:.1f} s; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    if args.save is not None:
        # What the next round's annotator needs: the model, the size it saw, the labels it learned.
        save_checkpoint(
            model, args.save, model_name=args.model, input_size=args.img_size,
            trained_on=store_lineage(args.store),
        )  # fmt: skip
        if not args.quiet:
            print(f"saved {args.save}")
    return losses


if __name__ == "__main__":
    main()
