"""Retrieved labelled cases for a judge: per call, the k labelled cases most like the output graded.

A judge file with `retrieve: {k: 4}` shows, before each case it grades, the k cases of its own
labelled set (the labels file and the human-labelled lines of its review file) whose output and
expected answer are nearest the graded ones by BM25, each as a graded exchange with the human's
verdict. A labelled case is never shown to grade itself (calibration is then leave-one-out), and
while a judge is tuned the pool is the train labels only, so validation and holdout cases never
see one another. Selection is deterministic: same output, same demos, the same cache key.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .labels import LabelledCase
from .retrieval import BM25, ranked

JUDGE_RETRIEVE_BY = ("bm25",)


def case_text(output: str, expected: str | None) -> str:
    return output if expected is None else f"{output}\n{expected}"


@dataclass(frozen=True)
class JudgePool:
    """The labelled cases a judge retrieves its demos from."""

    cases: tuple[LabelledCase, ...]

    @cached_property
    def _index(self) -> BM25:
        return BM25([case_text(c.output, c.expected) for c in self.cases])

    @cached_property
    def _by_text(self) -> dict[tuple[str, str | None], frozenset[int]]:
        out: dict[tuple[str, str | None], set[int]] = {}
        for i, c in enumerate(self.cases):
            out.setdefault(c.seen, set()).add(i)
        return {key: frozenset(v) for key, v in out.items()}

    def nearest(self, output: str, expected: str | None, k: int) -> tuple[LabelledCase, ...]:
        """The k nearest labelled cases, nearest last (the one most like the case is shown just
        before it); a pool case with this very output and expected answer is never one of them."""
        if k <= 0 or not self.cases:
            return ()
        own = self._by_text.get((output, expected), frozenset())
        best_first = ranked(self._index.sparse_scores(case_text(output, expected)), len(self.cases), own, k)
        return tuple(self.cases[i] for i in reversed(best_first))


__all__ = ["JUDGE_RETRIEVE_BY", "JudgePool", "case_text"]
