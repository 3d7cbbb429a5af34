"""How far a judge's verdicts can be trusted, measured on labelled cases. Pure: no pytest, no LM.

- Point estimates of Cohen's kappa and the Matthews correlation come from scikit-learn
  (`cohen_kappa_score`, `matthews_corrcoef`); the confusion matrix from its `confusion_matrix`.
- Proportions (prevalence, agreement, TPR, TNR) get a 95% Wilson score interval (stats.wilson).
- Kappa, MCC and balanced accuracy get a 95% percentile bootstrap interval: `RESAMPLES` resamples
  with a fixed seed, stratified by the human verdict (each resample keeps the labels' numbers of
  passing and failing cases, so no resample lacks a class). Per resample they are computed from
  the resample's confusion counts with the formulas scikit-learn uses (a unit test checks the two
  agree), because calling scikit-learn 2,000 times per metric would take seconds per judge.
- The threshold that maximizes kappa is chosen on one half of the labels (a deterministic split,
  stratified by verdict) and its kappa is reported on the other half, so it is not flattered by
  being chosen on the cases it is judged on.
- `corrected_rate`: a judge's observed pass rate corrected for its error rates (Rogan-Gladen:
  (p + TNR - 1) / (TPR + TNR - 1)), with an interval from a parametric bootstrap that redraws the
  observed rate and the labels' TPR and TNR (so the labels' uncertainty is carried).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..stats import wilson

# numpy and scikit-learn are imported where a card is computed, not on every run: importing
# sklearn.metrics costs about a second, paid by every pytest process that loads the plugin.

RESAMPLES = 2000
SEED = 0
WILSON = "Wilson score 95%"
BOOTSTRAP = f"stratified percentile bootstrap 95% ({RESAMPLES} resamples, seed {SEED})"


@dataclass(frozen=True)
class Estimate:
    value: float | None  # None: undefined on these labels (e.g. kappa when the judge says one thing only)
    low: float | None
    high: float | None
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": _r(self.value), "low": _r(self.low), "high": _r(self.high), "method": self.method}

    @classmethod
    def from_dict(cls, data: Any) -> Estimate:
        return cls(*(None if data.get(k) is None else float(data[k]) for k in ("value", "low", "high")),
                   str(data.get("method", "")))


@dataclass(frozen=True)
class Confusion:
    """Human verdict x judge verdict: tp = both pass, fn = human pass / judge fail, and so on."""

    tp: int
    fn: int
    fp: int
    tn: int

    @property
    def positives(self) -> int:
        return self.tp + self.fn

    @property
    def negatives(self) -> int:
        return self.fp + self.tn

    @property
    def n(self) -> int:
        return self.positives + self.negatives

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fn": self.fn, "fp": self.fp, "tn": self.tn}

    @classmethod
    def of(cls, truth: Sequence[bool], judged: Sequence[bool]) -> Confusion:
        from sklearn.metrics import confusion_matrix

        (tn, fp), (fn, tp) = confusion_matrix(list(truth), list(judged), labels=[False, True]).tolist()
        return cls(int(tp), int(fn), int(fp), int(tn))


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _proportion(successes: int, n: int) -> Estimate:
    if n == 0:
        return Estimate(None, None, None, WILSON)
    interval = wilson(successes, n)
    return Estimate(successes / n, interval.low, interval.high, WILSON)


def kappa_of(tp: Any, fn: Any, fp: Any, tn: Any) -> Any:
    """Cohen's kappa from confusion counts (arrays welcome): (po - pe) / (1 - pe)."""
    import numpy as np
    n = tp + fn + fp + tn
    po = (tp + tn) / n
    pe = ((tp + fn) * (tp + fp) + (fp + tn) * (fn + tn)) / (n * n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pe < 1, (po - pe) / np.where(pe < 1, 1 - pe, 1), np.nan)


def mcc_of(tp: Any, fn: Any, fp: Any, tn: Any) -> Any:
    """Matthews correlation from confusion counts; 0 where a margin is empty (as scikit-learn)."""
    import numpy as np
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, (tp * tn - fp * fn) / np.where(denominator > 0, denominator, 1), 0.0)


def _bootstrap(truth: np.ndarray, judged: np.ndarray) -> dict[str, tuple[float, float]]:
    """Percentile intervals of kappa, MCC and balanced accuracy, resampling within each class."""
    import numpy as np
    rng = np.random.default_rng(SEED)
    pos, neg = judged[truth], judged[~truth]
    tp = rng.binomial(len(pos), pos.mean(), RESAMPLES) if len(pos) else np.zeros(RESAMPLES)
    fp = rng.binomial(len(neg), neg.mean(), RESAMPLES) if len(neg) else np.zeros(RESAMPLES)
    fn, tn = len(pos) - tp, len(neg) - fp
    tp, fn, fp, tn = (np.asarray(a, dtype=float) for a in (tp, fn, fp, tn))
    balanced = (tp / max(len(pos), 1) + tn / max(len(neg), 1)) / 2
    out = {}
    for name, values in (("kappa", kappa_of(tp, fn, fp, tn)), ("mcc", mcc_of(tp, fn, fp, tn)),
                         ("balanced_accuracy", balanced)):
        finite = values[np.isfinite(values)]
        out[name] = (float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))) if len(finite) else (-1.0, 1.0)
    return out


