"""Calibration statistics and cards: checked against scikit-learn and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, matthews_corrcoef

from pytest_promptopt.run.calibration import (
    Confusion,
    agreement_metrics,
    choose_threshold,
    corrected_rate,
    kappa_of,
    mcc_of,
    split_halves,
)
from pytest_promptopt.run.card import ADVISORY, CALIBRATED, GATE, STALE, UNCALIBRATED, Card, build_card, trust_of


def labels_of(tp: int, fn: int, fp: int, tn: int) -> tuple[list[bool], list[bool]]:
    truth = [True] * (tp + fn) + [False] * (fp + tn)
    judged = [True] * tp + [False] * fn + [True] * fp + [False] * tn
    return truth, judged


def test_the_bootstrap_formulas_are_scikit_learns() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        tp, fn, fp, tn = (int(x) for x in rng.integers(0, 30, 4))
        truth, judged = labels_of(tp, fn, fp, tn)
        if len(set(truth)) < 2 or len(set(judged)) < 2:
            continue
        assert float(kappa_of(tp, fn, fp, tn)) == pytest.approx(cohen_kappa_score(truth, judged))
        assert float(mcc_of(tp, fn, fp, tn)) == pytest.approx(matthews_corrcoef(truth, judged))


def test_metrics_of_a_known_confusion_matrix() -> None:
    truth, judged = labels_of(tp=90, fn=10, fp=30, tn=70)
    confusion, m = agreement_metrics(truth, judged)
    assert confusion == Confusion(90, 10, 30, 70)
    assert m["prevalence"].value == 0.5 and m["agreement"].value == 0.8
    assert m["tpr"].value == 0.9 and m["tnr"].value == 0.7
    assert m["balanced_accuracy"].value == pytest.approx(0.8)
    assert m["kappa"].value == pytest.approx(0.6)  # po 0.8, pe 0.5
    assert m["mcc"].value == pytest.approx(matthews_corrcoef(truth, judged))
    for name, e in m.items():
        assert e.low is not None and e.high is not None and e.low <= e.value <= e.high, name  # type: ignore[operator]
    # Wilson on 90 of 100 (published: 0.8256 to 0.9448)
    assert (round(m["tpr"].low, 4), round(m["tpr"].high, 4)) == (0.8256, 0.9448)  # type: ignore[arg-type]
    assert 0.45 < m["kappa"].low < 0.55 and 0.65 < m["kappa"].high < 0.75  # type: ignore[operator]
    assert "Wilson" in m["tpr"].method and "bootstrap" in m["kappa"].method and "seed 0" in m["kappa"].method


def test_the_same_labels_give_the_same_intervals() -> None:
    truth, judged = labels_of(40, 10, 12, 38)
    assert agreement_metrics(truth, judged) == agreement_metrics(truth, judged)


def test_halves_are_stratified_and_stable() -> None:
    keys = [f"case {i}" for i in range(40)]
    truth = [i % 4 == 0 for i in range(40)]
    tune, rest = split_halves(keys, truth)
    assert sorted(tune + rest) == list(range(40)) and not set(tune) & set(rest)
    assert sum(truth[i] for i in tune) == sum(truth[i] for i in rest) == 5
    assert split_halves(keys, truth) == (tune, rest)


def test_the_threshold_is_chosen_on_one_half_and_reported_on_the_other() -> None:
    # scores separate the classes at 0.5; the configured 0.9 calls everything a fail
    keys = [f"c{i}" for i in range(80)]
    truth = [i < 40 for i in range(80)]
    scores = [0.6 + (i % 5) / 20 if t else 0.1 + (i % 5) / 20 for i, t in enumerate(truth)]
    choice = choose_threshold(keys, truth, scores, configured=0.9)
    assert 0.3 < choice.chosen <= 0.6
    assert (choice.tuned_on, choice.reported_on) == (40, 40)
    assert choice.kappa_chosen.value == 1.0 and choice.kappa_configured.value == 0.0


def test_rogan_gladen_recovers_the_true_rate() -> None:
    # true rate 0.5, TPR 0.9, TNR 0.7: a judge passes 0.5*0.9 + 0.5*0.3 = 0.6 of the cases
    e = corrected_rate(120, 200, Confusion(tp=108, fn=12, fp=36, tn=84))
    assert e.value == pytest.approx(0.5)
    assert e.low < 0.5 < e.high and e.high - e.low < 0.3  # type: ignore[operator]


def test_a_judge_no_better_than_chance_corrects_to_anything() -> None:
    e = corrected_rate(60, 100, Confusion(tp=25, fn=25, fp=25, tn=25))
    assert e.value is None and (e.low, e.high) == (0.0, 1.0)


def card(low_kappa_cases: bool = False) -> Card:
    truth, judged = labels_of(45, 5, 10, 40) if not low_kappa_cases else labels_of(30, 20, 22, 28)
    scores = [0.9 if j else 0.1 for j in judged]
    return build_card("j.yaml", {"criteria": "c", "model": "m"}, [str(i) for i in range(len(truth))], truth, scores, 0.5)


def test_trust_follows_status_and_the_kappa_bar() -> None:
    identity = {"criteria": "c", "model": "m"}
    assert trust_of(None, identity, GATE, 0.4).status == UNCALIBRATED and trust_of(None, identity, GATE, 0.4).gates
    assert not trust_of(None, identity, ADVISORY, 0.4).gates
    stale = trust_of(card(), {**identity, "model": "other"}, ADVISORY, 0.4)
    assert stale.status == STALE and not stale.gates and "model changed" in stale.reason
    good = trust_of(card(), identity, ADVISORY, 0.4)
    assert good.status == CALIBRATED and good.gates
    weak = trust_of(card(low_kappa_cases=True), identity, GATE, 0.4)
    assert weak.status == CALIBRATED and not weak.gates and "below the 0.40" in weak.reason
    assert trust_of(card(low_kappa_cases=True), identity, GATE, -1.0).gates  # today's behaviour


def test_a_card_round_trips_through_json() -> None:
    c = card()
    again = Card.from_dict(c.to_dict())
    assert again is not None and again.to_dict() == c.to_dict()
    assert Card.from_dict({"version": 99}) is None and Card.from_dict({"version": 1}) is None
