"""`--optimize` as a new user meets it: a warm rerun is free, the failure text the optimizer
reads is the one the user sees, `-x` does not switch it off, and the budget is a hard cap."""

from __future__ import annotations

import json

import pytest
from example import Example
from wordtask import WORD_PROMPT, WORD_TESTS, WORDS, is_optimizer, reverse_when_told

from pytest_promptopt.testing import ScriptedServer

# Half the words fail with `==`, two with `.startswith` (whose `where` lines name objects).
MIXED_TESTS = f"""
import pytest
from pytest_promptopt import load_prompt
p = load_prompt("word.yaml")

@pytest.mark.parametrize("word", {WORDS!r})
def test_word(llm, word):
    if word in ("kilo", "lima"):
        assert llm(p, word=word).startswith(word[::-1])
    else:
        assert llm(p, word=word) == word[::-1]
"""


def long_words_only(messages: list[dict[str, str]], body: dict) -> str:
    """The optimizer always proposes "Reverse long words only."; the task model follows it, so
    that candidate leads the search and its re-runs' failures are what the next round reads."""
    if is_optimizer(messages):
        return "Reverse long words only."
    word = messages[-1]["content"]
    return word[::-1] if "Reverse long" in messages[0]["content"] and len(word) > 5 else word


@pytest.mark.parametrize("strategy", ["gradsum", "mipro", "auto"])
def test_a_warm_rerun_of_optimize_sends_nothing(suite: pytest.Pytester, scripted: ScriptedServer,
                                                strategy: str) -> None:
    # In a subprocess: an in-process run inherits the outer test's assertion hook, which hides the bug.
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=MIXED_TESTS)
    scripted.responder = long_words_only
    args = ("--optimize", f"--optimize-strategy={strategy}", "--optimize-dry-run")
    suite.runpytest_subprocess(*args).stdout.fnmatch_lines([f"*strategy {strategy}*"])
    cold = scripted.count
    optimizer_prompts = [m["content"] for b in scripted.requests if is_optimizer(b["messages"]) for m in b["messages"]]
    assert any("WHY THE TEST FAILED" in text for text in optimizer_prompts)  # failure text reached it
    assert not any(" at 0x" in text for text in optimizer_prompts)
    again = suite.runpytest_subprocess(*args)
    again.stdout.fnmatch_lines([f"*strategy {strategy}*"])
    assert scripted.count == cold, f"the warm rerun sent {scripted.count - cold} requests"


def test_rerun_failure_text_is_the_plain_runs(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=MIXED_TESTS)
    scripted.responder = long_words_only
    suite.runpytest_subprocess("--optimize", "--optimize-strategy=gradsum", "--optimize-dry-run")
    (log,) = (suite.path / ".promptopt_cache" / "runs").glob("*.jsonl")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    messages = {r["nodeid"].split("[")[1][:-1]: r["message"] for e in events if e["event"] == "eval"
                for r in e["results"]}
    assert messages["apple"] == "AssertionError: assert 'apple' == 'elppa'\n  \n  - elppa\n  + apple"
    assert "0x" not in messages["kilo"] and "where 'kilo' = llm(" in messages["kilo"]


# -- -x / --maxfail ----------------------------------------------------------------------

def test_optimize_runs_every_test_when_addopts_has_x(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=WORD_TESTS)
    ini = suite.path / "tox.ini"
    ini.write_text(ini.read_text().replace("[pytest]", "[pytest]\naddopts = -x"))
    scripted.responder = reverse_when_told("Reverse the word letter by letter.")
    assert suite.runpytest().ret == pytest.ExitCode.TESTS_FAILED
    assert scripted.count == 1  # a plain run stops at the first failure, as -x says
    result = suite.runpytest("--optimize", "--optimize-dry-run")
    result.assert_outcomes(failed=len(WORDS))
    result.stdout.fnmatch_lines(["*promptopt: optimization*",
                                 ("ran every test although -x/--maxfail=1 was given: --optimize needs the result "
                                  "of each test to learn from"),
                                 "*accepted: validation 0.000 -> 1.000*"])


