"""Reading one shard's JSON report (`--promptopt-report`) back, for `promptopt merge`.

The one place that knows the report's layout on the way in: its version, the per-test outcomes
(`tests`), the per-prompt gates and prices (`prompts`) and the exit codes. Prompt keys in a
report are absolute paths on the machine that ran the shard; they are re-rooted here under the
merging checkout's root, so shards run in different folders (CI runners) merge, and a merge in
the same checkout gives back the very keys the shards had.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PromptOptError
from ..run.baseline_pairs import OutputPairs
from ..run.judge import INLINE_JUDGE
from ..run.record import JUDGE_KEY, CaseOutcome

REPORT_VERSION = 2  # the JSON report layout this reader knows (the report's "version")


class MergeError(PromptOptError):
    """Shard reports that cannot be merged; the message names the files."""


@dataclass(frozen=True)
class ShardReport:
    path: Path
    outcomes: tuple[CaseOutcome, ...]
    gates: Mapping[str, float | None]  # prompt name (relative to the root) -> its min pass rate
    priced: Mapping[str, bool]  # prompt name, or the judge row -> a price was configured
    digests: Mapping[str, str]  # prompt name -> sha256 of the file the shard ran
    record_mode: str
    exit_code: int
    tests_exit_code: int  # pytest's own, before the shard's promptopt gates changed it
    exit_rule: str  # the rule the shard ran under (gates | tests); a report without one: tests
    cache_tiers: Mapping[str, int]
    optimized: bool
    duration_s: float
    baseline_pairs: tuple[OutputPairs, ...] = ()  # --promptopt-baseline-pairwise counts on this shard's cases
    judges: Mapping[str, JudgeSeen] = field(default_factory=dict)  # a judge's name -> how this shard trusted it


@dataclass(frozen=True)
class JudgeSeen:
    """A judge's trust as one shard reported it: every shard must have seen the same."""

    status: str
    gates: bool
    reason: str


def read_shard(path: Path, root: Path) -> ShardReport:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MergeError(f"{path}: no such shard report (did that shard's job run and upload it?)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MergeError(f"{path}: not a JSON report ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != REPORT_VERSION:
        got = data.get("version") if isinstance(data, dict) else type(data).__name__
        raise MergeError(f"{path}: report version {got!r}, expected {REPORT_VERSION}: every shard and the merge "
                         "must run the same pytest-promptopt")
    try:
        return _parse(path, data, root)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MergeError(f"{path}: not a pytest-promptopt JSON report: field {exc} is missing or malformed") from None


def _parse(path: Path, data: Mapping[str, Any], root: Path) -> ShardReport:
    names = [str(p["prompt"]) for p in data["prompts"]]
    rename = {}
    for test in data["tests"]:
        for key in test["usage"]:
            rename[key] = key if key == JUDGE_KEY else _rerooted(key, names, root)
    judges = {str(j["judge"]): JudgeSeen(str(j["status"]), bool(j["gates"]), str(j["reason"]))
              for j in data.get("judges") or ()}
    outcomes = tuple(CaseOutcome.from_dict(_renamed(test, rename, list(judges), root)) for test in data["tests"])
    named = {_name(rename, p["prompt"], root): p for p in data["prompts"]}
    digests: dict[str, str] = {}
    for outcome in outcomes:
        digests.update({relative_name(k, root): d for k, d in outcome.digests.items()})
    exit_before = data.get("tests_exit_code")
    if exit_before is None:  # a report without it: a failed gate may be all that made the exit code 1
        failed = any(not o.passed and not o.xfail for o in outcomes)
        exit_before = data["exit_code"] if data["gate"] == "passed" or failed else 0
    rule = (data.get("exit_rule") or {}).get("rule", "tests")
    return ShardReport(path, outcomes, {n: p["min_pass_rate"] for n, p in named.items()},
                       {n: p["cost"] is not None for n, p in named.items()}, digests, str(data["record_mode"]),
                       int(data["exit_code"]), int(exit_before), str(rule),
                       {str(k): int(v) for k, v in (data.get("cache_tiers") or {}).items()},
                       data.get("optimization") is not None, float(data.get("duration_s") or 0.0),
                       tuple(OutputPairs.from_dict({**p, "prompt": _name(rename, p["prompt"], root)})
                             for p in (data.get("baseline") or {}).get("pairwise") or ()), judges)


def _rerooted(key: str, names: list[str], root: Path) -> str:
    """The key under `root`: the shard's table names each prompt relative to its rootdir."""
    if key in names:
        return key  # outside the shard's rootdir: kept as it was
    matches = [name for name in names if key.endswith("/" + name)]
    if not matches:
        raise ValueError(f"prompt key {key!r} has no row in 'prompts'")
    return str(root / max(matches, key=len))  # the longest: tests/a.yaml, not a.yaml


def _name(rename: Mapping[str, str], display: str, root: Path) -> str:
    if display == JUDGE_KEY:
        return display
    return next((relative_name(new, root) for old, new in rename.items() if old == display or old.endswith("/" + display)),
                display)


def relative_name(key: str, root: Path) -> str:
    """A prompt key as tables and baselines name it: relative to the root when under it."""
    try:
        return Path(key).relative_to(root).as_posix()
    except ValueError:
        return key


def _renamed(test: Mapping[str, Any], rename: Mapping[str, str], judges: list[str], root: Path) -> dict[str, Any]:
    def keyed(mapping: Mapping[str, Any]) -> dict[str, Any]:
        return {rename.get(k, k): v for k, v in mapping.items()}

    def judged(verdicts: Any) -> list[dict[str, Any]]:
        return [{**v, "judge": _judge_rerooted(v["judge"], judges, root)} if v.get("judge") else dict(v)
                for v in verdicts]

    return {**test, "usage": keyed(test["usage"]), "min_pass_rates": keyed(test.get("min_pass_rates", {})),
            "digests": keyed(test.get("digests", {})), "verdicts": judged(test.get("verdicts", ())),
            "pairs": judged(test.get("pairs", ())),
            "calls": [{**c, "prompt": rename.get(c["prompt"], c["prompt"])} for c in test.get("calls", ())]}


def _judge_rerooted(key: str, names: list[str], root: Path) -> str:
    """A judge file's path under `root`: the shard's judges table names it relative to its rootdir."""
    if key == INLINE_JUDGE:
        return key
    matches = [name for name in names if key == name or key.endswith("/" + name)]
    return str(root / max(matches, key=len)) if matches else key  # the longest: tests/a.yaml, not a.yaml
