"""Grounded question answering, graded two ways: by an LLM judge and by a deterministic check.

Both tests call the same prompt with the same inputs, so the second call is a cache hit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from pytest_promptopt import checks, load_prompt
from pytest_promptopt import LLM, JudgeCall

answer = load_prompt("prompts/answer.yaml")

CASES: list[dict[str, Any]] = YAML(typ="safe").load(Path(__file__).parent / "cases.yaml")
IDS = [case["question"][:30] for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grounded_answer(case: dict[str, Any], llm: LLM, judge: JudgeCall) -> None:
    out = llm(answer, question=case["question"], context=case["context"])
    judge(out, criteria="Gives the same answer as EXPECTED; says it does not know when EXPECTED is "
                        "\"I don't know\".", expected=case["answer"], threshold=0.5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_answer_contains_expected(case: dict[str, Any], llm: LLM) -> None:
    out = llm(answer, question=case["question"], context=case["context"])
    checks.contains(out, case["answer"])  # deterministic: case-insensitive substring
