"""Make the naive reference tree (tests/unit/audit/reference.py) importable from property tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "audit"))
