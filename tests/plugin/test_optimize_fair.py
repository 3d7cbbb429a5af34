"""`--optimize` compares candidates fairly (issue 27): every candidate is scored on the same train
cases, none of which it shows as a demo; the prompt file's own demos earn it nothing; and the
validation cases are touched by the final decision only.

The task model copies the answer of its most similar demo (`knncopy.py`), so a candidate scored
on cases it shows would look perfect: exactly the bias these tests would catch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from example import Example
from knncopy import PROMPT, holdout_text, knn_copy, label, labelled_cases, suite_module

from pytest_promptopt.testing import ScriptedServer

LABELS = 40
HOLDOUT = [(holdout_text(i), label(i)) for i in range(LABELS)]


def run_log(path: Path) -> list[dict[str, Any]]:
    (log,) = (path / ".promptopt_cache" / "runs").glob("*.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_many_labels_two_train_cases_each_get_retrieved_demos(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    """40 labels with two train cases each: no static set can show every label, the nearest two
    retrieved demos can; `--optimize` writes retrieval, and the holdout tests then pass."""
    cases = labelled_cases(LABELS, "test_intent.py", "test_intent")
    example = Example(suite, {"intent.yaml": PROMPT, "test_intent.py": suite_module(cases, HOLDOUT)})
    scripted.responder = knn_copy
    optimized = example.run_pytest("--optimize")
    (group,) = optimized.report["optimization"]["groups"]
    assert group["accepted"], group["reason"]
    written = optimized.files_after["intent.yaml"]
    assert "retrieve:" in written and "by: bm25" in written, written
    rerun = example.run_pytest("-k", "heldout")
    passed = rerun.outcomes.get("passed", 0)
    print(f"holdout after --optimize: {passed} of {len(HOLDOUT)} pass")
    assert passed >= 0.9 * len(HOLDOUT), written
