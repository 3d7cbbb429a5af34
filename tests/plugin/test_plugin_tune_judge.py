"""Round trips for `--promptopt-optimize-judges`: a judge's criteria tuned against its labels,
written back only when the holdout figure beats the original's interval, the card refreshed on
the labels it was not tuned on. One scripted server plays the judge and the optimizer model:
the judge grades right only under criteria that contain TUNED, and flips a coin otherwise."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from pytest_promptopt.optimize.judges import REWRITE_SYSTEM, TEMPLATE_SYSTEM
from pytest_promptopt.testing import ScriptedServer

JUDGE_FILE = """\
# The support judge. Keep this comment.
criteria: The reply is good.   # first wording
threshold: 0.5  # pass at 0.5
labels: support.labels.jsonl
"""
LABELS = [{"output": f"{'good' if i % 2 == 0 else 'bad'} reply number {i}", "verdict": "pass" if i % 2 == 0 else "fail",
           "note": "answers and thanks" if i % 2 == 0 else "blames the customer"} for i in range(80)]
TUNED = "TUNED: the reply answers the question and thanks the customer; blaming the customer fails."


def coin(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8


def responder(proposals: list[str]) -> Any:
    seen: list[str] = []

    def answer(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        if messages[0]["content"] == TEMPLATE_SYSTEM:  # the optimizer model, asked for a template
            return "Grade carefully."
        if messages[0]["content"] == REWRITE_SYSTEM:  # the optimizer model, asked for criteria
            seen.append(messages[1]["content"])
            return proposals[len(seen) % len(proposals)]
        user = messages[-1]["content"]
        output = user.split(">\n", 1)[1].split("\n</OUTPUT", 1)[0]
        if "TUNED" in user.split("OUTPUT", 1)[0]:
            return "score: 0.9" if output.startswith("good") else "score: 0.1"
        return "score: 0.9" if coin(output) < 0.5 else "score: 0.1"

    answer.seen = seen  # type: ignore[attr-defined]
    return answer


@pytest.fixture
def tuning(pytester: pytest.Pytester, scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")
    pytester.makeini(f"""
        [pytest]
        promptopt_base_url = {scripted.base_url}
        promptopt_model = scripted
        promptopt_retries = 1
        """)
    (pytester.path / "judges").mkdir()
    (pytester.path / "judges" / "support.yaml").write_text(JUDGE_FILE)
    (pytester.path / "judges" / "support.labels.jsonl").write_text("".join(json.dumps(c) + "\n" for c in LABELS))
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    return pytester


def test_a_tuned_judge_is_written_back_minimally_and_its_card_measured_on_unseen_labels(
        tuning: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = responder(["Careless wording.", TUNED])
    result = tuning.runpytest("--promptopt-optimize-judges")
    out = result.stdout.str()
    assert "labels split train 40 / validation 20 / holdout 20" in out and "objective kappa" in out, out
    assert "written back: holdout 1.000 > the original's interval upper end" in out, out
    text = (tuning.path / "judges" / "support.yaml").read_text()
    assert text == JUDGE_FILE.replace("The reply is good.", f'"{TUNED}"')  # one value replaced, comments kept
    card = json.loads((tuning.path / "judges" / "support.card.json").read_text())
    assert card["labels"] == 40 and card["identity"]["criteria"] == TUNED  # validation + holdout only
    assert any("validation and holdout labels only" in w for w in card["warnings"])
    evidence = scripted.responder.seen[0]  # type: ignore[attr-defined]
    assert "human's note" in evidence and ("blames the customer" in evidence or "answers and thanks" in evidence)
    assert "no tests ran" in out


def test_a_rewrite_that_does_not_beat_the_holdout_interval_is_not_written(
        tuning: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = responder(["Careless wording.", "Another careless wording."])
    out = tuning.runpytest("--promptopt-optimize-judges", "--promptopt-judge-objective=balanced_accuracy").stdout.str()
    assert "objective balanced_accuracy" in out and "not written:" in out, out
    assert (tuning.path / "judges" / "support.yaml").read_text() == JUDGE_FILE
    assert not (tuning.path / "judges" / "support.card.json").exists()


def shown_demos_responder() -> Any:
    """A judge that grades right only when it was shown graded exchanges (demos) before the case,
    and flips a coin otherwise; the optimizer model's rewrites never help it."""
    def answer(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        if messages[0]["content"] in (REWRITE_SYSTEM, TEMPLATE_SYSTEM):
            return "Careless wording."
        output = messages[-1]["content"].split(">\n", 1)[1].split("\n</OUTPUT", 1)[0]
        if any(m["role"] == "assistant" for m in messages):
            return "score: 0.9" if output.startswith("good") else "score: 0.1"
        return "score: 0.9" if coin(output) < 0.5 else "score: 0.1"
    return answer


def test_a_judge_that_needs_demos_gets_train_labels_written_as_demos(
        tuning: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = shown_demos_responder()
    out = tuning.runpytest("--promptopt-optimize-judges").stdout.str()
    assert "written back: holdout 1.000 > the original's interval upper end" in out, out
    assert "3 demos" in out and "(4 demos)" in out, out  # 3 demo sets tried; the best shows 4
    path = tuning.path / "judges" / "support.yaml"
    text = path.read_text()
    assert text.startswith(JUDGE_FILE) and "\ndemos:\n" in text  # criteria and comments kept, demos added
    from pytest_promptopt.optimize.judges import split_three
    from pytest_promptopt.prompts.judgefile import load_judge
    judge = load_judge(path)
    assert judge.criteria == "The reply is good." and len(judge.demos) == 4
    assert [d.score for d in judge.demos] == [1.0, 0.0, 1.0, 0.0]
    train = split_three([f"{c['output']}\nNone" for c in LABELS], [c["verdict"] == "pass" for c in LABELS])["train"]
    assert {d.output for d in judge.demos} <= {LABELS[i]["output"] for i in train}  # train labels only
    card = json.loads((tuning.path / "judges" / "support.card.json").read_text())
    assert card["labels"] == 40 and card["metrics"]["kappa"]["value"] == 1.0  # validation + holdout, with demos
    # the written judge is current (its card measured it, demos included) and grades with its demos
    again = tuning.runpytest("--promptopt-calibrate").stdout.str()
    assert "kappa 1.000" in again, again
