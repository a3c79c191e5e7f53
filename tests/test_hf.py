"""Hugging Face ``datasets`` integration: relabel_transform on real Dataset / IterableDataset."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from _fake_hub import HTTPX2_DATA_DEPRECATION_FILTER, iter_fake_hub
from _stores import file_sizes, photo_sizes, save_photo, write_store
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from relabel_store import RecordNotFoundError, load_relabel
from relabel_store.errors import ConfigurationError, UnsupportedTransformError
from relabel_store.loaders import RelabelDataset, RelabelStream, ReturnsCropBox, relabel_transform
from relabel_store.loaders._core import KeyTally
from relabel_store.loaders.dali import DaliFiles
from relabel_store.pooling import CropBox, PoolingSpec, pool
from relabel_store.write.inputs import open_inputs

N_IMAGES = 12
BOX = CropBox(0.25, 0.0, 0.75, 0.5, flipped=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A store and JPEG files whose stems are its keys; labels are the store's where known."""
    root = tmp_path_factory.mktemp("hf")
    written = write_store(root / "s.zarr", 30, num_classes=1000, sizes=photo_sizes(30))
    rng = np.random.default_rng(0)
    keys = written.keys[:N_IMAGES]
    paths = [
        save_photo(root / "images" / f"{key}.JPEG", size, rng)
        for key, size in zip(keys, written.sizes, strict=False)
    ]
    labels = [int(v) % 1000 for v in rng.integers(0, 1000, N_IMAGES)]
    return {"root": root, "store": root / "s.zarr", "keys": keys, "paths": paths, "labels": labels}


def features(**extra) -> datasets.Features:
    return datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=1000), **extra}
    )


def from_files(files, names=None) -> datasets.Dataset:
    """A Dataset whose image column references the files (decoding keeps the file name)."""
    names = names or files["paths"]
    return datasets.Dataset.from_dict({"image": names, "label": files["labels"]}, features())


def hub_style_parquet(files, tmp_path, names=None, extra=None) -> datasets.Dataset:
    """Bytes embedded with the bare file name as path, as on the Hub; written and read back."""
    names = names or [Path(p).name for p in files["paths"]]
    cells = [
        {"bytes": Path(p).read_bytes(), "path": name}
        for p, name in zip(files["paths"], names, strict=True)
    ]
    columns = {"image": cells, "label": files["labels"], **(extra or {})}
    extra_features = {k: datasets.Value("string") for k in extra or {}}
    ds = datasets.Dataset.from_dict(columns, features(**extra_features))
    ds.to_parquet(str(tmp_path / "train.parquet"))
    return datasets.Dataset.from_parquet(
        str(tmp_path / "train.parquet"), cache_dir=str(tmp_path / "cache")
    )


def fixed_crop(img):
    """A deterministic transform: resize to 32x32, report a fixed flipped box."""
    return v2.functional.to_dtype(
        v2.functional.to_image(img.resize((32, 32))), torch.float32, scale=True
    ), BOX


def expected(files, key, box=BOX, spec=None, label=-1):
    store = load_relabel(files["store"])
    rec = store.get(key)
    return pool(
        rec.indices, rec.values, box, num_classes=1000, spec=spec or PoolingSpec(), label=label
    )


