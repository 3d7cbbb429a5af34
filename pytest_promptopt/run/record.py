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
from typing import TYPE_CHECKING, Any

from .calllog import CallLog
from ..usage import Usage, total

if TYPE_CHECKING:
    from ..llm.client import Completion

JUDGE_KEY = "<judge>"  # the usage row of judge calls, next to the prompt files'


@dataclass(frozen=True)
class Verdict:
    """A graded output: score in 0..1, passed when score >= threshold."""

    score: float
    threshold: float = 0.5
    reason: str = ""
    criteria: str = ""
    raw: str = ""
    judge: str = ""  # the judge file's path when a judge file graded, "" for inline criteria
    advisory: bool = False  # the judge may not gate (uncalibrated, stale or below the kappa bar): shown, not counted
    samples: int = 1  # draws of the judge this verdict stands for (--promptopt-judge-samples, confirm-on-fail)
    flipped: bool = False  # the draws disagreed on pass or fail
    expected: str | None = None  # the reference answer the judge was given, if any
    kind: str = "judge"  # "judge" (an LM judge's score) or "check" (a deterministic checks.* 1/0)
    members: tuple[tuple[str, float], ...] = ()  # a panel's members: (model, score) each

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

    @classmethod
    def of(cls, prompt_key: str, variables: Mapping[str, Any], messages: tuple[Mapping[str, str], ...],
           model: str, completion: Completion) -> Trace:
        """The trace of one completed call: the only way traces are built."""
        reply = completion.reply
        return cls(prompt_key, {k: str(v) for k, v in variables.items()}, messages, completion.text, model,
                   reply.prompt_tokens, reply.completion_tokens, completion.cached, completion.cost,
                   completion.latency_s)

    @property
    def usage(self) -> Usage:
        """A sent call's tokens are counted with its cost; a cached reply's apart (it cost nothing)."""
        if self.cached:
            return Usage(requests=1, cache_hits=1, cached_tokens=self.tokens, lm_seconds=self.latency_s)
        return Usage(requests=1, api_calls=1, prompt_tokens=self.prompt_tokens,
                     completion_tokens=self.completion_tokens, cost=self.cost, lm_seconds=self.latency_s)


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
    pairs: list[Mapping[str, Any]] = field(default_factory=list)  # judge.pairwise() verdicts, as PairVerdict.to_dict()
    labels: list[Label] = field(default_factory=list)
    judge_traces: list[Trace] = field(default_factory=list)
    repeats: tuple[int, int] | None = None  # (passes, runs) under promptopt(repeats=n)
    # The draw of promptopt(repeats=n) that is running, part of every LM call's cache key. Kept
    # here, on the test's one record, so every llm and judge the test reaches (through its own
    # fixtures, helpers or classes) makes a fresh draw, not only the fixture values it names.
    draw: int = 0
    # LM calls that failed (endpoint error after retries, replay miss): (prompt key, message).
    # Such a case could not be scored; it still counts, as a failure, for its prompt.
    errors: list[tuple[str, str]] = field(default_factory=list)
    compared: bool = False  # pytest's assertion rewriting reported a failed comparison of this run
    call_log: CallLog = field(default_factory=CallLog)  # what the calls were made of, for the next run
    # Every prompt the test asked for, called or not: a test that fails before its LM call (a
    # template error) still counts against the prompt it meant to call.
    prompts_asked: list[str] = field(default_factory=list)

    def ask(self, prompt_key: str) -> None:
        if prompt_key not in self.prompts_asked:
            self.prompts_asked.append(prompt_key)

    def score(self, passed: bool) -> float:
        """The metric: mean judge score when judges ran, else the share of passing runs."""
        if self.verdicts:
            return sum(v.score for v in self.verdicts) / len(self.verdicts)
        if self.repeats is not None:
            return self.repeats[0] / self.repeats[1]
        return 1.0 if passed else 0.0

    @property
    def prompt_keys(self) -> list[str]:
        return list(dict.fromkeys([*self.prompts_asked, *(t.prompt_key for t in self.traces)]))

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

    def usage_by_prompt(self) -> dict[str, Usage]:
        """Per prompt key (and JUDGE_KEY for judge calls): what this test spent."""
        out: dict[str, Usage] = {key: Usage() for key in self.prompts_asked}
        for t in self.traces:
            out[t.prompt_key] = out.get(t.prompt_key, Usage()) + t.usage
        for key, _ in self.errors:
            out[key] = out.get(key, Usage()) + Usage(requests=1, errors=1)
        if self.judge_traces:
            out[JUDGE_KEY] = out.get(JUDGE_KEY, Usage()) + total(t.usage for t in self.judge_traces)
        return out

    def calls(self) -> tuple[Call, ...]:
        """The prompt calls as plain data, each with its expected answer where one was seen."""
        expected = {lb.trace_index: lb.expected for lb in self.labels}
        return tuple(Call(t.prompt_key, dict(t.variables), t.output, expected.get(i),
                          tuple({"role": str(m.get("role", "")), "content": bounded(str(m.get("content", "")))}
                                for m in t.messages))
                     for i, t in enumerate(self.traces))

    def outcome(self, passed: bool, message: str, *, duration: float = 0.0,
                min_pass_rates: Mapping[str, float | None] | None = None,
                digests: Mapping[str, str] | None = None, xfail: bool = False) -> CaseOutcome:
        verdicts = tuple({"score": v.score, "threshold": v.threshold, "reason": bounded(v.reason, 1000),
                          "criteria": bounded(v.criteria, 1000), "judge": v.judge, "advisory": v.advisory,
                          "samples": v.samples, "flipped": v.flipped, "kind": v.kind}
                         | ({} if v.expected is None else {"expected": bounded(v.expected, 1000)})
                         | ({"members": [[m, s] for m, s in v.members]} if v.members else {})
                         for v in self.verdicts[:CALL_LIMIT])
        return CaseOutcome(self.nodeid, passed, self.score(passed), without_addresses(message)[:MAX_MESSAGE],
                           self.calls()[:CALL_LIMIT],
                           self.usage_by_prompt(), dict(min_pass_rates or {}), duration,
                           self.errors[0][1][:500] if self.errors else "", verdicts, dict(digests or {}), xfail,
                           tuple(dict(p) for p in self.pairs[:CALL_LIMIT]))


