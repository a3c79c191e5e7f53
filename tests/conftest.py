import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# The tests exercise relabel_store as installed. `python -m pytest` puts the working directory
# first on sys.path, and from the repository root the source folder `relabel_store/` would then
# shadow the installed package: it lacks `loaders/` and `cli/`, which setuptools maps in at install
# time (an editable install maps them in at import time, so it works either way).
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != REPO]
# Test helper modules (_stores, _photos, _fake_hub, ...) live beside the tests.
sys.path.insert(0, str(TESTS))
