"""One optimization of one group of prompts: split, search on train, accept on validation.

Pure of pytest and of the clients: the program (how cases are run), the budget the clients
enforce, a usage reader and the proposer are passed in, and the result is data. The group is
the set of prompt files that share tests; a test calling several prompts is scored end to end.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..client import Budget
from ..config import OptimizeSettings
from ..defaults import VALIDATION_FRACTION
from ..errors import BudgetExhausted
from ..record import CaseOutcome
from ..usage import Usage
from .acceptance import Decision, chance_rate, decide_holdout, decide_validation, mean_score, within_chance
from .base import Candidate, Case, Evaluation, Feedback, OptimizationContext, Program, Strategy, fingerprint
from .demos import DemoOption
from .proposer import Proposer
from .runlog import RunLog


def split_of(nodeid: str, fraction: float = VALIDATION_FRACTION) -> str:
    """Deterministic train/validation assignment from a hash of the node id."""
    return "validation" if _position(nodeid) < fraction else "train"


def _position(nodeid: str) -> float:
    return int(hashlib.sha256(nodeid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def assign_splits(nodeids: Sequence[str]) -> dict[str, str]:
    splits = {n: split_of(n) for n in nodeids}
    if len(nodeids) >= 2 and len(set(splits.values())) == 1:
        # every case fell on one side: move the one nearest the boundary across
        only = next(iter(splits.values()))
        moved = min(nodeids, key=lambda n: abs(_position(n) - VALIDATION_FRACTION))
        splits[moved] = "train" if only == "validation" else "validation"
    return splits


class MemoProgram:
    """Remembers every case result per candidate (and logs it), so nothing runs twice and a
    resumed run replays finished evaluations from the log. A result replayed from the log is
    charged to the budget once, as its first evaluation was, so a resumed run ends where an
    uninterrupted one would. The first run's outcomes are the original's results."""

    def __init__(self, inner: Program, budget: Budget, log: RunLog, original: Candidate,
                 first_run: Sequence[CaseOutcome]) -> None:
        self.inner = inner
        self.budget = budget
        self.log = log
        base = fingerprint(original)
        self.memo: dict[tuple[str, str], CaseOutcome] = {(base, o.nodeid): o for o in first_run}
        self._uncharged: set[tuple[str, str]] = set()  # replayed from the log, not yet paid for
        for event in log.replayed_events("eval"):
            for r in event.get("results", []):
                key = (event["candidate"], r["nodeid"])
                self.memo[key] = CaseOutcome.from_dict(r)
                self._uncharged.add(key)

    def evaluate(self, candidate: Candidate, nodeids: Sequence[str]) -> Evaluation:
        fp = fingerprint(candidate)
        known = {n: self.memo[(fp, n)] for n in nodeids if (fp, n) in self.memo}
        first_replays = [(fp, n) for n in known if (fp, n) in self._uncharged]
        if first_replays:  # what the interrupted run paid for these, paid once again here
            self.budget.charge(sum(self.memo[k].requests for k in first_replays))
            self._uncharged.difference_update(first_replays)
        missing = [n for n in nodeids if n not in known]
        if missing:
            fresh = self.inner.evaluate(candidate, missing)
            for r in fresh.results:
                self.memo[(fp, r.nodeid)] = r
            self.log.write("eval", candidate=fp, results=[r.to_dict() for r in fresh.results],
                           prompts={k: {"instruction": p.instruction, "demos": [d.to_dict() for d in p.demos]}
                                    for k, p in candidate.items()})
        return Evaluation(tuple(self.memo[(fp, n)] for n in nodeids))

    def feedback(self, results: Sequence[CaseOutcome]) -> list[Feedback]:
        return self.inner.feedback(results)

    def demo_pool(self, prompt_key: str, nodeids: Sequence[str]) -> list[DemoOption]:
        return self.inner.demo_pool(prompt_key, nodeids)

    def inputs(self, nodeid: str) -> tuple[Mapping[str, str], ...]:
        return self.inner.inputs(nodeid)

    def source(self, nodeid: str) -> str:
        return self.inner.source(nodeid)

    def calls_per_case(self, nodeids: Sequence[str]) -> float:
        return self.inner.calls_per_case(nodeids)


@dataclass(frozen=True)
class Group:
    """What to optimize: the prompts, their tests split in train and validation, the holdout
    tests (never used for selection) and the outcomes of the run before the optimization."""

    original: Candidate
    cases: tuple[Case, ...]
    holdout: tuple[Case, ...] = ()
    first_run: tuple[CaseOutcome, ...] = ()

    @property
    def train(self) -> list[Case]:
        return [c for c in self.cases if c.split == "train"]

    @property
    def validation(self) -> list[Case]:
        return [c for c in self.cases if c.split == "validation"]


@dataclass(frozen=True)
class Scores:
    """Mean scores of the original (before) and the chosen candidate (after) on one split."""

    cases: int
    before: float
    after: float | None = None


@dataclass(frozen=True)
class GroupResult:
    """What one optimization did, as data: the session renders it and the JSON report stores it."""

    prompts: tuple[str, ...]
    strategy: str
    decision: Decision
    train: Scores
    validation: Scores
    holdout: Scores | None
    estimate: int
    budget: int | None
    usage: Mapping[str, Usage]  # by role: task, judge, optimizer
    seconds: float
    notes: tuple[str, ...] = ()
    best: Candidate = field(default_factory=dict, compare=False)
    log_path: str = ""
    diff: str = ""  # what writing the winner changes; set by the caller that plans the write
    chance: float | None = None  # validation score of always giving the majority answer, if known

    @property
    def accepted(self) -> bool:
        return self.decision.accepted

    @property
    def calls(self) -> int:
        return sum(u.requests for u in self.usage.values())

    @property
    def after_is_chance(self) -> bool:
        """The chosen candidate's validation score is within noise of the majority answer's."""
        after = self.validation.after
        return after is not None and within_chance(after, self.validation.cases, self.chance)

    def to_dict(self, display: Callable[[str], str] = str) -> dict[str, Any]:
        return {"prompts": [display(k) for k in self.prompts], "strategy": self.strategy,
                "accepted": self.accepted, "reason": self.decision.reason,
                "regressions": self.decision.regressions, "allowed_regressions": self.decision.allowed,
                "train": vars(self.train), "validation": vars(self.validation),
                "holdout": None if self.holdout is None else vars(self.holdout),
                "estimate": self.estimate, "budget": self.budget, "calls": self.calls,
                "usage": {role: u.to_dict() for role, u in self.usage.items()},
                "seconds": round(self.seconds, 3), "notes": list(self.notes), "log": self.log_path,
                "diff": self.diff, "chance": self.chance, "after_within_noise_of_chance": self.after_is_chance}


def optimize_group(group: Group, program: Program, *, strategy: Strategy, proposer: Proposer, budget: Budget,
                   usage: Callable[[], Mapping[str, Usage]], log: RunLog, settings: OptimizeSettings,
                   progress: Callable[..., None]) -> GroupResult:
    """Search on train within the budget (the clients enforce it), then decide on validation
    and holdout. Validation gets a reserve of the budget; holdout is outside it."""
    started, before = time.perf_counter(), usage()
    train, validation, original = group.train, group.validation, group.original
    reserve = int(len(validation) * program.calls_per_case([c.nodeid for c in group.cases])) + 1
    budget.max_requests = None if settings.budget is None else max(1, settings.budget - reserve)
    estimate = strategy.estimate_calls(len(train), len(original), budget.max_requests) + reserve
    log.write("start", prompts=sorted(original), strategy=strategy.name, seed=settings.seed, budget=settings.budget,
              estimate=estimate, train=[c.nodeid for c in train], validation=[c.nodeid for c in validation],
              resumed=log.resumed)
    progress(f"{strategy.name}: {len(train)} train / {len(validation)} validation tests, "
             f"estimated {estimate} LM calls", estimate=estimate)
    memo = MemoProgram(program, budget, log, original, group.first_run)
    validation_ids = {c.nodeid for c in validation}
    first_validation = [o for o in group.first_run if o.nodeid in validation_ids]

    def finish(decision: Decision, best: Candidate, train_after: float, validation_after: float | None = None,
               holdout: Evaluation | None = None, notes: Sequence[str] = (),
               searched: Mapping[str, Usage] | None = None, scored: Evaluation | None = None) -> GroupResult:
        # the spend of search and validation; checking the winner on holdout is not part of it
        spent = {role: u - before.get(role, Usage()) for role, u in (searched or usage()).items()}
        log.write("decision", accepted=decision.accepted, reason=decision.reason, train_before=mean_score(train),
                  train_after=train_after, validation_before=mean_score(validation), validation_after=validation_after,
                  regressions=decision.regressions, calls={r: u.requests for r, u in spent.items()})
        held = None if holdout is None else Scores(len(group.holdout), mean_score(group.holdout), holdout.mean)
        return GroupResult(tuple(sorted(original)), strategy.name, decision,
                           Scores(len(train), mean_score(train), train_after),
                           Scores(len(validation), mean_score(validation), validation_after), held,
                           estimate, settings.budget, spent, time.perf_counter() - started,
                           tuple([*notes, *proposer.notes]), best, str(log.path),
                           chance=chance_rate(first_validation, scored.results if scored else ()))

    if not train or not validation:
        return finish(Decision(False, f"needs at least 2 test cases (has {len(group.cases)}): one to learn from, "
                                      "one to validate"), original, mean_score(train))
    result = strategy.run(OptimizationContext(original, train, memo, proposer, log.write, progress, settings.seed,
                                              lambda: budget.remaining))
    best = result.best
    if fingerprint(best) == fingerprint(original):
        return finish(Decision(False, "no candidate beat the original on the train cases"), best, result.train_score,
                      notes=result.notes)
    budget.max_requests, budget.exhausted = settings.budget, False  # the reserve is for validation
    try:
        after = memo.evaluate(best, [c.nodeid for c in validation])
    except BudgetExhausted as exc:
        return finish(Decision(False, f"budget ran out before validation finished ({exc})"), best,
                      result.train_score, notes=result.notes)
    decision = decide_validation(validation, after, margin=settings.margin, max_regressions=settings.max_regressions)
    held, searched = None, usage()
    if decision.accepted and group.holdout:
        budget.max_requests = None  # checking the winner is not part of the search
        held = memo.evaluate(best, [c.nodeid for c in group.holdout])
    return finish(decide_holdout(decision, group.holdout, held), best, result.train_score, after.mean, held,
                  result.notes, searched, after)


__all__ = ["Group", "GroupResult", "MemoProgram", "Scores", "assign_splits", "optimize_group", "split_of"]
