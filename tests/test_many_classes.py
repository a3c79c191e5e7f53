"""Class ids above 1,000 end to end: an ImageNet-21k-sized annotator (21,841 classes, timm,
random weights) through generate, the reader, pooling, the loaders, `show`, `info` and the card."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from relabel_store import load_relabel
from relabel_store.cli.main import main
from relabel_store.loaders import LabelPooler, RelabelDataset
from relabel_store.pooling import CropBox, PoolingSpec, pool
from relabel_store.publish.card import dataset_card
from relabel_store.write.samples import write_sample_photos

pytestmark = pytest.mark.slow
CLASSES = 21841  # ImageNet-21k (fall11), as timm's in22k heads have


@pytest.fixture(scope="module")
def store21k(tmp_path_factory):
    import timm
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("in21k")
    photos = root / "photos"
    write_sample_photos(photos, class_folders=True)
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=CLASSES)
    with torch.no_grad():  # a head that spreads the top-5 over the whole id range
        model.get_classifier().weight.normal_(0, 1)
    weights = root / "in21k.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    out = root / "s.zarr"
    result = CliRunner().invoke(main, [
        "generate", str(photos), "-o", str(out), "--model", "test_resnet", "--checkpoint",
        str(weights), "--input-size", "96", "--grid", "7", "--workers", "0", "-q",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return root


def test_ids_above_1000_survive_generate_read_and_pooling(store21k):
    store = load_relabel(store21k / "s.zarr")
    m = store.metadata
    assert m.num_classes == CLASSES and m.label_space == "imagenet-22k"
    assert len(m.class_identifiers or ()) == CLASSES and len(m.class_names or ()) == CLASSES
    batch = store.get_rows(range(len(store)))
    assert batch.indices.dtype == np.uint16 and int(batch.indices.max()) > 20_000
    assert int(batch.indices.max()) < CLASSES
    rec = store.get_row(0)
    target = pool(rec.indices, rec.values, CropBox(0.1, 0.2, 0.7, 0.9), num_classes=CLASSES)
    assert target.shape == (CLASSES,) and target.sum() == pytest.approx(1.0, abs=1e-5)
    top = int(target.argmax())
    assert top in set(rec.indices.ravel().tolist())


def test_loaders_pool_21841_classes(store21k):
    base = ImageFolder(store21k / "photos")
    tf = v2.Compose([v2.RandomResizedCrop(32), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    ds = RelabelDataset(base, store21k / "s.zarr", tf)
    _, targets = next(iter(DataLoader(ds, batch_size=3, num_workers=0)))
    assert targets.shape == (3, CLASSES)
    torch.testing.assert_close(targets.sum(1), torch.ones(3))
    deferred = RelabelDataset(base, store21k / "s.zarr", tf, pooling="batch", spec=PoolingSpec())
    _, refs = next(iter(DataLoader(deferred, batch_size=4)))
    pooled = LabelPooler(deferred.store, PoolingSpec())(refs)
    assert pooled.shape == (4, CLASSES)  # float32 sums of 21,841 terms: rounding of ~1e-5
    torch.testing.assert_close(pooled.sum(1), torch.ones(4), rtol=0, atol=1e-4)


def test_show_info_and_card_with_classes_above_1000(store21k):
    store = load_relabel(store21k / "s.zarr")
    key = store.keys[0].decode()
    rec = store.get(key)
    runner = CliRunner()
    info = runner.invoke(main, ["info", str(store21k / "s.zarr")])
    assert info.exit_code == 0 and f"of {CLASSES} classes" in info.output
    png = store21k / "map.png"
    shown = runner.invoke(
        main, ["show", str(store21k / "s.zarr"), key, "--box", "0,0,1,1", "-o", str(png)]
    )
    assert shown.exit_code == 0, shown.output
    assert png.stat().st_size > 10_000
    assert any(c > 1000 for c in rec.indices.ravel().tolist())
    card = dataset_card(store.metadata, store.manifest, repo_id="me/in21k-relabel")
    assert f"{CLASSES}" in card.replace(",", "") and "imagenet-22k" in card
