"""The acceptance rule: when a candidate may replace the original prompt. Pure, no I/O.

A candidate is written only if, on validation cases it was never selected on, it beats the
original by the required gain and breaks at most the allowed number of previously passing cases;
and, where holdout tests exist, it does not score lower on them than the original did. The
validation cases are run once, for this decision: the search and the simplification before it
see train cases only (`loop.py`, `split.py`), and the holdout cases are run only for the veto.

The required gain is the larger of `--optimize-margin` and the noise of the paired difference:
one-sided 95% Student t bound of the mean per-case change (about 1.73 standard errors on 20
cases, 1.65 on many). So +0.05 on 20 cases (one more pass) is noise, while +0.05 on 2,000 cases
is not.
Where the tests give expected answers from a small set, the candidate must also beat always giving
the most common train answer by the same rule (`constant.py`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..defaults import allowed_regressions
from ..stats import paired_noise, wilson
from ..run.record import CaseOutcome
from .base import Case, Evaluation


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str
    regressions: int = 0
    allowed: int = 0


def decide_validation(validation: Sequence[Case], after: Evaluation, *, margin: float,
                      max_regressions: int | None) -> Decision:
    """The validation part of the rule: margin first, then regressions."""
    before = mean_score(validation)
    v_after = after.mean
    was_passing = {c.nodeid for c in validation if c.passed}
    regressions = sum(1 for r in after.results if r.nodeid in was_passing and not r.passed)
    allowed = allowed_regressions(len(was_passing), max_regressions)
    scores_before = {c.nodeid: c.score for c in validation}
    noise = paired_noise([r.score - scores_before[r.nodeid] for r in after.results])
    if v_after < before + margin:
        return Decision(False, f"validation {before:.3f} -> {v_after:.3f} does not beat the original by the margin "
                               f"{margin:.3f}", regressions, allowed)
    if v_after - before < noise:
        return Decision(False, f"validation {before:.3f} -> {v_after:.3f}: the gain is within noise on "
                               f"{len(validation)} cases (it needs +{noise:.3f}, the one-sided 95% t bound of "
                               "the per-case change)", regressions, allowed)
    if regressions > allowed:
        return Decision(False, f"breaks {regressions} previously passing validation tests (allowed {allowed})",
                        regressions, allowed)
    return Decision(True, f"validation {before:.3f} -> {v_after:.3f} (+{v_after - before:.3f}), "
                          f"{regressions} regression(s) (allowed {allowed})", regressions, allowed)


def decide_holdout(validated: Decision, holdout: Sequence[Case], after: Evaluation | None) -> Decision:
    """Holdout tests never steer the search; they only veto a winner that does worse on them."""
    if not validated.accepted or not holdout or after is None:
        return validated
    before = mean_score(holdout)
    if after.mean < before:
        return Decision(False, f"scores lower on the {len(holdout)} holdout tests than the original "
                               f"({before:.3f} -> {after.mean:.3f}), although {validated.reason}",
                        validated.regressions, validated.allowed)
    return validated


def mean_score(cases: Sequence[Case]) -> float:
    return sum(c.score for c in cases) / len(cases) if cases else 0.0


MAX_ANSWERS_FOR_CHANCE = 20  # more distinct expected answers than this is not "a small set"


def chance_rate(*runs: Sequence[CaseOutcome]) -> float | None:
    """The score of always giving the most common expected answer, when the tests compare
    outputs with expected values from a small set (labels seen through `assert out ==
    expected` or `checks.equals`; a passing case's expected answer is its output). None when
    some case's expected answer is unknown or the answers are not a small set."""
    answers: dict[str, str] = {}
    seen_label = False
    for run in runs:
        for r in run:
            call = r.calls[-1] if r.calls else None
            if call is not None and call.expected is not None:
                answers[r.nodeid], seen_label = call.expected.strip(), True
            elif call is not None and r.passed:
                answers.setdefault(r.nodeid, call.output.strip())
    nodeids = {r.nodeid for run in runs for r in run}
    counts = Counter(answers.values())
    if not seen_label or set(answers) != nodeids or not (1 <= len(counts) <= MAX_ANSWERS_FOR_CHANCE) \
            or len(counts) >= len(nodeids):
        return None
    return counts.most_common(1)[0][1] / len(nodeids)


def within_chance(score: float, n: int, chance: float | None) -> bool:
    """`score` on `n` cases is within noise of `chance`: its 95% Wilson interval contains it."""
    if chance is None:
        return False
    return wilson(round(score * n), n).contains(chance)
