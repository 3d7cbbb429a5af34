"""Types shared by the optimization strategies. Nothing here imports pytest.

A *program* is the set of test items that call a group of prompts; a *candidate* maps each
prompt file of the group to a proposed Prompt; evaluating a candidate re-runs test items with
it swapped in and returns one CaseResult per item.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..prompts import Prompt
from ..record import TestRecord

Candidate = Mapping[str, Prompt]  # prompt key -> prompt


def fingerprint(candidate: Candidate) -> str:
    """Identity of a candidate's content (instruction, demos and retrieval rule of each prompt)."""
    payload = [
        (key, [(m.role, m.content) for m in p.messages], [d.to_dict() for d in p.demos],
         p.retrieval.identity if p.retrieval is not None else None)
        for key, p in sorted(candidate.items())
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Case:
    """One test item of the program, with what the baseline run recorded for it."""

    nodeid: str
    split: str  # "train" | "validation"
    passed: bool
    score: float
    message: str
    record: TestRecord
    source: str = ""  # the test function's source, for the program summary


@dataclass(frozen=True)
class CaseResult:
    nodeid: str
    score: float
    passed: bool
    message: str = ""
    requests: int = 0
    record: TestRecord | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {"nodeid": self.nodeid, "score": self.score, "passed": self.passed,
                "message": self.message[:2000], "requests": self.requests}


@dataclass(frozen=True)
class Evaluation:
    results: tuple[CaseResult, ...]

    @property
    def mean(self) -> float:
        return sum(r.score for r in self.results) / len(self.results) if self.results else 0.0

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)


class Program(Protocol):
    """Runs test items with a candidate swapped in."""

    def evaluate(self, candidate: Candidate, nodeids: Sequence[str]) -> Evaluation:
        """Score `candidate` on the given cases. Raises BudgetExhausted when the cap is hit."""
        ...


@dataclass(frozen=True)
class StrategyResult:
    best: Candidate
    train_score: float
    notes: tuple[str, ...] = ()


class Strategy(Protocol):
    """An optimization strategy (gradsum, mipro, auto, or one from a plugin)."""

    name: str

    def estimate_calls(self, n_train: int, n_prompts: int, budget: int | None = None) -> int:
        """LM calls the strategy expects to use, for the up-front estimate, within `budget` if given."""
        ...

    def run(self, ctx: OptimizationContext) -> StrategyResult:
        """Search for a better candidate using train cases only."""
        ...


@dataclass
class OptimizationContext:
    """Everything a strategy may use. Validation cases are deliberately absent."""

    original: Candidate
    train: Sequence[Case]
    program: Program
    proposer: object  # optimize.proposer.Proposer
    log: Callable[..., None]
    progress: Callable[[str], None]
    seed: int
    budget_remaining: Callable[[], int | None]
