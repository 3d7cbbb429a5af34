"""Per-prompt results of a run: aggregation, the CI gate, terminal table and JSON report.

Aggregation works on plain dicts attached to test reports, so the numbers from pytest-xdist
workers merge on the controller exactly like a single-process run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .record import TestRecord

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
    # What the baseline and the HTML report show of the case, all plain data (see case_details):
    message: str = ""  # why the test failed (assertion, judge, error), bounded
    judged: bool = False  # the score came from judge() verdicts, not pass/fail
    calls: tuple[Mapping[str, Any], ...] = ()  # {"prompt", "messages", "output"} per llm() call
    verdicts: tuple[Mapping[str, Any], ...] = ()  # {"score", "threshold", "reason", "criteria"}
    digests: Mapping[str, str] = field(default_factory=dict)  # prompt key -> sha256 of its file

    def to_dict(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "passed": self.passed, "score": self.score,
                "prompts": {k: dict(v) for k, v in self.prompts.items()},
                "min_pass_rates": dict(self.min_pass_rates), "duration": self.duration,
                "error": self.error, "message": self.message, "judged": self.judged,
                "calls": [dict(c) for c in self.calls], "verdicts": [dict(v) for v in self.verdicts],
                "digests": dict(self.digests)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseOutcome:
        return cls(str(data["nodeid"]), bool(data["passed"]), float(data["score"]),
                   dict(data.get("prompts", {})), dict(data.get("min_pass_rates", {})),
                   float(data.get("duration", 0.0)), str(data.get("error", "")),
                   str(data.get("message", "")), bool(data.get("judged", False)),
                   tuple(data.get("calls", ())), tuple(data.get("verdicts", ())), dict(data.get("digests", {})))

    def output_of(self, key: str) -> str | None:
        """The last output of prompt `key` in this case (None if the case did not call it)."""
        outputs = [str(c.get("output", "")) for c in self.calls if c.get("prompt") == key]
        return outputs[-1] if outputs else None


TEXT_LIMIT = 4000  # characters kept of one message or output: reports stay readable and bounded
CALL_LIMIT = 50  # llm() calls kept per case


def bounded(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def case_details(record: TestRecord, message: str) -> dict[str, Any]:
    """The CaseOutcome fields that describe what a test did, from its record (plain data)."""
    calls = tuple({"prompt": t.prompt_key, "output": bounded(t.output),
                   "messages": [{"role": str(m.get("role", "")), "content": bounded(str(m.get("content", "")))}
                                for m in t.messages]}
                  for t in record.traces[:CALL_LIMIT])
    verdicts = tuple({"score": v.score, "threshold": v.threshold, "reason": bounded(v.reason, 1000),
                      "criteria": bounded(v.criteria, 1000)} for v in record.verdicts[:CALL_LIMIT])
    return {"message": bounded(message, 2000), "judged": bool(record.verdicts), "calls": calls,
            "verdicts": verdicts}


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


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write the JSON report atomically (a half-written report is worse than none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file (baseline, HTML report) in one os.replace: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
