"""Screening MIPRO's demo choices for one prompt (the original instruction): retrieval options
ranked among themselves on every train case, the best of them scored on every scoring case;
static sets (drawn from the demo-source part of train) by successive halving raced against it
on the same cases; then the stages that build new sets from the screened ones (`variants.py`),
and the best few kept for the search.

A choice is identified by the fingerprint of the candidate it makes, never by its place in a
list: `Board` holds each choice once, as a frozen `DemoCandidate`, with its scores.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..stats import paired_noise
from .base import Candidate, Evaluation, OptimizationContext, fingerprint
from .demos import DemoChoice, Retrieve, demo_sets, pool_from_options, with_choice
from .search import Evaluator


@dataclass(frozen=True)
class DemoCandidate:
    """One demo choice under screening. `number` is the order it was made in (0 is the
    prompt's own demos); the run log names choices by it."""

    choice: DemoChoice
    number: int
    label: str
    fingerprint: str


class Board:
    """The demo choices of one prompt, each once, in the order they were made, with their
    scores: `full` on every scored train case, `latest` the last score of any kind."""

    def __init__(self, ctx: OptimizationContext, evaluator: Evaluator, key: str) -> None:
        self.ctx, self.evaluator, self.key = ctx, evaluator, key
        self.records: dict[str, DemoCandidate] = {}
        self.full: dict[str, float] = {}
        self.latest: dict[str, float] = {}

    def candidate(self, choice: DemoChoice) -> Candidate:
        return {**self.ctx.original, self.key: with_choice(self.ctx.original[self.key], choice)}

    def add(self, choice: DemoChoice, label: str = "demo set {n}") -> DemoCandidate | None:
        """Register `choice`; None if the same candidate is already on the board. `{n}` in
        the label is the choice's number."""
        fp = fingerprint(self.candidate(choice))
        if fp in self.records:
            return None
        n = len(self.records)
        if isinstance(choice, Retrieve):
            label = f"retrieve k={choice.k} {choice.order}"
        record = DemoCandidate(choice, n, label.format(n=n), fp)
        self.records[fp] = record
        return record

    def evaluate(self, record: DemoCandidate, ids: Sequence[str]) -> Evaluation:
        return self.evaluator.evaluate(self.candidate(record.choice), ids)

    def note(self, record: DemoCandidate, score: float) -> None:
        self.latest[record.fingerprint] = score

    def score_full(self, record: DemoCandidate) -> float:
        score = self.evaluator.full_train(self.candidate(record.choice), record.label)
        self.full[record.fingerprint] = self.latest[record.fingerprint] = score
        return score

    def ranked_full(self) -> list[DemoCandidate]:
        """Choices scored on full train, best first (ties in the order they were scored)."""
        return [self.records[fp] for fp in sorted(self.full, key=lambda fp: -self.full[fp])]

    def latest_scores(self) -> list[tuple[DemoCandidate, float]]:
        return [(self.records[fp], score) for fp, score in self.latest.items()]


class Stage(Protocol):
    """A screening stage that adds new choices to the board (recombined sets, reorderings)."""

    def extend(self, board: Board, ids: Sequence[str], bar: Bar | None, rng: random.Random) -> None: ...


@dataclass(frozen=True)
class Bar:
    """The best retrieval option, which static sets race against, case by case."""

    record: DemoCandidate
    score: float  # on every scoring case

    def reachable(self, board: Board, evaluation: Evaluation) -> bool:
        """Racing: whether a static set scored on part of the scoring cases may still reach the
        bar. Paired on those cases: the set is dropped when the one-sided 95% t bound of its mean
        per-case difference to the bar's results on the same cases stays below zero."""
        ids = [r.nodeid for r in evaluation.results]
        if not ids:
            return True
        bar = {r.nodeid: r.score for r in board.evaluate(self.record, ids).results}
        differences = [r.score - bar[r.nodeid] for r in evaluation.results]
        return sum(differences) / len(differences) + paired_noise(differences) >= 0


class DemoScreening:
    """Successive halving over a prompt's demo choices on growing shares of the train cases, so
    the search spends its trials on the few choices that work."""

    def __init__(self, keep: int, stages: Sequence[Stage] = ()) -> None:
        self.keep = keep
        self.stages = stages

    def screen(self, ctx: OptimizationContext, evaluator: Evaluator, key: str,
               choices: Sequence[DemoChoice], rng: random.Random) -> list[DemoChoice]:
        """The choices worth searching: the first (the prompt's own demos) and the best `keep`."""
        if len(choices) <= self.keep + 1:
            return list(choices)
        ids = list(evaluator.train_ids)
        rng.shuffle(ids)
        board = Board(ctx, evaluator, key)
        records = [board.add(choice) for choice in choices]
        screened = [r for r in records[1:] if r is not None]
        # Retrieval options skip the halving: they are few, each is its own regime (its cost per
        # call grows with k), and a quarter of the train cases is too few to rank them. The best
        # of them (ranked on every train case, `best_retrieval`) is the bar the static sets race
        # against; the others leave the screening.
        retrieval = best_retrieval(board, [r for r in screened if isinstance(r.choice, Retrieve)])
        bar = Bar(retrieval, board.score_full(retrieval)) if retrieval is not None else None
        static = [r for r in screened if not isinstance(r.choice, Retrieve)]
        for record in self._halve(board, static, ids, bar):
            board.score_full(record)
        for stage in self.stages:
            stage.extend(board, ids, bar, rng)
        kept = board.ranked_full()[: self.keep]
        ctx.log("demo_screening", prompt=key, kept=[r.number for r in kept],
                train_scores={str(r.number): board.full[r.fingerprint] for r in kept})
        return [choices[0], *(r.choice for r in kept)]

    def _halve(self, board: Board, alive: list[DemoCandidate], ids: list[str], bar: Bar | None) -> list[DemoCandidate]:
        """The static sets left after scoring on a quarter, then half the scoring cases, keeping
        the better half (at least `keep`) and only those that may still reach the bar."""
        for share in (0.25, 0.5):
            part = ids[: max(1, int(len(ids) * share))]
            if not alive:
                break
            evaluations = {r.fingerprint: board.evaluate(r, part) for r in alive}
            scores = {fp: ev.mean for fp, ev in evaluations.items()}
            for record in alive:
                board.note(record, scores[record.fingerprint])
            alive = sorted(alive, key=lambda r: -scores[r.fingerprint])[: max(self.keep, len(alive) // 2)]
            alive = [r for r in alive if bar is None or bar.reachable(board, evaluations[r.fingerprint])]
            board.ctx.progress(f"screening demo sets on {len(part)} train tests: {len(alive)} left, "
                               f"top {max(scores.values()):.2f} on them")
        return alive


def best_retrieval(board: Board, options: Sequence[DemoCandidate]) -> DemoCandidate | None:
    """The retrieval option to go on with: the highest mean over every train case the prompt
    file does not already show (twice the scoring part, so less noise in a choice between
    regimes that differ by a few cases). Fair among retrieval options: all are scored on the
    same cases and a call never retrieves its own case, so none is shown its own answer. Ties go
    to the fewer demos per call, then to the order the options were made in."""
    if len(options) <= 1:
        return options[0] if options else None
    shown = set(board.ctx.split.shown if board.ctx.split is not None else ())
    ids = [c.nodeid for c in board.ctx.train if c.nodeid not in shown]
    scores = {r.fingerprint: board.evaluate(r, ids).mean for r in options}
    best = max(options, key=lambda r: (scores[r.fingerprint], -r.choice.k, -r.number))  # type: ignore[union-attr]
    board.ctx.log("retrieval_ranking", prompt=board.key, cases=len(ids), chosen=best.number,
                  options=[r.number for r in options], scores={r.label: scores[r.fingerprint] for r in options})
    board.ctx.progress(f"retrieval options on {len(ids)} train tests: {best.label} best "
                       f"({scores[best.fingerprint]:.2f})")
    return best


def demo_choices(ctx: OptimizationContext, key: str, rng: random.Random, n_sets: int,
                 retrieve_ks: Sequence[int], retrieve_orders: Sequence[str]) -> list[DemoChoice]:
    """The demo choices to screen: the prompt's own demos, static sets drawn from the
    demo-source cases, and retrieval at each k in each order, from every train case (a call
    never retrieves its own case)."""
    train = [c.nodeid for c in ctx.train]
    pool = ctx.program.demo_pool(key, train)
    sources = set(ctx.demo_source)
    static_pool = [o for o in pool if o.source in sources]
    choices: list[DemoChoice] = [None, *demo_sets(static_pool, n_sets, rng)]
    ctx.log("demo_pool", prompt=key, size=len(pool), static_source=len(static_pool), sets=len(choices) - 1,
            labelled=sum(o.kind == "labelled" for o in pool))
    demos = pool_from_options(pool, set(train))
    if not ctx.original[key].supports_retrieval:
        return choices
    # majority_last differs from nearest_last only when retrieved demos can share an answer
    answers_repeat = len({d.output for d in demos}) < len(demos)
    orders = [o for o in retrieve_orders if o != "majority_last" or answers_repeat] or ["nearest_last"]
    for k in retrieve_ks:
        if len(demos) > k:  # each case is left out of its own retrieval
            choices.extend(Retrieve(demos, k, order) for order in orders)
    return choices
