"""Device-resident pooling: every map in one tensor pair, the same targets as reading the store."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from _stores import file_sizes, write_store
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from relabel_store import InsufficientMemoryError, load_relabel
from relabel_store.errors import ConfigurationError
from relabel_store.loaders import DeviceMaps, LabelPooler, RelabelDataset, ResidentPooler
from relabel_store.loaders import maps as maps_module
from relabel_store.pooling import CropBox, PoolingSpec, pool
from relabel_store.write.samples import write_sample_photos


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    # 40 records in shards of 16, rows not in key order, a few rows never written (failed).
    path = tmp_path_factory.mktemp("store") / "maps.relabel.zarr"
    return write_store(path, 40, shard_records=16, seed=2, failed=frozenset({3, 17}))


@pytest.fixture(scope="module")
def store(written):
    return load_relabel(written.path)


def refs_for(store, n, seed, missing=()):
    """Collated references as loaders make them: random rows, RandomResizedCrop-like boxes."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(store), n)
    rows[list(missing)] = -1
    boxes = []
    for _ in range(n):
        x0, y0 = rng.uniform(0, 0.6, 2)
        w, h = rng.uniform(0.1, 1 - max(x0, y0), 2)
        boxes.append(CropBox(x0, y0, x0 + w, y0 + h, flipped=bool(rng.random() < 0.5)))
    return {
        "row": torch.from_numpy(rows),
        "box": torch.tensor([(b.x0, b.y0, b.x1, b.y1) for b in boxes], dtype=torch.float64),
        "flipped": torch.tensor([b.flipped for b in boxes]),
        "label": torch.from_numpy(rng.integers(0, 1000, n)),
    }, boxes


def test_loaded_maps_are_the_store_records_in_key_order(store, written):
    maps = DeviceMaps.load(store)
    assert len(maps) == len(store) == 38 and maps.device == torch.device("cpu")
    everything = store.get_rows(range(len(store)))
    np.testing.assert_array_equal(maps.indices.numpy().view(np.uint16), everything.indices)
    np.testing.assert_array_equal(maps.values.numpy(), everything.values)
    assert maps.values.dtype == torch.float16 and maps.nbytes == 38 * 15 * 15 * 5 * 4
    wide = DeviceMaps.load(store, dtype=torch.float32)
    np.testing.assert_array_equal(wide.values.numpy(), everything.values.astype(np.float32))
    # Rows of the store's key order: the records written under those keys.
    key = written.keys[5]
    ids, values = maps.gather(torch.tensor([store.index_of(key)]))
    np.testing.assert_array_equal(ids[0].numpy(), written.indices[5].astype(np.int32))
    np.testing.assert_array_equal(values[0].numpy(), written.values[5])


