"""What --optimize writes must earn its place: a winner is simplified part by part before it is
written, and the summary says when a score is only chance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from example import Example
from wordtask import WORD_PROMPT, WORD_TESTS, WORDS, is_optimizer

from pytest_promptopt.optimize.base import Candidate, Evaluation
from pytest_promptopt.optimize.simplify import simplify
from pytest_promptopt.prompts.demo import Demo
from pytest_promptopt.prompts.prompt import load_prompt
from pytest_promptopt.run.record import CaseOutcome
from pytest_promptopt.testing import ScriptedServer

# A strategy that returns the same winner every time: a new instruction and four demos.
BOTH_STRATEGY = """
from pytest_promptopt.optimize.base import StrategyResult


class Both:
    name = "both"

    def estimate_calls(self, n_train, n_prompts, budget=None):
        return 2 * n_train

    def run(self, ctx):
        (key, prompt), = ctx.original.items()
        ids = [c.nodeid for c in ctx.train]
        demos = tuple(o.demo for o in ctx.program.demo_pool(key, ids))[:4]
        best = {key: prompt.with_instruction("Reverse the word letter by letter.").with_demos(demos)}
        return StrategyResult(best, ctx.program.evaluate(best, ids).mean)


def pytest_promptopt_strategies():
    return {"both": Both}
"""


def has_demos(messages: list[dict[str, str]]) -> bool:
    return any(m["role"] == "assistant" for m in messages)


@pytest.fixture
def word_suite(suite: pytest.Pytester) -> pytest.Pytester:
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=WORD_TESTS)
    suite.makeconftest(BOTH_STRATEGY)
    return suite


def test_an_instruction_edit_that_does_nothing_is_not_written(word_suite: pytest.Pytester,
                                                              scripted: ScriptedServer) -> None:
    # the model reverses the word whenever it sees demos, whatever the instruction says
    scripted.responder = lambda messages, body: (messages[-1]["content"][::-1] if has_demos(messages)
                                                 else messages[-1]["content"])
    result = word_suite.runpytest("--optimize", "--optimize-strategy=both", "--promptopt-report=r.json")
    result.stdout.fnmatch_lines(["*note: dropped the instruction edit of word.yaml (1.000 -> 1.000 without it*",
                                 "*accepted: validation 0.000 -> 1.000*"])
    text = (word_suite.path / "word.yaml").read_text()
    assert "content: Repeat the word.   # the instruction" in text  # untouched
    assert "Reverse" not in text and "demos:" in text and "output:" in text
    events = [json.loads(line) for line in open(_run_log(word_suite))]
    assert [(e["part"], e["dropped"]) for e in events if e["event"] == "simplify"][0] == ("the instruction edit", True)
    word_suite.runpytest().assert_outcomes(passed=len(WORDS))


def test_demos_that_do_nothing_are_not_written(word_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    # the model follows the instruction and ignores demos
    def respond(messages: list[dict[str, str]], body: dict) -> str:
        user = messages[-1]["content"]
        return user[::-1] if "Reverse" in messages[0]["content"] else user

    scripted.responder = respond
    result = word_suite.runpytest("--optimize", "--optimize-strategy=both")
    result.stdout.fnmatch_lines(["*note: dropped the demos of word.yaml (1.000 -> 1.000 without it*",
                                 "*accepted: validation 0.000 -> 1.000*"])
    text = (word_suite.path / "word.yaml").read_text()
    assert "Reverse the word letter by letter." in text
    assert "demos: []" in text and "output:" not in text
    word_suite.runpytest().assert_outcomes(passed=len(WORDS))


def _run_log(pytester: pytest.Pytester):
    (log,) = (pytester.path / ".promptopt_cache" / "runs").glob("*.jsonl")
    return log


TWO_LABELS = """
import pytest
from pytest_promptopt import load_prompt
p = load_prompt("nli.yaml")
CASES = [(f"premise {i}", "entailment" if i % 4 else "neutral") for i in range(40)]

@pytest.mark.parametrize("text,label", CASES)
def test_nli(llm, text, label):
    assert llm(p, text=text) == label
"""

NLI_PROMPT = """\
messages:
  - role: system
    content: Say whether the hypothesis follows.
  - role: user
    content: "{text}"
