"""Input sources for generation: layouts, keys, labels, image decoding, failures."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from relabel_store.errors import InputError
from relabel_store.images import decode_image, to_rgb
from relabel_store.write.annotator import build_transform
from relabel_store.write.inputs import (
    HFDatasetInputs,
    ImageFilesInputs,
    ImageFolderInputs,
    InputDataset,
    collate_inputs,
    open_inputs,
)
from relabel_store.write.samples import sample_photo, write_sample_photos

W, H = 6, 4  # non-square on purpose: sizes must come back as (height, width)


def _save(image: Image.Image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def _palette_image() -> Image.Image:
    image = Image.new("P", (W, H), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))  # 0 = red, 1 = blue
    image.putpixel((1, 0), 1)
    return image


def _mode_files(folder: Path) -> dict[str, Path]:
    """One file per interesting image mode; the expected RGB pixel at (x=0, y=0) is in EXPECTED."""
    files = {
        "rgb": _save(Image.new("RGB", (W, H), (10, 20, 30)), folder / "rgb.png"),
        "gray": _save(Image.new("L", (W, H), 100), folder / "gray.png"),
        "bilevel": _save(Image.new("1", (W, H), 1), folder / "bilevel.png"),
        "cmyk": _save(Image.new("CMYK", (W, H), (0, 0, 0, 0)), folder / "cmyk.jpg", quality=95),
        # palette entry 0 fully transparent: composited onto white
        "palette_trns": _save(_palette_image(), folder / "palette_trns.png", transparency=0),
        # palette alpha given as bytes (a tRNS table: 0 clear, 1 half): PIL warns on convert("RGB")
        "palette_bytes": _save(
            _palette_image(), folder / "palette_bytes.png", transparency=b"\x00\x80"
        ),
        "palette": _save(_palette_image(), folder / "palette.gif"),
        "rgba": _save(Image.new("RGBA", (W, H), (200, 0, 0, 0)), folder / "rgba.png"),
        "rgba_half": _save(Image.new("RGBA", (W, H), (0, 0, 0, 128)), folder / "rgba_half.png"),
        "la": _save(Image.new("LA", (W, H), (0, 255)), folder / "la.png"),
        "i16": _save(
            Image.fromarray(np.full((H, W), 257 * 100, dtype=np.uint16)), folder / "i16.png"
        ),
        "i32": _save(
            Image.fromarray(np.full((H, W), 257 * 200, dtype=np.int32)), folder / "i32.tif"
        ),
    }
    return files


EXPECTED = {
    "rgb": (10, 20, 30),
    "gray": (100, 100, 100),
    "bilevel": (255, 255, 255),
    "cmyk": (255, 255, 255),
    "palette_trns": (255, 255, 255),
    "palette_bytes": (255, 255, 255),
    "palette": (255, 0, 0),
    "rgba": (255, 255, 255),
    "rgba_half": (127, 127, 127),
    "la": (0, 0, 0),
    "i16": (100, 100, 100),
    "i32": (200, 200, 200),
}


def _truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    sample_photo("coffee").save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 3])
    return path


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def test_every_mode_decodes_to_rgb(tmp_path):
    files = _mode_files(tmp_path)
    for name, path in files.items():
        image, size = decode_image(path)
        assert image.mode == "RGB", name
        assert size == (H, W), name
        pixel = image.getpixel((0, 0))
        assert np.allclose(pixel, EXPECTED[name], atol=2), (name, pixel)


def test_palette_pixels_keep_their_colour(tmp_path):
    files = _mode_files(tmp_path)
    for name in ("palette_trns", "palette"):
        image, _ = decode_image(files[name])
        assert image.getpixel((1, 0)) == (0, 0, 255), name
    with Image.open(files["palette_bytes"]) as raw:
        assert isinstance(raw.info["transparency"], bytes)
    image, _ = decode_image(files["palette_bytes"])
    assert np.allclose(image.getpixel((1, 0)), (127, 127, 255), atol=1)


def test_decode_from_bytes_matches_file(tmp_path):
    path = write_sample_photos(tmp_path, ["chelsea"])["chelsea"]
    from_file, size = decode_image(path)
    from_bytes, size2 = decode_image(path.read_bytes())
    assert size == size2 == (300, 451)
    assert np.array_equal(np.asarray(from_file), np.asarray(from_bytes))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 65535))
def test_sixteen_bit_scales_to_eight(value):
    image = Image.fromarray(np.full((2, 3), value, dtype=np.uint16))
    assert image.mode == "I;16"
    assert to_rgb(image).getpixel((0, 0)) == (round(value / 257),) * 3


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255))
def test_alpha_composites_onto_white(gray, alpha):
    image = Image.new("LA", (2, 2), (gray, alpha))
    expected = gray * alpha / 255 + 255 * (1 - alpha / 255)
    assert abs(to_rgb(image).getpixel((0, 0))[0] - expected) <= 1


def test_training_side_decoding_imports_nothing_of_generation():
    # The HF loader decodes images like the generator (relabel_store.images) without importing
    # the generation side (inputs, generate, the annotator and timm's model zoo).
    code = (
        "import sys, relabel_store.loaders.hf, relabel_store.loaders; "
        "print(sorted(m for m in sys.modules if m.startswith('relabel_store')))"
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    loaded = set(ast.literal_eval(result.stdout.strip().splitlines()[-1]))
    assert "relabel_store.images" in loaded
    assert not loaded & {
        "relabel_store.write.inputs",
        "relabel_store.write.generate",
        "relabel_store.write.annotator",
    }


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def test_image_folder_keys_labels_classes(tmp_path):
    root = tmp_path / "train"
    _save(Image.new("RGB", (W, H)), root / "n02" / "b_2.JPEG")
    _save(Image.new("RGB", (W, H)), root / "n02" / "nested" / "a_9.png")
    _save(Image.new("RGB", (W, H)), root / "n01" / "c_1.jpg")
    (root / "n01" / "notes.txt").write_text("not an image")
    (root / "n01" / ".hidden.jpg").write_text("hidden")
    (root / "n03").mkdir()  # an empty class still takes its index
    source = open_inputs(root)
    assert isinstance(source, ImageFolderInputs)
    assert source.class_names == ["n01", "n02", "n03"]
    assert source.keys == ["a_9", "b_2", "c_1"]
    assert source.labels.tolist() == [1, 1, 0]
    assert source.labels.dtype == np.int32
    assert source.location(0) == "n02/nested/a_9.png"  # portable in error reports
    assert source.read(0) == str(root / "n02" / "nested" / "a_9.png")
    assert source.describe()["records"] == 3


def test_image_folder_with_explicit_class_list(tmp_path):
    root = tmp_path / "subset"
    _save(Image.new("RGB", (W, H)), root / "n05" / "x.jpg")
    source = ImageFolderInputs(root, class_names=["n01", "n05", "n09"])
    assert source.labels.tolist() == [1]
    assert source.num_classes == 3
    with pytest.raises(InputError, match="not in class_names"):
        ImageFolderInputs(root, class_names=["n01"])


def test_duplicate_keys_are_an_error(tmp_path):
    root = tmp_path / "train"
    for cls in ("n01", "n02", "n03"):
        _save(Image.new("RGB", (W, H)), root / cls / "same.jpg")
    _save(Image.new("RGB", (W, H)), root / "n01" / "other.jpg")
    with pytest.raises(InputError, match=r"1 duplicate key.*'same'") as info:
        open_inputs(root)
    assert "n01/same.jpg" in str(info.value)
    # keys from relative paths make them unique
    source = open_inputs(root, key_mode="relpath")
    assert source.keys == ["n01/other", "n01/same", "n02/same", "n03/same"]


def test_plain_folder_is_recursive_and_unlabelled(tmp_path):
    write_sample_photos(tmp_path / "photos", ["chelsea", "coffee"])
    write_sample_photos(tmp_path / "photos" / "more", ["rocket"], suffix=".png")
    (tmp_path / "photos" / "readme.md").write_text("skip me")
    source = open_inputs(tmp_path / "photos")
    assert isinstance(source, ImageFilesInputs)
    assert source.keys == ["chelsea", "coffee", "rocket"]
    assert source.labels.tolist() == [-1, -1, -1]
    assert source.class_names is None


def test_file_list(tmp_path):
    photos = write_sample_photos(tmp_path / "imgs", ["chelsea", "coffee", "china"])
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"# images to annotate\nimgs/coffee.jpg\n\n{photos['chelsea']}\t285\nimgs/china.jpg\t7\n"
    )
    source = open_inputs(listing)
    assert source.keys == ["chelsea", "china", "coffee"]
    assert source.labels.tolist() == [285, 7, -1]
    assert source.location(2) == "imgs/coffee.jpg"
    assert Path(source.read(2)) == tmp_path / "imgs" / "coffee.jpg"
    assert source.read(0) == str(photos["chelsea"])  # absolute paths stay as they are
    bad = tmp_path / "bad.txt"
    bad.write_text("imgs/coffee.jpg\tseven\n")
    with pytest.raises(InputError, match=r"bad.txt:1"):
        open_inputs(bad)


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        open_inputs(tmp_path / "empty")


def _hf_dataset(tmp_path: Path):
    import datasets

    files = write_sample_photos(tmp_path / "src", ["coffee", "chelsea", "rocket"])
    names = list(files)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=["cat", "cup", "rocket"]),
            "uid": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "image": [str(files[n]) for n in names],
            "label": [1, 0, 2],
            "uid": [f"id-{i}" for i in range(len(names))],
        },
        features=features,
    )


@pytest.fixture
def hf_saved(tmp_path):
    ds = _hf_dataset(tmp_path)
    target = tmp_path / "hf"
    ds.save_to_disk(str(target))
    return target


def test_hf_dataset_from_disk(hf_saved):
    source = open_inputs(hf_saved)
    assert isinstance(source, HFDatasetInputs)
    # keys from the (embedded) image file names, labels from the ClassLabel column
    assert source.keys == ["chelsea", "coffee", "rocket"]
    assert source.labels.tolist() == [0, 1, 2]
    assert source.class_names == ["cat", "cup", "rocket"]
    assert source.location(0).endswith("hf[1]")
    assert source.describe() == {
        "kind": "hf-datasets",
        "records": 3,
        "num_classes": 3,
        "key_mode": "stem",
        "name": "hf",
        "split": None,
    }
    item = InputDataset(source)[0]
    assert item.error is None and item.size == (300, 451) and item.image.mode == "RGB"
    # and in a worker process
    loader = DataLoader(
        InputDataset(source, build_transform(input_size=8)),
        batch_size=3,
        num_workers=1,
        collate_fn=collate_inputs,
    )
    (batch,) = list(loader)
    assert batch.keys == source.keys and not batch.failures
    assert batch.sizes.tolist() == [[300, 451], [400, 600], [427, 640]]


def test_hf_dataset_key_column_and_splits(tmp_path):
    import datasets

    ds = _hf_dataset(tmp_path)
    source = HFDatasetInputs(ds, key_column="uid", label_column=None)
    assert source.keys == ["id-0", "id-1", "id-2"]
    assert source.labels.tolist() == [-1, -1, -1]
    dd = datasets.DatasetDict({"train": ds})
    with pytest.raises(InputError, match="choose one with split"):
        HFDatasetInputs(dd)
    assert len(HFDatasetInputs(dd, split="train")) == 3
    with pytest.raises(InputError, match="image column 'img'"):
        HFDatasetInputs(ds, image_column="img")


def test_hf_dataset_without_paths_needs_key_column(tmp_path):
    import datasets

    buffer = io.BytesIO()
    Image.new("RGB", (W, H)).save(buffer, "PNG")
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": buffer.getvalue(), "path": None}]},
        features=datasets.Features({"image": datasets.Image()}),
    )
    with pytest.raises(InputError, match="key_column"):
        HFDatasetInputs(ds)


# --------------------------------------------------------------------------------------------
# The torch Dataset in DataLoader workers
# --------------------------------------------------------------------------------------------


def test_dataloader_workers_decode_and_report_failures(tmp_path):
    root = tmp_path / "train"
    files = _mode_files(root / "modes")
    _truncated_jpeg(root / "broken" / "truncated.jpg")
    (root / "broken" / "text.jpg").write_text("this is not a JPEG")
    source = open_inputs(root)
    transform = build_transform(input_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    dataset = InputDataset(source, transform)
    loader = DataLoader(
        dataset, batch_size=5, num_workers=2, collate_fn=collate_inputs, shuffle=False
    )
    batches = list(loader)
    keys = [k for b in batches for k in b.keys]
    failures = {f.key: f for b in batches for f in b.failures}
    assert sorted(keys) == sorted(files)
    assert set(failures) == {"truncated", "text"}
    assert "truncated" in failures["truncated"].reason
    assert "cannot identify image file" in failures["text"].reason
    assert failures["text"].location.endswith("text.jpg")
    for batch in batches:
        if batch.images is not None:
            assert batch.images.shape == (len(batch), 3, 8, 8)
            assert batch.images.dtype == torch.float32
        assert batch.sizes.tolist() == [[H, W]] * len(batch)
        assert batch.labels.tolist() == [source.label(r) for r in batch.rows.tolist()]
    # rows come out in key order: the writer stores them that way
    rows = [r for b in batches for r in b.rows.tolist()] + [f.row for f in failures.values()]
    assert sorted(rows) == list(range(len(source)))


def test_subset_rows_and_all_failed_batch(tmp_path):
    (tmp_path / "a.jpg").write_text("nope")
    (tmp_path / "b.jpg").write_text("nope")
    write_sample_photos(tmp_path, ["coffee"])
    source = open_inputs(tmp_path)
    assert source.keys == ["a", "b", "coffee"]
    dataset = InputDataset(source, build_transform(input_size=4), rows=[0, 1])
    batch = collate_inputs([dataset[0], dataset[1]])
    assert batch.images is None and len(batch) == 0 and len(batch.failures) == 2
    assert batch.sizes.shape == (0, 2)
    with pytest.raises(InputError, match="rows must lie"):
        InputDataset(source, rows=[3])


def test_decompression_bomb_is_reported_not_raised(tmp_path, monkeypatch):
    write_sample_photos(tmp_path, ["coffee"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # coffee has 240k pixels: > 2x limit
    item = InputDataset(open_inputs(tmp_path))[0]
    assert item.image is None and "DecompressionBomb" in item.error


def test_a_missing_path_is_named_not_taken_for_a_dataset_name(tmp_path):
    from relabel_store.errors import InputError
    from relabel_store.write.inputs import open_inputs

    with pytest.raises(InputError, match=r"no such file or folder: .*nope.*image folder"):
        open_inputs(tmp_path / "nope")
