"""`--promptopt-baseline-pairwise`: each case's output now against its output in the baseline.

The baseline file keeps every case's output (bounded, run/baseline.py). For each case present in
both runs with an output in each, the pairwise judge (run/pairwise.py) is asked in both orders,
the output now shown first and then the baseline's, each its own cache entry; a winner counts
only when both orders name it, else the pair is a tie. Identical outputs are a tie without a
call. The counts are per prompt, with the flip rate (pairs whose two orders disagreed). This
reports; it does not gate: the McNemar gate on pass/fail stays the baseline's one decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import JudgeError
from ..llm.client import Completion, LMClient
from .baseline import Baseline
from .pairwise import (
    PAIR_PARAMS,
    PairVerdict,
    pair_messages,
    pair_verdict,
    read_position,
)


COUNTS = ("better", "worse", "tie", "identical", "asked", "flips", "unread")  # OutputPairs' counting fields


@dataclass(frozen=True)
class OutputPairs:
    """One prompt's cases compared with the baseline by the pairwise judge."""

    prompt: str
    better: int = 0  # the output now won in both orders
    worse: int = 0  # the baseline's output won in both orders
    tie: int = 0  # the orders disagreed, both said tie, or the outputs are identical
    identical: int = 0  # of the ties: the same text, not asked
    asked: int = 0  # pairs asked in both orders
    flips: int = 0  # of those, the two orders named different winners
    unread: int = 0  # a reply named no position (or the call failed): not counted above

    @property
    def flip_rate(self) -> float | None:
        return self.flips / self.asked if self.asked else None

    def add(self, verdict: PairVerdict) -> OutputPairs:
        won = {"a": "better", "b": "worse"}.get(verdict.winner, "tie")
        return replace(self, **{won: getattr(self, won) + 1}, asked=self.asked + 1,  # type: ignore[arg-type]
                       flips=self.flips + verdict.flipped)

    def plus(self, other: OutputPairs) -> OutputPairs:
        """The counts of two runs of the same prompt on different cases (shards)."""
        return replace(self, **{f: getattr(self, f) + getattr(other, f) for f in COUNTS})  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutputPairs:
        return cls(str(data["prompt"]), **{f: int(data[f]) for f in COUNTS})

    def to_dict(self) -> dict[str, Any]:
        rate = self.flip_rate
        return {"prompt": self.prompt, "better": self.better, "worse": self.worse, "tie": self.tie,
                "identical": self.identical, "asked": self.asked, "flips": self.flips, "unread": self.unread,
                "flip_rate": None if rate is None else round(rate, 4)}

    def line(self) -> str:
        rate = "-" if self.flip_rate is None else f"{self.flip_rate:.3f}"
        extra = f"; {self.unread} unreadable" if self.unread else ""
        return (f"{self.prompt}: output now vs the baseline's (pairwise judge, both orders): better {self.better}, "
                f"worse {self.worse}, tie {self.tie} ({self.identical} identical, not asked); flip rate {rate} "
                f"({self.flips} of {self.asked} pairs){extra}")


def compare_outputs(client: LMClient, before: Baseline, now: Baseline, criteria: str,
                    model: str | None = None) -> tuple[OutputPairs, ...]:
    """Per prompt in both runs, its shared cases' outputs compared (all requests sent at once)."""
    counts: dict[str, OutputPairs] = {}
    jobs: list[tuple[str, str, str]] = []  # (prompt, output now, output in the baseline)
    for name, cases in sorted(now.prompts.items()):
        old = before.prompts.get(name)
        if old is None:
            continue
        counts[name] = OutputPairs(name)
        for nodeid, case in sorted(cases.cases.items()):
            prev = old.cases.get(nodeid)
            if prev is None or not case.output or not prev.output:
                continue
            if case.output == prev.output:
                counts[name] = replace(counts[name], tie=counts[name].tie + 1, identical=counts[name].identical + 1)
            else:
                jobs.append((name, case.output, prev.output))
    requests = [client.request(pair_messages(first, second, criteria), PAIR_PARAMS, model=model)
                for _, current, old_text in jobs for first, second in ((current, old_text), (old_text, current))]
    replies = client.complete_many(requests) if requests else []
    for index, (name, _, _) in enumerate(jobs):
        positions = _positions(replies[2 * index:2 * index + 2])
        counts[name] = replace(counts[name], unread=counts[name].unread + 1) if positions is None \
            else counts[name].add(pair_verdict(*positions, criteria))
    return tuple(counts.values())


def _positions(replies: Sequence[Completion | BaseException]) -> tuple[str, str] | None:
    """What each order picked (the output now shown first, then the baseline's), None if unread."""
    try:
        first, second = (read_position(r.text) for r in replies if isinstance(r, Completion))
    except (JudgeError, ValueError):  # ValueError: a failed call left fewer than two replies
        return None
    return first, second


__all__ = ["OutputPairs", "compare_outputs"]
