"""Scoring candidates on train cases: minibatches, full train, successive halving.

A case never scores a candidate that shows that very case as a demo (it would pass by
copying), so each candidate is scored on the train cases it has not seen.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .base import Candidate, Case, Evaluation, OptimizationContext, Program, fingerprint


def unseen(program: Program, candidates: Sequence[Candidate], ids: Sequence[str]) -> list[str]:
    """The cases of `ids` that none of `candidates` shows as a static demo (a case whose inputs
    are a demo's would pass by copying it)."""
    demo_keys = {frozenset(d.inputs.items()) for c in candidates for p in c.values() for d in p.demos}
    if not demo_keys:
        return list(ids)
    def shown(nodeid: str) -> bool:
        traced = [frozenset(inputs.items()) for inputs in program.inputs(nodeid)]
        return any(dk <= tk for dk in demo_keys for tk in traced)

    return [i for i in ids if not shown(i)]


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
        """`most_cases` caps the train cases a candidate is scored on ("full" train), drawn once
        with the run's seed; demos still come from every train case."""
        self.ctx = ctx
        self.scored: dict[str, Scored] = {}
        self._on_score = on_score
        self._evaluations: dict[tuple[str, tuple[str, ...]], Evaluation] = {}
        cases = list(ctx.train)
        if most_cases is not None and len(cases) > most_cases:
            chosen = set(random.Random(ctx.seed + 2).sample(range(len(cases)), most_cases))
            cases = [c for i, c in enumerate(cases) if i in chosen]
        self.train_ids = [c.nodeid for c in cases]
        if len(cases) < len(ctx.train):
            ctx.scoring_on(self.train_ids)
        original = self.entry(ctx.original, "original")
        original.full = sum(c.score for c in cases) / len(cases) if cases else 0.0

    def entry(self, candidate: Candidate, label: str = "") -> Scored:
        fp = fingerprint(candidate)
        if fp not in self.scored:
            self.scored[fp] = Scored(candidate, label=label)
        return self.scored[fp]

    def known_full(self, candidate: Candidate) -> float | None:
        """The candidate's score on every train case, if it has one already."""
        entry = self.scored.get(fingerprint(candidate))
        return entry.full if entry is not None else None

    def unseen(self, candidate: Candidate, ids: Sequence[str]) -> list[str]:
        return unseen(self.ctx.program, [candidate], ids)

    def evaluate(self, candidate: Candidate, ids: Sequence[str]) -> Evaluation:
        key = (fingerprint(candidate), tuple(self.unseen(candidate, ids)))
        if key not in self._evaluations:
            self._evaluations[key] = self.ctx.program.evaluate(candidate, key[1])
        return self._evaluations[key]

    def minibatch(self, candidate: Candidate, size: int, rng: random.Random, label: str = "") -> float:
        """Score on `size` random train cases the candidate does not show as demos."""
        entry = self.entry(candidate, label)
        pool = self.unseen(candidate, self.train_ids)
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
        done = [s for s in self.scored.values() if s.full is not None]
        return max(done, key=lambda s: (s.full, s.mean_minibatch))

    def best_unvalidated(self) -> Scored | None:
        pending = [s for s in self.scored.values() if s.full is None and s.minibatch]
        return max(pending, key=lambda s: s.mean_minibatch) if pending else None


def sample_ids(cases: Sequence[Case], size: int, rng: random.Random) -> list[str]:
    ids = [c.nodeid for c in cases]
    return ids if len(ids) <= size else rng.sample(ids, size)


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
