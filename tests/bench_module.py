"""bench/bench_quality.py for the tests that check its reading of results (it is not a package)."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def bench_quality() -> ModuleType:
    """Loaded once and registered under its own name, as its dataclasses expect."""
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "bench_quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module
    spec.loader.exec_module(module)
    return module
