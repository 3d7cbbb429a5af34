"""Intent classification on BANKING77 (10 intents): one test per customer message.

`pytest examples/banking` scores the prompt; `pytest examples/banking --optimize` improves
prompts/intent.yaml. Holdout cases are scored but never used by the optimizer.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_promptopt import LLM, load_prompt

intent = load_prompt("prompts/intent.yaml")

LABELS = ", ".join([
    "age_limit", "cancel_transfer", "card_arrival", "card_not_working", "exchange_rate",
    "lost_or_stolen_card", "pending_cash_withdrawal", "pin_blocked", "Refund_not_showing_up",
    "top_up_failed",
])

DATA = Path(__file__).parent / "data"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def load_cases(name: str, *marks: pytest.MarkDecorator) -> list[Any]:
    """One test case per CSV row (columns text,category)."""
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return [pytest.param(row, id=slug(row["text"]), marks=marks) for row in csv.DictReader(f)]


CASES = load_cases("train_cases.csv") + load_cases("holdout_cases.csv", pytest.mark.promptopt(holdout=True))


@pytest.mark.parametrize("case", CASES)
def test_intent(case: dict[str, str], llm: LLM) -> None:
    answer = llm(intent, text=case["text"], labels=LABELS)
    assert answer.strip() == case["category"]
