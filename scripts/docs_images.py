"""Regenerate the pictures in docs/images/ from the demo store, with `relabel-store show`.

    .venv/bin/python scripts/docs_images.py [--out docs/images]

Runs ``examples/demo.py`` into a temporary folder (six real photos, the offline
tf_efficientnet_lite0 annotator at its trained 224x224, resampled to a 15x15 top-5 store), draws
a few label maps and pooled crops (one of them rotated, ``show --rotate``) with the
``relabel-store show`` command, and shrinks each PNG to a 256-colour palette so that it stays
small enough to commit (< 200 KB).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MAX_BYTES = 200_000

#: name -> (key, box or None, flipped, degrees or None). Boxes are x0,y0,x1,y1 normalised to
#: the whole image; degrees turn the crop about its centre (``show --rotate``).
PICTURES: dict[str, tuple[str, str | None, bool, float | None]] = {
    "chelsea-map.png": ("chelsea", None, False, None),
    "chelsea-face.png": ("chelsea", "0.1,0.05,0.6,0.9", False, None),
    "chelsea-corner.png": ("chelsea", "0.0,0.6,0.3,1.0", False, None),
    "coffee-flip.png": ("coffee", "0.2,0.1,0.8,0.8", True, None),
    "chelsea-rotated.png": ("chelsea", "0.1,0.05,0.6,0.9", False, 30.0),
}


def shrink(path: Path) -> int:
    """Re-save ``path`` as an optimised 256-colour PNG; returns its size in bytes.

    Octree quantization keeps the flat colours of the legend and the bars exact; the photo
    loses a little smoothness, which dithering would restore at the price of speckled legends
    and larger files.
    """
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    small = rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is {size} bytes after quantizing (limit {MAX_BYTES})")
    return size


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cli = Path(sys.executable).with_name("relabel-store")
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo-out"
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "demo.py"), "--out", str(demo)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        store = demo / "photos.relabel.zarr"
        for name, (key, box, flipped, degrees) in PICTURES.items():
            out = args.out / name
            photo = next((demo / "photos").rglob(f"{key}.jpg"))  # photos/<class>/<key>.jpg
            cmd = [str(cli), "show", str(store), key, "--image", str(photo)]
            if box:
                cmd += ["--box", box]
            if flipped:
                cmd += ["--flip"]
            if degrees is not None:
                cmd += ["--rotate", str(degrees)]
            subprocess.run([*cmd, "-o", str(out)], check=True, stdout=subprocess.DEVNULL)
            size = shrink(out)
            with Image.open(out) as im:
                print(f"{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}: "
                      f"{im.width}x{im.height}, {size / 1000:.0f} KB")  # fmt: skip


if __name__ == "__main__":
    main()
