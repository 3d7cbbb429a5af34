"""k-of-n draws however the test reaches `llm`, and failures reported at the user's line."""

from __future__ import annotations

import pytest
from example import Example

from pytest_promptopt.testing import ScriptedServer

CHAINS = """
import pytest
from pytest_promptopt import load_prompt
capital = load_prompt("capital.txt")

@pytest.fixture
def ask(llm):
    def ask(country):
        return llm(capital, country=country)
    return ask

@pytest.fixture
def bot(ask):
    class Bot:
        def answer(self, country):
            return ask(country)
    return Bot()

def helper(bot, country):
    return bot.answer(country)

@pytest.mark.promptopt(repeats=6, min_passes=4)
def test_through_a_fixture(ask):
    assert ask("France") == "Paris"

@pytest.mark.promptopt(repeats=6, min_passes=4)
class TestBot:
    def test_through_a_chain_a_class_and_a_helper(self, bot):
        assert helper(bot, "Spain") == "Madrid"
"""


def capitals(messages: list[dict[str, str]], body: dict) -> str:
    return "Paris" if "France" in messages[-1]["content"] else "Madrid"


@pytest.fixture
def capital_suite(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    suite.makefile(".txt", capital="What is the capital of {country}? One word.")
    scripted.responder = capitals
    return suite


def test_every_draw_is_its_own_sample_however_llm_is_reached(capital_suite: pytest.Pytester,
                                                             scripted: ScriptedServer) -> None:
    example = Example(capital_suite, {"test_chains.py": CHAINS})
    result = example.run_pytest("--promptopt-report=r.json")
    result.assert_outcomes(passed=2)
    assert scripted.count == 12  # six draws of each test, each its own request
    report = result.report
    assert [sum(u["requests"] for u in t["usage"].values()) for t in report["tests"]] == [6, 6]
    assert [sum(u.get("cache_hits", 0) for u in t["usage"].values()) for t in report["tests"]] == [0, 0]
    capital_suite.runpytest().assert_outcomes(passed=2)
    assert scripted.count == 12  # the next run finds each draw in the cache


def test_a_draw_made_once_in_a_fixture_is_not_counted_six_times(capital_suite: pytest.Pytester,
                                                                scripted: ScriptedServer) -> None:
    capital_suite.makepyfile(
        """
        import pytest

        @pytest.fixture
        def answer(llm):
            return llm("capital.txt", country="France")  # once, while the fixture is set up

        @pytest.mark.promptopt(repeats=6, min_passes=4)
        def test_answer(answer):
            assert answer == "Paris"
        """
    )
    result = capital_suite.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*promptopt(repeats=6): the LM call of this test is made while a fixture is set up*"])
    assert scripted.count == 1


# -- failures point at the user's line -----------------------------------------------------

LOCATED = '''
import pytest
from pytest_promptopt import checks, load_prompt
capital = load_prompt("capital.txt")

def test_check(llm):
    checks.equals(llm(capital, country="France"), "Lyon")

def test_judge(llm, judge):
    judge(llm(capital, country="France"), criteria="Names the capital of Spain.")

def helper(llm):
    checks.contains(llm(capital, country="France"), "Lyon")

@pytest.mark.promptopt(repeats=3, min_passes=2)
def test_k_of_n(llm):
    helper(llm)
'''


def judging(messages: list[dict[str, str]], body: dict) -> str:
    if "<OUTPUT-" in messages[-1]["content"]:
        return "score: 0.1\nreason: wrong country"
    return "Paris\n\x1b[31mred\x1b[0m " + "x" * 1000  # long, with a newline and an escape sequence


@pytest.mark.parametrize("tb", ["line", "short"])
def test_failures_are_reported_at_the_users_line(suite: pytest.Pytester, scripted: ScriptedServer, tb: str) -> None:
    suite.makefile(".txt", capital="What is the capital of {country}?")
    suite.makepyfile(test_located=LOCATED)
    scripted.responder = judging
    result = suite.runpytest(f"--tb={tb}")
    result.assert_outcomes(failed=3)
    text = result.stdout.str()
    for plugin_file in ("checks.py", "judge.py", "runtime.py", "hooks.py", "pluggy/"):
        assert plugin_file not in text
    path = str(suite.path / "test_located.py") if tb == "line" else "test_located.py"
    for line in (6, 9, 12):  # the check, the judge, and (k-of-n) the line of the helper that failed
        assert f"{path}:{line}: " in text, f"no failure reported at line {line}:\n{text}"


def test_a_failed_judge_shows_the_output_it_judged(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    suite.makefile(".txt", capital="What is the capital of {country}?")
    suite.makepyfile(test_located=LOCATED)
    scripted.responder = judging
    result = suite.runpytest("-k", "test_judge")
    result.stdout.fnmatch_lines(["*reason: wrong country",
                                 r"*output: 'Paris\n\x1b[31mred\x1b[0m xxx*... [[]* more characters]'"])
    assert "x" * 400 not in result.stdout.str()  # bounded
