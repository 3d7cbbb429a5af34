"""Round trips for judge files: `judge(output, load_judge(...))` next to inline criteria."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import test_plugin_judge as base
from test_plugin_judge import output_of

from pytest_promptopt.testing import ScriptedServer

_clean_env, judge_server, judged = base._clean_env, base.judge_server, base.judged  # fixtures shared with it

JUDGE_FILE = """\
# A judge kept in a file
criteria: Names the right capital city.
threshold: 0.5
model: strict-grader
system: |
  You grade capital cities. Reply with JSON {"score": 0..1, "reason": "..."} only.
"""

TESTS = """
import pytest
from pytest_promptopt import load_judge, load_prompt

capital = load_prompt("capital.yaml")
right_city = load_judge("judges/capital.yaml")

@pytest.mark.parametrize("country", ["France", "Spain"])
def test_with_file(llm, judge, country):
    judge(llm(capital, country=country), right_city, expected=country)

def test_inline(llm, judge):
    judge(llm(capital, country="Italy"), "names the capital city of Italy")
"""


def grader(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    # 0.6 for a wrong city: below the default 0.7, above the file's own threshold 0.5
    return "score: 0.9" if output_of(messages) in ("Paris", "Rome") else "score: 0.6"


@pytest.fixture
def with_judge_file(judged: pytest.Pytester, judge_server: ScriptedServer) -> pytest.Pytester:
    judge_server.responder = grader
    (judged.path / "judges").mkdir()
    (judged.path / "judges" / "capital.yaml").write_text(JUDGE_FILE, encoding="utf-8")
    judged.makepyfile(test_capitals=TESTS)
    return judged


def test_a_judge_file_grades_with_its_own_model_prompt_and_threshold(with_judge_file: pytest.Pytester,
                                                                      judge_server: ScriptedServer) -> None:
    result = with_judge_file.runpytest("--promptopt-report=report.json")
    result.assert_outcomes(passed=3)  # Spain's 0.6 passes the file's threshold 0.5
    by_output = {output_of(b["messages"]): b for b in judge_server.requests}
    assert by_output["Paris"]["model"] == "strict-grader"  # the file's model
    assert by_output["Paris"]["messages"][0]["content"].startswith("You grade capital cities.")
    assert "CRITERIA:\nNames the right capital city." in by_output["Paris"]["messages"][1]["content"]
    assert "EXPECTED:\nFrance" in by_output["Paris"]["messages"][1]["content"]
    assert by_output["Rome"]["model"] == "grader"  # inline criteria: the judge endpoint's model and prompt
    assert "strict grader" in by_output["Rome"]["messages"][0]["content"]
    report = json.loads((with_judge_file.path / "report.json").read_text())
    judges = {t["nodeid"].split("::")[1]: t["verdicts"][0]["judge"] for t in report["tests"]}
    assert judges["test_with_file[France]"] == str((with_judge_file.path / "judges" / "capital.yaml").resolve())
    assert judges["test_inline"] == "<inline>"


def test_an_explicit_threshold_beats_the_file(with_judge_file: pytest.Pytester) -> None:
    with_judge_file.makepyfile(test_capitals=TESTS.replace("expected=country)", "expected=country, threshold=0.8)"))
    with_judge_file.runpytest().assert_outcomes(passed=2, failed=1)


def test_judge_file_calls_are_sent_ahead_with_the_file_as_it_is_now(with_judge_file: pytest.Pytester,
                                                                      judge_server: ScriptedServer) -> None:
    with_judge_file.runpytest().assert_outcomes(passed=3)
    path = with_judge_file.path / "judges" / "capital.yaml"
    path.write_text(JUDGE_FILE.replace("Names the right capital city.", "Names the capital."), encoding="utf-8")
    result = with_judge_file.runpytest("--promptopt-report=report.json")
    result.assert_outcomes(passed=3)
    ahead = json.loads((with_judge_file.path / "report.json").read_text())["ahead"]
    assert ahead["sent"] == 2 and ahead["unused"] == 0, ahead  # the two new file-judge calls, both used


def test_a_broken_judge_file_stops_collection_naming_the_field(with_judge_file: pytest.Pytester) -> None:
    (with_judge_file.path / "judges" / "capital.yaml").write_text("criteria: x\nthreshold: high\n", encoding="utf-8")
    result = with_judge_file.runpytest()
    result.stdout.fnmatch_lines(["*capital.yaml:2 (field 'threshold'): threshold must be a number from 0 to 1*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_readme_path_relative_to_the_test_module(with_judge_file: pytest.Pytester) -> None:
    sub = with_judge_file.path / "sub"
    sub.mkdir()
    (sub / "judges").mkdir()
    (sub / "judges" / "capital.yaml").write_text(JUDGE_FILE, encoding="utf-8")
    (sub / "capital.yaml").write_text((with_judge_file.path / "capital.yaml").read_text(), encoding="utf-8")
    (sub / "test_sub.py").write_text(TESTS, encoding="utf-8")
    Path(with_judge_file.path / "test_capitals.py").unlink()
    with_judge_file.runpytest("sub").assert_outcomes(passed=3)


# -- consistency: several draws of a judge call ----------------------------------------------------

DRAW_TESTS = """
def test_a(judge):
    judge("A", "is fine")

