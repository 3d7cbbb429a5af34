"""The optimizer model sees the whole evidence of a judged case: the reference answer the test
gave the judge (`judge(output, criteria, expected=...)`) next to the output and the reason."""

from __future__ import annotations

import json

import pytest
from wordtask import is_optimizer

from pytest_promptopt.testing import ScriptedServer

PROMPT = """\
messages:
  - role: system
    content: Answer the question.
  - role: user
    content: "{question}"
"""

TESTS = """
import pytest
from pytest_promptopt import load_prompt
p = load_prompt("qa.yaml")

@pytest.mark.parametrize("i", range(8))
def test_answer(llm, judge, i):
    out = llm(p, question=f"What is item {i}?")
    judge(out, criteria="Gives the reference answer.", expected=f"REFERENCE-{i}", threshold=0.7)
"""


def test_the_optimizer_is_shown_the_expected_answer_of_a_failed_judged_case(suite: pytest.Pytester,
                                                                             scripted: ScriptedServer) -> None:
    shown: list[str] = []

    def respond(messages: list[dict[str, str]], body: dict) -> str:
        everything = "\n".join(m["content"] for m in messages)
        if is_optimizer(messages):
            shown.append(everything)
            return "Answer the question with the reference answer."
        if '{"score"' in everything:
            return json.dumps({"score": 0.2, "reason": "not the reference answer"})
        return "I do not know."

    scripted.responder = respond
    suite.makefile(".yaml", qa=PROMPT)
    suite.makepyfile(test_qa=TESTS)
    suite.runpytest("--optimize", "--optimize-strategy=gradsum", "--optimize-preset=light", "--optimize-dry-run")
    evidence = [text for text in shown if "WHY THE TEST FAILED" in text]
    assert evidence, "no failed case was shown to the optimizer model"
    assert all("EXPECTED OUTPUT" in text and "REFERENCE-" in text for text in evidence)
