"""What one unsharded run would have reported, from the JSON reports of its shards.

Shards (a CI matrix, pytest-split or hash sharding) each compute gates on a fraction of the
cases; Wilson intervals, McNemar and pass-rate gates are only right on all of them. `merge`
checks the shards belong together (one report version, the same prompt files, disjoint cases,
as many as expected), then recomputes the per-prompt tables, the gates, the baseline comparison
and the exit code from the merged raw outcomes, with the same functions a plain run uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..run.baseline_pairs import OutputPairs
from ..run.config import BaselineSettings
from ..run.record import JUDGE_KEY, CaseOutcome
from .exit_rule import EXIT_RULES, Failure, decide
from .gate import BaselineResult, finish, load_baseline
from .judges import CorrectedRate, JudgeRow
from .merge_judges import merged_judges
from .run_report import RunReport
from .shard_reader import MergeError, ShardReport, read_shard, relative_name
from .summary import PromptSummary, summarize

NO_TESTS = 5  # pytest's exit code when no test ran
FAILED = 1
UNFINISHED = {2: "interrupted", 3: "internal error", 4: "usage error"}


@dataclass(frozen=True)
class Merged:
    shards: tuple[ShardReport, ...]
    outcomes: tuple[CaseOutcome, ...]
    summaries: list[PromptSummary]
    baseline: BaselineResult
    exit_code: int
    root: Path
    judges: tuple[JudgeRow, ...] = ()  # recomputed from the merged cases (merge_judges.py)
    corrected: tuple[CorrectedRate, ...] = ()

    @property
    def gate_failed(self) -> bool:
        return self.baseline.gate_failed or any(s.gate_failed for s in self.summaries)

    def priced(self, key: str) -> bool:
        name = key if key == JUDGE_KEY else relative_name(key, self.root)
        return any(s.priced.get(name, False) for s in self.shards)


def merge(paths: Sequence[Path], root: Path, baseline: BaselineSettings, expect: int | None = None) -> Merged:
    """Raises MergeError naming the files when the shards do not make one run."""
    _check_paths(paths, expect)
    shards = tuple(read_shard(path, root) for path in paths)
    _check_shards(shards)
    outcomes = tuple(o for shard in shards for o in shard.outcomes)
    gates = _gates(shards)
    summaries = [replace(s, min_pass_rate=gates.get(relative_name(s.key, root))) if s.key != JUDGE_KEY else s
                 for s in summarize(outcomes)]
    result = finish(baseline, load_baseline(baseline), outcomes, root)
    if any(s.baseline_pairs for s in shards):  # judged by each shard on its own cases: summed, not re-asked
        result = replace(result, pairs=_summed_pairs(shards))
    merged = Merged(shards, outcomes, summaries, result, 0, root, *merged_judges(shards, outcomes, root))
    return replace(merged, exit_code=_exit_code(shards, merged))


def _summed_pairs(shards: Sequence[ShardReport]) -> tuple[OutputPairs, ...]:
    """Each prompt's pairwise counts over the shards, in the order a whole run lists them."""
    total: dict[str, OutputPairs] = {}
    for pairs in (p for shard in shards for p in shard.baseline_pairs):
        total[pairs.prompt] = total[pairs.prompt].plus(pairs) if pairs.prompt in total else pairs
    return tuple(total[name] for name in sorted(total))


def _check_paths(paths: Sequence[Path], expect: int | None) -> None:
    if not paths:
        raise MergeError("no shard reports given: pass each shard's --promptopt-report file")
    seen: dict[Path, Path] = {}
    for path in paths:
        first = seen.setdefault(path.resolve(), path)
        if first is not path:
            raise MergeError(f"duplicated shard: {first} is given twice")
    if expect is not None and len(paths) != expect:
        raise MergeError(f"missing shard: expected {expect} shard reports, got {len(paths)} "
                         f"({', '.join(map(str, paths))}); wait for every shard's job or fix --expect")


def _check_shards(shards: Sequence[ShardReport]) -> None:
    for shard in shards:
        code = shard.tests_exit_code
        if code in UNFINISHED:
            raise MergeError(f"{shard.path}: that shard did not finish (exit code {code}, {UNFINISHED[code]}); "
                             "rerun it before merging")
        if shard.optimized:
            raise MergeError(f"{shard.path}: a --optimize run; merge the reports of plain runs")
    owner: dict[str, ShardReport] = {}
    for shard in shards:
        ids = [o.nodeid for o in shard.outcomes]
        clash = [i for i in ids if i in owner]
        if clash:
            other = owner[clash[0]]
            same = len(clash) == len(ids) == len(other.outcomes)
            raise MergeError(f"duplicated shard: {other.path} and {shard.path} hold the same {len(ids)} tests" if same
                             else f"overlapping cases: {other.path} and {shard.path} both ran {clash[0]}"
                             f"{f' (and {len(clash) - 1} more)' if len(clash) > 1 else ''}; shards must split the "
                             "suite into disjoint parts")
        owner.update(dict.fromkeys(ids, shard))
    _check_same(shards, lambda s: s.digests, "another suite version: {a} ran {name} with sha256 {x:.12}, {b} with "
                "{y:.12}; run every shard at the same commit")


def _check_same(shards: Sequence[ShardReport], values: Any, message: str) -> None:
    first: dict[str, tuple[ShardReport, Any]] = {}
    for shard in shards:
        for name, value in values(shard).items():
            seen = first.setdefault(name, (shard, value))
            if seen[1] != value:
                raise MergeError(message.format(a=seen[0].path, b=shard.path, name=name, x=str(seen[1]), y=str(value)))


def _gates(shards: Sequence[ShardReport]) -> dict[str, float | None]:
    _check_same(shards, lambda s: s.gates, "{a} gated {name} at min pass rate {x}, {b} at {y}; run every shard "
                "with the same --promptopt-min-pass-rate and ini")
    return {name: gate for shard in shards for name, gate in shard.gates.items()}


def _exit_code(shards: Sequence[ShardReport], merged: Merged) -> int:
    """The exit rule the shards ran under, applied to the merged cases and gates, as one run
    would. A failure outside a test (an error in setup) shows in a shard's pytest exit code
    only: a shard with such a failure and no failed case fails the merge as well."""
    codes = [s.tests_exit_code for s in shards]
    if all(code == NO_TESTS for code in codes):
        return NO_TESTS
    _check_same(shards, lambda s: {"exit rule": s.exit_rule}, "{a} ran under the {x} exit rule, {b} under {y}; "
                "run every shard with the same --promptopt-exit-rule")
    rule = shards[0].exit_rule if shards[0].exit_rule in EXIT_RULES else "tests"
    failures = [Failure(o.nodeid, tuple(o.prompt_keys), o.error) for o in merged.outcomes if not o.passed and not o.xfail]
    unrecorded = sum(1 for s in shards if s.tests_exit_code == FAILED and all(o.passed or o.xfail for o in s.outcomes))
    status = FAILED if FAILED in codes or failures else 0
    report = RunReport(merged.root, shards[0].record_mode, 0.0, merged.outcomes, tuple(merged.summaries), merged.baseline)
    return decide(rule, status, failures, report.gate_verdicts(), name=report.name, unrecorded=unrecorded).code