def agreement_metrics(truth: Sequence[bool], judged: Sequence[bool]) -> tuple[Confusion, dict[str, Estimate]]:
    """Every figure of a card for one threshold's verdicts, each with its 95% interval."""
    import numpy as np
    from sklearn.metrics import cohen_kappa_score, matthews_corrcoef

    c = Confusion.of(truth, judged)
    t, j = np.asarray(truth, dtype=bool), np.asarray(judged, dtype=bool)
    one_verdict = len(set(judged)) < 2  # the judge said one thing only: kappa is 0 by definition here
    kappa = 0.0 if one_verdict else float(cohen_kappa_score(t, j))
    mcc = float(matthews_corrcoef(t, j))
    tpr = c.tp / c.positives if c.positives else 0.0
    tnr = c.tn / c.negatives if c.negatives else 0.0
    boot = _bootstrap(t, j)
    metrics = {
        "prevalence": _proportion(c.positives, c.n),
        "agreement": _proportion(c.tp + c.tn, c.n),
        "kappa": Estimate(kappa, *boot["kappa"], BOOTSTRAP),
        "tpr": _proportion(c.tp, c.positives),
        "tnr": _proportion(c.tn, c.negatives),
        "balanced_accuracy": Estimate((tpr + tnr) / 2, *boot["balanced_accuracy"], BOOTSTRAP),
        "mcc": Estimate(mcc, *boot["mcc"], BOOTSTRAP),
    }
    return c, metrics


def split_halves(keys: Sequence[str], truth: Sequence[bool]) -> tuple[list[int], list[int]]:
    """Indexes of a tuning half and a reporting half: within each class, cases ordered by the
    digest of their key and dealt alternately. The same labels always split the same way."""
    tune: list[int] = []
    rest: list[int] = []
    for cls in (True, False):
        members = sorted((i for i, t in enumerate(truth) if t is cls),
                         key=lambda i: hashlib.sha256(keys[i].encode("utf-8")).hexdigest())
        for rank, i in enumerate(members):
            (tune if rank % 2 == 0 else rest).append(i)
    return sorted(tune), sorted(rest)


@dataclass(frozen=True)
class ThresholdChoice:
    configured: float
    chosen: float
    tuned_on: int  # cases the threshold was chosen on
    reported_on: int  # cases the figures below are from (the other half)
    kappa_chosen: Estimate  # on the reporting half
    kappa_configured: Estimate  # the configured threshold's, on the same half

    def to_dict(self) -> dict[str, Any]:
        return {"configured": self.configured, "chosen": _r(self.chosen), "tuned_on": self.tuned_on,
                "reported_on": self.reported_on, "kappa_at_chosen": self.kappa_chosen.to_dict(),
                "kappa_at_configured": self.kappa_configured.to_dict()}


def choose_threshold(keys: Sequence[str], truth: Sequence[bool], scores: Sequence[float],
                     configured: float) -> ThresholdChoice:
    """The threshold maximizing kappa on one half, and kappa at it on the other half."""
    tune, rest = split_halves(keys, truth)
    candidates = sorted({configured, *(scores[i] for i in tune)})

    from sklearn.metrics import cohen_kappa_score

    def kappa_on(indexes: list[int], threshold: float) -> float:
        judged = [scores[i] >= threshold for i in indexes]
        if len(set(judged)) < 2:
            return 0.0
        return float(cohen_kappa_score([truth[i] for i in indexes], judged))

    # ties: the candidate nearest the configured threshold (no move without a gain)
    chosen = max(candidates, key=lambda t: (round(kappa_on(tune, t), 12), -abs(t - configured)))
    rest_truth = [truth[i] for i in rest]
    at_chosen = agreement_metrics(rest_truth, [scores[i] >= chosen for i in rest])[1]["kappa"]
    at_configured = agreement_metrics(rest_truth, [scores[i] >= configured for i in rest])[1]["kappa"]
    return ThresholdChoice(configured, chosen, len(tune), len(rest), at_chosen, at_configured)


def corrected_rate(observed_pass: int, n: int, c: Confusion) -> Estimate:
    """The true pass rate behind a judge's observed one (Rogan-Gladen), with a 95% interval that
    carries the uncertainty of the observed rate and of the labels' TPR and TNR."""
    import numpy as np
    method = f"Rogan-Gladen; parametric bootstrap over the run's cases and the labels ({RESAMPLES} resamples, seed {SEED})"
    if n == 0 or not c.positives or not c.negatives:
        return Estimate(None, None, None, method)
    p, tpr, tnr = observed_pass / n, c.tp / c.positives, c.tn / c.negatives
    youden = tpr + tnr - 1
    point = None if youden <= 0 else min(1.0, max(0.0, (p + tnr - 1) / youden))
    rng = np.random.default_rng(SEED)
    p_star = rng.binomial(n, p, RESAMPLES) / n
    tpr_star = rng.binomial(c.positives, tpr, RESAMPLES) / c.positives
    tnr_star = rng.binomial(c.negatives, tnr, RESAMPLES) / c.negatives
    j_star = tpr_star + tnr_star - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        star = np.clip((p_star + tnr_star - 1) / j_star, 0.0, 1.0)
    valid = star[j_star > 0]
    if point is None or len(valid) < 0.95 * RESAMPLES:  # the judge may be no better than chance
        return Estimate(point, 0.0, 1.0, method + "; the judge is not clearly better than chance: anything is possible")
    return Estimate(point, float(np.percentile(valid, 2.5)), float(np.percentile(valid, 97.5)), method)
