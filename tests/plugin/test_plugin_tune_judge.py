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


def grader(knows: Any, template: str = "Careless wording.") -> Any:
    """A judge that grades right when `knows(messages)` and flips a coin otherwise; as optimizer
    model it proposes `template` as a template and only careless criteria."""
    def answer(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        if messages[0]["content"] in (REWRITE_SYSTEM, TEMPLATE_SYSTEM):
            return template if messages[0]["content"] == TEMPLATE_SYSTEM else "Careless wording."
        output = messages[-1]["content"].split(">\n", 1)[1].split("\n</OUTPUT", 1)[0]
        if knows(messages):
            return "score: 0.9" if output.startswith("good") else "score: 0.1"
        return "score: 0.9" if coin(output) < 0.5 else "score: 0.1"
    return answer


def shown_demos_responder() -> Any:
    """Grades right only when shown graded exchanges (demos) before the case."""
    return grader(lambda messages: any(m["role"] == "assistant" for m in messages))


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
    assert "kappa 1.000" in again and "76 labels" in again, again  # its own 4 demos are not graded
    assert "4 labelled case(s) are the judge's own demos and were not graded" in again, again


def template_responder() -> Any:
    """Grades right only when its system prompt says to GRADE BY THE NOTE, which the optimizer
    model proposes as a template."""
    return grader(lambda messages: "GRADE BY THE NOTE" in messages[0]["content"],
                  template="GRADE BY THE NOTE: read the reply as the customer would.")


def test_a_tuned_template_is_written_as_the_judges_system_prompt_with_its_guard(
        tuning: pytest.Pytester, scripted: ScriptedServer) -> None:
    from pytest_promptopt.prompts.judgefile import load_judge
    from pytest_promptopt.run.judge import ANSWER_FORMAT, DATA_NOT_INSTRUCTIONS

    scripted.responder = template_responder()
    out = tuning.runpytest("--promptopt-optimize-judges", "--promptopt-judge-mode=score").stdout.str()
    assert "1 template" in out and "(template)" in out, out  # the medium preset asks for 2: the same text twice
    assert "written back: holdout 1.000 > the original's interval upper end" in out, out
    path = tuning.path / "judges" / "support.yaml"
    text = path.read_text()
    assert text.startswith(JUDGE_FILE) and "\nsystem: " in text  # added at the end, every other byte kept
    judge = load_judge(path)
    assert judge.system is not None and judge.system.startswith("GRADE BY THE NOTE")
    assert DATA_NOT_INSTRUCTIONS in judge.system and ANSWER_FORMAT["score"] in judge.system
    again = tuning.runpytest("--promptopt-calibrate", "--promptopt-judge-mode=score").stdout.str()
    assert "kappa 1.000" in again, again  # the written template is the one graded


TOPICS = 20
TOPIC_LABELS = [{"output": f"topic{i % TOPICS} reply {i}", "verdict": "pass" if i % TOPICS < TOPICS // 2 else "fail"}
                for i in range(80)]


def nearest_copy_responder(asked: list[list[dict[str, str]]]) -> Any:
    """A judge that copies the verdict of the last graded exchange it was shown when that case is
    on the same topic as the one it grades, and flips a coin otherwise: it grades right only when
    shown the labelled case nearest each output (retrieval), not a fixed demo set."""
    def topic(user: str) -> str:
        return user.split(">\n", 1)[1].split(" ", 1)[0]

    def answer(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        if messages[0]["content"] in (REWRITE_SYSTEM, TEMPLATE_SYSTEM):
            return "Careless wording."
        asked.append(messages)
        case = topic(messages[-1]["content"])
        if len(messages) > 2 and topic(messages[-3]["content"]) == case:
            return "score: 0.9" if messages[-2]["content"] == "yes" or '"score": 1.0' in messages[-2]["content"] \
                else "score: 0.1"
        graded = messages[-1]["content"].split(">\n", 1)[1].split("\n</OUTPUT", 1)[0]
        return "score: 0.9" if coin(graded) < 0.5 else "score: 0.1"
    return answer


def test_a_judge_that_needs_the_nearest_labels_gets_retrieve_and_calibrates_leave_one_out(
        tuning: pytest.Pytester, scripted: ScriptedServer) -> None:
    from pytest_promptopt.prompts.judgefile import load_judge

    labels = tuning.path / "judges" / "support.labels.jsonl"
    labels.write_text("".join(json.dumps(c) + "\n" for c in TOPIC_LABELS))
    asked: list[list[dict[str, str]]] = []
    scripted.responder = nearest_copy_responder(asked)
    out = tuning.runpytest("--promptopt-optimize-judges", "--optimize-preset=light").stdout.str()
    assert "(1 criteria, 1 template, 1 demos, 1 retrieve)" in out, out  # light: 2 rewrites asked, the same twice
    assert "(4 retrieved labels per call)" in out and "written back" in out, out
    path = tuning.path / "judges" / "support.yaml"
    assert path.read_text() == JUDGE_FILE + "retrieve: {k: 4}\n"
    assert load_judge(path).retrieve_k == 4
    from pytest_promptopt.optimize.judges import split_three
    parts = split_three([f"{c['output']}\nNone" for c in TOPIC_LABELS],
                        [c["verdict"] == "pass" for c in TOPIC_LABELS])
    train = {TOPIC_LABELS[i]["output"] for i in parts["train"]}
    held = {TOPIC_LABELS[i]["output"] for i in parts["validation"] + parts["holdout"]}
    held_with_neighbours = 0
    for messages in asked:  # while tuning, every case is shown train labels only, never itself
        graded = messages[-1]["content"].split(">\n", 1)[1].split("\n</OUTPUT", 1)[0]
        shown = {m["content"].split(">\n", 1)[1].split("\n</OUTPUT", 1)[0] for m in messages[1:-1] if m["role"] == "user"}
        assert graded not in shown and shown <= train, (graded, shown)
        held_with_neighbours += graded in held and len(shown) == 4
    assert held_with_neighbours == len(held)  # the best (retrieval) scored on validation and holdout
    asked.clear()
    again = tuning.runpytest("--promptopt-calibrate").stdout.str()
    assert "80 labels" in again and "kappa 1.000" in again, again  # every label, each graded beside its neighbours
    assert all(len(m) == 2 + 2 * 4 for m in asked)
