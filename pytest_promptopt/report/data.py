"""Plain data the HTML report is drawn from: usage by role, optimizations and their search.

Everything here is built from what a run already has (case outcomes, the optimizer's group
outcomes, the run log under `.promptopt_cache/runs/`) and is frozen, so the renderer in
`html_report` only formats.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..run.baseline import prompt_name
from ..optimize.before import before_lines
from ..optimize.loop import GroupResult
from ..run.record import JUDGE_KEY, CaseOutcome
from ..optimize.runlog import read_events as runlog_events
from ..usage import Usage

ROLES = ("task", "judge", "optimizer")
CURVE_LIMIT = 2000  # points drawn of one search; a longer log is thinned evenly


@dataclass(frozen=True)
class RoleUsage:
    """What one role (task, judge, optimizer) spent in one phase of the run."""

    role: str
    phase: str  # "tests" (the run itself) or "optimization"
    usage: Usage = Usage()

    @property
    def calls(self) -> int:
        return self.usage.requests

    @property
    def cache_hits(self) -> int:
        return self.usage.cache_hits

    @property
    def tokens(self) -> int:
        """Of the sent calls, what `cost` is for."""
        return self.usage.tokens

    @property
    def cached_tokens(self) -> int:
        return self.usage.cached_tokens

    @property
    def cost(self) -> float:
        return self.usage.cost

    def __add__(self, other: RoleUsage) -> RoleUsage:
        return RoleUsage(self.role, self.phase, self.usage + other.usage)


@dataclass(frozen=True)
class CurvePoint:
    calls: int  # LM calls spent by the search when this score was measured
    score: float
    kind: str  # "minibatch" | "train" (full train set)


@dataclass(frozen=True)
class OptimizationView:
    prompts: tuple[str, ...]  # names relative to the rootdir
    strategy: str
    accepted: bool
    reason: str
    train_before: float
    train_after: float
    validation_before: float
    validation_after: float | None
    usage: tuple[RoleUsage, ...]
    diff: str
    write_status: str  # "written", "not written: dry run", "not written: <why>"
    log_path: str
    curve: tuple[CurvePoint, ...] = ()
    baseline: tuple[str, ...] = ()  # the saved baseline as the "before", as the terminal says it
    one_answer: str = ""  # "answers 'x' for 21 of 21 validation cases" when the candidate gives one answer
    holdout: str = ""  # this run's holdout check, as the terminal says it ("" : no holdout tests)
    notes: tuple[str, ...] = ()

    @property
    def calls(self) -> int:
        return sum(u.calls for u in self.usage)


def usage_in_tests(outcomes: Iterable[CaseOutcome], key: str) -> tuple[RoleUsage, RoleUsage]:
    """(task, judge) usage of the cases that called prompt `key`: the task calls to this prompt
    and the judge calls made in those cases."""
    task, judge = RoleUsage("task", "tests"), RoleUsage("judge", "tests")
    for outcome in outcomes:
        if key not in outcome.usage:
            continue
        task = task + RoleUsage("task", "tests", outcome.usage[key])
        if JUDGE_KEY in outcome.usage:
            judge = judge + RoleUsage("judge", "tests", outcome.usage[JUDGE_KEY])
    return task, judge


def optimization_view(result: GroupResult, root: Path, write_status: str) -> OptimizationView:
    """From one group's optimization result and its run log."""
    usage = tuple(RoleUsage(role, "optimization", u) for role, u in result.usage.items())
    return OptimizationView(
        tuple(prompt_name(k, root) for k in result.prompts), result.strategy, result.accepted, result.decision.reason,
        result.train.before, result.train.after or 0.0, result.validation.before, result.validation.after,
        usage, result.diff, write_status, result.log_path,
        search_curve(read_events(Path(result.log_path))) if result.log_path else (),
        tuple(line.strip() for line in before_lines(result.baseline_before, result.after_by_split)),
        "" if result.one_answer is None else result.one_answer.text,
        _holdout(result), tuple(_named(note, result.prompts, root) for note in dict.fromkeys(result.notes)))


def _named(note: str, keys: Iterable[str], root: Path) -> str:
    """A note names prompts by key (an absolute path): shown as the heading names them."""
    for key in keys:
        note = note.replace(key, prompt_name(key, root))
    return note


def _holdout(result: GroupResult) -> str:
    held = result.holdout
    if held is None or held.after is None:
        return "" if held is None else f"not checked ({held.cases} tests never used for selection)"
    return f"{held.before:.3f} -> {held.after:.3f} ({held.cases} tests never used for selection)"


def describe_write(result: GroupResult, dry_run: bool, written: Sequence[Path]) -> str:
    """What became of an optimization's diff (written: the files that now hold the new text)."""
    if not result.accepted:
        return "not written: the candidate was rejected"
    if dry_run:
        return "not written: dry run"
    missing = [k for k in result.prompts if k in result.diff and Path(k) not in written]
    return "written" if not missing else f"not written: {', '.join(missing)} (see the terminal)"


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of a run log; a missing log or a line cut by a crash is skipped."""
    try:
        yield from runlog_events(path)
    except OSError:
        return


def search_curve(events: Iterable[Mapping[str, Any]]) -> tuple[CurvePoint, ...]:
    """Score against LM calls spent, as the search went.

    Calls are counted as the budget counts them: the requests of every logged evaluation (test
    re-runs, cached or not) plus one per optimizer (proposer) reply. A score event is placed at
    the calls spent when it was logged; the original's train score starts the curve at 0.
    """
    calls = 0
    points: list[CurvePoint] = []
    for event in events:
        kind = event.get("event")
        if kind == "eval":
            calls += sum(_requests(r) for r in event.get("results", ()) if isinstance(r, dict))
        elif kind in ("optimizer_reply", "optimizer_error"):
            calls += 1
        elif kind == "score" and isinstance(event.get("score"), (int, float)):
            split = "train" if event.get("split") == "train" else "minibatch"
            points.append(CurvePoint(calls, float(event["score"]), split))
        elif kind == "decision" and isinstance(event.get("train_before"), (int, float)):
            points.insert(0, CurvePoint(0, float(event["train_before"]), "train"))
    return _thin(points)


def _requests(result: Mapping[str, Any]) -> int:
    """The LM calls one logged case result asked for (its usage, cached or not)."""
    try:
        return CaseOutcome.from_dict(result).requests
    except (KeyError, TypeError, ValueError):
        return 0


def _thin(points: list[CurvePoint]) -> tuple[CurvePoint, ...]:
    if len(points) <= CURVE_LIMIT:
        return tuple(points)
    step = len(points) / CURVE_LIMIT
    return tuple(points[int(i * step)] for i in range(CURVE_LIMIT))


__all__ = ["CurvePoint", "OptimizationView", "RoleUsage", "optimization_view", "read_events", "search_curve",
           "usage_in_tests", "describe_write"]
