"""Panels of judges: several judge models grade each output; the verdict is their majority (or
mean score); their agreement is Krippendorff's alpha; hard cases go to a review file.

A case is hard when the members disagree on pass or fail, or when the panel's score sits within
`PANEL_REVIEW_MARGIN` of the threshold. It is appended to `<judge>.review.jsonl` next to the
judge file, in the labels file's format with `"verdict": null`: a human fills in the verdict,
and the next `--promptopt-calibrate` counts the filled-in lines as labels.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..defaults import PANEL_REVIEW_MARGIN
from .record import Verdict

_append_lock = threading.Lock()


def panel_verdict(members: Sequence[tuple[str, Verdict]], rule: str, threshold: float, criteria: str = "") -> Verdict:
    """One verdict of a panel. `majority`: the median-low member score (with an odd panel that is
    the majority's side; an even split fails, only a strict majority passes). `mean`: the mean score."""
    scores = sorted(v.score for _, v in members)
    score = sum(scores) / len(scores) if rule == "mean" else scores[(len(scores) - 1) // 2]
    passing = sum(v.score >= threshold for _, v in members)
    shown = "; ".join(f"{model}: {v.score:.2f}" + (f" ({v.reason[:120]})" if v.reason else "") for model, v in members)
    rule_text = f"mean score {score:.2f}" if rule == "mean" else f"{passing} of {len(members)} members pass"
    return Verdict(round(score, 4), threshold, f"panel {rule_text} [{shown}]", criteria, "",
                   members=tuple((model, v.score) for model, v in members))


def review_reason(verdict: Verdict, margin: float = PANEL_REVIEW_MARGIN) -> str | None:
    """Why a panel verdict needs a human, or None: the members disagree, or it sits near the threshold."""
    sides = {score >= verdict.threshold for _, score in verdict.members}
    if len(sides) > 1:
        votes = ", ".join(f"{m} {s:.2f}" for m, s in verdict.members)
        return f"the panel disagrees ({votes}; threshold {verdict.threshold:.2f})"
    if abs(verdict.score - verdict.threshold) < margin:
        return f"the panel's score {verdict.score:.2f} is within {margin:.2f} of the threshold {verdict.threshold:.2f}"
    return None


def _identity(case: Mapping[str, object]) -> str:
    return json.dumps([case.get("output"), case.get("expected"), case.get("inputs") or {}], sort_keys=True)


def append_review(path: Path, output: str, expected: str | None, note: str) -> bool:
    """Append a case to the review file unless it is there already; True when appended. One line,
    one write in append mode, so a concurrent appender never interleaves inside a line."""
    case: dict[str, object] = {"output": output, "verdict": None}
    if expected is not None:
        case["expected"] = expected
    case["note"] = note
    with _append_lock:
        if _identity(case) in review_identities(path):
            return False
        line = (json.dumps(case, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    return True


def review_identities(path: Path) -> set[str]:
    """The cases a review file holds already (unreadable lines are skipped: a human may be editing)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return set()
    found = set()
    for raw in text.splitlines():
        try:
            item = json.loads(raw)
        except ValueError:
            continue
        if isinstance(item, dict):
            found.add(_identity(item))
    return found


def krippendorff_alpha(ratings: Sequence[Sequence[float | None]], level: str) -> float | None:
    """Krippendorff's alpha of a panel (the `krippendorff` package): one row per member, one column
    per case, None where a member gave no verdict. None when undefined (one value only, or fewer
    than two cases with two ratings)."""
    import krippendorff  # numpy-backed: imported when a panel is reported, not on every run
    import numpy as np

    data = np.array([[math.nan if r is None else r for r in row] for row in ratings], dtype=float)
    paired = int((np.sum(~np.isnan(data), axis=0) >= 2).sum()) if data.size else 0
    if paired < 2 or len(set(data[~np.isnan(data)].tolist())) < 2:
        return None
    value = float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class PanelAgreement:
    """How far a panel's members agreed over a run: Krippendorff's alpha on their pass/fail
    verdicts (nominal) and on their scores (interval), and the verdicts they split on."""

    models: tuple[str, ...]
    verdicts: int
    disagreed: int
    alpha_pass_fail: float | None
    alpha_scores: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"models": list(self.models), "verdicts": self.verdicts, "disagreed": self.disagreed,
                "alpha_pass_fail": _rounded(self.alpha_pass_fail), "alpha_scores": _rounded(self.alpha_scores),
                "method": "Krippendorff's alpha (krippendorff package): nominal on pass/fail, interval on scores"}

    def line(self, name: str) -> str:
        def shown(value: float | None) -> str:
            return "undefined" if value is None else f"{value:.3f}"
        return (f"{name} panel of {len(self.models)} ({', '.join(self.models)}): Krippendorff's alpha "
                f"{shown(self.alpha_pass_fail)} on pass/fail, {shown(self.alpha_scores)} on scores, over "
                f"{self.verdicts} verdicts; the members split on {self.disagreed}")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def panel_agreement(cases: Sequence[tuple[Mapping[str, float], float]]) -> PanelAgreement:
    """The agreement of a panel from its verdicts: (member model -> score, threshold) each."""
    models = tuple(dict.fromkeys(m for scores, _ in cases for m in scores))
    scores = [[scores.get(m) for scores, _ in cases] for m in models]
    passes = [[None if s is None else float(s >= t) for s, (_, t) in zip(row, cases)] for row in scores]
    disagreed = sum(len({s >= t for s in member.values()}) > 1 for member, t in cases)
    return PanelAgreement(models, len(cases), disagreed, krippendorff_alpha(passes, "nominal"),
                          krippendorff_alpha(scores, "interval"))


__all__ = ["PanelAgreement", "append_review", "krippendorff_alpha", "panel_agreement", "panel_verdict", "review_identities", "review_reason"]