V2_TRAIN = v2.Compose(
    [
        v2.RandomResizedCrop(32, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
    ]
)


# -- targets ---------------------------------------------------------------------------------


def test_parquet_round_trip_targets_are_label_pooling(files, tmp_path):
    ds = hub_style_parquet(files, tmp_path)
    assert isinstance(ds.features["image"], datasets.Image)
    ds = ds.cast_column("image", datasets.Image(decode=False))
    ds.set_transform(relabel_transform(files["store"], ReturnsCropBox(fixed_crop)))
    batch = ds[:N_IMAGES]
    assert list(batch) == ["pixel_values", "labels"]
    assert len(batch["pixel_values"]) == N_IMAGES and batch["pixel_values"][0].shape == (3, 32, 32)
    targets = batch["labels"]
    assert targets.dtype == torch.float32 and targets.shape == (N_IMAGES, 1000)
    want = np.stack([expected(files, k) for k in files["keys"]])
    np.testing.assert_allclose(targets.numpy(), want, rtol=1e-5, atol=1e-7)


def test_decoded_images_keep_their_file_name(files):
    ds = from_files(files).with_transform(
        relabel_transform(files["store"], ReturnsCropBox(fixed_crop))
    )
    row = ds[3]
    assert row["pixel_values"].shape == (3, 32, 32) and row["labels"].shape == (1000,)
    np.testing.assert_allclose(row["labels"].numpy(), expected(files, files["keys"][3]), rtol=1e-6)


def test_string_path_column(files):
    ds = datasets.Dataset.from_dict({"image": files["paths"], "label": files["labels"]})
    ds.set_transform(relabel_transform(files["store"], ReturnsCropBox(fixed_crop)))
    np.testing.assert_allclose(
        ds[5]["labels"].numpy(), expected(files, files["keys"][5]), rtol=1e-6
    )


def test_same_crops_and_targets_as_the_pytorch_loader(files):
    """Same seed, same v2 pipeline: the HF transform and RelabelDataset agree exactly."""
    store = load_relabel(files["store"])
    base = [
        (Image.open(p).convert("RGB"), lab)
        for p, lab in zip(files["paths"], files["labels"], strict=True)
    ]
    keys = files["keys"]
    torch_ds = RelabelDataset(base, store, V2_TRAIN, key_fn=lambda i: keys[i])
    hf_ds = from_files(files).cast_column("image", datasets.Image(decode=False))
    hf_ds.set_transform(relabel_transform(store, V2_TRAIN))
    for i in range(N_IMAGES):
        torch.manual_seed(i)
        image, target = torch_ds[i]
        torch.manual_seed(i)
        row = hf_ds[i]
        torch.testing.assert_close(row["pixel_values"], image)
        torch.testing.assert_close(row["labels"], target)


def test_torchvision_reference_preset_ending_in_to_pure_tensor(files):
    """torchvision's references/classification v2 preset: PILToTensor first, ToPureTensor last."""
    preset = v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(32, antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.ToDtype(torch.float, scale=True),
            v2.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
            v2.ToPureTensor(),
        ]
    )
    ds = from_files(files).with_transform(relabel_transform(files["store"], preset))
    batch = ds[:4]
    assert type(batch["pixel_values"][0]) is torch.Tensor
    torch.testing.assert_close(batch["labels"].sum(1), torch.ones(4))


def test_token_level_targets_and_original_label_mixing(files, tmp_path):
    spec = PoolingSpec(output_size=2, original_weight=0.25)
    ds = hub_style_parquet(files, tmp_path).cast_column("image", datasets.Image(decode=False))
    tf = relabel_transform(
        files["store"], ReturnsCropBox(fixed_crop), spec=spec, class_map=range(1000)
    )
    want = np.stack(
        [
            expected(files, k, spec=spec, label=lab)
            for k, lab in zip(files["keys"], files["labels"], strict=True)
        ]
    )
    batched = ds.with_transform(tf)[:]["labels"]
    assert batched.shape == (N_IMAGES, 2, 2, 1000)
    np.testing.assert_allclose(batched.numpy(), want, rtol=1e-5, atol=1e-7)
    alone = torch.stack([ds.with_transform(tf)[i]["labels"] for i in range(N_IMAGES)])
    assert torch.equal(alone, batched)  # the same bits, whatever the batch


# -- keys ------------------------------------------------------------------------------------


def test_a_suffix_that_is_not_a_synset_is_kept(files, tmp_path):
    names = [f"{k}_n0144.JPEG" for k in files["keys"]]
    ds = hub_style_parquet(files, tmp_path, names=names)
    ds = ds.cast_column("image", datasets.Image(decode=False))
    ds.set_transform(relabel_transform(files["store"], ReturnsCropBox(fixed_crop)))
    with pytest.raises(RecordNotFoundError, match=f"key '{files['keys'][0]}_n0144'"):
        ds[0]


def test_embedded_bytes_without_decode_false_explain_the_fix(files, tmp_path):
    ds = hub_style_parquet(files, tmp_path)  # decoded images: the file name is gone
    ds.set_transform(relabel_transform(files["store"], ReturnsCropBox(fixed_crop)))
    with pytest.raises(ValueError, match=r"Image\(decode=False\).*key_column"):
        ds[0]


