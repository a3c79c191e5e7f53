"""CUDA paths: autocast, channels-last, on-device normalisation, pinned copies, generate on a GPU.

Skipped without a GPU. They need only torch, timm, numpy and PIL besides relabel-store (no photo
packages, no network, not even pytest), so that ``benchmarks/gpu_check.sh`` runs them on a bare
GPU machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

from relabel_store import load_relabel
from relabel_store.write.annotator import DenseAnnotator
from relabel_store.write.generate import _ShardMaps, generate
from relabel_store.write.inputs import open_inputs

try:
    import pytest
except ImportError:  # benchmarks/gpu_check.sh calls the tests itself where pytest is missing
    pytest = None
else:
    pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False)


def _images(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def _jpegs(folder: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(count):
        coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((200 + 10 * i, 150), Image.Resampling.BICUBIC)
        image.save(folder / f"img_{i:03d}.jpg", quality=90)
    return folder


def test_cuda_autocast_and_channels_last():
    reference = DenseAnnotator(_model(), input_size=64).dense_logits(_images(64))
    annotator = DenseAnnotator(_model(), input_size=64, device="cuda", amp="auto")
    assert annotator.model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    dense = annotator.dense_logits(_images(64))
    assert dense.dtype == torch.float32 and dense.device.type == "cuda"
    assert torch.allclose(dense.cpu(), reference, atol=0.05, rtol=0.05)


def test_cuda_normalises_uint8_images_to_the_cpu_numbers():
    annotator = DenseAnnotator(_model(), input_size=64, device="cuda")
    pixels = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    on_gpu = annotator.transform.normalize(pixels.cuda()).cpu()
    # The same float32 arithmetic; the GPU may fuse the multiply-add (a last-bit difference).
    torch.testing.assert_close(on_gpu, annotator.transform.normalize(pixels), rtol=1e-6, atol=1e-6)


def test_cuda_maps_land_in_pinned_buffers():
    maps = _ShardMaps(range(10, 14), (3, 3), 2, torch.device("cuda"))
    assert maps.indices.is_pinned() and maps.values.is_pinned()


def test_cuda_generate_matches_cpu_and_bf16_is_close(tmp_path):
    photos = open_inputs(_jpegs(tmp_path / "photos", 12))
    common = {"batch_size": 4, "num_workers": 2, "shard_records": 3, "progress": False}
    stores = {}
    for name, device, amp in (
        ("cpu", "cpu", None),
        ("fp32", "cuda", None),
        ("bf16", "cuda", "bf16"),
    ):
        annotator = DenseAnnotator(
            _model(), input_size=96, grid=(5, 5), k=3, device=device, amp=amp
        )
        generate(photos, tmp_path / f"{name}.zarr", annotator, **common)
        stores[name] = load_relabel(tmp_path / f"{name}.zarr").get_rows(range(12))
    cpu, fp32, bf16 = stores["cpu"], stores["fp32"], stores["bf16"]
    assert cpu.keys == fp32.keys == bf16.keys
    # float32 on the GPU: the same maps up to convolution rounding (cuDNN's algorithms)
    assert (cpu.indices == fp32.indices).mean() > 0.99
    np.testing.assert_allclose(
        fp32.values.astype(np.float32), cpu.values.astype(np.float32), atol=2e-2, rtol=1e-2
    )
    # bf16 autocast: the best class of a cell mostly agrees, logits within bf16's precision
    assert (bf16.indices[..., 0] == fp32.indices[..., 0]).mean() > 0.8
    top = np.abs(fp32.values[..., 0].astype(np.float32)).max()
    assert np.abs(bf16.values[..., 0].astype(np.float32) - fp32.values[..., 0]).max() < 0.1 * top
