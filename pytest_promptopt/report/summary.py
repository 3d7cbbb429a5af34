"""Per-prompt results of a run: aggregation, the CI gate, terminal table and JSON report.

Aggregation works on `CaseOutcome` values, which cross from pytest-xdist workers as plain
dicts on the test reports, so their numbers merge on the controller exactly like a
single-process run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..optimize.before import before_lines
from ..optimize.loop import GroupResult
from ..run.record import JUDGE_KEY, CaseOutcome
from ..usage import Usage
from .compare import Comparison


@dataclass(frozen=True)
class PromptSummary:
    key: str
    cases: int
    passed: int
    score_sum: float
    usage: Usage
    min_pass_rate: float | None
    errors: int = 0  # cases whose LM call failed: not scored, counted as failed
    first_error: str = ""
    xfailed: int = 0  # cases marked xfail: not in `cases`, pass rate or gate (their calls are in `usage`)
    advisory: int = 0  # cases graded only by advisory judges: shown, not in `cases`, pass rate or gate

    @property
    def pass_rate(self) -> float:
        return self.passed / self.cases if self.cases else 0.0

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.cases if self.cases else 0.0

    @property
    def gate_failed(self) -> bool:
        """Below its minimum pass rate; a prompt with no counted case (all xfail) has nothing to gate."""
        return self.min_pass_rate is not None and self.cases > 0 and self.pass_rate + 1e-12 < self.min_pass_rate

    def to_dict(self, root: Path | None = None, priced: bool = True) -> dict[str, Any]:
        """`priced`: a price is configured for the model, else the cost is unknown (null).
        `tokens` counts every call (as `calls`): `tokens_sent`, what `cost` is for, plus
        `tokens_cached`, the cached replies' (they cost nothing)."""
        u = self.usage
        return {"prompt": display(self.key, root), "cases": self.cases, "passed": self.passed,
                "pass_rate": round(self.pass_rate, 4), "mean_score": round(self.mean_score, 4),
                "calls": u.requests, "tokens": u.tokens + u.cached_tokens, "tokens_sent": u.tokens,
                "tokens_cached": u.cached_tokens, "cost": round(u.cost, 6) if priced else None,
                "cache_hits": u.cache_hits, "min_pass_rate": self.min_pass_rate,
                "gate": "failed" if self.gate_failed else "passed", "errors": self.errors, "xfailed": self.xfailed,
                "advisory": self.advisory}


def display(key: str, root: Path | None) -> str:
    if key == JUDGE_KEY or root is None:
        return key
    try:
        return str(Path(key).relative_to(root))
    except ValueError:
        return key


def summarize(outcomes: Iterable[CaseOutcome], default_min_pass_rate: float | None = None,
              override_min_pass_rate: float | None = None) -> list[PromptSummary]:
    """Per-prompt summaries. Gate precedence: command line, then the prompt file, then ini."""
    rows: dict[str, _Row] = {}
    for case in outcomes:
        for key, usage in case.usage.items():
            rows.setdefault(key, _Row()).add(case, key, usage)
    out = []
    for key, row in sorted(rows.items(), key=lambda kv: (kv[0] == JUDGE_KEY, kv[0])):
        gate = override_min_pass_rate
        if gate is None:
            gate = row.own_min if row.own_min is not None else default_min_pass_rate
        out.append(PromptSummary(key, row.cases, row.passed, row.score_sum, row.usage,
                                 None if key == JUDGE_KEY else gate, row.errors, row.first_error, row.xfailed,
                                 row.advisory))
    return out


@dataclass
class _Row:
    cases: int = 0
    passed: int = 0
    score_sum: float = 0.0
    usage: Usage = field(default_factory=Usage)
    own_min: float | None = None
    errors: int = 0
    first_error: str = ""
    xfailed: int = 0
    advisory: int = 0

    def add(self, case: CaseOutcome, key: str, usage: Usage) -> None:
        self.usage = self.usage + usage
        if case.xfail:  # an expected failure, as pytest counts it: neither passed nor failed
            self.xfailed += 1
            return
        if case.advisory_only:  # graded only by judges that may not gate: shown, not counted
            self.advisory += 1
            return
        self.cases += 1
        self.passed += int(case.passed)
        self.score_sum += case.score
        if usage.errors:
            self.errors += 1
            self.first_error = self.first_error or case.error
        own = case.min_pass_rates.get(key)
        if own is not None:
            self.own_min = own


def money(cost: float, known: bool) -> str:
    """A cost as shown: `-` when no price is configured for the model (unknown is not zero).
    At least four decimals, and three significant digits below that: a priced call of a cheap
    model costs $0.000123, not $0.0000."""
    if not known:
        return "-"
    if cost <= 0 or not math.isfinite(cost):
        return f"${max(cost, 0.0):.4f}"
    return f"${cost:.{max(4, 2 - math.floor(math.log10(cost)))}f}"


def tokens_split(usage: Usage) -> str:
    """Tokens of the sent calls (what the cost is for) + those of the cached replies."""
    return f"{usage.tokens:,} + {usage.cached_tokens:,}"


