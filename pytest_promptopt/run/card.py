"""Calibration cards: what a judge's labels said about it, tied to the judge it measured.

A card is JSON next to the judge file (`polite.yaml` -> `polite.card.json`), written atomically.
It records the judge's identity as measured (criteria, wording digest, mode, model, endpoint,
threshold, labels digest): a judge whose identity differs now is `stale`, one without a card
`uncalibrated`. Whether a judge may gate follows from its status and its kappa's lower bound.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from .calibration import BOOTSTRAP, WILSON, Confusion, Estimate, ThresholdChoice, agreement_metrics, choose_threshold

CARD_VERSION = 1
CALIBRATED, UNCALIBRATED, STALE = "calibrated", "uncalibrated", "stale"
GATE, ADVISORY = "gate", "advisory"
UNCALIBRATED_POLICIES = (GATE, ADVISORY)


@dataclass(frozen=True)
class Card:
    judge: str  # the judge file's name
    identity: Mapping[str, Any]
    confusion: Confusion
    metrics: Mapping[str, Estimate]
    threshold: Mapping[str, Any]  # ThresholdChoice.to_dict()
    ungraded: int = 0  # labelled cases the judge's reply could not be read for: left out
    warnings: tuple[str, ...] = ()

    @property
    def kappa(self) -> Estimate:
        return self.metrics["kappa"]

    def to_dict(self) -> dict[str, Any]:
        return {"version": CARD_VERSION, "judge": self.judge, "identity": dict(self.identity),
                "labels": self.confusion.n, "positives": self.confusion.positives,
                "negatives": self.confusion.negatives, "ungraded": self.ungraded,
                "confusion": self.confusion.to_dict(),
                "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
                "threshold": dict(self.threshold),
                "methods": {"proportions": WILSON, "kappa, mcc, balanced accuracy": BOOTSTRAP,
                            "kappa, mcc": "scikit-learn cohen_kappa_score, matthews_corrcoef"},
                "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, data: Any) -> Card | None:
        """A card read back; None for anything this version did not write (treated as no card)."""
        try:
            if data.get("version") != CARD_VERSION:
                return None
            c = data["confusion"]
            return cls(str(data["judge"]), dict(data["identity"]), Confusion(int(c["tp"]), int(c["fn"]), int(c["fp"]),
                                                                             int(c["tn"])),
                       {str(k): Estimate.from_dict(v) for k, v in data["metrics"].items()}, dict(data["threshold"]),
                       int(data.get("ungraded", 0)), tuple(str(w) for w in data.get("warnings", ())))
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


def build_card(judge: str, identity: Mapping[str, Any], keys: Sequence[str], truth: Sequence[bool],
               scores: Sequence[float], threshold: float, *, ungraded: int = 0,
               warnings: Sequence[str] = ()) -> Card:
    """A card from the judge's scores on the labelled cases it could grade."""
    confusion, metrics = agreement_metrics(truth, [s >= threshold for s in scores])
    notes = list(warnings)
    choice: dict[str, Any] = {"configured": threshold}
    if min(confusion.positives, confusion.negatives) >= 4:
        choice = choose_threshold(keys, truth, scores, threshold).to_dict()
    else:
        notes.append("too few cases of a class to choose a threshold on half of the labels and test it on the other")
    if ungraded:
        notes.append(f"{ungraded} labelled case(s) left out: the judge's reply had no readable verdict")
    return Card(judge, identity, confusion, metrics, choice, ungraded, tuple(notes))


def read_card(path: Path) -> Card | None:
    try:
        return Card.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def write_card(path: Path, card: Card) -> None:
    write_atomic(path, (json.dumps(card.to_dict(), indent=2) + "\n").encode("utf-8"))


@dataclass(frozen=True)
class JudgeTrust:
    """What a judge's card lets it do in this run."""

    status: str  # calibrated | uncalibrated | stale
    gates: bool  # its verdicts fail tests and count; else advisory: shown, not counted
    reason: str
    card: Card | None = None

    def to_dict(self) -> dict[str, Any]:
        card = self.card
        metrics = {} if card is None else {k: card.metrics[k].to_dict() for k in ("agreement", "kappa", "tpr", "tnr")}
        return {"status": self.status, "gates": self.gates, "reason": self.reason,
                "labels": None if card is None else card.confusion.n, **metrics}


def changed_fields(measured: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(measured) | set(now) if measured.get(k) != now.get(k))


def trust_of(card: Card | None, identity: Mapping[str, Any], uncalibrated: str, min_kappa: float) -> JudgeTrust:
    """The rule: a calibrated judge gates when its kappa's lower bound reaches `min_kappa`; an
    uncalibrated or stale one does what `uncalibrated` says (gate or advisory)."""
    policy_gates = uncalibrated == GATE
    if card is None:
        return JudgeTrust(UNCALIBRATED, policy_gates, f"no calibration card; uncalibrated judges: {uncalibrated}")
    changed = changed_fields(card.identity, identity)
    if changed:
        return JudgeTrust(STALE, policy_gates, f"the card measured another judge ({', '.join(changed)} changed); "
                                               f"stale judges: {uncalibrated}", card)
    low = card.kappa.low
    if low is None or low < min_kappa:
        shown = "undefined" if low is None else f"{low:.2f}"
        return JudgeTrust(CALIBRATED, False, f"kappa lower bound {shown} is below the {min_kappa:.2f} a judge "
                                             "needs to gate", card)
    return JudgeTrust(CALIBRATED, True, f"kappa lower bound {low:.2f} >= {min_kappa:.2f}", card)


__all__ = [
    "ADVISORY",
    "CALIBRATED",
    "GATE",
    "STALE",
    "UNCALIBRATED",
    "Card",
    "JudgeTrust",
    "ThresholdChoice",
    "build_card",
    "read_card",
    "trust_of",
    "write_card",
]
