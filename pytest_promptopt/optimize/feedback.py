"""Reflective feedback: what a proposer is shown about a failed case (GEPA's reflective dataset)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..run.record import CaseOutcome


@dataclass(frozen=True)
class Feedback:
    """What a reflective proposer needs about one failed case (GEPA's reflective dataset row):
    the prompt's inputs, its output, the expected answer where the test has one, and why the
    test failed (assertion message or judge reason)."""

    nodeid: str
    prompt_key: str
    inputs: Mapping[str, str]
    output: str
    expected: str | None
    message: str
    score: float


def feedback_of(results: Sequence[CaseOutcome]) -> list[Feedback]:
    """Feedback on the last prompt call of each failed (or partly scored) case."""
    out = []
    for r in results:
        if (r.passed and r.score >= 1) or not r.calls:
            continue
        call = r.calls[-1]
        out.append(Feedback(r.nodeid, call.prompt_key, call.inputs, call.output, expected_of(r), r.message, r.score))
    return out


def expected_of(result: CaseOutcome) -> str | None:
    """The case's expected answer: from a check or assert on the output, else the reference
    answer a judge was given (`judge(output, criteria, expected=...)`)."""
    if result.calls and result.calls[-1].expected is not None:
        return result.calls[-1].expected
    given = [v["expected"] for v in result.verdicts if isinstance(v.get("expected"), str)]
    return given[-1] if given else None


__all__ = ["Feedback", "expected_of", "feedback_of"]
