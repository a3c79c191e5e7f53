import sys
from pathlib import Path

# Test helper modules (_stores, _photos, _fake_hub) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
