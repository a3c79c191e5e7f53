"""The docs site: strict build, code blocks that cannot rot, commands that exist, a real browser.

Code blocks in ``docs/*.md`` and ``README.md``:

- ```` ```python ```` blocks are executed, page by page in order in one namespace, in a
  temporary folder holding the demo store (``demo-out/``), a small ImageNet-style store
  (``imagenet-train.relabel.zarr``) and its images (``imagenet/train/<synset>/<key>.JPEG`` and
  ``imagenet/train-00000.parquet``). A block preceded by the line ``<!-- check: compile -->``
  (for code that needs a GPU, the network, the Hub or ``torchrun``) is only compiled.
- ``relabel-store`` commands in ```` ```bash ```` / ```` ```console ```` blocks must name real
  subcommands and options; ``python examples/*.py`` and ``python benchmarks/*.py`` commands
  must name real scripts and options.
"""

from __future__ import annotations

import gc
import html.parser
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import threading
import traceback
import urllib.parse
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import yaml
from _stores import described_annotator, random_maps
from click.testing import CliRunner
from PIL import Image
from timm.data import ImageNetInfo

from relabel_store import StoreMetadata, StoreWriter
from relabel_store.cli.main import main as cli
from relabel_store.write.samples import SAMPLE_PHOTOS, sample_photo

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
COMPILE_ONLY = "<!-- check: compile -->"

PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


