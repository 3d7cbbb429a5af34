"""The pytest layer's contracts: strategies registered through the plugin hook, promptopt
markers merged over levels and checked, labels without assertion rewriting, the acceptance
rule, and help texts that state the real defaults."""

from __future__ import annotations

import json

import pytest
from bench_module import bench_quality
from wordtask import WORD_PROMPT, WORD_TESTS, WORDS

from pytest_promptopt import defaults
from pytest_promptopt.optimize.acceptance import decide_holdout, decide_validation
from pytest_promptopt.optimize.base import Case, Evaluation
from pytest_promptopt.run.record import CaseOutcome
from pytest_promptopt.testing import ScriptedServer

REVERSE_STRATEGY = """
from pytest_promptopt.optimize.base import StrategyResult


class Reverse:
    name = "reverse"

    def estimate_calls(self, n_train, n_prompts, budget=None):
        return n_train

    def run(self, ctx):
        (key, prompt), = ctx.original.items()
        candidate = {key: prompt.with_instruction("Reverse the word letter by letter.")}
        scored = ctx.program.evaluate(candidate, [c.nodeid for c in ctx.train])
        return StrategyResult(candidate, scored.mean, ("the conftest strategy ran",))


def pytest_promptopt_strategies():
    return {"reverse": Reverse}
"""


def reverse_when_told(messages: list[dict[str, str]], body: dict) -> str:
    user = messages[-1]["content"]
    return user[::-1] if "Reverse" in messages[0]["content"] else user


@pytest.fixture
def word_suite(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=WORD_TESTS)
    scripted.responder = reverse_when_told
    return suite


def test_a_strategy_registered_in_a_conftest_runs_by_name(word_suite: pytest.Pytester) -> None:
    word_suite.makeconftest(REVERSE_STRATEGY)
    result = word_suite.runpytest("--optimize", "--optimize-strategy=reverse")
    result.stdout.fnmatch_lines(["*strategy reverse*", "*note: the conftest strategy ran*",
                                 "*accepted: validation 0.000 -> 1.000*"])
    assert "Reverse the word letter by letter." in (word_suite.path / "word.yaml").read_text()
    word_suite.runpytest().assert_outcomes(passed=len(WORDS))