def table(summaries: list[PromptSummary], root: Path | None, priced: Callable[[str], bool] = lambda key: True) -> list[str]:
    """The per-prompt table; `priced(key)` says whether the cost of that row's calls is known."""
    headers = ("prompt", "cases", "passed", "pass rate", "mean score", "calls", "cache hits",
               "tokens sent + cached", "cost of sent", "gate")
    rows = []
    for s in summaries:
        gate = "-" if s.min_pass_rate is None else "- (no cases)" if not s.cases else (
            f"FAIL (< {s.min_pass_rate:.0%})" if s.gate_failed else f"ok (>= {s.min_pass_rate:.0%})")
        rows.append((display(s.key, root), str(s.cases), str(s.passed), f"{s.pass_rate:.1%}" if s.cases else "-",
                     f"{s.mean_score:.3f}" if s.cases else "-", str(s.usage.requests),
                     f"{s.usage.cache_hits} ({s.usage.cache_hit_rate:.0%})", tokens_split(s.usage),
                     money(s.usage.cost, priced(s.key)), gate))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return [fmt.format(*headers), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]


def optimization_lines(o: GroupResult, display: Callable[[str], str], dry_run: bool,
                       priced: Callable[[str], bool] = lambda role: False) -> list[str]:
    """The terminal lines of one group's optimization; a role's cost is shown when `priced(role)`."""
    names = ", ".join(display(k) for k in o.prompts)
    after = "not run" if o.validation.after is None else f"{o.validation.after:.3f}"
    calls = ", ".join(f"{role} {u.requests} ({role_spend(u, priced(role))})" for role, u in o.usage.items())
    lines = [f"{names}: strategy {o.strategy}, {o.train.cases} train / {o.validation.cases} validation tests",
             f"  validation score {o.validation.before:.3f} -> {after}; train score {o.train.before:.3f} -> "
             f"{o.train.after or 0.0:.3f}" + ("" if o.train.scored is None else
                                             f" (on the {o.train.scored} train tests the search scored)"),
             *before_lines(o.baseline_before, o.after_by_split),
             f"  LM calls {o.calls} of budget {o.budget} (estimated {o.estimate}), {o.sent} sent to endpoints: "
             f"{calls}; {o.seconds:.1f} s"]
    for note in dict.fromkeys(o.notes):
        for key in o.prompts:  # notes name prompts by key; show them as the heading does
            note = note.replace(key, display(key))
        lines.append(f"  note: {note}")
    if o.chance is not None:
        verdict = "within noise of it" if o.after_is_chance else "beyond noise of it"
        shown = "" if o.validation.after is None else f"; the candidate's {o.validation.after:.3f} is {verdict}"
        lines.append(f"  chance (always the majority answer) on validation: {o.chance:.3f}{shown}")
    if o.one_answer is not None:
        lines.append(f"  candidate: {o.one_answer.text}")
    if o.accepted:
        verb = "would write (dry run)" if dry_run else "writing"
        lines.append(f"  accepted: {o.decision.reason}; {verb} {names}")
        lines += ["    " + line for line in o.diff.splitlines()]
    else:
        lines.append(f"  not written: {o.decision.reason}")
    lines.append(f"  run log: {o.log_path}")
    if o.holdout is not None and o.holdout.after is not None:
        lines.append(f"  holdout ({o.holdout.cases} tests never used for selection): "
                     f"{o.holdout.before:.3f} -> {o.holdout.after:.3f}")
    return lines


def role_spend(u: Usage, priced: bool) -> str:
    """`40 sent: 3,000 tokens, $0.0100; 80 cached: 9,000 tokens`: the cost goes with the sent
    calls' tokens, the cached replies' tokens are told apart (they cost nothing)."""
    sent = f"{u.api_calls} sent: {u.tokens:,} tokens" + (f", {money(u.cost, True)}" if priced else "")
    return sent + (f"; {u.cache_hits} cached: {u.cached_tokens:,} tokens" if u.cache_hits else "")


def report_path_problem(path: Path) -> str | None:
    """Why a report could not be written at `path` (checked when options are parsed, so a bad
    path is a usage error before any test runs); None when it can."""
    if path.is_dir():
        return f"{path} is a directory; give a file path, such as {path / 'promptopt-report.json'}"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{path} is under {ancestor}, which is a file, not a directory; choose another path"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{path}: the folder {ancestor} is not writable; choose another path"
    return None


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write the JSON report atomically: a half-written report is worse than none."""
    write_atomic(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def gate_lines(summaries: Sequence[PromptSummary], root: Path) -> list[str]:
    """The failed per-prompt gates, as the terminal and the HTML report say them."""
    return [f"gate failed: {display(s.key, root)} passed {s.pass_rate:.1%} of {s.cases} cases; "
            f"at least {s.min_pass_rate:.0%} required" for s in summaries if s.gate_failed]


def gate_verdicts(summaries: Sequence[PromptSummary], comparison: Comparison | None,
                  root: Path) -> list[tuple[str, bool, str]]:
    """(JUnit name, failed, reason) of every gate: per prompt's min pass rate, then per prompt's baseline."""
    gates = [(f"min_pass_rate[{display(s.key, root)}]", s.gate_failed,
              f"passed {s.pass_rate:.1%} of {s.cases} cases; at least {s.min_pass_rate:.0%} required")
             for s in summaries if s.min_pass_rate is not None]
    if comparison is None:
        return gates
    gates += [(f"baseline[{p.prompt}]", p.gate_failed, p.gate_reason) for p in comparison.prompts]
    return gates + ([("baseline", True, comparison.mismatch_reason)] if comparison.unpaired else [])