# ------------------------------------------------------------------------------------------------
# Markdown code blocks
# ------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    compile_only: bool

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """Fenced code blocks of a Markdown file (nested fences of more backticks are respected)."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    previous = ""  # the last non-blank line before the current one
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        fence, indent, start = m["fence"], len(m["indent"]), i
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = lines[i].strip()
            if closing and set(closing) == {fence[0]} and len(closing) >= len(fence):
                break
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        blocks.append(
            Block(
                page=path.name,
                line=start + 1,
                lang=m["info"].lower(),
                code="\n".join(body) + "\n",
                compile_only=previous == COMPILE_ONLY,
            )
        )
        previous = ""
        i += 1
    return blocks


def test_block_parser_handles_markers_and_nested_fences(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "text\n\n<!-- check: compile -->\n```python\nx = 1\n```\n\n"
        "`````markdown\n```python\nnot a block\n```\n`````\n\n"
        "- item\n\n    ```bash\n    relabel-store info s\n    ```\n"
    )
    blocks = code_blocks(page)
    assert [(b.lang, b.compile_only) for b in blocks] == [
        ("python", True),
        ("markdown", False),
        ("bash", False),
    ]
    assert blocks[0].code == "x = 1\n" and blocks[2].code == "relabel-store info s\n"


# ------------------------------------------------------------------------------------------------
# The working folder python blocks run in
# ------------------------------------------------------------------------------------------------

IMAGENET_KEYS = {  # synset -> keys; n01440764_10026 is the key docs/format.md reads
    "n01440764": ["n01440764_10026", "n01440764_10027", "n01440764_10029", "n01440764_10040"],
    "n02124075": ["n02124075_1", "n02124075_13", "n02124075_46", "n02124075_64"],
}


def _run_demo(out: Path) -> None:
    """examples/demo.py, in-process (the real offline annotator over the six sample photos)."""
    spec = importlib.util.spec_from_file_location("_docs_demo", ROOT / "examples" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    with mock.patch.object(sys, "argv", ["demo.py", "--out", str(out)]):
        demo.main()


def _imagenet_like(root: Path) -> None:
    """A small ImageNet-style store (synthetic maps), its ImageFolder and a Hub-style parquet."""
    import datasets

    keys, labels, files = [], [], []
    for label, (synset, names) in enumerate(sorted(IMAGENET_KEYS.items())):
        for j, key in enumerate(names):
            photo = sample_photo(SAMPLE_PHOTOS[(label * 4 + j) % len(SAMPLE_PHOTOS)])
            photo = photo.resize((photo.width // 3, photo.height // 3))
            path = root / "imagenet" / "train" / synset / f"{key}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo.save(path, quality=90)
            keys.append(key)
            labels.append(label)
            files.append(path)
    n = len(keys)
    info = ImageNetInfo("imagenet-1k")  # the label space an ImageNet annotator's store records
    meta = StoreMetadata(
        grid=(15, 15),
        k=5,
        num_classes=1000,
        rows=n,
        shard_records=4,
        class_names=tuple(info.index_to_description(c) for c in range(1000)),
        label_space="imagenet-1k",
        class_identifiers=tuple(info.index_to_label_name(c) for c in range(1000)),
        annotator=described_annotator(),
        dataset={"name": "imagenet-like", "split": "train", "key_mode": "stem"},
    )
    writer = StoreWriter.open(root / "imagenet-train.relabel.zarr", meta)
    indices, values = random_maps(np.random.default_rng(0), n)
    for s in range(writer.num_shards):
        r = writer.shard_rows(s)
        sizes = []
        for i in r:
            with Image.open(files[i]) as im:
                sizes.append((im.height, im.width))
        writer.write_shard(
            s,
            keys=keys[r.start : r.stop],
            labels=labels[r.start : r.stop],
            sizes=sizes,
            indices=indices[r.start : r.stop],
            values=values[r.start : r.stop],
        )
    writer.finalize()
    # As the Hub serves ImageNet: JPEG bytes embedded, file names with the synset appended,
    # labels the ImageNet class ids.
    cells = [{"bytes": p.read_bytes(), "path": f"{p.stem}_{p.parent.name}.JPEG"} for p in files]
    wnids = list(info.label_names())
    class_ids = [wnids.index(p.parent.name) for p in files]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"image": cells, "label": class_ids}, features=features)
    ds.to_parquet(str(root / "imagenet" / "train-00000.parquet"))


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs-workspace")
    _run_demo(root / "demo-out")
    _imagenet_like(root)
    return root


@pytest.fixture
def page_dir(workspace, tmp_path, monkeypatch) -> Path:
    """A fresh working folder per page with the shared data linked in; isolated caches."""
    work = tmp_path / "work"
    work.mkdir()
    for item in workspace.iterdir():
        (work / item.name).symlink_to(item, target_is_directory=item.is_dir())
    monkeypatch.chdir(work)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RELABEL_STORE_CACHE", str(tmp_path / "relabel-cache"))
    monkeypatch.setenv("RELABEL_STORE_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    return work


def _python_pages() -> list[Path]:
    return [p for p in PAGES if any(b.lang in ("python", "py") for b in code_blocks(p))]


@pytest.mark.slow
# The docs show worker counts for real training machines (num_workers=8); this one may have 2.
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
# WebDataset (1.0.2) leaves closing the shards it opens to the garbage collector; the pipelines
# page reads shards, and its namespace is collected at the end of the page (below).
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <_io.FileIO name=.*[.]tar:pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.parametrize("page", _python_pages(), ids=lambda p: p.name)
def test_python_blocks_run(page, page_dir):
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for block in code_blocks(page):
        if block.lang not in ("python", "py"):
            continue
        code = compile(block.code, block.where, "exec")  # every block must at least compile
        if block.compile_only:
            continue
        try:
            exec(code, namespace)
        except Exception:
            pytest.fail(f"the code block at {block.where} failed:\n{traceback.format_exc()}")
        ran += 1
    namespace.clear()
    gc.collect()  # what the page left open is closed within this test
    print(f"{page.name}: {ran} blocks executed")


# `relabel-store`, or a path to it such as .venv/bin/relabel-store
_PROGRAM = re.compile(r"^(?:\S*/)?relabel-store$")


def _commands(block: Block) -> list[list[str]]:
    """Commands of a bash/console block as token lists (continuations joined, comments cut)."""
    lines = block.code.splitlines()
    if block.lang == "console":
        kept, taking = [], False
        for line in lines:
            if line.startswith("$ "):
                kept.append(line[2:])
                taking = line.endswith("\\")
            elif taking:
                kept.append(line)
                taking = line.endswith("\\")
        lines = kept
    text = "\n".join(lines).replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        tokens = shlex.split(line, comments=True)
        current: list[str] = []
        for tok in tokens:
            if tok in ("&&", "||", ";", "|"):
                commands.append(current)
                current = []
            else:
                current.append(tok)
        commands.append(current)
    return [c for c in commands if c]


def _shell_blocks() -> list[Block]:
    return [
        b for p in PAGES for b in code_blocks(p) if b.lang in ("bash", "sh", "shell", "console")
    ]


def _option_names(command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(getattr(param, "opts", ()))
        names.update(getattr(param, "secondary_opts", ()))
    return names


def test_shell_commands_name_real_commands_and_options():
    checked_cli, checked_scripts, subcommands = 0, 0, set()
    problems = []
    for block in _shell_blocks():
        for tokens in _commands(block):
            prog = next((i for i, t in enumerate(tokens) if _PROGRAM.match(t)), None)
            if prog is not None:
                rest = tokens[prog + 1 :]
                if rest and not rest[0].startswith("-"):
                    name, command, rest = rest[0], cli.commands.get(rest[0]), rest[1:]
                    if command is None:
                        problems.append(
                            f"{block.where}: no subcommand {name!r} ({' '.join(tokens)})"
                        )
                        continue
                    subcommands.add(name)
                else:  # options of the group itself (--help, --version)
                    name, command = "", cli
                known = _option_names(command)
                for tok in rest:
                    opt = tok.split("=", 1)[0]
                    if opt.startswith("-") and len(opt) > 1 and opt not in known:
                        problems.append(f"{block.where}: `relabel-store {name}` has no {opt}")
                checked_cli += 1
                continue
            script = next(
                (t for t in tokens if re.match(r"^(examples|benchmarks|scripts)/[\w.-]+$", t)), None
            )
            if script is not None:
                path = ROOT / script
                if not path.is_file():
                    problems.append(f"{block.where}: {script} does not exist")
                    continue
                source = path.read_text()
                for tok in tokens[tokens.index(script) + 1 :]:
                    if tok.startswith("--"):
                        opt = tok.split("=", 1)[0]
                        if f'"{opt}"' not in source:
                            problems.append(f"{block.where}: {script} has no option {opt}")
                checked_scripts += 1
    assert not problems, "\n".join(problems)
    assert checked_cli >= 10 and checked_scripts >= 5, (checked_cli, checked_scripts)
    # The documented subcommands exist and their --help works; the console script is installed.
    runner = CliRunner()
    for name in sorted(subcommands):
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
    top = subprocess.run(
        [str(BIN / "relabel-store"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert top.returncode == 0 and all(name in top.stdout for name in subcommands), top.stdout


# ------------------------------------------------------------------------------------------------
# The site: mkdocs build --strict, then headless Chromium
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("site") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    return out, result


def _nav() -> list[tuple[str, str]]:
    """(title, file) of every page in mkdocs.yml's nav, in order."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def walk(items):
        for item in items:
            for title, value in item.items():
                if isinstance(value, list):
                    yield from walk(value)
                else:
                    yield title, value

    return list(walk(config["nav"]))


