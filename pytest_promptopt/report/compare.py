"""Compare a run with a baseline, per prompt, and decide the baseline gate.

The rules (stated in the README and in the summary line of every prompt):

- Cases are matched by node id. A case in both runs is *paired*: now failing (passed in the
  baseline, fails now), now passing, still passing or still failing. A case only in this run
  is *new*, one only in the baseline is *gone*.
- Pass rates, now and then, are over all cases of each run, with 95% Wilson intervals.
- The exact McNemar test runs on the paired cases: a two-sided binomial test on the discordant
  pairs (now failing vs now passing).
- The gate fails a prompt when its paired change is a significant drop (more cases now failing
  than now passing and p < alpha) or, with a maximum drop set, when the pass rate of the paired
  cases fell by more than it. New and gone cases never fail the gate: they have no pair.
- Judge-scored cases in both runs also compare scores: the mean paired difference (now - then)
  with its 95% Student t interval; it is reported, not gated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..run.baseline import Baseline, BaselineCase, PromptCases
from ..defaults import BASELINE_ALPHA
from ..stats import Interval, MeanEstimate, mcnemar_exact, mean_interval, wilson

DEFAULT_ALPHA = BASELINE_ALPHA
NOW_FAILING, NOW_PASSING, STILL_PASSING, STILL_FAILING, NEW, GONE = (
    "now failing", "now passing", "still passing", "still failing", "new", "gone")


@dataclass(frozen=True)
class CaseChange:
    nodeid: str
    then: BaselineCase | None
    now: BaselineCase | None

    @property
    def status(self) -> str:
        if self.then is None:
            return NEW
        if self.now is None:
            return GONE
        if self.then.passed:
            return STILL_PASSING if self.now.passed else NOW_FAILING
        return NOW_PASSING if self.now.passed else STILL_FAILING

    @property
    def paired(self) -> bool:
        return self.then is not None and self.now is not None

    @property
    def regressed(self) -> bool:
        return self.status == NOW_FAILING


@dataclass(frozen=True)
class PromptComparison:
    prompt: str
    digest_then: str | None  # None: the prompt is not in the baseline
    digest_now: str | None  # None: no case called the prompt in this run
    changes: tuple[CaseChange, ...]
    alpha: float = DEFAULT_ALPHA
    max_drop: float | None = None

    # -- counts ----------------------------------------------------------------------------
    def count(self, status: str) -> int:
        return sum(1 for c in self.changes if c.status == status)

    @property
    def broken(self) -> int:
        return self.count(NOW_FAILING)

    @property
    def fixed(self) -> int:
        return self.count(NOW_PASSING)

    @cached_property
    def paired(self) -> tuple[CaseChange, ...]:
        return tuple(c for c in self.changes if c.paired)

    @property
    def regressions(self) -> tuple[CaseChange, ...]:
        return tuple(c for c in self.changes if c.regressed)

    @property
    def prompt_changed(self) -> bool:
        return bool(self.digest_then and self.digest_now and self.digest_then != self.digest_now)

    # -- pass rates ------------------------------------------------------------------------
    @property
    def cases_now(self) -> tuple[BaselineCase, ...]:
        return tuple(c.now for c in self.changes if c.now is not None)

    @property
    def cases_then(self) -> tuple[BaselineCase, ...]:
        return tuple(c.then for c in self.changes if c.then is not None)

    @property
    def rate_now(self) -> float:
        return _rate(self.cases_now)

    @property
    def rate_then(self) -> float:
        return _rate(self.cases_then)

    @property
    def interval_now(self) -> Interval:
        return wilson(sum(c.passed for c in self.cases_now), len(self.cases_now))

    @property
    def interval_then(self) -> Interval:
        return wilson(sum(c.passed for c in self.cases_then), len(self.cases_then))

    @property
    def paired_drop(self) -> float:
        """Pass rate of the paired cases then minus now (positive: worse now)."""
        n = len(self.paired)
        return (self.broken - self.fixed) / n if n else 0.0

    # -- scores ----------------------------------------------------------------------------
    @cached_property
    def score_now(self) -> MeanEstimate:
        return mean_interval([c.score for c in self.cases_now], bounds=(0.0, 1.0))

    @cached_property
    def score_then(self) -> MeanEstimate:
        return mean_interval([c.score for c in self.cases_then], bounds=(0.0, 1.0))

    @cached_property
    def score_change(self) -> MeanEstimate:
        """Mean paired score difference (now - then) over cases judge-scored in both runs."""
        diffs = [c.now.score - c.then.score for c in self.paired  # type: ignore[union-attr]
                 if c.now.judged and c.then.judged]  # type: ignore[union-attr]
        return mean_interval(diffs, bounds=(-1.0, 1.0))

    # -- gate ------------------------------------------------------------------------------
    @cached_property
    def p_value(self) -> float:
        return mcnemar_exact(self.broken, self.fixed)

    @property
    def significant_drop(self) -> bool:
        return self.broken > self.fixed and self.p_value < self.alpha

    @property
    def drop_too_large(self) -> bool:
        return self.max_drop is not None and self.paired_drop > self.max_drop + 1e-12

    @property
    def gate_failed(self) -> bool:
        return self.significant_drop or self.drop_too_large

    @property
    def gate_reason(self) -> str:
        """The gate's verdict in words, with the numbers it used."""
        if not self.paired:
            return "no paired cases to compare: the gate does not apply"
        test = f"McNemar exact p = {self.p_value:.4g} on {self.broken} now failing vs {self.fixed} now passing, "
        if self.broken > self.fixed:
            test += f"{'<' if self.significant_drop else '>='} alpha {self.alpha:g}"
        elif self.broken < self.fixed and self.p_value < self.alpha:
            test += f"a significant improvement at alpha {self.alpha:g} (not a drop)"
        else:
            test += "no more failing than passing (not a drop)"
        if self.max_drop is None:
            drop = "no maximum drop set"
        else:
            drop = (f"paired pass rate fell {self.paired_drop:.1%}, "
                    f"{'more than' if self.drop_too_large else 'within'} the allowed {self.max_drop:.1%}")
        verdict = "FAIL" if self.gate_failed else "ok"
        return f"{verdict}: {test}; {drop}"

    def to_dict(self) -> dict[str, object]:
        return {
            "prompt": self.prompt, "digest_then": self.digest_then, "digest_now": self.digest_now,
            "prompt_changed": self.prompt_changed,
            "counts": {s: self.count(s) for s in (NOW_FAILING, NOW_PASSING, STILL_PASSING, STILL_FAILING, NEW, GONE)},
            "pass_rate_now": _rate_dict(self.rate_now, self.interval_now, len(self.cases_now)),
            "pass_rate_then": _rate_dict(self.rate_then, self.interval_then, len(self.cases_then)),
            "paired": len(self.paired), "paired_drop": round(self.paired_drop, 4),
            "mcnemar_p": round(self.p_value, 6), "alpha": self.alpha, "max_drop": self.max_drop,
            "score_change": _mean_dict(self.score_change),
            "gate": "failed" if self.gate_failed else "passed", "reason": self.gate_reason,
            "regressed": [c.nodeid for c in self.regressions],
            "cases": {c.nodeid: c.status for c in self.changes},
        }


