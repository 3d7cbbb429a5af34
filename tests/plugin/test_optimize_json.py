"""Prompts that answer in JSON (issue 33): proposals may quote JSON, `checks.json_equals` makes
labelled demos, and a run with nothing to learn from says so and stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wordtask import is_optimizer

from pytest_promptopt.prompts.prompt import load_prompt
from pytest_promptopt.testing import ScriptedServer

PROPOSAL = 'Reply with JSON only, like {"amount": 12.5}, with the amount the text names.'

PROMPT = """\
messages:
  - role: system
    content: Extract the amount.   # the instruction
  - role: user
    content: "{text}"
"""

AMOUNTS = [12.5, 3.0, 7.25, 100.0, 42.0, 8.5, 19.99, 5.0, 60.0, 1.5]

TESTS = f"""
import pytest
from pytest_promptopt import checks, load_prompt
p = load_prompt("extract.yaml")

@pytest.mark.parametrize("amount", {AMOUNTS!r})
def test_extract(llm, amount):
    out = llm(p, text=f"I paid {{amount}} dollars")
    checks.json_equals(out, {{"amount": amount}})
"""


def amount_model(proposal: str):
    """Answers JSON only when its instruction shows a JSON example; the optimizer proposes
    `proposal`."""

    def respond(messages: list[dict[str, str]], body: dict) -> str:
        if is_optimizer(messages):
            return proposal
        text = messages[-1]["content"]
        if '{"amount"' not in messages[0]["content"]:
            return "It is some amount."
        return json.dumps({"amount": float(text.split()[2])})

    return respond


@pytest.fixture
def json_suite(suite: pytest.Pytester) -> pytest.Pytester:
    suite.makefile(".yaml", extract=PROMPT)
    suite.makepyfile(test_extract=TESTS)
    return suite


@pytest.mark.parametrize("strategy", ["mipro", "gradsum"])
def test_a_proposal_quoting_json_is_kept_and_the_written_file_reloads_to_it(
        json_suite: pytest.Pytester, scripted: ScriptedServer, strategy: str) -> None:
    scripted.responder = amount_model(PROPOSAL)
    result = json_suite.runpytest("--optimize", f"--optimize-strategy={strategy}", "--optimize-preset=light")
    result.stdout.fnmatch_lines(["*accepted: validation 0.000 -> 1.000*"])
    assert "discarded" not in result.stdout.str()
    path = json_suite.path / "extract.yaml"
    assert 'like {{\\"amount\\": 12.5}}' in path.read_text()  # braces escaped in the file (double quotes: YAML's)
    assert load_prompt(path).instruction_as_read == PROPOSAL  # and reads back as proposed
    json_suite.runpytest().assert_outcomes(passed=len(AMOUNTS))


def test_a_proposal_inventing_a_placeholder_is_discarded_naming_it(json_suite: pytest.Pytester,
                                                                   scripted: ScriptedServer) -> None:
    scripted.responder = amount_model('Reply with JSON like {"amount": 1} in {currency}')
    result = json_suite.runpytest("--optimize", "--optimize-strategy=gradsum", "--optimize-preset=light",
                                  "--optimize-dry-run")
    assert ("discarded the editor's proposal for extract.yaml: proposed instruction changes the placeholders "
            "(dropped: none, added: ['currency'])") in result.stdout.str()


def test_a_json_equals_failure_is_a_labelled_demo(json_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = amount_model("Extract the amount.")  # the same instruction: nothing else to try
    result = json_suite.runpytest("--optimize", "--optimize-strategy=mipro", "--optimize-preset=light",
                                  "--optimize-dry-run", "--promptopt-report=r.json")
    report = json.loads((json_suite.path / "r.json").read_text())
    expected = {t["nodeid"]: t["calls"][-1]["expected"] for t in report["tests"]}
    assert all(json.loads(e) == {"amount": float(n.split("[")[1].rstrip("]"))} for n, e in expected.items())
    log = report["optimization"]["groups"][0]["log"]
    (pool,) = [json.loads(line) for line in Path(log).read_text().splitlines() if '"demo_pool"' in line]
    train = report["optimization"]["groups"][0]["train"]["cases"]
    assert pool["labelled"] == pool["size"] == train  # every failed train case is a labelled demo
    assert "cannot start" not in result.stdout.str()


def test_a_suite_with_nothing_to_learn_from_says_it_cannot_start(suite: pytest.Pytester,
                                                                  scripted: ScriptedServer) -> None:
    # Field checks that never reach a comparison (the reply is not JSON) give no expected answer,
    # no case passes, and the optimizer model's rewrite drops {text}.
    suite.makefile(".yaml", extract=PROMPT)
    suite.makepyfile(test_extract=TESTS.replace('checks.json_equals(out, {"amount": amount})',
                                                'assert checks.json_output(out)["amount"] == amount'))
    scripted.responder = amount_model("Extract {amount} as JSON.")  # invents a placeholder: discarded
    result = suite.runpytest("--optimize", "--promptopt-report=r.json")
    result.stdout.re_match_lines([(r"  not written: cannot start: no demo can be built: no train case passes and no "
                                   r"expected answer is known, and all \d+ rewritten instruction\(s\) .* discarded.*"
                                   r"What would help: .*checks.json_equals.*")])
    (group,) = json.loads((suite.path / "r.json").read_text())["optimization"]["groups"]
    assert group["calls"] <= 15 and group["usage"]["task"].get("requests", 0) == 0  # a handful of optimizer calls
