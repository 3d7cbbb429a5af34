"""Per-prompt results of a run: aggregation, the CI gate, terminal table and JSON report.

Aggregation works on plain dicts attached to test reports, so the numbers from pytest-xdist
workers merge on the controller exactly like a single-process run.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JUDGE_KEY = "<judge>"


@dataclass(frozen=True)
class CaseOutcome:
    """One test item's contribution, as sent from a worker (JSON-able via to_dict)."""

    nodeid: str
    passed: bool
    score: float
    prompts: Mapping[str, Mapping[str, float]]  # key -> calls, tokens, cost, cache_hits
    min_pass_rates: Mapping[str, float | None] = field(default_factory=dict)
    duration: float = 0.0
    error: str = ""  # the first failed LM call's message: the case could not be scored

    def to_dict(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "passed": self.passed, "score": self.score,
                "prompts": {k: dict(v) for k, v in self.prompts.items()},
                "min_pass_rates": dict(self.min_pass_rates), "duration": self.duration,
                "error": self.error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseOutcome:
        return cls(str(data["nodeid"]), bool(data["passed"]), float(data["score"]),
                   dict(data.get("prompts", {})), dict(data.get("min_pass_rates", {})),
                   float(data.get("duration", 0.0)), str(data.get("error", "")))


@dataclass(frozen=True)
class PromptSummary:
    key: str
    cases: int
    passed: int
    score_sum: float
    calls: int
    tokens: int
    cost: float
    cache_hits: int
    min_pass_rate: float | None
    errors: int = 0  # cases whose LM call failed: not scored, counted as failed
    first_error: str = ""

    @property
    def pass_rate(self) -> float:
        return self.passed / self.cases if self.cases else 0.0

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.cases if self.cases else 0.0

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hits / self.calls if self.calls else 0.0

    @property
    def gate_failed(self) -> bool:
        return self.min_pass_rate is not None and self.pass_rate + 1e-12 < self.min_pass_rate

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        return {"prompt": display(self.key, root), "cases": self.cases, "passed": self.passed,
                "pass_rate": round(self.pass_rate, 4), "mean_score": round(self.mean_score, 4),
                "calls": self.calls, "tokens": self.tokens, "cost": round(self.cost, 6),
                "cache_hits": self.cache_hits, "min_pass_rate": self.min_pass_rate,
                "gate": "failed" if self.gate_failed else "passed", "errors": self.errors}


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
    acc: dict[str, dict[str, Any]] = {}
    for case in outcomes:
        for key, usage in case.prompts.items():
            row = acc.setdefault(key, {"cases": 0, "passed": 0, "score_sum": 0.0, "calls": 0,
                                       "tokens": 0, "cost": 0.0, "cache_hits": 0, "min": None,
                                       "errors": 0, "first_error": ""})
            row["cases"] += 1
            row["passed"] += int(case.passed)
            row["score_sum"] += case.score
            row["calls"] += int(usage.get("calls", 0))
            row["tokens"] += int(usage.get("tokens", 0))
            row["cost"] += float(usage.get("cost", 0.0))
            row["cache_hits"] += int(usage.get("cache_hits", 0))
            if usage.get("errors"):
                row["errors"] += 1
                row["first_error"] = row["first_error"] or case.error
            own = case.min_pass_rates.get(key)
            if own is not None:
                row["min"] = own
    out = []
    for key, row in sorted(acc.items(), key=lambda kv: (kv[0] == JUDGE_KEY, kv[0])):
        gate = override_min_pass_rate
        if gate is None:
            gate = row["min"] if row["min"] is not None else default_min_pass_rate
        if key == JUDGE_KEY:
            gate = None
        out.append(PromptSummary(key, row["cases"], row["passed"], row["score_sum"], row["calls"],
                                 row["tokens"], row["cost"], row["cache_hits"], gate, row["errors"],
                                 row["first_error"]))
    return out


def table(summaries: list[PromptSummary], root: Path | None) -> list[str]:
    headers = ("prompt", "cases", "passed", "pass rate", "mean score", "calls", "cache hits", "tokens", "cost", "gate")
    rows = []
    for s in summaries:
        gate = "-" if s.min_pass_rate is None else (
            f"FAIL (< {s.min_pass_rate:.0%})" if s.gate_failed else f"ok (>= {s.min_pass_rate:.0%})")
        rows.append((display(s.key, root), str(s.cases), str(s.passed), f"{s.pass_rate:.1%}",
                     f"{s.mean_score:.3f}", str(s.calls), f"{s.cache_hits} ({s.cache_hit_rate:.0%})",
                     f"{s.tokens:,}", f"${s.cost:.4f}", gate))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return [fmt.format(*headers), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]


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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write the JSON report atomically (a half-written report is worse than none), with the
    mode any new file gets (0666 less the umask), not mkstemp's private 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