@pytest.mark.slow
def test_mkdocs_build_strict(site):
    out, result = site
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    for _, page in _nav():
        assert (DOCS / page).exists(), f"mkdocs.yml names {page}, which is not in docs/"
        built = out / ("index.html" if page == "index.md" else f"{page[:-3]}/index.html")
        assert built.exists(), built
    # The generated references are really there.
    assert "relabel-store generate" in (out / "cli" / "index.html").read_text()
    api = (out / "api" / "index.html").read_text()
    for name in ("load_relabel", "RelabelStore", "CropBox", "RelabelDataset", "relabel_transform"):
        assert name in api, name


class _Page(html.parser.HTMLParser):
    """What the browser rendered: title, primary-navigation links, images, <html> classes."""

    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self.nav_links: list[str] = []
        self.images: list[str] = []
        self.html_classes: set[str] = set()
        self._in_title = False
        self._nav_depth = 0  # > 0 inside the primary <nav>

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "title":
            self._in_title = True
        if tag == "nav" and ("md-nav--primary" in classes or self._nav_depth):
            self._nav_depth += 1
        if tag == "a" and self._nav_depth and a.get("href"):
            self.nav_links.append(a["href"])
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])
        if tag == "html":
            self.html_classes = set(classes)

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag == "nav" and self._nav_depth:
            self._nav_depth -= 1

    def handle_data(self, data):
        if self._in_title:
            self.title += data


