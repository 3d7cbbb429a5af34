"""Intent classification on BANKING77 (10 intents), as in examples/banking: exact intent name."""

from __future__ import annotations

from typing import Any

import pytest
from benchcases import bench_cases
from tasks import BANKING_LABELS

from pytest_promptopt import load_prompt
from pytest_promptopt.run.runtime import LLM

intent = load_prompt("prompts/intent.yaml")
LABELS = ", ".join(BANKING_LABELS)


@pytest.mark.parametrize("case", bench_cases("banking"))
def test_case(case: dict[str, Any], llm: LLM) -> None:
    answer = llm(intent, text=case["inputs"]["text"], labels=LABELS)
    assert answer.strip() == case["answer"]
