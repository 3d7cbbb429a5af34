"""What one test run records: LM call traces, judge verdicts and expected answers.

The optimizer learns from these: traces of passing tests become demos, failures with their
messages become textual gradients, and expected answers (from `checks.equals` or a failed
`assert out == expected`) become labelled demos.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """A graded output: score in 0..1, passed when score >= threshold."""

    score: float
    threshold: float = 0.5
    reason: str = ""
    criteria: str = ""
    raw: str = ""

    @property
    def passed(self) -> bool:
        return self.score >= self.threshold


@dataclass(frozen=True)
class Trace:
    prompt_key: str
    variables: Mapping[str, str]
    messages: tuple[Mapping[str, str], ...]
    output: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    cost: float = 0.0
    latency_s: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Label:
    """An expected answer seen for the output of a traced call."""

    trace_index: int
    expected: str


@dataclass
class TestRecord:
    """Mutable during one run of one test item; read after it."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    nodeid: str
    traces: list[Trace] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    judge_traces: list[Trace] = field(default_factory=list)
    repeats: tuple[int, int] | None = None  # (passes, runs) under promptopt(repeats=n)
    # LM calls that failed (endpoint error after retries, replay miss): (prompt key, message).
    # Such a case could not be scored; it still counts, as a failure, for its prompt.
    errors: list[tuple[str, str]] = field(default_factory=list)

    def score(self, passed: bool) -> float:
        """The metric: mean judge score when judges ran, else the share of passing runs."""
        if self.verdicts:
            return sum(v.score for v in self.verdicts) / len(self.verdicts)
        if self.repeats is not None:
            return self.repeats[0] / self.repeats[1]
        return 1.0 if passed else 0.0

    @property
    def prompt_keys(self) -> list[str]:
        return list(dict.fromkeys(t.prompt_key for t in self.traces))

    def note_expected(self, actual: Any, expected: Any) -> None:
        """Remember `expected` as the right answer if `actual` is (derived from) a traced output."""
        if not isinstance(actual, str) or not isinstance(expected, str):
            return
        for i in range(len(self.traces) - 1, -1, -1):
            output = self.traces[i].output
            if actual == output or _derived(actual, output):
                if expected.strip() and not any(lb.trace_index == i for lb in self.labels):
                    self.labels.append(Label(i, expected))
                return

    def usage_by_prompt(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for t in self.traces:
            row = out.setdefault(t.prompt_key, {"calls": 0, "tokens": 0, "cost": 0.0, "cache_hits": 0})
            row["calls"] += 1
            row["tokens"] += t.tokens
            row["cost"] += t.cost
            row["cache_hits"] += int(t.cached)
        for key, _ in self.errors:
            row = out.setdefault(key, {"calls": 0, "tokens": 0, "cost": 0.0, "cache_hits": 0})
            row["errors"] = row.get("errors", 0) + 1
        return out


def _derived(actual: str, output: str) -> bool:
    """`actual` is a whole-word part of `output` (`out.strip()`, `out.lower()`, a field of it),
    not any substring: `assert "a" == "b"` after a call that returned "Barcelona" is no label."""
    part = actual.strip().casefold()
    return bool(part) and re.search(r"(?<!\w)" + re.escape(part) + r"(?!\w)", output.casefold()) is not None


current_record: ContextVar[TestRecord | None] = ContextVar("promptopt_current_record", default=None)
