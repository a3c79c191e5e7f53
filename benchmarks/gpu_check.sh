#!/usr/bin/env bash
# The GPU check of the CUDA paths (generate, DataLoader pooling), on one GPU, in about 8 minutes:
#   bash benchmarks/gpu_check.sh
# From the repository root of a machine with python3 + torch + torchvision + timm + pillow +
# click + tqdm + safetensors (no network needed). Wheels in .whl/ (zarr, numcodecs, zstandard,
# google-crc32c, donfig, ...) are installed into /tmp/site, relabel-store itself into /tmp/rs.
# It runs:
#   1. the CUDA tests (tests/test_cuda.py: autocast + channels-last, uint8 normalisation on the
#      device, pinned host buffers, generate on CUDA in float32 and bf16 against the CPU);
#   2. benchmarks/generate.py with EfficientNet-L2 @ 475 in bf16 (random weights): the input
#      pipeline, the writer, the forward pass alone and generate end to end (target >= 300
#      images/s on one H100), and GPU JPEG decoding against one CPU worker;
#   3. the same with the near-free stand-in annotator: the input pipeline on all cores;
#   4. L2 again with --compile (generate --compile; ~90 s of compiling, untimed);
#   5. benchmarks/dataloader.py with the pooling device on the GPU (resident goal <= 1%; needs
#      scikit-image and scikit-learn for its photos).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
SECONDS=0

if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
fi
$PY -m pip install -q --no-deps --no-build-isolation --target /tmp/rs "$REPO"
export PYTHONPATH=/tmp/rs:/tmp/site${PYTHONPATH:+:$PYTHONPATH}

cd /tmp  # never import the source tree instead of the installed package
$PY - <<'EOF'
import importlib.util, sys, torch
import relabel_store, relabel_store.write.generate, relabel_store.write.annotator, relabel_store.report.quality
print("relabel_store", relabel_store.__file__)
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
for name in ("datasets", "httpx2"):
    print(f"{name}: {'imported (unexpected)' if name in sys.modules else 'not imported'}")
EOF

echo "== 1. CUDA tests ($SECONDS s)"
if $PY -c "import pytest" 2> /dev/null; then
    $PY -m pytest -q -p no:cacheprovider "$REPO/tests/test_cuda.py"
else  # no pytest here: call the tests directly
    $PY - "$REPO/tests" <<'EOF'
import inspect, sys, tempfile, traceback
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import test_cuda
failed = 0
for name, fn in inspect.getmembers(test_cuda, inspect.isfunction):
    if not name.startswith("test_"):
        continue
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fn(*([Path(tmp)] if "tmp_path" in inspect.signature(fn).parameters else []))
            print("PASSED", name)
        except Exception:
            failed += 1
            print("FAILED", name)
            traceback.print_exc()
sys.exit(1 if failed else 0)
EOF
fi

echo "== 2. EfficientNet-L2 @ 475, bf16 ($SECONDS s)"
$PY "$REPO/benchmarks/generate.py" --annotator l2 --images 3072 --batch-size 64 --rounds 2 \
    --gpu-decode

echo "== 3. input pipeline and writer with the near-free stand-in ($SECONDS s)"
$PY "$REPO/benchmarks/generate.py" --annotator stand-in --images 3072 --batch-size 64 \
    --rounds 2

echo "== 4. EfficientNet-L2 @ 475, bf16, compiled ($SECONDS s)"
$PY "$REPO/benchmarks/generate.py" --annotator l2 --images 3072 --batch-size 64 --rounds 1 \
    --compile

echo "== 5. DataLoader with pooling on the GPU ($SECONDS s)"
if $PY -c "import skimage, sklearn" 2> /dev/null; then  # its photos ship with these two
    $PY "$REPO/benchmarks/dataloader.py" --device cuda --images 1024 --workers 8 --batch 64 \
        --rounds 5 --batches 40
else
    echo "skipped: needs scikit-image and scikit-learn (pip install scikit-image scikit-learn)"
fi

echo "== done in $SECONDS s"