def test_b(judge):
    judge("B", "is fine")
"""


def scripted_draws(answers: dict[str, list[float]]) -> Any:
    """A judge whose n-th reply to an output is the n-th score listed for it (the requests of
    several draws are identical; only the cache tells them apart)."""
    seen: dict[str, int] = {}

    def respond(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        output = output_of(messages)
        n = seen.get(output, 0)
        seen[output] = n + 1
        return f"score: {answers[output][n]}"
    return respond


def test_k_draws_report_the_flip_rate_and_are_cached_apart(judged: pytest.Pytester,
                                                            judge_server: ScriptedServer) -> None:
    judge_server.responder = scripted_draws({"A": [0.9, 0.2, 0.9], "B": [0.2, 0.2, 0.2]})
    judged.makepyfile(test_draws=DRAW_TESTS)
    result = judged.runpytest("--promptopt-judge-samples=3", "--promptopt-report=report.json")
    result.assert_outcomes(passed=1, failed=1)
    assert judge_server.count == 6
    report = json.loads((judged.path / "report.json").read_text())
    verdicts = {t["nodeid"]: t["verdicts"][0] for t in report["tests"]}
    assert verdicts["test_draws.py::test_a"]["flipped"] is True and verdicts["test_draws.py::test_a"]["score"] == 0.9
    assert verdicts["test_draws.py::test_b"]["flipped"] is False and verdicts["test_draws.py::test_b"]["samples"] == 3
    (row,) = report["judges"]
    assert (row["sampled"], row["flips"], row["flip_rate"]["value"]) == (2, 1, 0.5)
    result.stdout.fnmatch_lines(['inline "is fine"*uncalibrated*1/2'])
    judged.runpytest("--promptopt-judge-samples=3").assert_outcomes(passed=1, failed=1)
    assert judge_server.count == 6  # every draw came from the cache


def test_confirm_on_fail_asks_again_only_failing_verdicts(judged: pytest.Pytester, judge_server: ScriptedServer) -> None:
    judge_server.responder = scripted_draws({"A": [0.9], "B": [0.2, 0.9, 0.9]})
    judged.makepyfile(test_draws=DRAW_TESTS)
    judged.runpytest("--promptopt-judge-confirm-fails").assert_outcomes(passed=2)  # B: 2 of 3 draws pass
    assert judge_server.count == 4


def test_a_geval_judge_file_asks_for_logprobs_and_weights_the_scores(judged: pytest.Pytester,
                                                                      judge_server: ScriptedServer) -> None:
    # 0.5 on 9 and 0.5 on 3: weighted 0.6, below the threshold 0.7 although the text says 9
    judge_server.responder = lambda messages, body: {"content": "9", "top_logprobs": [("9", -0.6931), ("3", -0.6931)]}
    (judged.path / "g.yaml").write_text("criteria: is fine\nmode: geval\n", encoding="utf-8")
    judged.makepyfile("""
        from pytest_promptopt import load_judge
        def test_it(judge):
            verdict = judge.grade("A", load_judge("g.yaml"))
            assert abs(verdict.score - 0.6) < 1e-3 and not verdict.passed
        """)
    judged.runpytest().assert_outcomes(passed=1)
    (body,) = judge_server.requests
    assert body["logprobs"] is True and body["top_logprobs"] == 20
