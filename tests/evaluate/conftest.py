"""Fixtures of the evaluation tests. The training fixtures of ``tests/model`` (tiny configs, the dataset
helper, run specs) are reused, not copied: their folder is put on the import path."""

import sys
from pathlib import Path

MODEL_TESTS = str(Path(__file__).resolve().parents[1] / "model")
if MODEL_TESTS not in sys.path:
    sys.path.insert(0, MODEL_TESTS)
