"""Iris species from measurements, zero-shot: exact species name."""

from __future__ import annotations

from typing import Any

import pytest
from benchcases import bench_cases
from tasks import IRIS_LABELS

from pytest_promptopt import load_prompt
from pytest_promptopt.run.runtime import LLM

species = load_prompt("prompts/species.yaml")
LABELS = ", ".join(IRIS_LABELS)


@pytest.mark.parametrize("case", bench_cases("iris"))
def test_case(case: dict[str, Any], llm: LLM) -> None:
    answer = llm(species, features=case["inputs"]["features"], labels=LABELS)
    assert answer.strip() == case["answer"]
