"""Round trips for a panel of judges: a judge file naming several models, the majority (or mean)
verdict, Krippendorff's alpha in the report, and the review file feeding the next calibration.
The scripted judge answers differently per model name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import krippendorff
import pytest
import test_plugin_judge as base
from test_plugin_judge import output_of

from pytest_promptopt.testing import ScriptedServer

_clean_env, judge_server, judged = base._clean_env, base.judge_server, base.judged  # fixtures shared with it

MODELS = ("judge-a", "judge-b", "judge-c")
PANEL = """\
# three judges, one verdict
criteria: The reply is polite.
threshold: 0.5
models: [judge-a, judge-b, judge-c]
labels: polite.labels.jsonl
"""
OUTPUTS = ["Thanks, here you go.", "Go away.", "Sorry, no.", "Thanks. Sorry for the wait.", "ok"]
TESTS = f"""
import pytest
from pytest_promptopt import load_judge

polite = load_judge("judges/polite.yaml")

@pytest.mark.parametrize("reply", {OUTPUTS!r})
def test_reply(judge, reply):
    judge(reply, polite)
"""
LABELS = ['{"output": "Thanks a lot!", "verdict": "pass"}', '{"output": "Thanks, done.", "verdict": "pass"}',
          '{"output": "No.", "verdict": "fail"}', '{"output": "Whatever.", "verdict": "fail"}']


def member_score(model: str, output: str) -> float:
    """judge-a and judge-b agree; judge-c also passes an apology."""
    text = output.casefold()
    if "thanks" in text or (model == "judge-c" and "sorry" in text):
        return 0.9
    return 0.55 if text == "ok" else 0.1


def by_model(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    return f"score: {member_score(body['model'], output_of(messages))}"


@pytest.fixture
def panel(judged: pytest.Pytester, judge_server: ScriptedServer) -> pytest.Pytester:
    judge_server.responder = by_model
    (judged.path / "judges").mkdir()
    (judged.path / "judges" / "polite.yaml").write_text(PANEL, encoding="utf-8")
    (judged.path / "judges" / "polite.labels.jsonl").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    judged.makepyfile(test_replies=TESTS)
    return judged


def review_lines(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "judges" / "polite.review.jsonl").read_text().splitlines()]


def test_the_majority_decides_alpha_is_reported_and_hard_cases_go_to_review(
        panel: pytest.Pytester, judge_server: ScriptedServer) -> None:
    result = panel.runpytest("--promptopt-report=report.json")
    result.assert_outcomes(passed=3, failed=2)  # "Sorry, no." fails 2 to 1; "ok" passes at 0.55
    assert sorted(b["model"] for b in judge_server.requests) == sorted(MODELS * len(OUTPUTS))  # each member asked
    (row,) = json.loads((panel.path / "report.json").read_text())["judges"]
    agreement = row["panel"]
    assert agreement["models"] == list(MODELS) and agreement["verdicts"] == 5 and agreement["disagreed"] == 1
    passes = [[float(member_score(m, o) >= 0.5) for o in OUTPUTS] for m in MODELS]
    expected = krippendorff.alpha(reliability_data=passes, level_of_measurement="nominal")
    assert agreement["alpha_pass_fail"] == pytest.approx(expected, abs=1e-4)
    assert "panel of 3 (judge-a, judge-b, judge-c): Krippendorff's alpha" in result.stdout.str()
    review = review_lines(panel.path)
    assert [(r["output"], r["verdict"]) for r in review] == [("Sorry, no.", None), ("ok", None)]
    assert "disagrees" in review[0]["note"] and "within 0.10 of the threshold" in review[1]["note"]
    panel.runpytest().assert_outcomes(passed=3, failed=2)
    assert len(review_lines(panel.path)) == 2  # a case is listed once, however many runs


def test_a_human_labelled_review_case_feeds_the_next_calibration(panel: pytest.Pytester) -> None:
    panel.runpytest()
    review = review_lines(panel.path)
    review[0]["verdict"] = "fail"  # the human decides the apology is not polite enough
    text = "\n".join(json.dumps(r) for r in review) + "\n"
    (panel.path / "judges" / "polite.review.jsonl").write_text(text)
    panel.runpytest("--promptopt-calibrate").assert_outcomes()
    card = json.loads((panel.path / "judges" / "polite.card.json").read_text())
    assert card["labels"] == len(LABELS) + 1  # the labels and the one reviewed case
    assert card["identity"]["model"] == "judge-a, judge-b, judge-c" and card["identity"]["panel"] == "majority"
    panel.runpytest("--promptopt-report=report.json")  # the unlabelled review line does not make the card stale
    (row,) = json.loads((panel.path / "report.json").read_text())["judges"]
    assert row["status"] == "calibrated"


def test_a_mean_panel_scores_the_mean(panel: pytest.Pytester) -> None:
    (panel.path / "judges" / "polite.yaml").write_text(PANEL + "panel: mean\n", encoding="utf-8")
    panel.runpytest("--promptopt-report=report.json").assert_outcomes(passed=3, failed=2)
    tests = json.loads((panel.path / "report.json").read_text())["tests"]
    sorry = next(t for t in tests if "Sorry, no." in t["nodeid"])
    assert sorry["verdicts"][0]["score"] == pytest.approx((0.1 + 0.1 + 0.9) / 3, abs=1e-4)