def test_key_column_with_in_memory_images(files):
    images = [Image.open(p).convert("RGB") for p in files["paths"]]  # stored without a path
    ds = datasets.Dataset.from_dict(
        {"image": images, "label": files["labels"], "key": files["keys"]},
        features(key=datasets.Value("string")),
    )
    tf = relabel_transform(
        files["store"], ReturnsCropBox(fixed_crop), key_column="key", keep_columns=["key"]
    )
    batch = ds.with_transform(tf)[2:6]
    assert batch["key"] == files["keys"][2:6]
    want = np.stack([expected(files, k) for k in files["keys"][2:6]])
    np.testing.assert_allclose(batch["labels"].numpy(), want, rtol=1e-5, atol=1e-7)


def test_missing_key_raises_naming_it_or_falls_back_to_the_label(files, tmp_path):
    keys = [*files["keys"][:-1], "not_in_store"]
    ds = hub_style_parquet(files, tmp_path, extra={"key": keys})
    ds = ds.cast_column("image", datasets.Image(decode=False))
    strict = ds.with_transform(relabel_transform(files["store"], key_column="key"))
    assert strict[0]["labels"].shape == (1000,)
    with pytest.raises(RecordNotFoundError, match=r"key 'not_in_store'.*missing='original'"):
        strict[N_IMAGES - 1]
    with pytest.raises(RecordNotFoundError, match="not_in_store"):
        strict[:]  # the whole batch fails, before any image is transformed
    lenient = ds.with_transform(
        relabel_transform(
            files["store"], key_column="key", missing="original", class_map=range(1000)
        )
    )
    batch = lenient[:]
    last = batch["labels"][-1]
    assert last.argmax().item() == files["labels"][-1] and last.max().item() == 1.0
    want = np.stack([expected(files, k, box=CropBox.full()) for k in keys[:-1]])
    np.testing.assert_allclose(batch["labels"][:-1].numpy(), want, rtol=1e-5, atol=1e-7)
    assert isinstance(batch["pixel_values"][0], Image.Image)  # transform=None: RGB PIL images
    assert batch["pixel_values"][0].mode == "RGB"


def test_fallback_needs_a_usable_label(files):
    ds = datasets.Dataset.from_dict({"image": files["paths"][:2], "k": ["nope", "nope2"]})
    ds = ds.cast_column("image", datasets.Image(decode=False))
    ds.set_transform(
        relabel_transform(files["store"], key_column="k", missing="original", class_map=range(10))
    )
    with pytest.raises(RecordNotFoundError, match=r"'nope'.*no usable label"):
        ds[0]


# -- columns ---------------------------------------------------------------------------------


def test_output_names_and_kept_columns(files):
    ds = from_files(files)
    tf = relabel_transform(
        files["store"],
        ReturnsCropBox(fixed_crop),
        pixel_values_column="x",
        target_column="soft",
        keep_columns=True,
    )
    batch = ds.with_transform(tf)[:3]
    assert sorted(batch) == ["label", "soft", "x"]  # the image column itself is not kept
    assert batch["label"] == files["labels"][:3] and batch["soft"].shape == (3, 1000)
    with pytest.raises(KeyError, match="'nope'"):
        ds.with_transform(relabel_transform(files["store"], keep_columns=["nope"]))[0]
    with pytest.raises(KeyError, match="image column 'img'"):
        ds.with_transform(relabel_transform(files["store"], image_column="img"))[0]


def test_arguments_are_checked_at_construction(files):
    with pytest.raises(ValueError, match="missing"):
        relabel_transform(files["store"], missing="skip")
    with pytest.raises(ValueError, match="differently"):
        relabel_transform(files["store"], pixel_values_column="y", target_column="y")
    with pytest.raises(UnsupportedTransformError, match="ReturnsCropBox"):
        relabel_transform(files["store"], lambda img: img)


def test_store_from_a_file_url(files, tmp_path, monkeypatch):
    monkeypatch.setenv("RELABEL_STORE_CACHE", str(tmp_path / "cache"))
    tf = relabel_transform(files["store"].as_uri(), ReturnsCropBox(fixed_crop))
    assert tf.store.source.location != str(files["store"])  # read through fsspec, not in place
    want = np.stack([expected(files, k) for k in files["keys"]])
    np.testing.assert_allclose(from_files(files).with_transform(tf)[:]["labels"].numpy(), want)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    monkeypatch.delenv("RELABEL_STORE_CACHE", raising=False)
    yield from iter_fake_hub(monkeypatch, tmp_path)


