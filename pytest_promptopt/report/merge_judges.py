"""The judges' section of a merged run: counted again from the merged cases, trusted as the shards said.

Verdict counts, draws that flipped, pairwise flip and first-position rates and a panel's
Krippendorff's alpha are recomputed from every shard's cases with the code a plain run uses (an
alpha over the whole run is not a mean of the shards' alphas). Whether a judge was calibrated,
stale or uncalibrated and whether it gated is what the shards reported, and they must agree; its
card's figures and the corrected pass rates come from the card in the merging checkout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..prompts.judgefile import CARD_SUFFIX
from ..run.card import UNCALIBRATED, JudgeTrust, read_card
from ..run.judge import INLINE_JUDGE
from ..run.record import CaseOutcome
from .judges import CorrectedRate, JudgeRow, corrected_rates, judge_rows
from .shard_reader import JudgeSeen, MergeError, ShardReport
from .summary import display


def merged_judges(shards: Sequence[ShardReport], outcomes: Sequence[CaseOutcome],
                  root: Path) -> tuple[tuple[JudgeRow, ...], tuple[CorrectedRate, ...]]:
    seen = _agreed(shards)

    def trust(key: str) -> JudgeTrust:
        name = next((n for n in seen if n.startswith("inline ")), None) if key == INLINE_JUDGE else display(key, root)
        said = seen.get(name or "")
        if said is None:  # a verdict names a judge no shard's table lists: reports of another version
            raise MergeError(f"judge {name or key} graded cases but no shard's judges table lists it; merge the "
                             f"reports of one pytest-promptopt version ({', '.join(str(s.path) for s in shards)})")
        card = None if said.status == UNCALIBRATED else read_card(Path(key).with_name(Path(key).stem + CARD_SUFFIX))
        return JudgeTrust(said.status, said.gates, said.reason, card)

    rows = judge_rows(outcomes, trust, root)
    return tuple(rows), tuple(corrected_rates(outcomes, rows, root))


def _agreed(shards: Sequence[ShardReport]) -> dict[str, JudgeSeen]:
    first: dict[str, tuple[ShardReport, JudgeSeen]] = {}
    for shard in shards:
        for name, said in shard.judges.items():
            kept = first.setdefault(name, (shard, said))
            if (kept[1].status, kept[1].gates) != (said.status, said.gates):
                raise MergeError(f"{kept[0].path} saw judge {name} as {kept[1].status} (gates: {kept[1].gates}), "
                                 f"{shard.path} as {said.status} (gates: {said.gates}); run every shard at the same "
                                 "commit with the same judge settings")
    return {name: said for name, (_, said) in first.items()}


__all__ = ["merged_judges"]