def test_an_unknown_strategy_is_a_usage_error_listing_the_registered_ones(word_suite: pytest.Pytester) -> None:
    word_suite.makeconftest(REVERSE_STRATEGY)
    result = word_suite.runpytest("--optimize", "--optimize-strategy=nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--optimize-strategy 'nope' is not a registered strategy; choose one of auto, gradsum, mipro, reverse" \
        in result.stderr.str()


def test_a_strategy_name_taken_twice_is_a_usage_error(word_suite: pytest.Pytester) -> None:
    word_suite.makeconftest(REVERSE_STRATEGY.replace('{"reverse": Reverse}', '{"mipro": Reverse}'))
    result = word_suite.runpytest("--optimize")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "two plugins register an optimization strategy named 'mipro'" in result.stderr.str()


def test_a_class_level_holdout_survives_a_function_marker(word_suite: pytest.Pytester) -> None:
    held = ["oscar", "papa", "quebec", "romeo"]
    word_suite.makepyfile(test_held=f"""
        import pytest
        from pytest_promptopt import load_prompt
        p = load_prompt("word.yaml")

        @pytest.mark.promptopt(holdout=True)
        class TestHeld:
            @pytest.mark.promptopt(threshold=0.9)
            @pytest.mark.parametrize("word", {held!r})
            def test_held(self, llm, word):
                assert llm(p, word=word) == word[::-1]
        """)
    word_suite.makeconftest(REVERSE_STRATEGY)
    result = word_suite.runpytest("--optimize", "--optimize-strategy=reverse", "--promptopt-report=r.json")
    result.stdout.fnmatch_lines([f"*holdout ({len(held)} tests never used for selection): 0.000 -> 1.000*"])
    optimization = json.loads((word_suite.path / "r.json").read_text())["optimization"]
    (group,) = optimization["groups"]
    assert group["train"]["cases"] + group["validation"]["cases"] == len(WORDS)  # no held test among them
    assert group["holdout"] == {"cases": len(held), "before": 0.0, "after": 1.0}
    # the quality benchmark reads the same report: what it would write scores 1.0 held out
    after, notes = bench_quality().read_decision(optimization, 0.0)
    assert after == 1.0 and notes[0].startswith("accepted: validation")


def test_an_unknown_marker_keyword_is_a_usage_error_naming_test_keyword_and_the_allowed_ones(
        word_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    word_suite.makepyfile(test_word="""
        import pytest

        @pytest.mark.promptopt(repeat=5)
        def test_it(llm):
            assert llm("word.yaml", word="x") == "x"
        """)
    result = word_suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("ERROR: test_word.py::test_it: promptopt(repeat=...): unknown keyword 'repeat'; allowed: repeats, "
            "min_passes, threshold, holdout") in result.stderr.str()
    assert scripted.count == 0


def test_expected_answers_are_seen_without_assertion_rewriting(word_suite: pytest.Pytester) -> None:
    word_suite.makepyfile(test_word="""
        from pytest_promptopt import load_prompt
        p = load_prompt("word.yaml")

        def test_word(llm):
            answer = llm(p, word="kilo")
            expected = {"word": "olik"}
            assert answer.strip() == expected["word"]
        """)
    result = word_suite.runpytest("--assert=plain", "--promptopt-report=r.json")
    result.assert_outcomes(failed=1)
    (test,) = json.loads((word_suite.path / "r.json").read_text())["tests"]
    assert [c["expected"] for c in test["calls"]] == ["olik"]


def test_help_states_the_real_defaults(pytester: pytest.Pytester) -> None:
    out = pytester.runpytest("--help").stdout.str()
    flat = " ".join(out.split())
    assert (f"(default {defaults.CONCURRENCY} for an endpoint, {defaults.EMBEDDED_CONCURRENCY} for the embedded model)"
            in flat)
    assert f"default pass threshold of judge() (default {defaults.JUDGE_THRESHOLD})" in flat
    assert "previously passing validation tests a candidate may break (default: 20% of them, at least 1)" in flat
    assert f"(default: the preset's: light 500, medium {defaults.OPTIMIZE_BUDGET}, heavy 8000)" in flat


# -- the acceptance rule, branch by branch ------------------------------------------------------

def cases(*passed: bool, split: str = "validation") -> list[Case]:
    return [Case(f"t{i}", split, p, float(p)) for i, p in enumerate(passed)]


def after(*passed: bool) -> Evaluation:
    return Evaluation(tuple(CaseOutcome(f"t{i}", p, float(p)) for i, p in enumerate(passed)))


def test_accepts_a_gain_beyond_the_margin_within_the_allowed_regressions() -> None:
    d = decide_validation(cases(True, *[False] * 9), after(False, *[True] * 8, False), margin=0.02,
                          max_regressions=None)
    assert d.accepted and (d.regressions, d.allowed) == (1, 1)
    assert d.reason == "validation 0.100 -> 0.800 (+0.700), 1 regression(s) (allowed 1)"


def test_rejects_a_gain_below_the_margin() -> None:
    d = decide_validation(cases(True, False), after(True, True), margin=0.6, max_regressions=None)
    assert not d.accepted
    assert d.reason == "validation 0.500 -> 1.000 does not beat the original by the margin 0.600"


def test_a_gain_within_the_noise_of_few_cases_is_rejected_and_the_same_gain_on_many_is_not() -> None:
    few = decide_validation(cases(*[False] * 20), after(True, *[False] * 19), margin=0.02, max_regressions=None)
    assert not few.accepted
    assert few.reason == ("validation 0.000 -> 0.050: the gain is within noise on 20 cases (it needs +0.086, "
                          "the one-sided 95% t bound of the per-case change)")
    many = decide_validation(cases(*[False] * 2000), after(*[True] * 100, *[False] * 1900), margin=0.02,
                             max_regressions=None)
    assert many.accepted and many.reason.startswith("validation 0.000 -> 0.050 (+0.050)")


def test_rejects_more_regressions_than_allowed() -> None:
    d = decide_validation(cases(True, True, *[False] * 8), after(False, False, *[True] * 8), margin=0.0,
                          max_regressions=1)
    assert not d.accepted and d.regressions == 2
    assert d.reason == "breaks 2 previously passing validation tests (allowed 1)"


def test_allowed_regressions_default_to_a_fifth_of_the_passing_cases_and_at_least_one() -> None:
    assert defaults.allowed_regressions(0, None) == 1
    assert defaults.allowed_regressions(14, None) == 2
    assert defaults.allowed_regressions(14, 0) == 0


def test_holdout_vetoes_a_winner_that_does_worse_on_it_and_is_otherwise_silent() -> None:
    accepted = decide_validation(cases(False, False), after(True, True), margin=0.0, max_regressions=None)
    held = cases(True, True, False, split="holdout")
    vetoed = decide_holdout(accepted, held, after(True, False, False))
    assert not vetoed.accepted
    assert vetoed.reason.startswith("scores lower on the 3 holdout tests than the original (0.667 -> 0.333)")
    assert decide_holdout(accepted, held, after(True, True, False)) is accepted  # equal is fine
    assert decide_holdout(accepted, [], None) is accepted  # no holdout tests
    rejected = decide_validation(cases(True), after(False), margin=0.0, max_regressions=None)
    assert decide_holdout(rejected, held, None) is rejected


def test_a_plain_run_never_imports_what_only_optimize_needs(suite: pytest.Pytester) -> None:
    """optuna is imported when an optimization runs, not at every pytest start."""
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=WORD_TESTS)
    suite.makeconftest(
        """
        import sys

        def pytest_sessionfinish(session):
            with open("modules.txt", "w") as out:
                out.write("\\n".join(sorted(sys.modules)))
        """
    )
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret in (0, 1), result.stdout.str()
    modules = set((suite.path / "modules.txt").read_text().split())
    assert "pytest_promptopt.plugin" in modules  # the plugin did load
    assert "optuna" not in modules
