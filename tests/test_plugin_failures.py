"""k-of-n draws however the test reaches `llm`, and failures reported at the user's line."""

from __future__ import annotations

import json

import pytest

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
    capital_suite.makepyfile(test_chains=CHAINS)
    result = capital_suite.runpytest("--promptopt-report=r.json")
    result.assert_outcomes(passed=2)
    assert scripted.count == 12  # six draws of each test, each its own request
    report = json.loads((capital_suite.path / "r.json").read_text())
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
