"""A classifier's recorded answers graded by a calibrated judge file.

`answers.jsonl` holds 60 BANKING77 messages with the label a classifier gave them: 30 right, 30
wrong (its `verdict` is the truth, which the judge does not see). The true pass rate is 0.5;
the report shows the judge's raw pass rate next to the one corrected for its measured error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_promptopt import JudgeCall, load_judge

intent_judge = load_judge("judges/intent.yaml")
ANSWERS: list[dict[str, Any]] = [json.loads(line) for line in
                                 (Path(__file__).parent / "answers.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("case", ANSWERS, ids=[f"{i:02d}" for i in range(len(ANSWERS))])
def test_intent_label(case: dict[str, Any], judge: JudgeCall) -> None:
    judge(case["output"], intent_judge)