@pytest.mark.filterwarnings(HTTPX2_DATA_DEPRECATION_FILTER)
def test_store_on_the_hub_through_dataloader_workers(files, hub):
    root = files["store"]
    hub.commit_files(
        "relabel/maps",
        {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()},
    )
    ds = from_files(files).cast_column("image", datasets.Image(decode=False))
    ds.set_transform(
        relabel_transform("hf://datasets/relabel/maps@main", ReturnsCropBox(fixed_crop))
    )
    got = torch.cat([b["labels"] for b in DataLoader(ds, batch_size=6, num_workers=2)])
    want = np.stack([expected(files, k) for k in files["keys"]])
    np.testing.assert_allclose(got.numpy(), want)


def test_transform_pickles_and_survives_dataset_copies(files):
    tf = relabel_transform(files["store"], ReturnsCropBox(fixed_crop))
    ds = from_files(files)
    want = ds.with_transform(tf)[:]["labels"]
    again = pickle.loads(pickle.dumps(tf))  # what a spawned DataLoader worker receives
    torch.testing.assert_close(ds.with_transform(again)[:]["labels"], want)
    ds.set_transform(tf)
    order = from_files(files).add_column("i", range(N_IMAGES)).shuffle(seed=0)["i"][:]
    torch.testing.assert_close(ds.shuffle(seed=0)[:]["labels"], want[order])
    torch.testing.assert_close(ds.select([4, 1])[:]["labels"], want[[4, 1]])
    split = ds.train_test_split(test_size=4, shuffle=False)
    torch.testing.assert_close(split["test"][:]["labels"], want[-4:])


# -- DataLoader and streaming ----------------------------------------------------------------


def test_dataloader_with_two_workers_over_a_parquet_dataset(files, tmp_path):
    ds = hub_style_parquet(files, tmp_path).cast_column("image", datasets.Image(decode=False))
    ds.set_transform(relabel_transform(files["store"], V2_TRAIN, keep_columns=["label"]))
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)
    labels = []
    for batch in loader:
        assert batch["pixel_values"].shape == (len(batch["label"]), 3, 32, 32)
        assert batch["labels"].shape == (len(batch["label"]), 1000)
        torch.testing.assert_close(batch["labels"].sum(1), torch.ones(len(batch["label"])))
        labels += batch["label"].tolist()
    assert sorted(labels) == sorted(files["labels"])


def test_dataloader_workers_give_the_in_process_targets(files):
    ds = from_files(files).cast_column("image", datasets.Image(decode=False))
    tf = relabel_transform(files["store"], ReturnsCropBox(fixed_crop))
    ds.set_transform(tf)
    got = torch.cat([b["labels"] for b in DataLoader(ds, batch_size=5, num_workers=2)])
    torch.testing.assert_close(got, ds[:]["labels"])


def test_streaming_iterable_dataset_map_batched(files, tmp_path):
    ids = hub_style_parquet(files, tmp_path).to_iterable_dataset(num_shards=2)
    ids = ids.cast_column("image", datasets.Image(decode=False))
    mapped = ids.map(
        relabel_transform(files["store"], ReturnsCropBox(fixed_crop)),
        batched=True,
        batch_size=5,
        remove_columns=["image"],
    )
    rows = list(mapped)
    assert len(rows) == N_IMAGES and sorted(rows[0]) == ["label", "labels", "pixel_values"]
    by_label = {lab: k for k, lab in zip(files["keys"], files["labels"], strict=True)}
    for row in rows:
        np.testing.assert_allclose(row["labels"].numpy(), expected(files, by_label[row["label"]]))
    loader = DataLoader(mapped, batch_size=4, num_workers=2)
    seen = 0
    for batch in loader:
        assert batch["pixel_values"].shape[1:] == (3, 32, 32)
        assert batch["labels"].shape[1:] == (1000,)
        seen += len(batch["labels"])
    assert seen == N_IMAGES


def test_streaming_with_decoded_images_needs_decode_false(files, tmp_path):
    ids = hub_style_parquet(files, tmp_path).to_iterable_dataset()
    mapped = ids.map(relabel_transform(files["store"]), batched=True, remove_columns=["image"])
    with pytest.raises(ValueError, match="decode=False"):
        next(iter(mapped))


def test_in_memory_bytes_are_decoded_like_the_generator(files):
    """Grayscale and palette images become RGB, as relabel-store generate decoded them."""
    buf = io.BytesIO()
    Image.open(files["paths"][0]).convert("L").save(buf, format="PNG")
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": buf.getvalue(), "path": f"{files['keys'][0]}.png"}]},
        datasets.Features({"image": datasets.Image(decode=False)}),
    )
    row = ds.with_transform(relabel_transform(files["store"]))[0]
    assert row["pixel_values"].mode == "RGB" and row["labels"].shape == (1000,)


