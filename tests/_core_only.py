"""What a core install (``pip install relabel-store``, no extras) must do; run by test_install.py.

Usage: ``python _core_only.py WORKDIR [--block]``. Inside a core-only venv
(``installed_venv(core_only=True)``) torch and the other extras' packages are really absent;
``--block`` simulates that in a full environment, with an import hook that refuses them. Either
way the script writes a store with StoreWriter, reads and pools it, runs ``info``, ``verify``,
``quality``, ``push`` and ``pull``, checks that none of those packages was imported, and checks that every
feature needing an extra names it. Prints ``core-only: ok``; any failure is an exception.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

HEAVY = ("torch", "torchvision", "timm", "datasets", "matplotlib", "PIL", "safetensors")


class _Refuse(importlib.abc.MetaPathFinder):
    """Refuses HEAVY as if they were not installed."""

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name.partition(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def check(work: Path) -> None:
    import numpy as np
    from _stores import write_store
    from click.testing import CliRunner

    from relabel_store import CropBox, MissingExtraError, PoolingSpec, load_relabel, pool
    from relabel_store.cli.main import main

    for name in HEAVY:
        assert not _importable(name), f"{name} is importable"

    written = write_store(work / "s.relabel.zarr", n=20, shard_records=8, num_classes=50)
    store = load_relabel(written.path)
    row = 3
    record = store.get(written.keys[row])
    box = CropBox(0.1, 0.2, 0.7, 0.9, flipped=True)
    for spec in (PoolingSpec(), PoolingSpec(output_size=(2, 3))):
        target = pool(record.indices, record.values, box, num_classes=50, spec=spec)
        expected = pool(written.indices[row], written.values[row], box, num_classes=50, spec=spec)
        np.testing.assert_array_equal(target, expected)
        np.testing.assert_allclose(target.sum(axis=-1), 1.0, rtol=1e-5)
    batch = store.get_rows([0, 5, 19])
    for key, indices in zip(batch.keys, batch.indices, strict=True):
        np.testing.assert_array_equal(indices, written.indices[written.keys.index(key)])

    cli = CliRunner()
    remote = (work / "remote").as_uri()
    for args in (
        ["info", str(written.path)],
        ["verify", str(written.path)],
        ["quality", str(written.path)],
        ["push", "-q", str(written.path), remote],
        ["pull", "-q", remote, "--to", str(work / "pulled")],
    ):
        result = cli.invoke(main, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
    pulled = load_relabel(work / "pulled")
    np.testing.assert_array_equal(pulled.get(written.keys[row]).values, record.values)

    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in HEAVY)
    assert not loaded, f"reading, pooling and the CLI imported {loaded}"

    # Every feature that needs an extra names it.
    for statement, extra in (
        ("from relabel_store import BatchPooler", "torch"),
        ("from relabel_store.pooling.batched import stack_boxes", "torch"),
        ("import relabel_store.loaders", "torch"),
        ("import relabel_store.write.generate", "generate"),
        ("import relabel_store.write.annotator", "generate"),
        ("import relabel_store.write.importer", "generate"),
        ("import relabel_store.report.show", "show"),
    ):
        try:
            exec(statement)
        except MissingExtraError as exc:
            assert exc.extra == extra, (statement, exc.extra)
            assert f"pip install 'relabel-store[{extra}]'" in str(exc), str(exc)
        else:
            raise AssertionError(f"{statement!r} worked without its extra")
    for args, extra in (
        (["generate", str(work), "-o", str(work / "new.relabel.zarr")], "generate"),
        (["import", str(work), "-o", str(work / "imported.relabel.zarr")], "generate"),
        (["show", str(written.path), written.keys[0], "-o", str(work / "map.png")], "show"),
    ):
        result = cli.invoke(main, args)
        assert result.exit_code == 2, (args, result.exit_code, result.output)
        assert f"pip install 'relabel-store[{extra}]'" in result.stderr, result.stderr
    print("core-only: ok")


if __name__ == "__main__":
    if "--block" in sys.argv:
        sys.meta_path.insert(0, _Refuse())
    check(Path(sys.argv[1]))
