"""Iterable pipelines: WebDataset over real tar shards of the sample photos, RelabelStream."""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest
import torch
import webdataset as wds
from _stores import file_sizes, write_store
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from relabel_store import load_relabel
from relabel_store.errors import (
    ConfigurationError,
    LabelSpaceError,
    RecordNotFoundError,
    UnsupportedTransformError,
)
from relabel_store.loaders import LabelPooler, RelabelStream
from relabel_store.loaders._core import KeyTally
from relabel_store.pooling import CropBox, PoolingSpec, pool
from relabel_store.write.samples import sample_photo, write_sample_photos

# The store covers these; "flower" is in the shards but has no record.
IN_STORE = ["astronaut", "chelsea", "china", "coffee", "rocket"]
ALL = [*IN_STORE, "flower"]
LABEL = {name: i for i, name in enumerate(ALL)}  # the shards' own label ("cls")
CLASS_MAP = {i: 100 + 7 * i for i in range(len(ALL))}  # stream label -> store class id
SIZE = 64

# WebDataset opens each shard and leaves closing it to the garbage collector (webdataset 1.0.2,
# tariterators.tar_file_iterator): Python's ResourceWarning for that is webdataset's, not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <_io.FileIO name=.*[.]tar:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(autouse=True)
def _collect_shard_files():
    """Collect webdataset's abandoned shard files within the test that opened them."""
    yield
    gc.collect()


def train_tf() -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(SIZE, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
        ]
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The sample photos as JPEG files, as the shards and the store know them."""
    root = tmp_path_factory.mktemp("photos")
    return write_sample_photos(root, ALL)


@pytest.fixture(scope="module")
def store(photos, tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "photos.relabel.zarr"
    sizes = file_sizes(photos[name] for name in IN_STORE)
    write_store(path, keys=IN_STORE, sizes=sizes, shard_records=2, seed=3)
    return load_relabel(path)


def write_shards(folder, photos, groups, edit=None):
    """Tar shards as WebDataset writes them: ``photos/<name>.jpg`` and ``.cls`` per sample.
    ``edit(name, image) -> image`` re-encodes a photo changed."""
    urls = []
    for s, names in enumerate(groups):
        url = str(folder / f"train-{s:04d}.tar")
        with wds.TarWriter(url) as sink:
            for name in names:
                data = photos[name].read_bytes()
                if edit is not None:
                    buffer = io.BytesIO()
                    with Image.open(photos[name]) as image:
                        edit(name, image).save(buffer, "JPEG", quality=95)
                    data = buffer.getvalue()
                sink.write({"__key__": f"photos/{name}", "jpg": data, "cls": LABEL[name]})
        urls.append(url)
    return urls


@pytest.fixture(scope="module")
def shards(photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    return write_shards(folder, photos, [ALL[:3], ALL[3:]])


def pipeline(urls, relabel):
    return (
        wds.WebDataset(urls, shardshuffle=False)
        .decode("pil")
        .to_tuple("__key__", "jpg", "cls")
        .map(relabel)
    )


def stream(store, **kwargs):
    kwargs.setdefault("class_map", CLASS_MAP)
    return RelabelStream(store, train_tf(), **kwargs)


def recrop(path, box: CropBox) -> torch.Tensor:
    """The output the transform gives for ``box``, redone from the photo's file."""
    with Image.open(path) as file:
        image = file.convert("RGB")
    w, h = image.size
    top, left = round(box.y0 * h), round(box.x0 * w)
    height, width = round((box.y1 - box.y0) * h), round((box.x1 - box.x0) * w)
    out = F.resized_crop(image, top, left, height, width, [SIZE, SIZE], antialias=True)
    return F.pil_to_tensor(F.horizontal_flip(out) if box.flipped else out)


