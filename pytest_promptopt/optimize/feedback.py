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
        out.append(Feedback(r.nodeid, call.prompt_key, call.inputs, call.output, call.expected, r.message, r.score))
    return out


__all__ = ["Feedback", "feedback_of"]
