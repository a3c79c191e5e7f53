"""Loaders confirm by content that each image is its record's image (issue 19, items 1, 2, 4).

A store generated with the real offline annotator from real photos holds each photo's content
signature. Training code written the way users write it then meets the cases that used to give
silently wrong targets: another copy of the photos with the same names and sizes, a photo
turned by its EXIF orientation in the user's Dataset, a Dataset that crops square images with
numpy before the library, and a key function that pairs images with the wrong records.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _stores import file_sizes, write_store
from click.testing import CliRunner
from PIL import Image, ImageOps

from relabel_store import load_relabel, verify_store
from relabel_store.cli.main import main
from relabel_store.errors import (
    ConfigurationError,
    FormatError,
    ImageMismatchError,
    NoSignaturesWarning,
)
from relabel_store.format.manifest import build_manifest, write_manifest
from relabel_store.format.metadata import SIGNATURE_ATTR, SIGNATURE_BYTES, SIGNATURE_KIND
from relabel_store.images import (
    SIGNATURE_BYTES as IMAGE_SIGNATURE_BYTES,
)
from relabel_store.images import (
    SIGNATURE_KIND as IMAGE_SIGNATURE_KIND,
)
from relabel_store.images import image_signature, signature_distance
from relabel_store.loaders import RelabelDataset, RelabelStream
from relabel_store.loaders._core import ImageCheck
from relabel_store.write.samples import SAMPLE_PHOTOS, write_sample_photos

pytestmark = pytest.mark.slow
LITE0 = ["--model", "tf_efficientnet_lite0", "--checkpoint", "efficientnet-lite0"]
FAST = [*LITE0, "--input-size", "224", "--workers", "0", "--batch-size", "6"]
NAMES = sorted(SAMPLE_PHOTOS)  # astronaut (512 x 512, square), chelsea, china, coffee, ...
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The sample photos as JPEG files; chelsea as a camera held upside down saves it: the
    pixels as they came off the sensor and EXIF orientation 3 (show turned 180 degrees)."""
    root = tmp_path_factory.mktemp("photos")
    written = write_sample_photos(root)
    chelsea = rgb(written["chelsea"])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 3
    chelsea.save(written["chelsea"], quality=95, exif=exif.tobytes())
    return root