@dataclass(frozen=True)
class Comparison:
    baseline_path: str
    prompts: tuple[PromptComparison, ...]

    @property
    def gate_failed(self) -> bool:
        return self.unpaired or any(p.gate_failed for p in self.prompts)

    @cached_property
    def unpaired(self) -> bool:
        """The baseline and the run both have cases but share none: almost always a baseline
        saved under another rootdir or for another suite, so the gate cannot pass on it."""
        changes = [c for p in self.prompts for c in p.changes]
        return (any(c.then is not None for c in changes) and any(c.now is not None for c in changes)
                and not any(c.paired for c in changes))

    @property
    def mismatch_reason(self) -> str:
        """Why no case paired, with an example of each side's names; "" when cases paired."""
        if not self.unpaired:
            return ""
        then = next(f"{p.prompt} {c.nodeid}" for p in self.prompts for c in p.changes if c.then is not None)
        now = next(f"{p.prompt} {c.nodeid}" for p in self.prompts for c in p.changes if c.now is not None)
        where = self.baseline_path or "the baseline"
        return (f"FAIL: {where} pairs no case with this run (baseline has e.g. {then!r}, this run "
                f"{now!r}): it was saved under another rootdir or for another suite, so nothing was compared; "
                "fix: run pytest from the rootdir the baseline was saved under, or save a new baseline "
                "with --promptopt-save-baseline")

    @property
    def regressions(self) -> tuple[tuple[str, CaseChange], ...]:
        """(prompt, change) of every case now failing, prompt by prompt."""
        return tuple((p.prompt, c) for p in self.prompts for c in p.regressions)

    def statuses(self) -> dict[str, set[str]]:
        """node id -> its statuses across the prompts it called."""
        out: dict[str, set[str]] = {}
        for p in self.prompts:
            for c in p.changes:
                out.setdefault(c.nodeid, set()).add(c.status)
        return out

    def to_dict(self) -> dict[str, object]:
        return {"baseline": self.baseline_path, "gate": "failed" if self.gate_failed else "passed",
                "mismatch": self.mismatch_reason or None, "prompts": [p.to_dict() for p in self.prompts]}


