"""Simplifying a winner before it is written: every part it changed must earn its place.

The parts, tried in this order for each prompt: the instruction edit, the retrieval rule, the
demos as a block, then the demos in halves, then one by one (when at most `ONE_BY_ONE` are
left). Each part is put back as the original had it; the removal is kept when the score on
the train cases the search scored on (none a demo of the winner or the original; validation is
left for the decision) does not drop beyond noise: the mean per-case drop must exceed the one-sided 95% Student t bound of the
per-case differences (`stats.paired_noise`). Ties go to
the shorter prompt, since a tie is no drop.

Every removal is judged against the winner as the search found it, not against the prompt left
by the removals before it: judged step by step, parts each within noise of the step before
would add up to a drop well beyond it, and simplification would undo a real gain piecemeal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ..errors import BudgetExhausted
from ..prompts.prompt import Prompt
from ..stats import paired_noise
from .base import Candidate, Evaluation

ONE_BY_ONE = 4  # demos tried one at a time when at most this many are left


@dataclass(frozen=True)
class Removal:
    prompt: str
    part: str  # "instruction edit", "retrieval rule", "demos", "demos 1-3", "demo 2"
    kept_out: bool
    score_with: float
    score_without: float
    noise: float
    after_others: bool = False  # score_without also lacks the parts dropped before this one

    @property
    def reason(self) -> str:
        without = "without it and the parts dropped before" if self.after_others else "without it"
        change = f"{self.score_with:.3f} -> {self.score_without:.3f} {without}, noise {self.noise:.3f}"
        return f"dropped {self.part} of {self.prompt} ({change})" if self.kept_out else \
            f"kept {self.part} of {self.prompt} ({change})"


Evaluate = Callable[[Candidate], Evaluation]


def simplify(original: Candidate, best: Candidate, evaluate: Evaluate) -> tuple[Candidate, list[Removal]]:
    """`best` with every changed part that does not earn its place put back as in `original`.
    Stops where the budget runs out, keeping what it has."""
    trail: list[Removal] = []
    current, winner = best, evaluate(best)
    try:
        for key in sorted(best):
            for part, trial in _parts(original[key], current[key]):
                candidate = {**current, key: trial(current[key])}
                removal = _judge(key, part, winner, evaluate(candidate), any(r.kept_out for r in trail))
                trail.append(removal)
                if removal.kept_out:
                    current = candidate
    except BudgetExhausted:
        pass
    return current, trail


def _judge(key: str, part: str, with_part: Evaluation, without: Evaluation, after_others: bool) -> Removal:
    before = {r.nodeid: r.score for r in with_part.results}
    drops = [before[r.nodeid] - r.score for r in without.results if r.nodeid in before]
    noise = paired_noise(drops)
    drop = sum(drops) / len(drops) if drops else 0.0
    return Removal(key, part, drop <= noise, with_part.mean, without.mean, noise, after_others)


Trial = Callable[[Prompt], Prompt]


def _parts(original: Prompt, winner: Prompt) -> list[tuple[str, Trial]]:
    """The changes of `winner` over `original`, each as a way to put it back."""
    parts: list[tuple[str, Trial]] = []
    if winner.instruction != original.instruction:
        parts.append(("the instruction edit", lambda p: replace(p, messages=original.messages)))
    if winner.retrieval != original.retrieval:
        parts.append(("the retrieval rule", lambda p: p.without_retrieval() if original.retrieval is None
                      else p.with_retrieval(original.retrieval.pool, original.retrieval.k, original.retrieval.by,
                                            order=original.retrieval.order)))
    if winner.demos != original.demos:
        parts.append(("the demos", lambda p: p.with_demos(original.demos)))
        parts += _demo_parts(original, winner)
    return parts


def _demo_parts(original: Prompt, winner: Prompt) -> list[tuple[str, Trial]]:
    """Halves of the new demos, then single demos when few: each drops only what is still there."""
    new = [d for d in winner.demos if d not in original.demos]
    if len(new) <= 1:
        return []
    half = len(new) // 2
    groups: Sequence[tuple[str, list]] = [(f"demos 1-{half}", new[:half]), (f"demos {half + 1}-{len(new)}", new[half:])]
    if len(new) <= ONE_BY_ONE:
        groups = [(f"demo {i + 1}", [d]) for i, d in enumerate(new)]
    return [(name, _dropping(group)) for name, group in groups]


def _dropping(demos: list) -> Trial:
    return lambda p: p.with_demos(tuple(d for d in p.demos if d not in demos))
