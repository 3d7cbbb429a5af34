"""Round trips of --promptopt-exit-rule (issue 26): under `gates` (the default) a prompt's gate,
not each of its cases, decides whether it fails the session; `tests` keeps pytest's rule. The
exit code, the terminal's last line, the JSON report and JUnit agree."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from pytest_promptopt.testing import ScriptedServer

ENV_VARS = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "PROMPTOPT_BASE_URL", "PROMPTOPT_MODEL", "PROMPTOPT_API_KEY")
REPORTS = ("--promptopt-report=r.json", "--junitxml=junit.xml")


@pytest.fixture(autouse=True)
def _clean_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")


def shout_prompt(min_pass_rate: float | None) -> str:
    head = "" if min_pass_rate is None else f"min_pass_rate: {min_pass_rate}\n"
    return head + "messages:\n  - role: system\n    content: Shout.\n  - role: user\n    content: '{text}'\n"


def upper_unless_down(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    if messages[-1]["content"] == "down":
        raise RuntimeError("the endpoint is down")
    return messages[-1]["content"].upper()


# Three passing cases and one whose expected answer is wrong: a pass rate of 3/4.
THREE_OF_FOUR = """
import pytest
from pytest_promptopt import load_prompt
shout = load_prompt("shout.yaml")

@pytest.mark.parametrize("text", ["hello", "bye", "ok"])
def test_shout(llm, text):
    assert llm(shout, text=text) == text.upper()

def test_wrong(llm):
    assert llm(shout, text="x") == "y"
"""


@pytest.fixture
def shout(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    scripted.responder = upper_unless_down
    suite.makefile(".yaml", shout=shout_prompt(0.7))
    suite.makepyfile(test_shout=THREE_OF_FOUR)
    return suite


def reports(pytester: pytest.Pytester) -> tuple[dict[str, Any], dict[str, str], int]:
    """The JSON report, JUnit's suite properties and JUnit's failure count."""
    suite = ET.parse(pytester.path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    props = {p.get("name") or "": p.get("value") or "" for p in suite.findall("properties/property")}
    return json.loads((pytester.path / "r.json").read_text()), props, int(suite.get("failures") or 0)


def assert_agree(pytester: pytest.Pytester, result: pytest.RunResult, code: int, rule: str, reason: str) -> None:
    """Exit code, last terminal line, JSON report and JUnit say the same."""
    assert result.ret == code
    last = result.stdout.lines[-1]
    assert last.startswith(f"promptopt: exit {code} by the {rule} rule: "), result.stdout.lines[-5:]
    assert reason in last
    report, props, _ = reports(pytester)
    assert report["exit_code"] == code and report["exit_rule"]["code"] == code
    assert report["exit_rule"]["rule"] == rule and reason in report["exit_rule"]["reason"]
    assert props["promptopt_exit_code"] == str(code) and props["promptopt_exit_rule"] == rule
    assert props["promptopt_exit_reason"] == report["exit_rule"]["reason"]


def test_a_passed_gate_decides_and_the_failed_case_is_still_reported(shout: pytest.Pytester) -> None:
    result = shout.runpytest(*REPORTS)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError*", "shout.yaml*4*3*75.0%*ok (>= 70%)*",
                                 "FAILED test_shout.py::test_wrong*"])
    assert_agree(shout, result, 0, "gates", "1 failed test belongs to a prompt whose gate passed (shout.yaml)")
    report, props, failures = reports(shout)
    assert failures == 1 and props["promptopt_gate"] == "passed"  # the case is a failed testcase in JUnit
    assert report["gate"] == "passed" and report["exit_rule"]["excused"] == ["test_shout.py::test_wrong"]
    assert [t["passed"] for t in report["tests"]].count(False) == 1


def test_the_tests_rule_keeps_pytests_exit_code(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    result = shout.runpytest("--promptopt-exit-rule=tests", *REPORTS)
    result.assert_outcomes(passed=3, failed=1)
    assert_agree(shout, result, 1, "tests", "1 test failed; any failed test fails the session")
    shout.makeini(f"[pytest]\npromptopt_base_url = {scripted.base_url}\npromptopt_model = scripted\n"
                  "promptopt_exit_rule = tests\n")
    assert_agree(shout, shout.runpytest(*REPORTS), 1, "tests", "any failed test fails the session")
    # the command line over ini
    assert_agree(shout, shout.runpytest("--promptopt-exit-rule=gates", *REPORTS), 0, "gates", "gate passed")


def test_a_failed_gate_fails_the_session_under_both_rules(shout: pytest.Pytester) -> None:
    for rule in ("gates", "tests"):
        result = shout.runpytest("--promptopt-min-pass-rate=0.9", f"--promptopt-exit-rule={rule}", *REPORTS)
        if rule == "gates":
            assert_agree(shout, result, 1, rule, "gate failed: shout.yaml")
        else:
            assert_agree(shout, result, 1, rule, "1 test failed")
        report, props, _ = reports(shout)
        assert report["gate"] == "failed" and props["promptopt_gate"] == "failed"


def test_a_prompt_without_a_gate_behaves_as_pytest(shout: pytest.Pytester) -> None:
    shout.makefile(".yaml", shout=shout_prompt(None))
    result = shout.runpytest(*REPORTS)
    assert_agree(shout, result, 1, "gates", "1 test failed outside a gate (first: test_shout.py::test_wrong: "
                                            "shout.yaml has no gate")
    shout.makepyfile(test_shout=THREE_OF_FOUR.split("def test_wrong")[0])
    quiet = shout.runpytest(*REPORTS)  # nothing to decide: no failure, no gate, no line
    assert quiet.ret == 0 and not quiet.stdout.lines[-1].startswith("promptopt: exit")
    assert json.loads((shout.path / "r.json").read_text())["exit_rule"]["reason"] == "no test failed"


def test_a_failed_test_outside_any_prompt_fails_the_session(shout: pytest.Pytester) -> None:
    shout.makepyfile(test_other="def test_plain():\n    assert 1 == 2\n")
    result = shout.runpytest(*REPORTS)
    result.assert_outcomes(passed=3, failed=2)
    assert_agree(shout, result, 1, "gates", "1 test failed outside a gate (first: test_other.py::test_plain: "
                                            "it calls no prompt)")


def test_an_error_in_setup_fails_the_session(shout: pytest.Pytester) -> None:
    shout.makepyfile(test_other="""
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("no database")

        def test_needs_it(llm, broken):
            llm("shout.yaml", text="a")
    """)
    result = shout.runpytest(*REPORTS)
    result.assert_outcomes(passed=3, failed=1, errors=1)
    assert_agree(shout, result, 1, "gates", "failed outside a gate (first: test_other.py::test_needs_it: an error "
                                            "in setup)")


def test_an_endpoint_that_is_down_fails_the_session(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    shout.makepyfile(test_shout=THREE_OF_FOUR.replace('"ok"]', '"ok", "down"]').split("def test_wrong")[0])
    result = shout.runpytest("--promptopt-min-pass-rate=0.5", *REPORTS)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["shout.yaml*4*3*75.0%*ok (>= 50%)*"])
    assert_agree(shout, result, 1, "gates", "1 test could not be scored, the LM call failed (first: "
                                            "test_shout.py::test_shout[down]")


def test_a_replay_miss_fails_the_session(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    shout.runpytest("-k", "not ok")  # records three of the four cases
    result = shout.runpytest("--promptopt-record=replay", "--promptopt-min-pass-rate=0.5", *REPORTS)
    result.assert_outcomes(passed=2, failed=2)
    assert_agree(shout, result, 1, "gates", "1 test could not be scored, the LM call failed (first: "
                                            "test_shout.py::test_shout[ok]")
    assert scripted.count == 3


def test_a_run_stopped_early_fails_the_session(shout: pytest.Pytester) -> None:
    shout.makepyfile(test_zz_more="def test_more(llm):\n    assert llm('shout.yaml', text='z') == 'Z'\n")
    result = shout.runpytest("-x", *REPORTS)
    result.assert_outcomes(passed=3, failed=1)  # test_zz_more never ran
    assert_agree(shout, result, 1, "gates", "the run stopped early (stopping after 1 failures), so the gates "
                                            "did not see every case")


def test_an_interrupted_run_keeps_its_exit_code(shout: pytest.Pytester) -> None:
    shout.makepyfile(test_stop="def test_zz_stop(llm):\n    llm('shout.yaml', text='a')\n    raise KeyboardInterrupt\n")
    result = shout.runpytest_subprocess("-p", "no:cacheprovider", *REPORTS)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    report = json.loads((shout.path / "r.json").read_text())
    assert report["exit_code"] == 2 and report["exit_rule"]["reason"] == "the run was interrupted"


def test_a_usage_error_names_the_allowed_rules(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    result = shout.runpytest("--promptopt-exit-rule=cases")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--promptopt-exit-rule*invalid choice: 'cases'*gates*tests*"])
    shout.makeini(f"[pytest]\npromptopt_base_url = {scripted.base_url}\npromptopt_model = m\npromptopt_exit_rule = cases\n")
    result = shout.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini option promptopt_exit_rule = 'cases': expected one of gates, tests*"])
    assert scripted.count == 0


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
BASELINE_TESTS = f"""
import pytest
from pytest_promptopt import load_prompt
shout = load_prompt("shout.yaml")

