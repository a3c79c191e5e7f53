"""NVIDIA DALI: targets for the crops DALI's own random crop generator took (CPU backend here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _stores import file_sizes, write_store
from nvidia.dali import fn, pipeline_def
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
from PIL import Image
from torchvision.datasets import ImageFolder

from relabel_store import load_relabel
from relabel_store.errors import (
    ConfigurationError,
    LabelSpaceError,
    RecordNotFoundError,
)
from relabel_store.loaders import LabelPooler
from relabel_store.loaders.dali import DaliFiles, random_resized_crop
from relabel_store.pooling import CropBox, PoolingSpec, pool
from relabel_store.write.samples import SYNSETS, write_sample_photos

IN_STORE = ["astronaut", "chelsea", "china", "coffee", "rocket"]
ALL = [*IN_STORE, "flower"]  # flower has no record
SIZE = 32
# A GPU machine decodes on the device ("mixed") and pools there; this one runs DALI on the CPU.
GPU = torch.cuda.is_available()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_sample_photos(tmp_path_factory.mktemp("photos"), ALL)


@pytest.fixture(scope="module")
def store(photos, tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "photos.relabel.zarr"
    sizes = file_sizes(photos[name] for name in IN_STORE)
    write_store(path, keys=IN_STORE, sizes=sizes, shard_records=2, seed=5)
    return load_relabel(path)


def run(files: DaliFiles, batch_size: int = len(ALL), device: str = "cpu", seed: int = 0, **crop):
    """One epoch of a DALI pipeline over ``files``: (images, indices, windows) per batch."""

    @pipeline_def(
        batch_size=batch_size, num_threads=1, device_id=0 if device == "mixed" else None, seed=seed
    )
    def pipeline():
        encoded, index = fn.readers.file(files=files.files, labels=files.indices, name="reader")
        images, window = random_resized_crop(encoded, SIZE, device=device, **crop)
        return images, index, window

    loader = DALIGenericIterator(
        pipeline(),
        ["images", "index", "window"],
        reader_name="reader",
        last_batch_policy=LastBatchPolicy.PARTIAL,
    )
    return [(b[0]["images"], b[0]["index"], b[0]["window"]) for b in loader]


def test_targets_are_the_pooled_crops_dali_took(store, photos):
    files = DaliFiles(store, [photos[n] for n in IN_STORE])
    pooler = LabelPooler(files)
    flips = set()
    for seed in range(3):
        ((images, index, window),) = run(files, batch_size=len(IN_STORE), seed=seed)
        assert images.shape == (len(IN_STORE), SIZE, SIZE, 3)
        refs = files.references(index, window)
        targets = pooler(refs)
        for i, sample in enumerate(index.flatten().tolist()):
            name = IN_STORE[sample]
            height, width, top, left, crop_h, crop_w, flipped = window[i].tolist()
            assert (height, width) == tuple(store.get(name).size)
            box = CropBox.from_pixels(
                left, top, left + crop_w, top + crop_h, (height, width), bool(flipped)
            )
            flips.add(box.flipped)
            assert torch.equal(
                refs["box"][i], torch.tensor([box.x0, box.y0, box.x1, box.y1], dtype=torch.float64)
            )
            record = store.get(name)
            expected = pool(record.indices, record.values, box, num_classes=1000)
            np.testing.assert_allclose(targets[i].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert flips == {True, False}


def test_the_window_is_the_region_dali_decoded(tmp_path, store):
    """An image whose pixels hold their own coordinates: each output must show its window."""
    h, w = 180, 240
    y, x = np.mgrid[0:h, 0:w]
    ramp = np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8)
    Image.fromarray(ramp).save(tmp_path / "astronaut.png")  # a key the store has
    files = DaliFiles(store, [tmp_path / "astronaut.png"] * 8, key_fn=lambda path: "astronaut")
    ((images, _, window),) = run(files, batch_size=8, random_area=(0.1, 0.5))
    for image, (_, _, top, left, crop_h, crop_w, flipped) in zip(
        images.numpy().astype(np.float64), window.tolist(), strict=True
    ):
        # Resizing keeps the mean coordinate of the region (to about a pixel at the borders).
        assert image[..., 0].mean() == pytest.approx(left + (crop_w - 1) / 2, abs=1.5)
        assert image[..., 1].mean() == pytest.approx(top + (crop_h - 1) / 2, abs=1.5)
        row = image[SIZE // 2, :, 0]
        assert (row[-1] < row[0]) == bool(flipped)  # mirrored: x runs right to left


def test_missing_files_follow_the_policy(store, photos):
    paths = [photos[n] for n in ALL]
    with pytest.raises(RecordNotFoundError, match="flower"):
        DaliFiles(store, paths)  # missing="error": refused before any batch
    labels = list(range(len(ALL)))
    with pytest.raises(LabelSpaceError, match="missing='original'"):
        DaliFiles(store, paths, labels, missing="original")
    with pytest.raises(  # without labels: every reason to need them is named
        ConfigurationError,
        match=r"missing='original' \(1 file has no record\) and PoolingSpec\(original_weight"
        r"=\.\.\.\) mixes in the files' labels: it needs labels=",
    ):
        DaliFiles(store, paths, missing="original", spec=PoolingSpec(original_weight=0.1))
    class_map = {i: 10 * i for i in labels}
    files = DaliFiles(store, paths, labels, missing="original", class_map=class_map)
    (batch,) = run(files)
    refs = files.references(batch[1], batch[2])
    targets = LabelPooler(files)(refs)
    flower = int(np.flatnonzero(batch[1].flatten().numpy() == ALL.index("flower"))[0])
    assert int(refs["row"][flower]) == -1
    expected = np.zeros(1000, np.float32)
    expected[class_map[ALL.index("flower")]] = 1.0
    np.testing.assert_array_equal(targets[flower].numpy(), expected)


def test_from_an_image_folder_with_label_mixing(store, photos, tmp_path):
    folder = tmp_path / "train"
    write_sample_photos(folder, IN_STORE, class_folders=True)
    dataset = ImageFolder(folder)
    spec = PoolingSpec(original_weight=0.25)
    class_map = {name: 3 * i for i, name in enumerate(dataset.classes)}
    files = DaliFiles.from_dataset(store, dataset, spec=spec, class_map=class_map)
    assert files.files == [path for path, _ in dataset.samples]
    ((_, index, window),) = run(files, batch_size=len(IN_STORE))
    refs = files.references(index, window)
    targets = LabelPooler(files)(refs)
    for i, sample in enumerate(index.flatten().tolist()):
        path, label = dataset.samples[sample]
        record = store.get(path.rsplit("/", 1)[1].removesuffix(".jpg"))
        box = CropBox(*refs["box"][i].tolist(), flipped=bool(refs["flipped"][i]))
        expected = pool(
            record.indices,
            record.values,
            box,
            num_classes=1000,
            spec=spec,
            label=class_map[dataset.classes[label]],
        )
        np.testing.assert_allclose(targets[i].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert sorted(SYNSETS.values())[0] in dataset.classes  # the folders are ImageNet synsets


def test_an_image_of_another_shape_is_refused(store, photos, tmp_path):
    with Image.open(photos["chelsea"]) as image:
        image.resize((image.width // 2, image.height // 2)).save(tmp_path / "chelsea.jpg")
        image.crop((0, 0, 300, 300)).save(tmp_path / "coffee.jpg")  # another record's key
    files = DaliFiles(store, [tmp_path / "chelsea.jpg", tmp_path / "coffee.jpg"])
    (batch,) = run(files, batch_size=2)
    with pytest.raises(ConfigurationError, match=r"coffee.jpg' is 300 x 300 .* 400 x 600"):
        files.references(batch[1], batch[2])
    half = DaliFiles(store, [tmp_path / "chelsea.jpg"])
    ((_, index, window),) = run(half, batch_size=1)
    assert int(half.references(index, window)["row"][0]) == store.index_of("chelsea")


def test_wrong_wiring_is_refused(store, photos):
    files = DaliFiles(store, [photos["coffee"]])
    with pytest.raises(ConfigurationError, match=r"windows must be \(1, 7\)"):
        files.references(torch.zeros(1, 1, dtype=torch.int32), torch.zeros(1, 4))
    with pytest.raises(ConfigurationError, match=r"labels=dali_files\.indices"):
        files.references(torch.tensor([[3]]), torch.zeros(1, 7, dtype=torch.int64))
    with pytest.raises(TypeError, match="list of image paths"):
        DaliFiles(store, photos["coffee"])


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU (GPU decoding and pooling on the device)")
def test_gpu_decoding_and_pooling_on_the_device(store, photos):
    files = DaliFiles(store, [photos[n] for n in IN_STORE])
    ((images, index, window),) = run(files, batch_size=len(IN_STORE), device="mixed")
    assert images.device.type == "cuda"
    refs = files.references(index, window)
    targets = LabelPooler(files, device="cuda")(refs)
    expected = LabelPooler(files)(refs)
    torch.testing.assert_close(targets.cpu(), expected, rtol=1e-5, atol=1e-6)
