"""`--optimize` ends on its result (issue 26): the optimization section comes after pytest's
short test summary, the run before it is summed up per prompt (no tracebacks unless --tb is
given), and the exit code says whether the optimization reached its decision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from wordtask import WORD_PROMPT, WORD_TESTS, WORDS, is_optimizer, reverse_when_told

from pytest_promptopt.testing import ScriptedServer

ENV_VARS = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "PROMPTOPT_BASE_URL", "PROMPTOPT_MODEL", "PROMPTOPT_API_KEY")
MIPRO = ("--optimize", "--optimize-strategy=mipro", "--promptopt-report=r.json")


@pytest.fixture(autouse=True)
def _clean_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")


@pytest.fixture
def words(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    scripted.responder = reverse_when_told()
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=WORD_TESTS)
    return suite


def exit_code_in_report(pytester: pytest.Pytester) -> int:
    return int(json.loads((pytester.path / "r.json").read_text())["exit_code"])


def test_the_result_is_last_on_screen_and_a_decided_run_exits_0(words: pytest.Pytester) -> None:
    result = words.runpytest(*MIPRO)
    result.assert_outcomes(failed=len(WORDS))  # the cases before the optimization are still failed tests
    assert result.ret == pytest.ExitCode.OK and exit_code_in_report(words) == 0
    lines = result.stdout.lines
    summary = lines.index(next(ln for ln in lines if "short test summary info" in ln))
    section = lines.index(next(ln for ln in lines if "promptopt: optimization" in ln))
    counts = lines.index(next(ln for ln in lines if f"{len(WORDS)} failed in" in ln))
    assert summary < counts < section, lines[summary:]
    assert "assert llm(p, word=word) == word[::-1]" not in result.stdout.str()  # no tracebacks
    result.stdout.fnmatch_lines(["word.yaml*12*0*0.0%*",  # the "before", per prompt
                                 "*promptopt: optimization*",
                                 "the tests' tracebacks are not shown (--tb=no)*pass --tb=short to see them",
                                 ("  validation score 0.000 -> 1.000; train score 0.000 -> 1.000 "
                                  "(on the * train tests the search scored)"),
                                 "  accepted: *; writing word.yaml",
                                 f"wrote {words.path / 'word.yaml'}",
                                 "the written prompt's results: pytest --promptopt-report=r.json*"])
    assert lines[-1] == ("promptopt: exit 0 by the gates rule: the optimization reached its decision; "
                         f"{len(WORDS)} tests failed before it, as the optimization's \"before\"")
    again = words.runpytest("--promptopt-report=r.json")  # the command it printed
    again.assert_outcomes(passed=len(WORDS))
    assert again.ret == 0


def test_tracebacks_of_the_run_before_are_shown_with_tb(words: pytest.Pytester) -> None:
    result = words.runpytest(*MIPRO, "--optimize-dry-run", "--tb=short")
    assert "assert llm(p, word=word) == word[::-1]" in result.stdout.str()
    assert "tracebacks are not shown" not in result.stdout.str()
    assert result.ret == 0


def test_a_rejected_candidate_is_a_decision_too(words: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = reverse_when_told("Say the word again.")  # proposals that never help
    result = words.runpytest(*MIPRO)
    result.stdout.fnmatch_lines(["  not written: *"])
    assert result.ret == pytest.ExitCode.OK and exit_code_in_report(words) == 0
    assert "Repeat the word." in (words.path / "word.yaml").read_text()
    assert result.stdout.lines[-1].startswith("promptopt: exit 0 by the gates rule: the optimization reached")


def test_a_budget_that_ran_out_before_a_verdict_exits_1(words: pytest.Pytester) -> None:
    result = words.runpytest(*MIPRO, "--optimize-budget=15")
    result.stdout.fnmatch_lines(["  note: stopped early: LM call budget reached*", "  not written: *"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED and exit_code_in_report(words) == 1
    assert result.stdout.lines[-1].startswith("promptopt: exit 1 by the gates rule: the LM call budget ran out "
                                              "before the optimization of word.yaml could decide")


def test_an_optimization_whose_calls_failed_exits_1(words: pytest.Pytester, scripted: ScriptedServer) -> None:
    def down_for_candidates(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        if not is_optimizer(messages) and "Reverse" in messages[0]["content"]:
            raise RuntimeError("the endpoint is down")
        return reverse_when_told()(messages, body)

    scripted.responder = down_for_candidates
    result = words.runpytest(*MIPRO)
    assert result.ret == pytest.ExitCode.TESTS_FAILED and exit_code_in_report(words) == 1
    assert "could not be scored during the optimization, the LM call failed" in result.stdout.lines[-1]


def test_a_failure_outside_the_optimized_prompts_still_counts(words: pytest.Pytester) -> None:
    words.makepyfile(test_other="def test_plain():\n    assert 1 == 2\n")
    result = words.runpytest(*MIPRO)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "1 test failed outside a gate (first: test_other.py::test_plain: it calls no prompt)" in result.stdout.lines[-1]


STOP_IN_THE_OPTIMIZATION = f"""
import pytest

runs = {{"n": 0}}

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    runs["n"] += 1
    if runs["n"] == {len(WORDS)} + 30:  # the 30th re-run the optimizer asks for: Ctrl-C
        raise KeyboardInterrupt
"""


def test_ctrl_c_during_the_optimization_says_how_to_resume(words: pytest.Pytester, scripted: ScriptedServer) -> None:
    words.makeconftest(STOP_IN_THE_OPTIMIZATION)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *MIPRO]
    done = subprocess.run(command, cwd=words.path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout
    assert "Repeat the word." in (words.path / "word.yaml").read_text()
    assert "interrupted: nothing was written; every candidate scored so far is in the run log under " in done.stdout
    assert ("so `pytest -p no:cacheprovider --optimize --optimize-strategy=mipro --promptopt-report=r.json "
            "--optimize-resume` continues where this run stopped") in done.stdout
    assert done.stdout.splitlines()[-1] == "promptopt: exit 2 by the gates rule: the run was interrupted"
    assert exit_code_in_report(words) == 2
    words.makeconftest("")
    resumed = words.runpytest(*MIPRO, "--optimize-resume")  # the command it printed, in-process
    reused = "  note: resumed from *.jsonl: reused * case result(s) of * candidate(s) scored by the interrupted run*"
    resumed.stdout.fnmatch_lines([reused, f"wrote {words.path / 'word.yaml'}"])
    assert resumed.ret == 0


def test_a_run_stopped_before_the_optimization_does_not_exit_0(words: pytest.Pytester) -> None:
    result = words.runpytest(*MIPRO, "--stepwise", "-p", "cacheprovider")  # pytest interrupts at the first failure
    assert result.ret == pytest.ExitCode.INTERRUPTED and exit_code_in_report(words) == 2
    assert result.stdout.lines[-2].startswith("not optimized: the run stopped early (Test failed, continuing")
    assert result.stdout.lines[-1] == "promptopt: exit 2 by the gates rule: the run was interrupted"
