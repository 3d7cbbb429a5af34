"""Screening stages that make new static demo sets from the screened ones: recombined from the
best-credited demos, and the best sets in shuffled orders."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from .demos import DemoOption, recombine
from .screening import Bar, Board, DemoCandidate


@dataclass(frozen=True)
class Recombination:
    """New static sets from the best-credited demos, raced like the screened sets: scored on
    half the scoring cases first, and in full only if they may still reach the retrieval bar."""

    generations: int
    sets_per_generation: int

    def extend(self, board: Board, ids: Sequence[str], bar: Bar | None, rng: random.Random) -> None:
        half = list(ids[: max(1, len(ids) // 2)])
        for generation in range(self.generations):
            screened = [(r.choice, score) for r, score in board.latest_scores() if isinstance(r.choice, tuple)]
            for j, demo_set in enumerate(recombine(screened, self.sets_per_generation, rng)):  # type: ignore[arg-type]
                record = board.add(demo_set, f"recombined demo set {generation + 1}.{j + 1}")
                if record is None:
                    continue
                first = board.evaluate(record, half)
                if bar is not None and not bar.reachable(board, first):
                    board.note(record, first.mean)
                    board.ctx.progress(f"{record.label}: {first.mean:.2f} on {len(first.results)} train tests, "
                                       f"cannot reach {bar.record.label} on them")
                    continue
                board.ctx.progress(f"{record.label}: train {board.score_full(record):.2f}")


@dataclass(frozen=True)
class Reordering:
    """The same demos in another order can score very differently (a small model leans
    towards the answers of the last demos it saw), and train predicts held-out well across
    orders, so the best sets are re-scored in shuffled orders: half the train cases first,
    then the full train set for the best `keep`."""

    sets: int
    orders_per_set: int
    keep: int

    def extend(self, board: Board, ids: Sequence[str], bar: Bar | None, rng: random.Random) -> None:
        variants = self._shuffled(board, rng)
        if not variants:
            return
        half = list(ids[: max(1, len(ids) // 2)])
        scores = {r.fingerprint: board.evaluate(r, half).mean for r in variants}
        board.ctx.progress(f"reordered demo sets on {len(half)} train tests: top {max(scores.values()):.2f} on them")
        for record in sorted(variants, key=lambda r: -scores[r.fingerprint])[: self.keep]:
            board.ctx.progress(f"{record.label}: train {board.score_full(record):.2f}")

    def _shuffled(self, board: Board, rng: random.Random) -> list[DemoCandidate]:
        variants: list[DemoCandidate] = []
        for record in board.ranked_full()[: self.sets]:
            if not isinstance(record.choice, tuple):
                continue  # retrieval orders its demos by similarity; the file's own demos stay as written
            for _ in range(self.orders_per_set):
                shuffled: list[DemoOption] = list(record.choice)
                rng.shuffle(shuffled)
                added = board.add(tuple(shuffled), "reordered demo set {n}")
                if added is not None:
                    variants.append(added)
        return variants