class _Handler(SimpleHTTPRequestHandler):
    requests: list[tuple[str, int]]

    def log_request(self, code="-", size="-"):
        self.requests.append((urllib.parse.urlsplit(self.path).path, int(code)))

    def log_message(self, *args):  # keep the test output clean
        pass


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args,
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.slow
def test_site_renders_in_headless_chromium(site, tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: scripts/setup.sh installs /usr/bin/chromium")
        pytest.skip("no /usr/bin/chromium (scripts/setup.sh installs Debian's chromium)")
    out, build = site
    assert build.returncode == 0, build.stdout + build.stderr
    requests: list[tuple[str, int]] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    nav = _nav()
    try:
        seen_images = 0
        for title, page in nav:
            url = urllib.parse.urljoin(base, "" if page == "index.md" else f"{page[:-3]}/")
            result = _chromium("--dump-dom", url, profile=tmp_path / "profile")
            assert result.returncode == 0, result.stderr[-2000:]
            dom = _Page()
            dom.feed(result.stdout)
            assert title in dom.title or page == "index.md", (page, dom.title)
            assert "relabel-store" in dom.title, (page, dom.title)
            # The navigation lists every page of the nav.
            linked = {urllib.parse.urljoin(url, href).split("#")[0] for href in dom.nav_links}
            for _, other in nav:
                target = urllib.parse.urljoin(base, "" if other == "index.md" else f"{other[:-3]}/")
                assert target in linked, f"{page}: the navigation has no link to {other}"
            # Every image was fetched by the browser, and served.
            for src in dom.images:
                path = urllib.parse.urlsplit(urllib.parse.urljoin(url, src)).path
                assert (path, 200) in requests, f"{page}: image {src} was not served ({path})"
                seen_images += 1
            # The theme's JavaScript ran: it replaces the page's "no-js" class with "js".
            assert "js" in dom.html_classes and "no-js" not in dom.html_classes, dom.html_classes
        assert seen_images >= 5
        failed = [(p, code) for p, code in requests if code >= 400]
        assert not failed, f"requests that failed: {failed}"
        # And the home page really paints: a screenshot with a picture in it, not a blank page.
        shot = tmp_path / "home.png"
        result = _chromium("--window-size=1280,1000", f"--screenshot={shot}", base,
                           profile=tmp_path / "profile")  # fmt: skip
        assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
        with Image.open(shot) as im:
            assert im.size == (1280, 1000)
            colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 1000, "the home page looks blank"
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------------
# Pictures: `relabel-store show`
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("show") / "s.relabel.zarr"
    meta = StoreMetadata(
        grid=(15, 15), k=5, num_classes=1000, rows=2, shard_records=2,
        class_names=tuple(f"class {c}" for c in range(1000)),
        annotator=described_annotator(),
    )  # fmt: skip
    writer = StoreWriter.open(path, meta)
    idx, val = random_maps(np.random.default_rng(1), 2)
    writer.write_shard(0, keys=["cat", "cup"], labels=[285, -1], sizes=[(300, 451), (400, 600)],
                       indices=idx, values=val)  # fmt: skip
    writer.finalize()
    return path


def test_show_writes_a_png(small_store, tmp_path):
    photo = tmp_path / "cat.jpg"
    sample_photo("chelsea").save(photo)  # 451 x 300, the size recorded for "cat"
    runner = CliRunner()
    plain = tmp_path / "map.png"
    result = runner.invoke(cli, ["show", str(small_store), "cat", "--image", str(photo), "-o", str(plain)])  # fmt: skip
    assert result.exit_code == 0, result.output
    crop = tmp_path / "crop.png"
    args = ["show", str(small_store), "cat", "--image", str(photo), "--box", "0.1,0.05,0.6,0.9"]
    result = runner.invoke(cli, [*args, "--flip", "--top", "3", "-o", str(crop)])
    assert result.exit_code == 0, result.output
    for path in (plain, crop):
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and 300 <= im.height <= 2000 and 300 <= im.width <= 3000
    with Image.open(plain) as a, Image.open(crop) as b:
        assert b.width > 1.5 * a.width  # the crop and its bar chart sit beside the map
    # Without --image the map is drawn over grey; a wrong image size is refused.
    result = runner.invoke(cli, ["show", str(small_store), "cup", "-o", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["show", str(small_store), "cup", "--image", str(photo), "-o",
                                 str(tmp_path / "x.png")])  # fmt: skip
    assert result.exit_code == 2 and "error: the image is" in result.output
    assert "pass the original image" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, ["show", str(small_store), "cat", "--flip", "-o", str(crop)])
    assert result.exit_code == 2 and "--flip needs --box" in result.output
    # --rotate turns the crop: the region's picture, beside its pooled target.
    turned = tmp_path / "turned.png"
    result = runner.invoke(cli, [*args, "--rotate", "30", "-o", str(turned)])
    assert result.exit_code == 0, result.output
    with Image.open(turned) as im, Image.open(crop) as b:
        assert im.format == "PNG" and im.size == b.size
        assert np.abs(np.asarray(im.convert("L"), float) - np.asarray(b.convert("L"))).mean() > 1
    result = runner.invoke(cli, ["show", str(small_store), "cat", "--rotate", "30", "-o", str(turned)])  # fmt: skip
    assert result.exit_code == 2 and "--rotate needs --box" in result.output
    result = runner.invoke(cli, [*args, "--rotate", "nan", "-o", str(turned)])
    assert result.exit_code == 2 and "a finite angle" in result.output


def test_rotated_region_is_what_random_rotation_shows():
    """show --rotate's region is the one the tracker finds for a real v2 crop + RandomRotation."""
    from torchvision.transforms import v2

    from relabel_store.loaders import track_crops
    from relabel_store.pooling import CropBox, Region, pool
    from relabel_store.report.show import rotated_region

    photo = sample_photo("chelsea")  # 451 x 300; a 301 x 200 centre crop starts at (75, 50)
    for degrees, flip in ((30.0, 0.0), (-12.5, 1.0)):
        steps = [v2.CenterCrop((200, 301)), v2.RandomHorizontalFlip(flip),
                 v2.RandomRotation((degrees, degrees))]  # fmt: skip
        _, tracked = track_crops(v2.Compose(steps))(photo)
        assert isinstance(tracked, Region)
        box = CropBox(75 / 451, 50 / 300, 376 / 451, 250 / 300, flipped=bool(flip))
        mine = rotated_region(box, degrees, (300, 451))
        np.testing.assert_allclose(mine.array(), tracked.array(), atol=1e-9)
        idx, val = random_maps(np.random.default_rng(3), 1)
        np.testing.assert_allclose(
            pool(idx[0], val[0], mine, num_classes=1000),
            pool(idx[0], val[0], tracked, num_classes=1000),
            atol=1e-6,
        )


def test_docs_pictures_are_small_pngs():
    pictures = sorted((DOCS / "images").glob("*.png"))
    assert len(pictures) >= 4
    for path in pictures:
        assert path.stat().st_size < 200_000, f"{path.name}: regenerate with scripts/docs_images.py"
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width >= 600
    referenced = {
        m
        for p in DOCS.glob("*.md")
        for m in re.findall(r"\(images/([\w.-]+\.png)\)", p.read_text())
    }
    assert referenced and referenced <= {p.name for p in pictures}
    assert {p.name for p in pictures} <= referenced, "a picture no page shows"
