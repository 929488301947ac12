"""Performance benchmarks that print ratios measured side by side (not tests): `rewatch bench
NAME` runs `bench_NAME.py` from here, so an installed rewatch has them too."""

from __future__ import annotations

import argparse
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


def model_args(doc: str | None) -> argparse.Namespace:
    """The command line of a benchmark on one embedded model: `--model` (a packaged model,
    default the embedded LLM) and `--quick`."""
    from rewatch.models.packaged import DEFAULT_LLM

    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--model", default=DEFAULT_LLM, help="a packaged model (default %(default)s)")
    p.add_argument("--quick", action="store_true")
    return p.parse_args()
