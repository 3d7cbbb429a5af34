"""Shared by the benchmark suites: the cases file written by bench/bench_quality.py.

Each suite reads its cases (inputs, expected answer, split) from the JSON file named by
$PROMPTOPT_BENCH_CASES, so every contender sees the same train / validation / test split.
Test cases are marked holdout: scored, never used by --optimize.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest


def bench_cases(task: str) -> list[Any]:
    path = os.environ.get("PROMPTOPT_BENCH_CASES")
    if not path:
        return [pytest.param(None, marks=pytest.mark.skip(reason="run through bench/bench_quality.py"))]
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data["task"] != task:
        raise ValueError(f"{path} holds cases for {data['task']!r}, not {task!r}")
    return [pytest.param(case, id=case["id"],
                         marks=[pytest.mark.promptopt(holdout=True)] if case["split"] == "test" else [])
            for case in data["cases"]]
