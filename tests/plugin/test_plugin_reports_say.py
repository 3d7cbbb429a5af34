"""Round trips of what the reports say (issue 26): errors end their traceback at the user's
line, a failed judge(..., expected=...) shows the expected answer, and a baseline comparison
of some of the tests compares only the prompts that ran."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from pytest_promptopt.testing import ScriptedServer

ENV_VARS = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "PROMPTOPT_BASE_URL", "PROMPTOPT_MODEL", "PROMPTOPT_API_KEY")
SHOUT = "messages:\n  - role: system\n    content: Shout.\n  - role: user\n    content: '{text}'\n"


@pytest.fixture(autouse=True)
def _clean_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")


def answer(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    return messages[-1]["content"].upper()  # to the judge too: a reply with no score


def failed_reports(result: pytest.RunResult) -> dict[str, Any]:
    reports = result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
    return {r.nodeid.split("::")[-1]: r for r in reports if r.failed}


@pytest.mark.parametrize("case", ["replay_miss", "template_error", "judge_without_score"])
def test_an_error_ends_its_traceback_at_the_users_line(suite: pytest.Pytester, scripted: ScriptedServer,
                                                        case: str) -> None:
    scripted.responder = answer
    suite.makefile(".yaml", shout=SHOUT)
    suite.makepyfile(test_it="""
        def test_replay_miss(llm):
            llm("shout.yaml", text="never recorded")  # the user's line

        def test_template_error(llm):
            llm("shout.yaml", txt="typo")  # the user's line

        def test_judge_without_score(llm, judge):
            judge(llm("shout.yaml", text="a"), criteria="Shouts.")  # the user's line
    """)
    suite.runpytest("-k", "judge")  # records the task call of the judge test
    result = suite.runpytest("-k", case, *(["--promptopt-record=replay"] if case == "replay_miss" else []))
    report = failed_reports(result)[f"test_{case}"]
    entries = report.longrepr.reprtraceback.reprentries
    assert len(entries) == 1, report.longreprtext  # no frame of the plugin below the test's own
    assert entries[0].reprfileloc.path == "test_it.py"
    assert "# the user's line" in "\n".join(entries[0].lines)
    assert "pytest_promptopt/" not in report.longreprtext  # no file of the plugin is shown


def test_a_failed_judge_shows_the_expected_answer(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    def respond(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        if len(messages) > 1 and "EXPECTED:" in messages[-1]["content"]:
            return "score: 0.2\nreason: opens at 10, not 9"
        return "The branch opens at 10."

    scripted.responder = respond
    suite.makefile(".txt", qa="Question: {question}")
    suite.makepyfile(test_qa="""
        def test_answer(llm, judge):
            judge(llm("qa.txt", question="When?"), criteria="Matches the expected answer.",
                  expected="At 9:00 on weekdays.", threshold=0.7)
    """)
    result = suite.runpytest("--promptopt-judge-mode=score")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*judge score 0.20 is below the threshold 0.70",
                                 "*  criteria: Matches the expected answer.",
                                 "*  expected: 'At 9:00 on weekdays.'",
                                 "*  reason: opens at 10, not 9",
                                 "*  output: 'The branch opens at 10.'"])


def test_a_subset_compares_only_the_prompts_that_ran(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = lambda messages, body: messages[-1]["content"].upper()
    suite.makefile(".yaml", shout=SHOUT, other=SHOUT)
    suite.makepyfile(test_two="""
        def test_shout(llm):
            assert llm("shout.yaml", text="a") == "A"

        def test_other(llm):
            assert llm("other.yaml", text="b") == "B"
    """)
    suite.runpytest("--promptopt-save-baseline=base.json").assert_outcomes(passed=2)
    result = suite.runpytest("-k", "shout", "--promptopt-baseline=base.json", "--promptopt-report=r.json",
                             "--junitxml=junit.xml")
    result.stdout.fnmatch_lines(["compared with baseline *; not compared, no test of them ran: other.yaml",
                                 "shout.yaml: pass rate 100.0%*"])
    assert "other.yaml: pass rate" not in result.stdout.str()  # not "0.0% of 0 now"
    compared = json.loads((suite.path / "r.json").read_text())["baseline"]["comparison"]["prompts"]
    assert [p["prompt"] for p in compared] == ["shout.yaml"]
    gates = [c.get("name") for c in ET.parse(suite.path / "junit.xml").getroot().iter("testcase")
             if c.get("classname") == "promptopt.gate"]
    assert gates == ["baseline[shout.yaml]"]


def test_checks_are_labelled_as_checks_not_judge_scores(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    def respond(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        if "CRITERIA" in messages[-1]["content"] or "criteria" in messages[-1]["content"].lower():
            return "score: 0.9\nreason: fine"
        return "The branch opens at 9."

    scripted.responder = respond
    suite.makefile(".txt", qa="Question: {question}")
    suite.makepyfile(test_qa="""
        from pytest_promptopt import checks

        def test_checked(llm):
            checks.contains(llm("qa.txt", question="When?"), "9")

        def test_judged(llm, judge):
            judge(llm("qa.txt", question="Open?"), criteria="Gives the hour.")
    """)
    suite.runpytest("--promptopt-judge-mode=score", "--promptopt-save-baseline=base.json").assert_outcomes(passed=2)
    base = json.loads((suite.path / "base.json").read_text())
    saved = base["prompts"]["qa.txt"]["cases"]
    assert {n.split("::")[-1]: (c["judged"], c["checked"]) for n, c in saved.items()} == {
        "test_checked": (False, True), "test_judged": (True, False)}
    for case in saved.values():  # the file as saved before "checked" existed still loads
        del case["checked"]
    (suite.path / "base.json").write_text(json.dumps(base))
    result = suite.runpytest("--promptopt-judge-mode=score", "--promptopt-baseline=base.json",
                             "--promptopt-report=r.json", "--promptopt-html=r.html")
    tests = {t["nodeid"].split("::")[-1]: t for t in json.loads((suite.path / "r.json").read_text())["tests"]}
    assert [v["kind"] for v in tests["test_checked"]["verdicts"]] == ["check"]
    assert [v["kind"] for v in tests["test_judged"]["verdicts"]] == ["judge"]
    result.stdout.fnmatch_lines(["qa.txt: pass rate *; judge score change +0.000 over 1 paired case(s)"])
    html = (suite.path / "r.html").read_text(encoding="utf-8")
    assert "score 1.000 (checks)" in html and "score 0.900 (judge)" in html and "<b>check</b> score 1.000" in html


def test_tokens_and_cost_count_the_same_calls_sent_and_cached_apart(suite: pytest.Pytester,
                                                                    scripted: ScriptedServer) -> None:
    """A first run sends every call; a second, with one new test, sends that one and serves the
    others from the cache: the cost goes with the sent calls' tokens, the cached ones are apart."""
    scripted.responder = lambda messages, body: {
        "content": messages[-1]["content"].upper(),
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}
    suite.makeini(f"[pytest]\npromptopt_base_url = {scripted.base_url}\npromptopt_model = scripted\n"
                  "promptopt_prices = scripted = 1000, 2000\n")  # $ per million tokens: a call costs $0.014
    suite.makefile(".yaml", shout=SHOUT)
    tests = """
        import pytest

        @pytest.mark.parametrize("text", WORDS)
        def test_shout(llm, text):
            assert llm("shout.yaml", text=text) == text.upper()
    """
    suite.makepyfile(test_it=tests.replace("WORDS", '["a", "b"]'))

    def run() -> tuple[dict[str, Any], list[str]]:
        result = suite.runpytest("-p", "no:randomly", "--promptopt-report=r.json", "--promptopt-html=r.html")
        header = next(ln for ln in result.outlines if ln.startswith("prompt ") and "gate" in ln)
        row = next(ln for ln in result.outlines if ln.startswith("shout.yaml"))
        (prompt,) = json.loads((suite.path / "r.json").read_text())["prompts"]
        return prompt, [header, row]

    first, (header, row) = run()
    assert "tokens sent + cached" in header and "cost of sent" in header
    assert scripted.count == 2
    assert {k: first[k] for k in ("calls", "cache_hits", "tokens", "tokens_sent", "tokens_cached", "cost")} == {
        "calls": 2, "cache_hits": 0, "tokens": 24, "tokens_sent": 24, "tokens_cached": 0, "cost": 0.028}
    assert "24 + 0" in row and "$0.0280" in row
    suite.makepyfile(test_it=tests.replace("WORDS", '["a", "b", "c"]'))
    second, (_, row) = run()
    assert scripted.count == 3  # one more call sent, two served from the cache
    assert {k: second[k] for k in ("calls", "cache_hits", "tokens", "tokens_sent", "tokens_cached", "cost")} == {
        "calls": 3, "cache_hits": 2, "tokens": 36, "tokens_sent": 12, "tokens_cached": 24, "cost": 0.014}
    assert "12 + 24" in row and "$0.0140" in row
    html = (suite.path / "r.html").read_text(encoding="utf-8")
    assert "<th>tokens sent</th><th>tokens cached</th><th>cost of sent</th>" in html
    assert "<tr><td>task</td><td>tests</td><td>3</td><td>2</td><td>12</td><td>24</td><td>$0.0140</td></tr>" in html
    warm, (_, row) = run()  # every reply cached: nothing sent, nothing paid
    assert scripted.count == 3
    assert {k: warm[k] for k in ("calls", "cache_hits", "tokens", "tokens_sent", "tokens_cached", "cost")} == {
        "calls": 3, "cache_hits": 3, "tokens": 36, "tokens_sent": 0, "tokens_cached": 36, "cost": 0.0}
    assert "0 + 36" in row and "$0.0000" in row