def compare(then: Baseline, now: Baseline, *, alpha: float = DEFAULT_ALPHA, max_drop: float | None = None,
            baseline_path: str = "") -> Comparison:
    names = sorted(set(then.prompts) | set(now.prompts))
    return Comparison(baseline_path, tuple(
        _compare_prompt(name, then.prompts.get(name), now.prompts.get(name), alpha, max_drop) for name in names))


def _compare_prompt(name: str, then: PromptCases | None, now: PromptCases | None, alpha: float,
                    max_drop: float | None) -> PromptComparison:
    cases_then = then.cases if then is not None else {}
    cases_now = now.cases if now is not None else {}
    changes = tuple(CaseChange(n, cases_then.get(n), cases_now.get(n)) for n in sorted(set(cases_then) | set(cases_now)))
    return PromptComparison(name, then.digest if then else None, now.digest if now else None, changes, alpha, max_drop)


def _rate(cases: tuple[BaselineCase, ...]) -> float:
    return sum(c.passed for c in cases) / len(cases) if cases else 0.0


def _rate_dict(rate: float, interval: Interval, n: int) -> dict[str, object]:
    return {"rate": round(rate, 4), "low": round(interval.low, 4), "high": round(interval.high, 4), "cases": n}


def _mean_dict(estimate: MeanEstimate) -> dict[str, object]:
    interval = estimate.interval
    return {"n": estimate.n, "mean": round(estimate.mean, 4),
            "low": None if interval is None else round(interval.low, 4),
            "high": None if interval is None else round(interval.high, 4)}


REGRESSION_LIMIT = 10  # regressed cases listed in the terminal; the rest are counted


def summary_lines(comparison: Comparison, limit: int = REGRESSION_LIMIT) -> list[tuple[str, bool]]:
    """The terminal section: (line, is_bad) per line; prompts first, then the regressed cases."""
    lines: list[tuple[str, bool]] = [(comparison.mismatch_reason, True)] if comparison.unpaired else []
    for p in comparison.prompts:
        lines.append((prompt_line(p), False))
        lines.append((f"  gate {p.gate_reason}", p.gate_failed))
    regressions = comparison.regressions
    if regressions:
        lines.append((f"regressed cases ({len(regressions)}): passed in the baseline, fail now", True))
    for prompt, change in regressions[:limit]:
        assert change.then is not None and change.now is not None  # a regression is paired
        lines.append((f"  {change.nodeid} ({prompt})", True))
        lines.append((f"    output then: {_one_line(change.then.output)}", False))
        lines.append((f"    output now:  {_one_line(change.now.output)}", False))
        reason = change.now.message.strip().splitlines()[0] if change.now.message.strip() else "(no message)"
        lines.append((f"    failure now: {_one_line(reason, quote=False)}", False))  # its first line; all in the reports
    if len(regressions) > limit:
        lines.append((f"  ... and {len(regressions) - limit} more regressed case(s); every case is in the JSON "
                      "and HTML reports", True))
    return lines


def prompt_line(p: PromptComparison) -> str:
    now = f"{p.rate_now:.1%} {_interval(p.interval_now)} of {len(p.cases_now)}"
    then = f"{p.rate_then:.1%} {_interval(p.interval_then)} of {len(p.cases_then)}"
    counts = (f"{p.broken} now failing, {p.fixed} now passing, {p.count(NEW)} new, {p.count(GONE)} gone "
              f"({len(p.paired)} paired)")
    line = f"{p.prompt}: pass rate {now} now vs {then} in the baseline; {counts}"
    change = p.score_change
    if change.n:
        interval = "" if change.interval is None else f" {_interval(change.interval, signed=True)}"
        line += f"; judge score change {change.mean:+.3f}{interval} over {change.n} paired case(s)"
    if p.prompt_changed:
        line += "; the prompt file changed"
    return line


def _interval(interval: Interval, signed: bool = False) -> str:
    if signed:
        return f"[{interval.low:+.3f}, {interval.high:+.3f}]"
    return f"[{interval.low:.1%}, {interval.high:.1%}]"


def _one_line(text: str, limit: int = 200, quote: bool = True) -> str:
    """Model output in a terminal: one line, control characters (ANSI escapes) shown, not sent."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    shown = repr(cut)
    return shown if quote else shown[1:-1]


__all__ = ["DEFAULT_ALPHA", "GONE", "NEW", "NOW_FAILING", "NOW_PASSING", "STILL_FAILING", "STILL_PASSING",
           "CaseChange", "Comparison", "PromptComparison", "compare", "prompt_line", "summary_lines"]
