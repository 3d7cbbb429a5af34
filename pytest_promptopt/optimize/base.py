"""The optimizer's contract. Nothing here imports pytest.

A *program* is the set of tests that call a group of prompts; a *candidate* maps each prompt
file of the group to a proposed Prompt. Strategies see the program only through `Program`:
they evaluate candidates on cases, ask for reflective feedback on failed cases, and draw demos
from a pool; they never read test records or traces (GEPA's adapter is the model).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..prompts.prompt import Prompt
from ..run.record import CaseOutcome
from .feedback import Feedback
from .split import TrainSplit

if TYPE_CHECKING:
    from .demos import DemoOption
    from .proposer import Proposer

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
    """One test of the program and how it did in the run before the optimization."""

    nodeid: str
    split: str  # "train" | "validation"
    passed: bool
    score: float
    message: str = ""


@dataclass(frozen=True)
class Evaluation:
    results: tuple[CaseOutcome, ...]

    @property
    def mean(self) -> float:
        return sum(r.score for r in self.results) / len(self.results) if self.results else 0.0

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)


class Program(Protocol):
    """The tests that call a group of prompts, as the optimizer sees them."""

    def evaluate(self, candidate: Candidate, nodeids: Sequence[str]) -> Evaluation:
        """Score `candidate` on the given cases. Raises BudgetExhausted when the cap is hit;
        a case whose LM call fails scores 0 with the reason, it never raises."""
        ...

    def feedback(self, results: Sequence[CaseOutcome]) -> list[Feedback]:
        """Reflective feedback for the failed cases among `results`."""
        ...

    def demo_pool(self, prompt_key: str, nodeids: Sequence[str]) -> list[DemoOption]:
        """Demos for `prompt_key` from these cases of the first run: inputs and output of passing
        calls, and of failing calls whose expected answer the test showed."""
        ...

    def inputs(self, nodeid: str) -> tuple[Mapping[str, str], ...]:
        """The inputs of each prompt call the case made in the first run."""
        ...

    def source(self, nodeid: str) -> str:
        """The test's source code, for the program summary."""
        ...

    def calls_per_case(self, nodeids: Sequence[str]) -> float:
        """LM calls one of these cases made in the first run, on average (prompt and judge
        calls; at least 1)."""
        ...


@dataclass(frozen=True)
class StrategyResult:
    best: Candidate
    train_score: float
    notes: tuple[str, ...] = ()
    scored_on: tuple[str, ...] | None = None  # the train cases `train_score` is on (None: the context's scoring part)
    stopped: str = ""  # why the search could not start, when it could not (the decision's reason)


class Strategy(Protocol):
    """An optimization strategy (gradsum, mipro, auto, or one from a plugin)."""

    name: str

    def estimate_calls(self, n_train: int, n_prompts: int, budget: int | None = None) -> int:
        """LM calls the strategy expects to use, for the up-front estimate, within `budget` if given."""
        ...

    def run(self, ctx: OptimizationContext) -> StrategyResult:
        """Search for a better candidate using train cases only."""
        ...


StrategyFactory = Callable[[], Strategy]


@dataclass
class OptimizationContext:
    """Everything a strategy may use. Validation cases are deliberately absent."""

    original: Candidate
    train: Sequence[Case]
    program: Program
    proposer: Proposer
    log: Callable[..., None]
    progress: Callable[[str], None]
    seed: int
    budget_remaining: Callable[[], int | None]
    # a strategy that scores candidates on part of the scoring cases says which, once, so the
    # progress line's "best train" is over the cases every candidate is scored on
    scoring_on: Callable[[Sequence[str]], None] = lambda ids: None
    # which train cases score candidates and which may be shown as static demos (split.py); the
    # loop passes the run's split, a context made elsewhere scores on and shows every case
    split: TrainSplit | None = None

    def __post_init__(self) -> None:
        if self.split is None:
            self.split = TrainSplit.everything([c.nodeid for c in self.train])

    @property
    def scoring(self) -> tuple[str, ...]:
        """The train cases candidates are scored on."""
        assert self.split is not None
        return self.split.scoring

    @property
    def demo_source(self) -> tuple[str, ...]:
        """The train cases static demo sets may show."""
        assert self.split is not None
        return self.split.demo_source
