import os
import sys
from pathlib import Path

from hypothesis import settings

# One thread per process for torch and numpy, here and in the subprocesses tests start: the suite
# runs as 2 xdist workers on 2 cores, shared with other jobs, and torch's intra-op threads fighting
# over busy cores made training steps and generate runs up to 10x slower (measured). Set before
# anything imports torch; an explicit OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TESTS = Path(__file__).resolve().parent

# Property tests (hypothesis) try new examples on every local run; CI (.ci/run sets
# HYPOTHESIS_PROFILE=ci) replays a fixed sequence, so that a rare failing example, once found by
# a local run, is fixed before it can turn a merge red at random.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Test helper modules (_stores, _fake_hub, _installed) live beside the tests.
sys.path.insert(0, str(TESTS))