@pytest.mark.parametrize("text", {WORDS!r})
def test_shout(llm, text):
    assert llm(shout, text=text) == text.upper()
"""


def test_the_baseline_gate_decides_a_reshuffle(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    """An edit that only changes which cases pass (McNemar not significant) exits 0; a real drop exits 1."""
    broken = {"Shout.": {"alpha"}, "Mumble.": {"bravo"}, "Whisper.": set(WORDS)}

    def respond(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        text = messages[-1]["content"]
        return text if text in broken[messages[0]["content"]] else text.upper()

    def prompt(how: str) -> None:
        suite.makefile(".yaml", shout=f"messages:\n  - role: system\n    content: {how}\n"
                                      "  - role: user\n    content: '{text}'\n")

    scripted.responder = respond
    suite.makepyfile(test_shout=BASELINE_TESTS)
    prompt("Shout.")
    suite.runpytest("--promptopt-save-baseline=base.json", "--promptopt-exit-rule=tests").assert_outcomes(passed=7, failed=1)
    prompt("Mumble.")  # alpha now passes, bravo now fails
    result = suite.runpytest("--promptopt-baseline=base.json", *REPORTS)
    result.assert_outcomes(passed=7, failed=1)
    result.stdout.fnmatch_lines(["  gate ok: McNemar exact p = 1 on 1 now failing vs 1 now passing*"])
    assert_agree(suite, result, 0, "gates", "1 failed test belongs to a prompt whose gate passed (shout.yaml)")
    prompt("Whisper.")
    result = suite.runpytest("--promptopt-baseline=base.json", *REPORTS)
    result.assert_outcomes(failed=8)
    assert_agree(suite, result, 1, "gates", "gate failed: shout.yaml")
