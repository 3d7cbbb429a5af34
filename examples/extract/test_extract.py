"""Structured extraction: one test per payment message, the reply compared field by field with
the expected JSON (`checks.json_equals`, which also gives the optimizer the expected object as a
labelled demo). A third of the cases are holdout tests: scored in every run, never used by
`--optimize`.

`pytest examples/extract` scores the prompt; `pytest examples/extract --optimize` improves
prompts/extract.yaml.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_promptopt import LLM, checks, load_prompt

extract = load_prompt("prompts/extract.yaml")

FIELDS = ["amount", "currency", "merchant"]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def load_cases() -> list[Any]:
    """One case per CSV row (text, amount, currency, merchant, holdout)."""
    with open(Path(__file__).parent / "data" / "cases.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    marks = {"yes": [pytest.mark.promptopt(holdout=True)], "no": []}
    return [pytest.param(row, id=slug(row["text"]), marks=marks[row["holdout"]]) for row in rows]


@pytest.mark.parametrize("case", load_cases())
def test_extract(case: dict[str, str], llm: LLM) -> None:
    out = llm(extract, text=case["text"])
    expected = {"amount": float(case["amount"]), "currency": case["currency"], "merchant": case["merchant"]}
    checks.json_equals(out, expected, fields=FIELDS)