@pytest.mark.parametrize(
    "spec",
    [PoolingSpec(), PoolingSpec(output_size=(2, 3)), PoolingSpec(original_weight=0.2)],
    ids=["default", "token-grid", "label-mixing"],
)
def test_resident_pooling_equals_reading_the_store_and_per_sample_pool(store, spec):
    refs, boxes = refs_for(store, 48, seed=1, missing=(4, 9))
    resident = ResidentPooler(store, spec)(refs)
    read = LabelPooler(store, spec)(refs)
    torch.testing.assert_close(resident, read, rtol=0, atol=0)  # the same maps, the same math
    for i, box in enumerate(boxes):
        row, label = int(refs["row"][i]), int(refs["label"][i])
        if row < 0:
            expected = np.zeros(resident.shape[1:], np.float32)
            expected[..., label] = 1.0
        else:
            record = store.get_row(row)
            expected = pool(
                record.indices, record.values, box, num_classes=1000, spec=spec, label=label
            )
        np.testing.assert_allclose(resident[i].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_float32_maps_and_a_shared_pooler_give_the_same_targets(store):
    refs, _ = refs_for(store, 16, seed=3)
    maps = DeviceMaps.load(store, dtype=torch.float32)
    torch.testing.assert_close(ResidentPooler(store, maps=maps)(refs), LabelPooler(store)(refs))


def test_in_a_dataloader_workers_return_references_only(tmp_path):
    photos = write_sample_photos(tmp_path / "train", class_folders=True)
    keys = sorted(photos)
    sizes = file_sizes(photos[k] for k in keys)
    write_store(tmp_path / "photos.relabel.zarr", keys=keys, sizes=sizes, shard_records=4)
    tf = v2.Compose([v2.RandomResizedCrop(32), v2.RandomHorizontalFlip(), v2.PILToTensor()])
    dataset = RelabelDataset(
        ImageFolder(tmp_path / "train"), tmp_path / "photos.relabel.zarr", tf, pooling="batch"
    )
    pooler = ResidentPooler(dataset)
    torch.manual_seed(0)
    for _, refs in DataLoader(dataset, batch_size=3, shuffle=True):
        assert set(refs) == {"row", "box", "flipped", "label"}
        targets = pooler(refs)
        for i in range(len(targets)):
            box = CropBox(*refs["box"][i].tolist(), flipped=bool(refs["flipped"][i]))
            expected = dataset.target(int(refs["row"][i]), box, int(refs["label"][i]))
            np.testing.assert_allclose(targets[i].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_maps_of_another_store_are_refused(store, written, tmp_path):
    other = write_store(tmp_path / "other.relabel.zarr", 38, seed=9)
    with pytest.raises(ConfigurationError, match="not from"):
        ResidentPooler(store, maps=DeviceMaps.load(other.path))
    copy = shutil.copytree(written.path, tmp_path / "copy.relabel.zarr")
    ResidentPooler(store, maps=DeviceMaps.load(copy))  # the same content: accepted


def test_a_device_without_room_is_refused_before_allocating(store, monkeypatch):
    monkeypatch.setattr(maps_module, "_free_bytes", lambda device: 1000)
    with pytest.raises(InsufficientMemoryError, match=r"take 0\.00 GiB, and cpu has"):
        DeviceMaps.load(store)
    assert len(DeviceMaps.load(store, check_memory=False)) == len(store)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_pinned_maps_need_a_gpu(store):
    with pytest.raises(ConfigurationError, match="needs CUDA"):
        DeviceMaps.load(store, pin_memory=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("where", ["cuda", "pinned host"])
def test_on_the_gpu(store, where):
    refs, _ = refs_for(store, 64, seed=4, missing=(0,))
    if where == "cuda":
        pooler = ResidentPooler(store, device="cuda")
    else:
        pooler = ResidentPooler(store, device="cuda", maps_device="cpu", pin_memory=True)
    torch.testing.assert_close(pooler(refs).cpu(), LabelPooler(store)(refs), rtol=1e-5, atol=1e-6)


def test_workers_pool_from_maps_in_host_memory_with_the_same_targets(tmp_path):
    photos = write_sample_photos(tmp_path / "train", class_folders=True)
    keys = sorted(photos)
    sizes = file_sizes(photos[k] for k in keys)
    store = write_store(tmp_path / "photos.relabel.zarr", keys=keys, sizes=sizes, shard_records=4)
    maps = DeviceMaps.load(store.path)
    tf = v2.Compose([v2.RandomResizedCrop(32), v2.RandomHorizontalFlip(), v2.PILToTensor()])
    folder = ImageFolder(tmp_path / "train")
    decoding = RelabelDataset(folder, store.path, tf)
    copying = RelabelDataset(folder, store.path, tf, maps=maps)
    batch = list(range(len(folder))) * 5
    for fetch in (lambda d: d.__getitems__(batch), lambda d: [d[i] for i in batch]):
        torch.manual_seed(3)
        expected = fetch(decoding)
        torch.manual_seed(3)
        for (image, target), (same, want) in zip(fetch(copying), expected, strict=True):
            assert torch.equal(image, same)
            torch.testing.assert_close(target, want, rtol=0, atol=0)
    other = write_store(tmp_path / "other.relabel.zarr", 6, seed=4)
    with pytest.raises(ConfigurationError, match="not from"):
        RelabelDataset(folder, store.path, tf, maps=DeviceMaps.load(other.path))
    with pytest.raises(TypeError, match="DeviceMaps"):
        RelabelDataset(folder, store.path, tf, maps=maps.values)
