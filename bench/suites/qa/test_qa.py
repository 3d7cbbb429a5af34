"""Grounded question answering graded by a judge: a 0..1 score and a reason per answer.

The judge here is a deterministic rubric (bench/peers/tasks.py: rubric, token F1 against the
expected answer, and "I don't know" for unanswerable questions) rather than an LLM: the embedded
135M model cannot judge (its yes/no probability sits near 0.5 whatever the output, NOTES.md), so
an LLM-judged score from it would be noise that every optimizer chases. The rubric's verdict is
recorded like an LLM judge's (a graded score, not pass/fail), so the optimizer sees the same
kind of signal as with `judge(...)` against a capable judge endpoint, and peers optimize the
same function.
"""

from __future__ import annotations

from typing import Any

import pytest
from benchcases import bench_cases
from tasks import rubric

from pytest_promptopt import load_prompt
from pytest_promptopt.run.record import Verdict, current_record
from pytest_promptopt.run.runtime import LLM

answer = load_prompt("prompts/answer.yaml")
CRITERIA = "Gives the expected answer (token F1); says it does not know when the context lacks it."


@pytest.mark.parametrize("case", bench_cases("qa"))
def test_case(case: dict[str, Any], llm: LLM) -> None:
    out = llm(answer, context=case["inputs"]["context"], question=case["inputs"]["question"])
    grade, reason = rubric(out, case["answer"])
    verdict = Verdict(grade, threshold=0.5, reason=reason, criteria=CRITERIA, raw=out)
    record = current_record.get()
    if record is not None:  # the test's score is the verdict's, as with the judge fixture
        record.verdicts.append(verdict)
    assert verdict.passed, f"judge: {verdict.score:.2f} < 0.5: {reason} (expected {case['answer']!r}, got {out!r})"
