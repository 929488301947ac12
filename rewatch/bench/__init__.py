"""Performance benchmarks that print ratios measured side by side (not tests): `rewatch bench
NAME` runs `bench_NAME.py` from here, so an installed rewatch has them too."""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPTS = Path(__file__).parent


def names() -> list[str]:
    """The benchmarks shipped here (`bench_NAME.py` -> NAME)."""
    return [p.stem.removeprefix("bench_") for p in sorted(SCRIPTS.glob("bench_*.py"))]


def use_test_fixtures() -> None:
    """Put the source checkout's tests/ on sys.path: a few benchmarks drive the pipeline with the
    scripted panels that live there. An installed rewatch (no tests/) says so and exits."""
    tests = SCRIPTS.parent.parent / "tests"
    if not (tests / "conftest.py").exists():
        sys.exit(f"this benchmark uses the scripted fixtures in tests/ of a source checkout "
                 f"(git clone, then run it from there); not found at {tests}")
    sys.path.insert(0, str(tests))
