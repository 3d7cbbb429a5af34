from __future__ import annotations

import json

import pytest

from pytest_promptopt.testing import ScriptedServer


def test_llm_fixture_pass_fail_and_summary(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = lambda messages, body: messages[-1]["content"].upper()
    suite.makefile(".yaml", shout="messages:\n  - role: system\n    content: Shout.\n  - role: user\n    content: '{text}'\n")
    suite.makepyfile(
        """
        import pytest
        from pytest_promptopt import load_prompt
        shout = load_prompt("shout.yaml")

        @pytest.mark.parametrize("text", ["hello", "bye"])
        def test_shout(llm, text):
            assert llm(shout, text=text) == text.upper()

        def test_wrong(llm):
            assert llm(shout, text="x") == "y"
        """
    )
    result = suite.runpytest("--promptopt-report=report.json")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*promptopt: prompts*", "shout.yaml*3*2*66.7%*"])
    report = json.loads((suite.path / "report.json").read_text())
    assert report["prompts"][0]["cases"] == 3
    assert report["prompts"][0]["passed"] == 2
    assert scripted.count == 3
    again = suite.runpytest("--promptopt-report=report.json")
    again.assert_outcomes(passed=2, failed=1)
    assert scripted.count == 3  # all from cache
    report = json.loads((suite.path / "report.json").read_text())
    assert report["prompts"][0]["cache_hits"] == 3