def test_a_turned_photo_decoded_by_datasets_is_refused(tmp_path):
    """datasets applies a JPEG's EXIF orientation when it decodes; generate does not, so the
    decoded image is not the one the record was made from: refused, and decode=False works."""
    raw = np.random.default_rng(1).integers(0, 255, (50, 80, 3), np.uint8)  # stored 50 x 80
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees to display
    Image.fromarray(raw).save(tmp_path / "turned.jpg", exif=exif)
    store = write_store(tmp_path / "s.zarr", keys=["turned"], sizes=[(50, 80)]).path
    ds = datasets.Dataset.from_dict(
        {"image": [str(tmp_path / "turned.jpg")], "key": ["turned"]},
        datasets.Features({"image": datasets.Image(), "key": datasets.Value("string")}),
    )
    tf = relabel_transform(store, ReturnsCropBox(fixed_crop), key_column="key")
    with pytest.raises(ConfigurationError, match=r"is 80 x 50 .* 50 x 80 .*decode=False"):
        ds.with_transform(tf)[0]
    raw_cells = ds.cast_column("image", datasets.Image(decode=False)).with_transform(tf)
    rec = load_relabel(store).get("turned")
    np.testing.assert_allclose(
        raw_cells[0]["labels"].numpy(), pool(rec.indices, rec.values, BOX, num_classes=1000)
    )


def test_keys_follow_the_store_key_mode_and_key_column(files, tmp_path):
    """A store keyed by a column holds no path-derived keys: path keys are refused naming the
    fix, the key column works; a relpath store needs a key column too (no dataset root)."""
    keyed = datasets.Dataset.from_dict(
        {"image": files["paths"], "id": [f"id-{k}" for k in files["keys"]]}
    ).cast_column("image", datasets.Image(decode=False))
    source = open_inputs(keyed, key_column="id")  # what generate records
    store = write_store(
        tmp_path / "by_id.zarr",
        keys=source.keys,
        sizes=file_sizes(files["paths"][files["keys"].index(k[3:])] for k in source.keys),
        dataset=source.describe(),
    ).path
    with pytest.raises(
        ConfigurationError,
        match=r"keys from column .id. of its dataset .relabel-store generate --key-column.*key_column=",
    ):
        relabel_transform(store)
    with pytest.raises(ConfigurationError, match=r"--key-column.*key_fn="):
        RelabelStream(store)
    with pytest.raises(ConfigurationError, match=r"--key-column.*key_fn=path -> key"):
        DaliFiles(store, files["paths"])
    with pytest.raises(ConfigurationError, match=r"--key-column.*key_column= for a datasets"):
        RelabelDataset(keyed, store)
    by_id = RelabelDataset(keyed, store, ReturnsCropBox(fixed_crop), key_column="id")
    assert (by_id.rows >= 0).all()
    tf = relabel_transform(store, ReturnsCropBox(fixed_crop), key_column="id")
    rec = load_relabel(store).get("id-" + files["keys"][2])
    np.testing.assert_allclose(
        keyed.with_transform(tf)[2]["labels"].numpy(),
        pool(rec.indices, rec.values, BOX, num_classes=1000),
    )
    with pytest.raises(ConfigurationError, match=r"key_mode='relpath'.*key_column="):
        relabel_transform(files["store"], key_mode="relpath")
    with pytest.raises(ConfigurationError, match="key_mode must be one of"):
        relabel_transform(files["store"], key_mode="name")


def test_keys_none_of_which_is_in_the_store_are_refused(files, tmp_path, monkeypatch):
    """With missing="original", a few keys may lack a record; none found in the first batches
    means keys derived another way than the store's (every target a one-hot label)."""
    monkeypatch.setattr(KeyTally, "FIRST_LOOK", 8)
    names = [f"other_{i}.JPEG" for i in range(N_IMAGES)]
    ds = hub_style_parquet(files, tmp_path, names=names)
    ds = ds.cast_column("image", datasets.Image(decode=False)).with_transform(
        relabel_transform(files["store"], missing="original", class_map=range(1000))
    )
    ds[:4]  # a few keys without records: their labels, one-hot
    with pytest.raises(ConfigurationError, match=r"none of the 8 keys .*'other_0'.*store's are"):
        ds[4:8]
