from __future__ import annotations

import pytest
from example import Example

from pytest_promptopt.testing import ScriptedServer


def test_llm_fixture_pass_fail_and_summary(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = lambda messages, body: messages[-1]["content"].upper()
    example = Example(suite, {"shout.yaml": "messages:\n  - role: system\n    content: Shout.\n  - role: user\n    content: '{text}'\n"},
                      tests="""
        import pytest
        from pytest_promptopt import load_prompt
        shout = load_prompt("shout.yaml")

        @pytest.mark.parametrize("text", ["hello", "bye"])
        def test_shout(llm, text):
            assert llm(shout, text=text) == text.upper()

        def test_wrong(llm):
            assert llm(shout, text="x") == "y"
        """)
    result = example.run_pytest()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*promptopt: prompts*", "shout.yaml*3*2*66.7%*"])
    assert result.report["prompts"][0]["cases"] == 3
    assert result.report["prompts"][0]["passed"] == 2
    assert scripted.count == 3
    again = example.run_pytest()
    again.assert_outcomes(passed=2, failed=1)
    assert scripted.count == 3  # all from cache
    assert again.report["prompts"][0]["cache_hits"] == 3
