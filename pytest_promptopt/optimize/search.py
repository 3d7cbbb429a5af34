"""Scoring candidates on train cases: minibatches, full scores, successive halving.

Every candidate is scored on the same cases, the context's scoring part of train (`split.py`),
which no candidate shows as a static demo: scores are paired, and a "full" score means the
same denominator for every candidate, the original included.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .base import Candidate, Evaluation, OptimizationContext, fingerprint


def demos_per_call(candidate: Candidate) -> int:
    """How many demos a call of the candidate shows: static ones plus those retrieved."""
    return sum(len(p.demos) + (p.retrieval.k if p.retrieval is not None else 0) for p in candidate.values())


@dataclass
class Scored:
    candidate: Candidate
    minibatch: list[float] = field(default_factory=list)
    full: float | None = None
    label: str = ""

    @property
    def mean_minibatch(self) -> float:
        return sum(self.minibatch) / len(self.minibatch) if self.minibatch else -1.0


class Evaluator:
    def __init__(self, ctx: OptimizationContext, on_score: Callable[[Scored, str, float], None] | None = None,
                 most_cases: int | None = None) -> None:
        """`most_cases` caps the scoring cases a candidate is scored on ("full"), drawn once with
        the run's seed."""
        self.ctx = ctx
        self.scored: dict[str, Scored] = {}
        self._on_score = on_score
        self._evaluations: dict[tuple[str, tuple[str, ...]], Evaluation] = {}
        ids = list(ctx.scoring)
        if most_cases is not None and len(ids) > most_cases:
            chosen = set(random.Random(ctx.seed + 2).sample(range(len(ids)), most_cases))
            ids = [n for i, n in enumerate(ids) if i in chosen]
        self.train_ids = ids
        if len(ids) < len(ctx.scoring):
            ctx.scoring_on(ids)
        # the original is scored like any candidate: its first-run results on the same cases
        first_run = {c.nodeid: c.score for c in ctx.train}
        original = self.entry(ctx.original, "original")
        original.full = sum(first_run[n] for n in ids) / len(ids) if ids else 0.0

    def entry(self, candidate: Candidate, label: str = "") -> Scored:
        fp = fingerprint(candidate)
        if fp not in self.scored:
            self.scored[fp] = Scored(candidate, label=label)
        return self.scored[fp]

    def known_full(self, candidate: Candidate) -> float | None:
        """The candidate's score on every train case, if it has one already."""
        entry = self.scored.get(fingerprint(candidate))
        return entry.full if entry is not None else None

    def evaluate(self, candidate: Candidate, ids: Sequence[str]) -> Evaluation:
        key = (fingerprint(candidate), tuple(ids))
        if key not in self._evaluations:
            self._evaluations[key] = self.ctx.program.evaluate(candidate, key[1])
        return self._evaluations[key]

    def minibatch(self, candidate: Candidate, size: int, rng: random.Random, label: str = "") -> float:
        """Score on `size` random scoring cases."""
        entry = self.entry(candidate, label)
        pool = self.train_ids
        ids = pool if len(pool) <= size else rng.sample(pool, size)
        ev = self.evaluate(candidate, ids)
        if ev.results:
            entry.minibatch.append(ev.mean)
            self._notify(entry, "minibatch", ev.mean)
        return ev.mean

    def full_train(self, candidate: Candidate, label: str = "") -> float:
        entry = self.entry(candidate, label)
        if entry.full is None:
            ev = self.evaluate(candidate, self.train_ids)
            entry.full = ev.mean
            self._notify(entry, "train", ev.mean)
        return entry.full

    def _notify(self, entry: Scored, split: str, score: float) -> None:
        if self._on_score is not None:
            self._on_score(entry, split, score)

    def best_full(self) -> Scored:
        """The best candidate scored in full, by one rule: the highest mean score on the scoring
        cases (the same cases for every candidate); ties go to the one showing fewer demos per
        call, then to the one scored first (the original is scored first)."""
        done = [s for s in self.scored.values() if s.full is not None]
        return max(done, key=lambda s: (s.full, -demos_per_call(s.candidate)))

    def best_unvalidated(self) -> Scored | None:
        pending = [s for s in self.scored.values() if s.full is None and s.minibatch]
        return max(pending, key=lambda s: s.mean_minibatch) if pending else None


def sample_ids(ids: Sequence[str], size: int, rng: random.Random) -> list[str]:
    return list(ids) if len(ids) <= size else rng.sample(list(ids), size)


def successive_halving(evaluator: Evaluator, candidates: Sequence[tuple[Candidate, str]], ids: Sequence[str],
                       rungs: int = 2) -> list[tuple[Candidate, float]]:
    """Score on a growing share of the batch, dropping the weaker half after each rung."""
    alive = list(candidates)
    scores: dict[str, float] = {}
    ids = list(ids)
    for rung in range(rungs):
        upto = len(ids) if rung == rungs - 1 else max(1, len(ids) * (rung + 1) // (rungs + 1))
        part = ids[:upto]
        for candidate, _label in alive:
            scores[fingerprint(candidate)] = evaluator.evaluate(candidate, part).mean
        alive.sort(key=lambda cl: scores[fingerprint(cl[0])], reverse=True)
        if rung < rungs - 1:
            alive = alive[: max(1, (len(alive) + 1) // 2)]
    for candidate, label in alive:
        entry = evaluator.entry(candidate, label)
        entry.minibatch.append(scores[fingerprint(candidate)])
    return [(c, scores[fingerprint(c)]) for c, _ in alive]