@pytest.fixture(scope="module")
def store(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "photos.relabel.zarr"
    result = CliRunner().invoke(main, ["generate", str(photos), "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    return out


def rgb(path: Path) -> Image.Image:
    """A photo as torchvision's ImageFolder loads it."""
    with Image.open(path) as image:
        return image.convert("RGB")


def exif_turned(path: Path) -> Image.Image:
    """A photo as code that honours EXIF orientation loads it."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


class Photos(torch.utils.data.Dataset):
    """A user's Dataset over a folder of photos: (image, label) by index, keys by file stem."""

    def __init__(self, folder: Path, names=NAMES, load=None) -> None:
        self.files = [folder / f"{name}.jpg" for name in names]
        self.load = load or rgb

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return self.load(self.files[i]), -1

    def key(self, i: int) -> str:
        return self.files[i].stem


def other_photos(folder: Path, like: Path) -> Path:
    """Another 'version' of the dataset: every file of ``like`` replaced by another photo of
    the same name and the same size (scikit-image's grayscale classics, resized)."""
    import skimage.data

    others = [skimage.data.camera(), skimage.data.coins(), skimage.data.moon()]
    others += [skimage.data.clock(), skimage.data.page(), skimage.data.text()]
    folder.mkdir()
    for i, path in enumerate(sorted(like.glob("*.jpg"))):
        with Image.open(path) as original:
            size = original.size
        Image.fromarray(others[i % len(others)]).convert("RGB").resize(size).save(
            folder / path.name, quality=90
        )
    return folder


def dataset(base: Photos, store: Path, **options) -> RelabelDataset:
    return RelabelDataset(base, store, key_fn=base.key, **options)


# -- the signature and the store ------------------------------------------------------------------


def test_generate_stores_the_signature_of_each_image_as_the_annotator_read_it(store, photos):
    opened = load_relabel(store)
    assert opened.metadata.format_version == "1.3"
    assert opened.has_signatures and opened.signatures.shape == (len(NAMES), SIGNATURE_BYTES)
    assert not opened.signatures.flags.writeable
    for row, key in enumerate(k.decode() for k in opened.keys):
        with Image.open(photos / f"{key}.jpg") as image:  # pixels as stored, EXIF not applied
            assert (image_signature(image.convert("RGB")) == opened.signatures[row]).all()
    assert verify_store(store).ok
    info = CliRunner().invoke(main, ["info", str(store)])
    assert "signatures:  yes" in info.output
    # the format module and the image module describe the same signature
    assert (SIGNATURE_KIND, SIGNATURE_BYTES) == (IMAGE_SIGNATURE_KIND, IMAGE_SIGNATURE_BYTES)


def test_re_encoded_and_resized_copies_pass_every_check(store, photos, tmp_path):
    """No false alarm: the photos as a smaller JPEG copy (a downscaled dataset mirror) and as
    tensors give every target, with every image checked."""
    small = tmp_path / "small"
    small.mkdir()
    for path in photos.glob("*.jpg"):
        with Image.open(path) as image:
            w, h = image.size
            image.convert("RGB").resize((w // 2, h // 2), Image.Resampling.BILINEAR).save(
                small / path.name, quality=75
            )
    for base in (
        Photos(small),
        Photos(photos, load=lambda p: torch.from_numpy(np.array(rgb(p))).permute(2, 0, 1)),
    ):
        ds = dataset(base, store, check_images="all")
        targets = torch.stack([ds[i][1] for i in range(len(ds))])
        assert targets.shape == (len(NAMES), 1000)


# -- the cases ----------------------------------------------------------------------------


def test_another_copy_of_the_photos_with_the_same_names_and_sizes_is_refused(
    store, photos, tmp_path
):
    """Case 4: the names resolve and every size matches; only the pixels tell."""
    copy = other_photos(tmp_path / "copy", photos)
    assert (
        file_sizes(sorted(copy.glob("*.jpg"))) == file_sizes(sorted(photos.glob("*.jpg")))
    ).all()
    with pytest.raises(ImageMismatchError, match="another copy or version of the dataset") as err:
        dataset(Photos(copy), store)
    assert "is not the image its record" in str(err.value)
    # the user who knows better can turn the check off; the shapes still match
    assert dataset(Photos(copy), store, check_images="off")[0][1].shape == (1000,)


def test_a_photo_turned_by_its_exif_orientation_is_refused(store, photos):
    """Case 5: exif_transpose in the user's Dataset turns chelsea by 180 degrees: same size."""
    turned = Photos(photos, ["chelsea"], load=exif_turned)
    assert turned[0][0].size == rgb(photos / "chelsea.jpg").size
    with pytest.raises(ImageMismatchError, match="turned 180 degrees") as err:
        dataset(turned, store)
    assert "EXIF orientation" in str(err.value) and "exif_transpose" in str(err.value)
    # read as stored, as the annotator read it, the same photo passes
    assert dataset(Photos(photos, ["chelsea"]), store, check_images="all")[0][1].shape == (1000,)


def centre_square(fraction: float):
    """A Dataset's own numpy crop, made before the library sees the image (as albumentations
    inside __getitem__ does): the centre square of ``fraction`` of the short side."""

    def load(path: Path) -> np.ndarray:
        array = np.asarray(rgb(path))
        h, w = array.shape[:2]
        side = round(min(h, w) * fraction)
        y, x = (h - side) // 2, (w - side) // 2
        return array[y : y + side, x : x + side]

    return load


def test_a_dataset_that_crops_square_images_with_numpy_is_refused(store, photos):
    """Case 3: astronaut is square, so its centre crop is square too and passes the size
    check; the content does not."""
    cropped = Photos(photos, ["astronaut"], load=centre_square(0.8))
    assert cropped[0][0].shape == (410, 410, 3)
    with pytest.raises(ImageMismatchError, match="cropped, padded or edited before the library"):
        dataset(cropped, store)


def test_numpy_and_tensor_images_get_the_size_check(store, photos):
    """Item 4: a square crop of a landscape photo, as numpy (H, W, C) or tensor (C, H, W), is
    another shape: refused by the size check, on every sample (the content check is off)."""
    numpy_crop = Photos(photos, ["chelsea"], load=centre_square(1.0))
    tensor_crop = Photos(
        photos,
        ["chelsea"],
        load=lambda p: torch.from_numpy(centre_square(1.0)(p).copy()).permute(2, 0, 1),
    )
    for base in (numpy_crop, tensor_crop):
        ds = dataset(base, store, check_images="off")
        with pytest.raises(ConfigurationError, match=r"300 x 300 pixels .* 300 x 451 image"):
            ds[0]


def test_a_wrong_key_function_names_the_record_the_image_belongs_to(store, photos):
    base = Photos(photos)
    shifted = {f.stem: NAMES[(i + 1) % len(NAMES)] for i, f in enumerate(base.files)}
    # keys of the right shape in the store, but each image paired with its neighbour's record;
    # sizes differ for most pairs, so the size check is off to show the content check alone
    with pytest.raises(ImageMismatchError, match="matches the record of key") as err:
        RelabelDataset(base, store, key_fn=lambda i: shifted[base.key(i)], check_sizes=False)
    assert "keys derived wrongly (key_fn)" in str(err.value)


def test_a_stream_checks_the_first_samples_of_every_worker(store, photos, tmp_path):
    """RelabelStream (WebDataset's (key, image, label) tuples) sees its samples one by one:
    the other copy of the photos is refused at the first sample."""
    copy = other_photos(tmp_path / "copy", photos)
    stream = RelabelStream(store)
    path = copy / "coffee.jpg"
    with pytest.raises(ImageMismatchError, match="store key 'coffee'"):
        stream(("coffee", rgb(path), -1))
    good = stream(("coffee", rgb(photos / "coffee.jpg"), -1))
    assert good[1].shape == (1000,)


def test_the_hugging_face_transform_shares_the_check(store, photos, tmp_path):
    datasets = pytest.importorskip("datasets")
    from relabel_store.loaders import relabel_transform

    copy = other_photos(tmp_path / "copy", photos)
    files = [str(p) for p in sorted(copy.glob("*.jpg"))]
    ds = datasets.Dataset.from_dict({"image": files}).cast_column(
        "image", datasets.Image(decode=False)
    )
    ds.set_transform(relabel_transform(store, label_column=None))
    with pytest.raises(ImageMismatchError, match="another copy or version"):
        ds[0]


def test_dali_files_are_checked_when_they_are_listed(store, photos, tmp_path):
    from relabel_store.loaders.dali import DaliFiles

    copy = other_photos(tmp_path / "copy", photos)
    with pytest.raises(ImageMismatchError):
        DaliFiles(store, sorted(copy.glob("*.jpg")))
    assert len(DaliFiles(store, sorted(photos.glob("*.jpg")))) == len(NAMES)


# -- the schedule and the option ------------------------------------------------------------------


def test_the_default_checks_the_first_samples_of_each_process_then_one_in_a_thousand(store):
    check = ImageCheck(load_relabel(store), "sample")
    due = [check.due() for _ in range(5000)]
    assert sum(due[: ImageCheck.FIRST]) == ImageCheck.FIRST
    assert np.flatnonzero(due[ImageCheck.FIRST :]).tolist() == [
        i - ImageCheck.FIRST for i in (1000, 2000, 3000, 4000)
    ]
    check._pid = -1  # as in a freshly started DataLoader worker
    assert all(check.due() for _ in range(ImageCheck.FIRST))
    hundredth = ImageCheck(load_relabel(store), 0.01)
    assert sum(hundredth.due() for _ in range(1016)) == 16 + 10
    every = ImageCheck(load_relabel(store), "all")
    assert all(every.due() for _ in range(100))
    off = ImageCheck(load_relabel(store), "off")
    assert off.signatures is None and not any(off.due() for _ in range(20))
    for bad in ("some", 0, 1.5, True):
        with pytest.raises(ConfigurationError, match="check_images must be"):
            ImageCheck(load_relabel(store), bad)


# -- stores without signatures --------------------------------------------------------------------


def test_a_store_without_signatures_warns_once_and_sign_adds_them(photos, tmp_path):
    """A store written without signatures (the writer, as before format 1.3) loads with one
    warning and no content check; `relabel-store sign` adds them and the check is on."""
    files = sorted(photos.glob("*.jpg"))
    path = tmp_path / "old.relabel.zarr"
    write_store(path, len(files), keys=[f.stem for f in files], sizes=file_sizes(files))
    copy = other_photos(tmp_path / "copy", photos)
    with pytest.warns(NoSignaturesWarning, match="relabel-store sign") as warned:
        ds = dataset(Photos(copy), path)
        ds[0], ds[1]
    assert len(warned) == 1
    info = CliRunner().invoke(main, ["info", str(path)])
    assert "signatures:  none" in info.output

    missing = tmp_path / "missing"
    shutil.copytree(photos, missing)
    (missing / "rocket.jpg").unlink()
    refused = CliRunner().invoke(main, ["sign", str(path), str(missing)])
    assert refused.exit_code != 0
    assert "error: 1 of the 6 records" in refused.output and "have no image" in refused.output

    result = CliRunner().invoke(main, ["sign", str(path), str(photos)])
    assert result.exit_code == 0, result.output
    assert f"signed {len(files)} records" in result.output
    assert verify_store(path).ok
    assert load_relabel(path).has_signatures
    with pytest.raises(ImageMismatchError):
        dataset(Photos(copy), path)
    assert dataset(Photos(photos), path)[0][1].shape == (1000,)


def test_signatures_of_an_unknown_kind_are_refused_politely(store, tmp_path):
    """A later recipe (its kind named in the array's attribute) is not compared as if it were
    this one: the loader says to upgrade, or to turn the check off."""
    path = tmp_path / "future.relabel.zarr"
    shutil.copytree(store, path)
    meta_path = path / "signatures" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"][SIGNATURE_ATTR]["kind"] = "gray-box16-z32"
    meta_path.write_text(json.dumps(meta))
    write_manifest(path, build_manifest(path))
    with pytest.raises(FormatError, match=r"Upgrade relabel-store .* check_images='off'"):
        RelabelStream(path)
    assert RelabelStream(path, check_images="off").image_check.signatures is None


def test_distance_is_zero_for_the_same_pixels_and_large_for_a_negative():
    image = np.random.default_rng(0).integers(0, 255, (64, 48, 3), np.uint8)
    signature = image_signature(image)
    assert float(signature_distance(signature, image_signature(Image.fromarray(image)))) == 0
    assert float(signature_distance(signature, image_signature(255 - image))) > 1.9
