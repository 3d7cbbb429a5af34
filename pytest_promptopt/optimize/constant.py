"""The trivial answer a candidate must beat, and candidates that give one answer to everything.

Where the tests compare outputs with expected answers from a small set (labels), always giving
the most common expected answer among the train cases is a prompt too: the constant baseline.
A candidate is written only if it beats it on validation by the same margin and noise rule it
must beat the original by (`acceptance.py`), unless the user allows it
(`--optimize-allow-constant`: when only the format of the original's answers was wrong, say).
Pure, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..run.record import CaseOutcome
from ..stats import paired_noise
from .acceptance import MAX_ANSWERS_FOR_CHANCE, Decision
from .base import Evaluation

NEARLY_ALL = 0.9  # a candidate giving one answer to this share of the validation cases gives one answer
FEWEST_FOR_ONE_ANSWER = 4  # fewer validation cases than this say nothing about a candidate's answers


def answer_of(outcome: CaseOutcome) -> str | None:
    """The answer a case gave: its last LM call's output, stripped."""
    return outcome.calls[-1].output.strip() if outcome.calls else None


def expected_answers(*runs: Sequence[CaseOutcome]) -> dict[str, str]:
    """The expected answer of each case where a run shows it: the label of a failed `assert out
    == expected` or `checks.equals`, or a passing case's output."""
    answers: dict[str, str] = {}
    for run in runs:
        for r in run:
            call = r.calls[-1] if r.calls else None
            if call is not None and call.expected is not None:
                answers[r.nodeid] = call.expected.strip()
            elif call is not None and r.passed:
                answers.setdefault(r.nodeid, call.output.strip())
    return answers


@dataclass(frozen=True)
class ConstantBaseline:
    """Always answering `answer` (the most common expected answer among the train cases),
    scored on the validation cases: 1 where that is the expected answer, else 0."""

    answer: str
    scores: Mapping[str, float]  # validation nodeid -> score of the constant answer
    labels: frozenset[str]  # every expected answer seen (train and validation)

    @property
    def mean(self) -> float:
        return sum(self.scores.values()) / len(self.scores) if self.scores else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "validation": self.mean}


def constant_baseline(train: Sequence[CaseOutcome], validation: Sequence[CaseOutcome],
                      candidate: Sequence[CaseOutcome] = ()) -> ConstantBaseline | None:
    """The constant baseline, when every train and validation case's expected answer is known
    (from the first run, or the candidate's run of the validation cases), some came from a
    check that names it, and they are a small set of repeated answers; else None."""
    labelled = any(r.calls and r.calls[-1].expected is not None for run in (train, validation, candidate) for r in run)
    train_answers = expected_answers(train)
    known = expected_answers(validation, candidate)
    validation_ids = {r.nodeid for r in validation}
    counts = Counter(train_answers.values())
    if not labelled or not train or set(train_answers) != {r.nodeid for r in train} \
            or not validation_ids <= set(known) or not 1 <= len(counts) <= MAX_ANSWERS_FOR_CHANCE \
            or len(counts) >= len(train_answers):
        return None
    answer = min(counts, key=lambda a: (-counts[a], a))  # ties: the first in sort order, for a stable choice
    scores = {n: float(known[n] == answer) for n in sorted(validation_ids)}
    return ConstantBaseline(answer, scores, frozenset(train_answers.values()) | {known[n] for n in validation_ids})


def beats_constant(constant: ConstantBaseline, after: Evaluation, margin: float) -> tuple[bool, float]:
    """Whether the candidate's validation results beat always answering the constant by the
    margin and beyond the noise of the paired change, and the gain that needs."""
    paired = [r for r in after.results if r.nodeid in constant.scores]
    gain = after.mean - constant.mean
    noise = paired_noise([r.score - constant.scores[r.nodeid] for r in paired])
    return gain >= margin and gain >= noise, max(margin, noise)


def decide_constant(validated: Decision, constant: ConstantBaseline | None, after: Evaluation, *,
                    margin: float, allow: bool) -> Decision:
    """The constant-baseline part of the rule, after the original's."""
    if not validated.accepted or constant is None:
        return validated
    beaten, needed = beats_constant(constant, after, margin)
    if beaten:
        return validated
    why = (f"no better than always answering {constant.answer!r} ({constant.mean:.3f}): validation "
           f"{after.mean:.3f} needs +{needed:.3f} over it")
    if allow:
        return Decision(True, f"{validated.reason}; written although {why} (--optimize-allow-constant)",
                        validated.regressions, validated.allowed)
    return Decision(False, f"{why} (--optimize-allow-constant writes such a candidate anyway)",
                    validated.regressions, validated.allowed)


@dataclass(frozen=True)
class OneAnswer:
    """A candidate that gives (nearly) the same answer to every validation case."""

    answer: str
    count: int
    cases: int

    @property
    def text(self) -> str:
        return f"answers {self.answer!r} for {self.count} of {self.cases} validation cases"

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "count": self.count, "cases": self.cases, "text": self.text}


def one_answer(results: Sequence[CaseOutcome]) -> OneAnswer | None:
    answers = [a for a in map(answer_of, results) if a is not None]
    if len(answers) < FEWEST_FOR_ONE_ANSWER:
        return None
    answer, count = Counter(answers).most_common(1)[0]
    return OneAnswer(answer, count, len(results)) if count >= NEARLY_ALL * len(results) else None


def format_only(original: Sequence[CaseOutcome], after: Evaluation, constant: ConstantBaseline | None,
                margin: float) -> str | None:
    """When the original's answers are (nearly) never one of the expected answers, and the
    candidate's (nearly) always are but it does not beat the constant baseline: the candidate
    fixed the format, not the task. The summary's sentence, else None."""
    if constant is None or beats_constant(constant, after, margin)[0]:
        return None
    labels = constant.labels

    def share_in_labels(run: Sequence[CaseOutcome]) -> float:
        answers = [a for a in map(answer_of, run) if a is not None]
        return sum(a in labels for a in answers) / len(answers) if answers else 0.0

    if not original or not after.results or share_in_labels(original) > 1 - NEARLY_ALL \
            or share_in_labels(after.results) < NEARLY_ALL:
        return None
    return (f"the original's answers were not among the expected answers (a format problem) and the candidate "
            f"fixes the format, but scores {after.mean:.3f}, no better than always answering {constant.answer!r} "
            f"({constant.mean:.3f}): the task itself was not learned")