MAX_MESSAGE = 2000  # characters of a failure message kept for reports and the optimizer
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def without_addresses(message: str) -> str:
    """A failure message without memory addresses (`<function f at 0x7f...>` in pytest's
    `where` lines): they differ on every run, and the message goes into the optimizer's
    prompts, whose cache keys must repeat for a rerun to be free."""
    return _ADDRESS.sub("", message)
MAX_OUTPUT = 10_000  # characters of an output kept in reports and run logs
TEXT_LIMIT = 4000  # characters kept of one rendered message or judge text in reports
CALL_LIMIT = 50  # LM calls and verdicts kept per case in reports


def bounded(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


@dataclass(frozen=True)
class Call:
    """One LM call of a test as data: which prompt, with what inputs, what came back and, when
    the test showed it, the answer that was expected."""

    prompt_key: str
    inputs: Mapping[str, str]
    output: str
    expected: str | None = None
    messages: tuple[Mapping[str, str], ...] = ()  # as rendered and sent, each content bounded

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt_key, "inputs": dict(self.inputs), "output": self.output[:MAX_OUTPUT],
                "expected": self.expected, "messages": [dict(m) for m in self.messages]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Call:
        expected = data.get("expected")
        messages = tuple({"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
                         for m in data.get("messages", ()) if isinstance(m, Mapping))
        return cls(str(data["prompt"]), {str(k): str(v) for k, v in dict(data.get("inputs", {})).items()},
                   str(data.get("output", "")), None if expected is None else str(expected), messages)


@dataclass(frozen=True)
class CaseOutcome:
    """One run of one test: its verdict, score, LM calls and what they cost. The same type
    feeds the per-prompt summary and gate, the JSON report (it crosses from xdist workers as
    `to_dict`), and the optimizer, which scores candidates by re-running tests."""

    nodeid: str
    passed: bool
    score: float
    message: str = ""  # the failure message as the user sees it
    calls: tuple[Call, ...] = ()
    usage: Mapping[str, Usage] = field(default_factory=dict)  # per prompt key, and JUDGE_KEY
    min_pass_rates: Mapping[str, float | None] = field(default_factory=dict)
    duration: float = 0.0
    error: str = ""  # the first failed LM call's message: the case could not be scored
    # {"score", "threshold", "reason", "criteria", "judge", "advisory"} per judge()
    verdicts: tuple[Mapping[str, Any], ...] = ()
    digests: Mapping[str, str] = field(default_factory=dict)  # prompt key -> sha256 of its file
    # Marked xfail (failed as expected, or passed anyway): pytest counts it apart from passed and
    # failed, and so do the pass rates and gates; its calls still count as spent.
    xfail: bool = False
    # judge.pairwise() verdicts: winner and what each order answered; not part of the score
    pairs: tuple[Mapping[str, Any], ...] = ()

    @property
    def judged(self) -> bool:
        """An LM judge scored this case (judge()); checks.* alone are not judge scores."""
        return any(v.get("kind", "judge") == "judge" for v in self.verdicts)

    @property
    def checked(self) -> bool:
        """A deterministic checks.* call graded this case (a 1/0 score)."""
        return any(v.get("kind") == "check" for v in self.verdicts)

    @property
    def advisory_only(self) -> bool:
        """Every verdict came from an advisory judge (one that may not gate): the case is shown,
        not counted in pass rates and gates."""
        return bool(self.verdicts) and all(v.get("advisory") for v in self.verdicts)

    def output_of(self, key: str) -> str | None:
        """The last output of prompt `key` in this case (None if the case did not call it)."""
        outputs = [c.output for c in self.calls if c.prompt_key == key]
        return outputs[-1] if outputs else None

    @property
    def requests(self) -> int:
        """LM calls the run asked for, cached or not (what the optimizer's budget counts)."""
        return sum(u.requests for u in self.usage.values())

    @property
    def prompt_keys(self) -> list[str]:
        return [k for k in self.usage if k != JUDGE_KEY]

    def to_dict(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "passed": self.passed, "score": self.score,
                "message": self.message[:MAX_MESSAGE], "calls": [c.to_dict() for c in self.calls],
                "usage": {k: u.to_dict() for k, u in self.usage.items()},
                "min_pass_rates": dict(self.min_pass_rates), "duration": self.duration, "error": self.error,
                "verdicts": [dict(v) for v in self.verdicts], "digests": dict(self.digests), "xfail": self.xfail,
                "pairs": [dict(p) for p in self.pairs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseOutcome:
        return cls(str(data["nodeid"]), bool(data["passed"]), float(data["score"]), str(data.get("message", "")),
                   tuple(Call.from_dict(c) for c in data.get("calls", ())),
                   {str(k): Usage.from_dict(u) for k, u in dict(data.get("usage", {})).items()},
                   dict(data.get("min_pass_rates", {})), float(data.get("duration", 0.0)), str(data.get("error", "")),
                   tuple(dict(v) for v in data.get("verdicts", ())), dict(data.get("digests", {})),
                   bool(data.get("xfail", False)), tuple(dict(p) for p in data.get("pairs", ())))


def _derived(actual: str, output: str) -> bool:
    """`actual` is a whole-word part of `output` (`out.strip()`, `out.lower()`, a field of it),
    not any substring: `assert "a" == "b"` after a call that returned "Barcelona" is no label."""
    part = actual.strip().casefold()
    return bool(part) and re.search(r"(?<!\w)" + re.escape(part) + r"(?!\w)", output.casefold()) is not None


current_record: ContextVar[TestRecord | None] = ContextVar("promptopt_current_record", default=None)