def test_webdataset_targets_are_the_pooled_crop_that_was_taken(store, shards, photos):
    torch.manual_seed(0)
    refs = list(pipeline(shards, stream(store, missing="original", pooling="batch")))
    torch.manual_seed(0)  # the same draws: the same crops, pooled in the pipeline this time
    samples = list(pipeline(shards, stream(store, missing="original")))
    assert len(refs) == len(samples) == len(ALL)
    flips = set()
    for name, (image, ref), (same_image, target) in zip(ALL, refs, samples, strict=True):
        box = CropBox(*ref["box"].tolist(), flipped=ref["flipped"])
        flips.add(box.flipped)
        # The box is the crop that happened: redoing it from the photo gives the same pixels.
        assert torch.equal(image, recrop(photos[name], box)) and torch.equal(image, same_image)
        if name in IN_STORE:
            record = store.get(name)
            assert ref["row"] == store.index_of(name)
            expected = pool(record.indices, record.values, box, num_classes=1000)
        else:  # missing="original": the one-hot of the shard's label, at its store class
            assert ref["row"] == -1
            expected = np.zeros(1000, np.float32)
            expected[CLASS_MAP[LABEL[name]]] = 1.0
        np.testing.assert_allclose(target.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert flips == {True, False}  # both orientations exercised with this seed

    # LabelPooler pools the collated references to the same targets.
    collated = torch.utils.data.default_collate([ref for _, ref in refs])
    pooled = LabelPooler(stream(store, missing="original"))(collated)
    np.testing.assert_allclose(
        pooled.numpy(), torch.stack([t for _, t in samples]).numpy(), rtol=1e-5, atol=1e-6
    )


def test_token_level_targets_follow_the_flip(store, shards):
    spec = PoolingSpec(output_size=(2, 3))
    torch.manual_seed(1)
    refs = list(pipeline(shards[:1], stream(store, spec=spec, pooling="batch")))
    torch.manual_seed(1)
    for (_, ref), (_, target) in zip(
        refs, pipeline(shards[:1], stream(store, spec=spec)), strict=True
    ):
        record = store.get_row(ref["row"])
        box = CropBox(*ref["box"].tolist(), flipped=ref["flipped"])
        expected = pool(record.indices, record.values, box, num_classes=1000, spec=spec)
        assert target.shape == (2, 3, 1000)
        np.testing.assert_allclose(target.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_a_key_without_a_record_follows_the_missing_policy(store, shards):
    relabel = stream(store)  # missing="error"
    with pytest.raises(RecordNotFoundError, match="flower"):
        list(pipeline(shards, relabel))
    # Checked ahead of the epoch from the shards' keys alone.
    keys = [key for key, _ in wds.WebDataset(shards, shardshuffle=False).to_tuple("__key__", "cls")]
    with pytest.raises(RecordNotFoundError, match=r"1 of 6 keys are not in store.*flower"):
        relabel.check_keys(keys)
    assert stream(store, missing="original").check_keys(keys) == 1
    assert stream(store).check_keys(k for k in keys if "flower" not in k) == 0


def test_keys_none_of_which_is_in_the_store_are_refused_with_missing_original(store, monkeypatch):
    """Keys derived another way than the store's: every target would be a one-hot label."""
    relabel = stream(store, missing="original", key_fn=lambda key: f"x/{key}")
    with pytest.raises(ConfigurationError, match=r"none of the 2 keys .*key_fn.*'x/coffee'"):
        relabel.check_keys(["coffee", "chelsea"])
    monkeypatch.setattr(KeyTally, "FIRST_LOOK", 3)
    image = sample_photo("coffee")
    relabel((b"coffee", image, 4))
    relabel(("chelsea", image, 4))
    with pytest.raises(ConfigurationError, match=r"none of the 3 keys .*the first samples"):
        relabel(("coffee", image, 4))
    fine = stream(store, missing="original")  # one record found: missing keys may follow
    fine(("coffee", image, 4))
    for _ in range(4):
        fine(("photos/flower", sample_photo("flower"), 4))


def test_the_fallback_label_must_be_matched_with_the_store_classes(store):
    with pytest.raises(LabelSpaceError, match="class_names"):
        RelabelStream(store, train_tf(), missing="original")
    with pytest.raises(LabelSpaceError, match="class_names"):
        RelabelStream(store, train_tf(), spec=PoolingSpec(original_weight=0.1))
    names = [f"class {c}" for c in (4, 9)]  # the store's own class names match by name
    relabel = RelabelStream(store, None, missing="original", class_names=names)
    _, target = relabel(("photos/flower", sample_photo("flower"), 1))
    assert int(target.argmax()) == 9 and float(target.max()) == 1.0


def test_keys_come_from_the_sample_key_as_generate_derives_them(store):
    image = sample_photo("coffee")
    relabel = RelabelStream(store)
    row = store.index_of("coffee")
    assert relabel.rows(["coffee", "a/b/coffee", b"photos/coffee"]).tolist() == [row] * 3
    # ImageNet as the Hub names it: the '_<wnid>' suffix is dropped, as by generate.
    assert relabel.store_key("train/n01440764_10026_n01440764") == "n01440764_10026"
    custom = RelabelStream(store, key_fn=lambda key: key.split("-", 1)[1])
    _, target = custom(("0007-coffee", image))
    record = store.get("coffee")
    np.testing.assert_allclose(
        target.numpy(), pool(record.indices, record.values, CropBox.full(), num_classes=1000)
    )


def test_an_image_that_is_not_its_record_is_refused(store, photos, tmp_path):
    def center_square(name, image):
        side = min(image.size)
        return F.center_crop(image, [side, side])

    def half_size(name, image):
        return image.resize((image.width // 2, image.height // 2))

    resized = write_shards(tmp_path, photos, [IN_STORE], edit=half_size)
    assert len(list(pipeline(resized, stream(store)))) == len(IN_STORE)
    (tmp_path / "cropped").mkdir()
    cropped = write_shards(tmp_path / "cropped", photos, [IN_STORE], edit=center_square)
    with pytest.raises(
        ConfigurationError,
        match=r"image 'photos/chelsea' is 300 x 300 .* from a 300 x 451 image: another shape",
    ):
        list(pipeline(cropped, stream(store)))


def test_untrackable_transforms_and_bad_samples_are_refused_when_seen(store):
    with pytest.raises(UnsupportedTransformError, match="ElasticTransform"):
        RelabelStream(store, v2.Compose([v2.ElasticTransform(), v2.PILToTensor()]))
    relabel = RelabelStream(store)
    with pytest.raises(TypeError, match="to_tuple"):
        relabel({"__key__": "coffee", "jpg": sample_photo("coffee")})


@pytest.mark.slow
def test_webdataset_in_dataloader_workers(store, shards):
    relabel = stream(store, missing="original", pooling="batch")
    loader = DataLoader(pipeline(shards, relabel), batch_size=3, num_workers=2)
    pooler = LabelPooler(relabel)
    seen = 0
    for images, refs in loader:
        targets = pooler(refs)
        assert images.shape[1:] == (3, SIZE, SIZE) and targets.shape == (len(images), 1000)
        torch.testing.assert_close(targets.sum(1), torch.ones(len(images)))
        seen += len(images)
    assert seen == len(ALL)  # each shard read by one worker, once


def test_the_transform_is_a_read_only_view(store):
    """The crops tracked are those of the transform validated at construction: replacing it
    afterwards would pool boxes of one pipeline for images of another."""
    tf = train_tf()
    relabel = RelabelStream(store, tf)
    assert relabel.transform is tf
    with pytest.raises(AttributeError):
        relabel.transform = v2.PILToTensor()