def test_optimize_says_why_a_run_that_stopped_early_was_not_optimized(suite: pytest.Pytester,
                                                                     scripted: ScriptedServer) -> None:
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=WORD_TESTS)
    scripted.responder = reverse_when_told("Reverse the word letter by letter.")
    result = suite.runpytest("--optimize", "--stepwise", "-p", "cacheprovider")
    result.stdout.fnmatch_lines(["*promptopt: optimization*",
                                 ("not optimized: the run stopped early (Test failed, continuing from this test next "
                                  "run.*); --optimize needs the result of every test")])


# -- the budget is a hard cap --------------------------------------------------------------

HOLDOUT_TESTS = WORD_TESTS.replace(
    f"@pytest.mark.parametrize(\"word\", {WORDS!r})",
    f"@pytest.mark.parametrize(\"word\", {WORDS[:10]!r} + [pytest.param(w, marks=pytest.mark.promptopt(holdout=True)) "
    f"for w in {WORDS[10:]!r}])")


@pytest.mark.parametrize("strategy", ["gradsum", "mipro", "auto"])
@pytest.mark.parametrize(("tests", "budget", "proposal"), [
    (WORD_TESTS, 22, "Echo the word back exactly."),  # nothing wins: the search runs to the end of its budget
    (HOLDOUT_TESTS, 15, "Reverse the word letter by letter."),  # a winner: simplified, validated, holdout
], ids=["search-to-the-end", "winner-with-holdout"])
def test_the_budget_caps_every_request_sent(suite: pytest.Pytester, scripted: ScriptedServer, strategy: str,
                                            tests: str, budget: int, proposal: str) -> None:
    assert "holdout=True" in HOLDOUT_TESTS
    example = Example(suite, {"word.yaml": WORD_PROMPT, "test_word.py": tests})
    scripted.responder = reverse_when_told(proposal)
    result = example.run_pytest("--optimize", f"--optimize-strategy={strategy}", f"--optimize-budget={budget}",
                                "--optimize-dry-run", "--promptopt-report=r.json")
    result.assert_outcomes(failed=len(WORDS))
    sent = scripted.count - len(WORDS)  # the plain run sent one request per test
    assert 0 < sent <= budget
    (group,) = result.report["optimization"]["groups"]
    assert group["estimate"] <= budget  # the plan that will run, not the one the budget cuts
    assert group["calls"] <= budget
    assert group["sent"] == sent  # the summary states what was sent
    cold = scripted.count
    warm = example.run_pytest("--optimize", f"--optimize-strategy={strategy}", f"--optimize-budget={budget}",
                              "--optimize-dry-run", "--promptopt-report=r.json")
    assert scripted.count == cold  # what was prefetched and paid for counts the same in a warm rerun
    (again,) = warm.report["optimization"]["groups"]
    assert (again["calls"], again["sent"], again["accepted"]) == (group["calls"], 0, group["accepted"])
    result.stdout.fnmatch_lines([f"*estimated {group['estimate']} LM calls*",
                                 (f"*LM calls {group['calls']} of budget {budget} (estimated {group['estimate']}), "
                                  f"{sent} sent to endpoints:*")])


def test_re_runs_keep_the_plain_runs_warning_count(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=WORD_TESTS.replace("def test_word(llm, word):\n",
                                                  "def test_word(llm, word):\n    import warnings; warnings.warn('w')\n"))
    scripted.responder = reverse_when_told("Reverse the word letter by letter.")
    result = suite.runpytest("--optimize", "--optimize-dry-run", "--optimize-strategy=gradsum")
    result.stdout.fnmatch_lines(["*accepted:*"])
    result.assert_outcomes(failed=len(WORDS), warnings=len(WORDS))  # one per test, re-runs not counted again