demos: []
"""


def test_the_summary_says_when_a_score_is_only_chance(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    # A model that always answers the majority label once it has seen demos: 75% is chance here.
    def respond(messages: list[dict[str, str]], body: dict) -> str:
        if is_optimizer(messages):
            return "Say whether the hypothesis follows."
        return "entailment" if has_demos(messages) else "I am not sure."

    scripted.responder = respond
    example = Example(suite, {"nli.yaml": NLI_PROMPT, "test_nli.py": TWO_LABELS})
    result = example.run_pytest("--optimize", "--optimize-strategy=mipro", "--optimize-dry-run",
                                "--promptopt-report=r.json", "--optimize-preset=light")
    result.stdout.re_match_lines([r".*chance \(always the majority answer\) on validation: 0\.\d+; the candidate's "
                                  r"0\.\d+ is within noise of it.*"])
    (group,) = result.report["optimization"]["groups"]
    assert group["chance"] == pytest.approx(group["validation"]["after"])
    assert group["after_within_noise_of_chance"] is True


def test_simplification_is_judged_on_the_train_cases_the_search_scored(word_suite: pytest.Pytester,
                                                                        scripted: ScriptedServer) -> None:
    # The strategy scores its winner on three train cases only and says so.
    word_suite.makeconftest(BOTH_STRATEGY.replace("ids = [c.nodeid for c in ctx.train]",
                                                  "ids = [c.nodeid for c in ctx.train][:3]")
                            .replace("ctx.program.evaluate(best, ids).mean)",
                                     "ctx.program.evaluate(best, ids).mean, scored_on=tuple(ids))"))
    scripted.responder = lambda messages, body: (messages[-1]["content"][::-1] if has_demos(messages)
                                                 else messages[-1]["content"])
    result = Example(word_suite).run_pytest("--optimize", "--optimize-strategy=both", "--promptopt-report=r.json")
    result.stdout.fnmatch_lines(["*train score 0.000 -> 1.000 (on the 3 train tests the search scored)*",
                                 "*note: dropped the instruction edit of word.yaml*"])
    (group,) = result.report["optimization"]["groups"]
    assert group["train"]["scored"] == 3 < group["train"]["cases"]
    events = [json.loads(line) for line in open(_run_log(word_suite))]
    start = next(e for e in events if e["event"] == "start")
    allowed = set(start["train"][:3]) | set(start["validation"])
    evaluated = {r["nodeid"] for e in events if e["event"] == "eval" for r in e["results"]}
    assert evaluated and evaluated <= allowed
    assert len(start["train"]) > 3


def test_a_demo_is_not_judged_on_the_case_it_shows(word_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    # The winner is four demos and nothing else; the model passes a case only by copying the
    # demo with the same word. On the cases the demos do not show they change nothing, so they
    # must not be written (counting the shown cases would make them look like a gain).
    word_suite.makeconftest(BOTH_STRATEGY.replace(
        'prompt.with_instruction("Reverse the word letter by letter.").with_demos(demos)', "prompt.with_demos(demos)"))

    def respond(messages: list[dict[str, str]], body: dict) -> str:
        user = messages[-1]["content"]
        shown = {messages[i]["content"]: messages[i + 1]["content"]
                 for i in range(1, len(messages) - 1) if messages[i]["role"] == "user"}
        return shown.get(user, user)

    scripted.responder = respond
    result = word_suite.runpytest("--optimize", "--optimize-strategy=both")
    result.stdout.fnmatch_lines(["*note: dropped the demos of word.yaml*",
                                 "*not written: nothing the winner changed earned its place*"])
    assert "demos: []" in (word_suite.path / "word.yaml").read_text()
    events = [json.loads(line) for line in open(_run_log(word_suite))]
    (block,) = [e for e in events if e["event"] == "simplify" and e["part"] == "the demos"]
    assert block["dropped"] and block["score_with"] == block["score_without"] == 0.0


def test_parts_each_within_noise_are_judged_against_the_winner_not_step_by_step(tmp_path: Path) -> None:
    """The instruction edit and the demos each win 2 of 30 cases: within noise alone, beyond it
    together. Dropping the instruction edit first is fine; dropping the demos after it would lose
    both gains, so they stay."""
    prompt_file = tmp_path / "p.txt"
    prompt_file.write_text("Say {x}")
    original_prompt = load_prompt(prompt_file)
    key = original_prompt.key
    edited = original_prompt.with_instruction("Shout {x}")
    winner = {key: edited.with_demos((Demo({"x": "a"}, "A"),))}

    def evaluate(candidate: Candidate) -> Evaluation:
        prompt = candidate[key]
        wins = 10 + 2 * (prompt.instruction == edited.instruction) + 2 * bool(prompt.demos)
        return Evaluation(tuple(CaseOutcome(f"t{i}", i < wins, float(i < wins), "") for i in range(30)))

    simpler, trail = simplify({key: original_prompt}, winner, evaluate)

    assert [(r.part, r.kept_out) for r in trail] == [("the instruction edit", True), ("the demos", False)]
    assert simpler[key].instruction == original_prompt.instruction and simpler[key].demos == winner[key].demos
    assert trail[1].score_with == pytest.approx(14 / 30) and trail[1].score_without == pytest.approx(10 / 30)
    assert "without it and the parts dropped before" in trail[1].reason
