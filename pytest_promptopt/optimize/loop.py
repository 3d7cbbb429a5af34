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

from ..llm.client import Budget
from ..run.config import OptimizeSettings
from ..defaults import VALIDATION_FRACTION
from ..errors import BudgetExhausted
from ..run.record import CaseOutcome
from ..usage import Usage
from .acceptance import Decision, chance_rate, decide_holdout, decide_validation, mean_score, within_chance
from .before import BaselineBefore
from .constant import ConstantBaseline, OneAnswer, constant_baseline, decide_constant, format_only, one_answer
from .base import Candidate, Case, Evaluation, Feedback, OptimizationContext, Program, Strategy, fingerprint
from .demos import DemoOption
from .proposer import Proposer
from .runlog import RunLog
from .simplify import simplify
from .split import TrainSplit, shown_cases, train_split


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
    uninterrupted one would. The first run's outcomes are the original's results.

    A log is not trusted: only its events of this run (`run` is the log's key) are replayed,
    never over the original's first-run results, and only for cases of the group. What a
    decision rests on is re-run first (`verify`); one replayed result that a re-run contradicts
    means the log is not this run's, and every result replayed from it is dropped."""

    def __init__(self, inner: Program, budget: Budget, log: RunLog, original: Candidate,
                 first_run: Sequence[CaseOutcome], splits: Mapping[str, str] | None = None) -> None:
        self.inner = inner
        # which split each case belongs to, for the run log: every eval event names it, and the
        # count of case results evaluated per split is kept
        self.splits: dict[str, str] = dict(splits or {})
        self.evaluated: dict[str, int] = {}
        self.budget = budget
        self.log = log
        base = fingerprint(original)
        self.memo: dict[tuple[str, str], CaseOutcome] = {(base, o.nodeid): o for o in first_run}
        # progress lines: the best mean of a candidate scored on every scoring case at once, the rule
        # of search.Evaluator.best_full (a superset, such as retrieval ranking's, or minibatches do not count)
        self.best_train: float | None = None
        self._train: tuple[str, ...] = ()
        self._train_set: frozenset[str] = frozenset()  # the same cases, for the "scored in full" test in evaluate
        self._uncharged: set[tuple[str, str]] = set()  # replayed from the log, not yet paid for
        self.replayed: set[tuple[str, str]] = set()  # replayed from the log, not yet verified by a re-run
        self.refused = ""  # why the log's results were dropped ("" while they are trusted)
        cases = {o.nodeid for o in first_run}
        for event in log.replayed_events("eval"):
            self._replay(event, base, cases)

    def _replay(self, event: Mapping[str, Any], base: str, cases: set[str]) -> None:
        candidate, results = event.get("candidate"), event.get("results")
        if event.get("run") != self.log.key or not isinstance(candidate, str) or candidate == base \
                or not isinstance(results, list):
            return
        for r in results:
            try:
                outcome = CaseOutcome.from_dict(r)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            if cases and outcome.nodeid not in cases:
                continue
            key = (candidate, outcome.nodeid)
            self.memo[key] = outcome
            self._uncharged.add(key)
            self.replayed.add(key)

    def verify(self, candidate: Candidate, nodeids: Sequence[str]) -> str:
        """Re-run the cases of `candidate` whose results came from the log, before a decision
        rests on them. Returns why the log was refused ("" when it held)."""
        fp = fingerprint(candidate)
        keys = [(fp, n) for n in nodeids if (fp, n) in self.replayed]
        if not keys:
            return ""
        fresh = {r.nodeid: r for r in self.inner.evaluate(candidate, [n for _, n in keys]).results}
        self._uncharged.difference_update(keys)  # the re-run paid for them
        differ = [n for _, n in keys if not _same(self.memo[(fp, n)], fresh[n])]
        self.replayed.difference_update(keys)
        self.memo.update({(fp, n): r for n, r in fresh.items()})
        if differ and not self.refused:
            self.refused = (f"the run log's result for {differ[0]} did not match a re-run ({len(differ)} of "
                            f"{len(keys)} checked): the log is not this run's (planted or stale), so every result "
                            f"replayed from it was dropped and scored again")
            for key in self.replayed:
                del self.memo[key]
            self._uncharged.difference_update(self.replayed)
            self.replayed.clear()
            self.log.write("replay_refused", candidate=fp, cases=differ[:20])
        return self.refused if differ else ""

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
            split = self._split_of(missing)
            self.evaluated[split] = self.evaluated.get(split, 0) + len(missing)
            self.log.write("eval", run=self.log.key, candidate=fp, split=split,
                           results=[r.to_dict() for r in fresh.results],
                           prompts={k: {"instruction": p.instruction, "demos": [d.to_dict() for d in p.demos],
                                        "retrieve": p.retrieval.summary() if p.retrieval else None}
                                    for k, p in candidate.items()})
        if self._train and len(nodeids) == len(self._train) and frozenset(nodeids) == self._train_set:
            self._note_best(fp)  # scored in full, as the strategy's best is (not a superset, not minibatches)
        return Evaluation(tuple(self.memo[(fp, n)] for n in nodeids))

    def _split_of(self, nodeids: Sequence[str]) -> str:
        """The split these cases came from ("+"-joined when they came from several)."""
        return "+".join(sorted({self.splits.get(n, "unknown") for n in nodeids}))

    def verified(self, candidate: Candidate, nodeids: Sequence[str], notes: list[str]) -> Evaluation:
        """`evaluate`, with every result replayed from the log re-run first (what decides)."""
        refused = self.verify(candidate, nodeids)
        if refused:
            notes.append(refused)
        return self.evaluate(candidate, nodeids)

    def track_best(self, train: Sequence[str], original: Candidate) -> None:
        """Keep `best_train` (shown in progress lines) from here on; the original is the first."""
        self._train = tuple(train)
        self._train_set = frozenset(self._train)
        self._note_best(fingerprint(original))

    def _note_best(self, fp: str) -> None:
        scored = [self.memo.get((fp, n)) for n in self._train]
        if self._train and all(o is not None for o in scored):
            mean = sum(o.score for o in scored if o is not None) / len(scored)
            self.best_train = mean if self.best_train is None else max(self.best_train, mean)

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
    scored: int | None = None  # the cases before and after are on, when only part of `cases`

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cases": self.cases, "before": self.before, "after": self.after}
        return out if self.scored is None else {**out, "scored": self.scored}


BUDGET_RAN_OUT = "budget ran out before validation finished"


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
    # The accepted winner's outcome on every case and holdout case (empty when rejected, or when
    # one was never scored): what the tests give once the winner is written.
    outcomes: tuple[CaseOutcome, ...] = field(default=(), compare=False)
    baseline_before: tuple[BaselineBefore, ...] = ()  # set by the caller when a baseline was given
    constant: ConstantBaseline | None = None  # always the most common train answer, on validation
    one_answer: OneAnswer | None = None  # the candidate gives (nearly) one answer on validation
    search_starved: bool = False  # the budget ran out during the search
    train_split: TrainSplit | None = None  # which train cases scored candidates, which were demo sources

    @property
    def accepted(self) -> bool:
        return self.decision.accepted

    @property
    def starved(self) -> bool:
        """Rejected because the budget ran out (during the search, or before validation could
        decide): no verdict on what a full search would find."""
        return not self.accepted and (self.search_starved or self.decision.reason.startswith(BUDGET_RAN_OUT))

    @property
    def after_by_split(self) -> dict[str, float | None]:
        """The chosen candidate's mean score per split (None: not scored there)."""
        return {"train": self.train.after, "validation": self.validation.after,
                "holdout": None if self.holdout is None else self.holdout.after}

    @property
    def calls(self) -> int:
        return sum(u.requests for u in self.usage.values())

    @property
    def sent(self) -> int:
        """Requests that went to an endpoint (the rest were answered by the cache)."""
        return sum(u.api_calls for u in self.usage.values())

    @property
    def after_is_chance(self) -> bool:
        """The chosen candidate's validation score is within noise of the majority answer's."""
        after = self.validation.after
        return after is not None and within_chance(after, self.validation.cases, self.chance)

    def to_dict(self, display: Callable[[str], str] = str) -> dict[str, Any]:
        return {"prompts": [display(k) for k in self.prompts], "strategy": self.strategy,
                "accepted": self.accepted, "reason": self.decision.reason,
                "regressions": self.decision.regressions, "allowed_regressions": self.decision.allowed,
                "train": self.train.to_dict(), "validation": self.validation.to_dict(),
                "holdout": None if self.holdout is None else self.holdout.to_dict(),
                "estimate": self.estimate, "budget": self.budget, "calls": self.calls, "sent": self.sent,
                "usage": {role: u.to_dict() for role, u in self.usage.items()},
                "seconds": round(self.seconds, 3), "notes": list(self.notes), "log": self.log_path,
                "diff": self.diff, "chance": self.chance, "after_within_noise_of_chance": self.after_is_chance,
                "baseline_before": [b.to_dict() for b in self.baseline_before],
                "constant": None if self.constant is None else self.constant.to_dict(),
                "one_answer": None if self.one_answer is None else self.one_answer.to_dict(),
                "train_split": None if self.train_split is None else self.train_split.sizes()}


def optimize_group(group: Group, program: Program, *, strategy: Strategy, proposer: Proposer, budget: Budget,
                   usage: Callable[[], Mapping[str, Usage]], log: RunLog, settings: OptimizeSettings,
                   progress: Callable[..., None]) -> GroupResult:
    """Search on train within the budget (the clients enforce it), simplify the winner on the
    train cases the search scored on, then decide on validation and holdout: validation and
    holdout cases are evaluated for that decision only. Simplification, validation and the
    holdout check get a reserve of the budget: it caps every request the optimization sends."""
    run = _GroupRun(group, program, strategy, proposer, budget, usage, log, settings)
    train, validation, original = group.train, group.validation, group.original
    if not train or not validation:
        return run.finish(Decision(False, f"needs at least 2 test cases (has {len(group.cases)}): one to learn "
                                          "from, one to validate"), original)
    split = run.split_train()
    if not split.scoring:
        return run.finish(Decision(False, f"every one of the {len(train)} train cases is one of the prompt's own "
                                          "demos, so none can score a candidate fairly: add test cases"), original)
    run.memo.track_best(split.scoring, original)
    progress(f"{strategy.name}: {len(train)} train ({len(split.scoring)} scoring) / {len(validation)} validation "
             f"tests, estimated {run.estimate} LM calls", estimate=run.estimate, best=lambda: run.memo.best_train)
    result = strategy.run(OptimizationContext(original, train, run.memo, proposer, log.write, progress, settings.seed,
                                              lambda: budget.remaining,
                                              scoring_on=lambda ids: run.memo.track_best(ids, original), split=split))
    run.notes.extend(result.notes)
    run.train_after, run.scored_on = result.train_score, result.scored_on or split.scoring
    run.search_starved = budget.exhausted  # the budget, not the search, ended the search
    if result.stopped:
        return run.finish(Decision(False, result.stopped), original)
    if fingerprint(result.best) == fingerprint(original):
        return run.finish(Decision(False, "no candidate beat the original on the train cases"), result.best)
    budget.max_requests, budget.exhausted = settings.budget, False  # the reserve is for what follows
    progress("simplifying the winner: each part it changed must earn its place")
    best = run.simplify(result.best)
    if fingerprint(best) == fingerprint(original):
        return run.finish(Decision(False, "nothing the winner changed earned its place on the train cases"), best)
    try:
        log.write("validate", candidate=fingerprint(best), cases=len(validation))  # the decision starts here
        after = run.memo.verified(best, [c.nodeid for c in validation], run.notes)
    except BudgetExhausted as exc:
        return run.finish(Decision(False, f"{BUDGET_RAN_OUT} ({exc})"), best)
    decision = run.against_constant(
        decide_validation(validation, after, margin=settings.margin, max_regressions=settings.max_regressions), after)
    held = None
    if decision.accepted and group.holdout:
        try:  # within the budget too: the cap counts every request the optimization sends
            held = run.memo.verified(best, [c.nodeid for c in group.holdout], run.notes)
        except BudgetExhausted as exc:
            run.notes.append(f"holdout not checked: {exc}")
    return run.finish(decide_holdout(decision, group.holdout, held), best, after, held)


class _GroupRun:
    """The bookkeeping of one optimize_group call: reserve, estimate, memo, notes, result."""

    def __init__(self, group: Group, program: Program, strategy: Strategy, proposer: Proposer, budget: Budget,
                 usage: Callable[[], Mapping[str, Usage]], log: RunLog, settings: OptimizeSettings) -> None:
        self.group, self.strategy, self.proposer, self.usage, self.log = group, strategy, proposer, usage, log
        self.settings, self.started, self.before = settings, time.perf_counter(), usage()
        per_case = program.calls_per_case([c.nodeid for c in group.cases])
        # validation and holdout once, and simplification a few times over the train cases
        checks = len(group.validation) + len(group.holdout) + SIMPLIFY_PASSES * len(group.train)
        reserve = int(per_case * checks) + 1
        if settings.budget is not None:
            reserve = min(reserve, settings.budget // 4)
        budget.max_requests = None if settings.budget is None else max(1, settings.budget - reserve)
        # the plan that will run: the search stops at its share of the budget, whatever it planned
        search = strategy.estimate_calls(len(group.train), len(group.original), budget.max_requests)
        if budget.max_requests is not None:
            search = min(search, budget.max_requests)
        self.estimate = search + reserve
        log.write("start", prompts=sorted(group.original), strategy=strategy.name, seed=settings.seed,
                  budget=settings.budget, estimate=self.estimate, train=[c.nodeid for c in group.train],
                  validation=[c.nodeid for c in group.validation], resumed=log.resumed)
        splits = {c.nodeid: c.split for c in (*group.cases, *group.holdout)}
        self.memo = MemoProgram(program, budget, log, group.original, group.first_run, splits)
        self.notes: list[str] = [resumed_note(log)] if settings.resume else []
        self.train_after = mean_score(group.train)
        self.scored_on: tuple[str, ...] | None = None  # the train cases train_after is on, when not all
        self.split: TrainSplit | None = None
        self.constant: ConstantBaseline | None = None
        self.one_answer: OneAnswer | None = None
        self.search_starved = False

    def against_constant(self, validated: Decision, after: Evaluation) -> Decision:
        """The decision once the candidate is also held against the constant baseline; notes a
        candidate that gives one answer, or that fixed only the format of the original's."""
        ids = {c.nodeid: c.split for c in self.group.cases}
        first = {split: [o for o in self.group.first_run if ids.get(o.nodeid) == split] for split in ("train", "validation")}
        self.constant = constant_baseline(first["train"], first["validation"], after.results)
        self.one_answer = one_answer(after.results)
        format_note = format_only(first["validation"], after, self.constant, self.settings.margin)
        if format_note:
            self.notes.append(format_note)
        return decide_constant(validated, self.constant, after, margin=self.settings.margin,
                               allow=self.settings.allow_constant)

    def split_train(self) -> TrainSplit:
        """Split the train cases into scoring and demo-source parts (split.py), say so in the
        run log and the notes, and label the run log's evaluations by part."""
        train = [c.nodeid for c in self.group.train]
        self.split = split = train_split(self.memo, self.group.original, train, self.settings.seed)
        self.log.write("split", **split.to_log())
        self.memo.splits.update({n: "train-demo-source" for n in split.demo_source})
        self.memo.splits.update({n: "train-scoring" for n in split.scoring})
        return split

    def simplify(self, best: Candidate) -> Candidate:
        """`best` with what does not earn its place put back, judged on the train cases the
        search scored on, none of which the winner or the original shows as a demo (a strategy
        from a plugin may have drawn demos from anywhere: the cases it shows are left out)."""
        demos = [d.inputs for p in best.values() for d in p.demos]
        shown = set(shown_cases(self.scored_on or (), demos, self.memo.inputs))
        ids = [n for n in self.scored_on or () if n not in shown]
        simpler, removals = simplify(self.group.original, best, lambda c: self.memo.evaluate(c, ids))
        for r in removals:
            self.log.write("simplify", prompt=r.prompt, part=r.part, dropped=r.kept_out, score_with=r.score_with,
                           score_without=r.score_without, noise=r.noise)
        self.notes.extend(r.reason for r in removals if r.kept_out)
        return simpler

    def finish(self, decision: Decision, best: Candidate, after: Evaluation | None = None,
               holdout: Evaluation | None = None) -> GroupResult:
        group, train, validation = self.group, self.group.train, self.group.validation
        outcomes = self._winner_outcomes(best) if decision.accepted else ()
        if self.split is not None:
            self.notes.append(self.split.describe())
        # "before" on the same train cases as "after"
        scored = train if self.scored_on is None else [c for c in train if c.nodeid in set(self.scored_on)]
        # the spend of search, simplification, validation and the holdout check: all within the budget
        spent = {role: u - self.before.get(role, Usage()) for role, u in self.usage().items()}
        v_after = None if after is None else after.mean
        self.log.write("decision", accepted=decision.accepted, reason=decision.reason, train_before=mean_score(scored),
                       train_after=self.train_after, validation_before=mean_score(validation),
                       validation_after=v_after, regressions=decision.regressions,
                       calls={r: u.requests for r, u in spent.items()}, evaluated=dict(self.memo.evaluated))
        held = None if holdout is None else Scores(len(group.holdout), mean_score(group.holdout), holdout.mean)
        first_validation = [o for o in group.first_run if o.nodeid in {c.nodeid for c in validation}]
        return GroupResult(tuple(sorted(group.original)), self.strategy.name, decision,
                           Scores(len(train), mean_score(scored), self.train_after,
                                  None if self.scored_on is None else len(scored)),
                           Scores(len(validation), mean_score(validation), v_after), held,
                           self.estimate, self.settings.budget, spent, time.perf_counter() - self.started,
                           tuple([*self.notes, *self.proposer.notes]), best, str(self.log.path),
                           chance=chance_rate(first_validation, after.results if after else ()),
                           constant=self.constant, one_answer=self.one_answer,
                           outcomes=outcomes,
                           search_starved=self.search_starved, train_split=self.split)

    def _winner_outcomes(self, best: Candidate) -> tuple[CaseOutcome, ...]:
        """The accepted winner's outcome on every case (what its baseline records). The train
        cases it was not scored on, the demo source, are run now, after the decision."""
        fp, memo = fingerprint(best), self.memo.memo
        missing = [c.nodeid for c in self.group.train if (fp, c.nodeid) not in memo]
        if missing:
            try:
                self.memo.evaluate(best, missing)
            except BudgetExhausted:
                return ()
        ids = [c.nodeid for c in (*self.group.cases, *self.group.holdout)]
        return tuple(memo[(fp, n)] for n in ids) if all((fp, n) in memo for n in ids) else ()


def resumed_note(log: RunLog) -> str:
    """What --optimize-resume reused: the interrupted run's scores, replayed instead of re-run."""
    evals = log.replayed_events("eval")
    if not log.resumed:
        return (f"--optimize-resume found no run log of this prompt, strategy, seed and budget in {log.directory}: "
                "started afresh")
    if not evals:
        return f"resumed from {log.path}: the interrupted run had scored no candidate yet, so nothing was reused"
    results = sum(len(e.get("results", [])) for e in evals)
    candidates = len({e.get("candidate") for e in evals})
    return (f"resumed from {log.path}: reused {results} case result(s) of {candidates} candidate(s) scored by "
            "the interrupted run (not re-run; charged to the budget as before)")


SIMPLIFY_PASSES = 2  # evaluations over the train cases reserved for simplifying a winner


def _same(logged: CaseOutcome, rerun: CaseOutcome) -> bool:
    """A logged result and its re-run agree on what the decision uses: verdict and score."""
    return logged.passed == rerun.passed and abs(logged.score - rerun.score) < 1e-6


__all__ = ["Group", "GroupResult", "MemoProgram", "Scores", "assign_splits", "optimize_group", "split_of"]
