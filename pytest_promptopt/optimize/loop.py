"""One optimization of one group of prompts: split, search on train, accept on validation.

Pytest-free: the program (how cases are run) is passed in. The group is the set of prompt
files that share test items; a test calling several prompts is scored end to end.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..client import Budget, LMClient, UsageSnapshot
from ..errors import BudgetExhausted
from ..writeback import PendingWrite, plan_write
from .base import Candidate, Case, CaseResult, Evaluation, OptimizationContext, Program, Strategy, fingerprint
from .proposer import Proposer
from .runlog import RunLog

VALIDATION_FRACTION = 0.35  # train needs room for demos and for the cases that score them


def split_of(nodeid: str, fraction: float = VALIDATION_FRACTION) -> str:
    """Deterministic train/validation assignment from a hash of the node id."""
    h = int(hashlib.sha256(nodeid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "validation" if h < fraction else "train"


def assign_splits(nodeids: Sequence[str]) -> dict[str, str]:
    splits = {n: split_of(n) for n in nodeids}
    if len(nodeids) >= 2 and len(set(splits.values())) == 1:
        # every case fell on one side: move the one nearest the boundary across
        only = next(iter(splits.values()))
        moved = min(nodeids, key=lambda n: abs(int(hashlib.sha256(n.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
                                                 - VALIDATION_FRACTION))
        splits[moved] = "train" if only == "validation" else "validation"
    return splits


class MemoProgram:
    """Remembers every case result per candidate (and logs it), so nothing runs twice and a
    resumed run replays finished evaluations from the log. A result replayed from the log is
    charged to the budget once, as its first evaluation was, so a resumed run ends where an
    uninterrupted one would."""

    def __init__(self, inner: Program, budget: Budget, log: RunLog, baseline: Candidate, cases: Sequence[Case]) -> None:
        self.inner = inner
        self.budget = budget
        self.log = log
        self.memo: dict[tuple[str, str], CaseResult] = {}
        self._uncharged: set[tuple[str, str]] = set()  # replayed from the log, not yet paid for
        base = fingerprint(baseline)
        for case in cases:
            self.memo[(base, case.nodeid)] = CaseResult(case.nodeid, case.score, case.passed, case.message, 0, case.record)
        for event in log.replayed_events("eval"):
            for r in event.get("results", []):
                key = (event["candidate"], r["nodeid"])
                self.memo[key] = CaseResult(r["nodeid"], float(r["score"]), bool(r["passed"]),
                                            str(r.get("message", "")), int(r.get("requests", 0)))
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
                           prompts={k: {"instruction": p.instruction, "demos": [d.to_dict() for d in p.demos],
                                        "retrieve": p.retrieval.summary() if p.retrieval else None}
                                    for k, p in candidate.items()})
        return Evaluation(tuple(self.memo[(fp, n)] for n in nodeids))


@dataclass(frozen=True)
class GroupOutcome:
    prompts: tuple[str, ...]
    strategy: str
    accepted: bool
    reason: str
    n_train: int
    n_validation: int
    train_before: float
    train_after: float
    validation_before: float
    validation_after: float | None
    regressions: int
    estimate: int
    budget: int | None
    usage: Mapping[str, UsageSnapshot]
    seconds: float
    writes: tuple[PendingWrite, ...] = ()
    notes: tuple[str, ...] = ()
    best: Candidate = field(default_factory=dict)
    log_path: str = ""

    @property
    def calls(self) -> int:
        return sum(u.requests for u in self.usage.values())


def optimize_group(
    original: Candidate,
    cases: Sequence[Case],
    program: Program,
    *,
    strategy: Strategy,
    clients: Mapping[str, LMClient],
    log: RunLog,
    seed: int,
    budget_calls: int | None,
    budget_tokens: int | None,
    margin: float,
    max_regressions: int | None,
    progress: Callable[..., None],
) -> GroupOutcome:
    started = time.perf_counter()
    before = {role: c.usage() for role, c in clients.items()}
    train = [c for c in cases if c.split == "train"]
    validation = [c for c in cases if c.split == "validation"]
    calls_per_case = max(1.0, sum(len(c.record.traces) + len(c.record.judge_traces) for c in cases) / max(1, len(cases)))
    reserve = int(len(validation) * calls_per_case) + 1
    budget = Budget(None if budget_calls is None else max(1, budget_calls - reserve), budget_tokens)
    for c in clients.values():
        c.budget = budget
    estimate = strategy.estimate_calls(len(train), len(original), budget.max_requests) + reserve
    log.write("start", prompts=sorted(original), strategy=strategy.name, seed=seed, budget=budget_calls,
              estimate=estimate, train=[c.nodeid for c in train], validation=[c.nodeid for c in validation],
              resumed=log.resumed)
    progress(f"{strategy.name}: {len(train)} train / {len(validation)} validation tests, "
             f"estimated {estimate} LM calls", estimate=estimate)
    memo = MemoProgram(program, budget, log, original, cases)
    proposer = Proposer(clients["optimizer"], seed, log.write)
    t_before = _mean(train)
    v_before = _mean(validation)
    notes: list[str] = []

    def outcome(accepted: bool, reason: str, best: Candidate, t_after: float, v_after: float | None,
                regressions: int = 0, writes: tuple[PendingWrite, ...] = ()) -> GroupOutcome:
        for c in clients.values():
            c.budget = None
        usage = {role: c.usage() - before[role] for role, c in clients.items()}
        log.write("decision", accepted=accepted, reason=reason, train_before=t_before, train_after=t_after,
                  validation_before=v_before, validation_after=v_after, regressions=regressions,
                  calls={r: u.requests for r, u in usage.items()})
        return GroupOutcome(tuple(sorted(original)), strategy.name, accepted, reason, len(train), len(validation),
                            t_before, t_after, v_before, v_after, regressions, estimate, budget_calls, usage,
                            time.perf_counter() - started, writes, tuple(notes + proposer.notes), best, str(log.path))

    if not train or not validation:
        return outcome(False, f"needs at least 2 test cases (has {len(cases)}): one to learn from, one to validate",
                       original, t_before, None)
    ctx = OptimizationContext(original, train, memo, proposer, log.write, progress, seed,
                              lambda: budget.remaining)
    result = strategy.run(ctx)
    notes.extend(result.notes)
    best = result.best
    if fingerprint(best) == fingerprint(original):
        return outcome(False, "no candidate beat the original on the train cases", best, result.train_score, None)
    budget.max_requests = None if budget_calls is None else budget_calls  # the reserve is for validation
    budget.exhausted = False
    try:
        ev = memo.evaluate(best, [c.nodeid for c in validation])
    except BudgetExhausted as exc:
        return outcome(False, f"budget ran out before validation finished ({exc})", best, result.train_score, None)
    v_after = ev.mean
    was_passing = {c.nodeid for c in validation if c.passed}
    regressions = sum(1 for r in ev.results if r.nodeid in was_passing and not r.passed)
    allowed = max_regressions if max_regressions is not None else max(1, len(was_passing) // 5)
    if v_after < v_before + margin:
        return outcome(False, f"validation {v_before:.3f} -> {v_after:.3f} does not beat the original by the margin "
                              f"{margin:.3f}", best, result.train_score, v_after, regressions)
    if regressions > allowed:
        return outcome(False, f"breaks {regressions} previously passing validation tests (allowed {allowed})",
                       best, result.train_score, v_after, regressions)
    writes = tuple(plan_write(original[k], best[k]) for k in sorted(original) if best[k] != original[k])
    return outcome(True, f"validation {v_before:.3f} -> {v_after:.3f} (+{v_after - v_before:.3f}), "
                         f"{regressions} regression(s) (allowed {allowed})", best, result.train_score, v_after,
                   regressions, writes)


def _mean(cases: Sequence[Case]) -> float:
    return sum(c.score for c in cases) / len(cases) if cases else 0.0


__all__ = ["GroupOutcome", "MemoProgram", "assign_splits", "optimize_group", "split_of"]
