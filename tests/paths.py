"""Where the tests find what they read: the repository, its fixtures, the public vectors.

The one place these paths are computed; tests take the vectors through the `vectors`
fixture (tests/conftest.py), or, to parametrize over them at collection, from here.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
FIXTURES = TESTS / "fixtures"
GOLDEN = TESTS / "golden"
# Public test vectors, beside the repository (the README says where they come from).
VECTORS = ROOT.parent / "shared" / "vectors"
