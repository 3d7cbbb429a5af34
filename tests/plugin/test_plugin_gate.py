"""Round trips for the CI gate, the JSON and JUnit reports, bad prompt files and pytest-xdist."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from example import Example

from pytest_promptopt.testing import ScriptedServer

ENV_VARS = (
    "OPENAI_BASE_URL", "OPENAI_API_KEY", "PROMPTOPT_BASE_URL", "PROMPTOPT_MODEL", "PROMPTOPT_API_KEY",
    "PROMPTOPT_JUDGE_BASE_URL", "PROMPTOPT_JUDGE_MODEL", "PROMPTOPT_JUDGE_API_KEY",
)


@pytest.fixture(autouse=True)
def _clean_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    # hypothesis' plugin re-imports (and re-rewrites) its package in every inner run: ~1 s each
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")


def upper(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    return messages[-1]["content"].upper()


def shout_prompt(min_pass_rate: float | None = None) -> str:
    head = f"min_pass_rate: {min_pass_rate}\n" if min_pass_rate is not None else ""
    return head + "messages:\n  - role: system\n    content: Shout.\n  - role: user\n    content: '{text}'\n"


# Two passing cases and one whose expected answer is wrong: a pass rate of 2/3.
TWO_OF_THREE = """
import pytest
from pytest_promptopt import load_prompt
shout = load_prompt("shout.yaml")

@pytest.mark.parametrize("text", ["hello", "bye"])
def test_shout(llm, text):
    assert llm(shout, text=text) == text.upper()

def test_wrong(llm):
    assert llm(shout, text="x") == "y"
"""

# The same 2/3 pass rate, but the failing case is an expected failure: pytest alone exits 0.
TWO_OF_THREE_XFAIL = TWO_OF_THREE.replace("def test_wrong", "@pytest.mark.xfail(strict=True)\ndef test_wrong")


@pytest.fixture
def gated(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    scripted.responder = upper
    suite.makefile(".yaml", shout=shout_prompt())
    return suite


def _ini(pytester: pytest.Pytester, server: ScriptedServer, **values: object) -> None:
    lines = ["[pytest]", f"promptopt_base_url = {server.base_url}", "promptopt_model = scripted"]
    pytester.makeini("\n".join(lines + [f"{k} = {v}" for k, v in values.items()]) + "\n")


# -- gate --------------------------------------------------------------------------------------

def test_gate_failed_on_the_command_line(gated: pytest.Pytester) -> None:
    gated.makepyfile(test_shout=TWO_OF_THREE)
    result = gated.runpytest("--promptopt-min-pass-rate", "0.9")
    result.assert_outcomes(passed=2, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "shout.yaml*3*2*66.7%*FAIL (< 90%)*",
        "gate failed: shout.yaml passed 66.7% of 3 cases; at least 90% required",
    ])


def test_gate_met(gated: pytest.Pytester) -> None:
    gated.makepyfile(test_shout=TWO_OF_THREE)
    result = gated.runpytest("--promptopt-min-pass-rate=0.6")
    result.stdout.fnmatch_lines(["shout.yaml*3*2*66.7%*ok (>= 60%)*"])
    assert "gate failed" not in result.stdout.str()
    # exactly at the threshold is met as well
    gated.makepyfile(test_shout=TWO_OF_THREE.replace('"bye"]', '"bye", "ok"]'))  # 3 of 4
    gated.runpytest("--promptopt-min-pass-rate=0.75").stdout.fnmatch_lines(["shout.yaml*4*3*75.0%*ok (>= 75%)*"])
    # a met gate adds no failure: only passing tests, exit code 0
    gated.makepyfile(test_shout=TWO_OF_THREE.split("def test_wrong")[0])
    assert gated.runpytest("--promptopt-min-pass-rate=1.0").ret == pytest.ExitCode.OK


def test_gate_from_the_prompt_file(gated: pytest.Pytester) -> None:
    gated.makefile(".yaml", shout=shout_prompt(0.9))
    gated.makepyfile(test_shout=TWO_OF_THREE)
    result = gated.runpytest()
    result.stdout.fnmatch_lines(["gate failed: shout.yaml passed 66.7% of 3 cases; at least 90% required"])
    gated.makefile(".yaml", shout=shout_prompt(0.5))
    assert "gate failed" not in gated.runpytest().stdout.str()


def test_gate_from_ini(gated: pytest.Pytester, scripted: ScriptedServer) -> None:
    gated.makepyfile(test_shout=TWO_OF_THREE)
    _ini(gated, scripted, promptopt_min_pass_rate=0.9)
    result = gated.runpytest()
    result.stdout.fnmatch_lines(["gate failed: shout.yaml*at least 90% required"])
    _ini(gated, scripted, promptopt_min_pass_rate=0.5)
    assert "gate failed" not in gated.runpytest().stdout.str()


@pytest.mark.parametrize(
    ("ini", "file", "cli", "failed"),
    [
        (0.9, 0.5, None, False),  # the prompt file over ini
        (0.5, 0.9, None, True),
        (None, 0.9, "0.5", False),  # the command line over the prompt file
        (None, 0.5, "0.9", True),
        (0.9, None, "0.5", False),  # the command line over ini
        (0.5, None, "0.9", True),
        (0.9, 0.9, "0.5", False),  # the command line over both
    ],
)
def test_gate_precedence(gated: pytest.Pytester, scripted: ScriptedServer, ini: float | None,
                         file: float | None, cli: str | None, failed: bool) -> None:
    example = Example(gated, {"shout.yaml": shout_prompt(file), "test_shout.py": TWO_OF_THREE})
    _ini(gated, scripted, **({"promptopt_min_pass_rate": ini} if ini is not None else {}))
    result = example.run_pytest(*([f"--promptopt-min-pass-rate={cli}"] if cli else []), "--promptopt-report=r.json")
    assert ("gate failed" in result.stdout.str()) is failed
    assert result.report["gate"] == ("failed" if failed else "passed")


def test_gate_is_per_prompt(gated: pytest.Pytester) -> None:
    example = Example(gated, {
        "quiet.yaml": "min_pass_rate: 1.0\nmessages:\n  - role: user\n    content: '{text}'\n",
        "test_two.py": TWO_OF_THREE,
        "test_quiet.py": """
            def test_quiet(llm):
                assert llm("quiet.yaml", text="ok") == "OK"
        """,
    })
    result = example.run_pytest("--promptopt-report=r.json")
    assert "gate failed" not in result.stdout.str()  # shout.yaml has no gate; quiet.yaml passes 100%
    assert {p["prompt"]: p["gate"] for p in result.report["prompts"]} == {"quiet.yaml": "passed", "shout.yaml": "passed"}
    gated.makefile(".yaml", shout=shout_prompt(0.9))
    result = gated.runpytest()
    assert "gate failed: shout.yaml" in result.stdout.str()
    assert "gate failed: quiet.yaml" not in result.stdout.str()


def test_skipped_case_does_not_count_against_the_gate(gated: pytest.Pytester) -> None:
    example = Example(gated, tests="""
        import pytest

        def test_ok(llm):
            assert llm("shout.yaml", text="a") == "A"

        def test_skipped(llm):
            llm("shout.yaml", text="b")
            pytest.skip("not today")
        """)
    result = example.run_pytest("--promptopt-min-pass-rate=0.9", "--promptopt-report=r.json")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK
    assert [(p["cases"], p["passed"], p["gate"]) for p in result.report["prompts"]] == [(1, 1, "passed")]
    assert [t["nodeid"] for t in result.report["tests"]] == ["test_skipped_case_does_not_count_against_the_gate.py::test_ok"]


# -- reports -----------------------------------------------------------------------------------

def test_json_report_content(gated: pytest.Pytester, scripted: ScriptedServer) -> None:
    example = Example(gated, {"test_shout.py": TWO_OF_THREE})
    result = example.run_pytest("--promptopt-report=out/report.json", "--promptopt-min-pass-rate=0.9")
    result.stdout.fnmatch_lines(["promptopt report: *out/report.json"])
    report = result.report
    assert report["version"] == 2
    assert report["record_mode"] == "normal"
    assert report["gate"] == "failed"
    (prompt,) = report["prompts"]
    assert prompt == {
        "prompt": "shout.yaml", "cases": 3, "passed": 2, "pass_rate": 0.6667, "mean_score": 0.6667,
        "calls": 3, "tokens": prompt["tokens"], "tokens_sent": prompt["tokens"], "tokens_cached": 0, "cost": None,
        "cache_hits": 0, "min_pass_rate": 0.9,
        "gate": "failed", "errors": 0, "xfailed": 0, "advisory": 0,
    }
    assert prompt["tokens"] > 0
    tests = {t["nodeid"]: t for t in report["tests"]}
    assert set(tests) == {"test_shout.py::test_shout[hello]", "test_shout.py::test_shout[bye]",
                          "test_shout.py::test_wrong"}
    assert [tests[n]["passed"] for n in sorted(tests)] == [True, True, False]
    assert tests["test_shout.py::test_wrong"]["score"] == 0.0
    key = str(gated.path / "shout.yaml")
    assert tests["test_shout.py::test_wrong"]["usage"][key]["requests"] == 1
    assert tests["test_shout.py::test_wrong"]["calls"] == [
        {"prompt": key, "inputs": {"text": "x"}, "output": "X", "expected": "y",
         "messages": [{"role": "system", "content": "Shout."}, {"role": "user", "content": "x"}]}]
    assert tests["test_shout.py::test_wrong"]["message"].startswith("AssertionError: assert 'X' == 'y'")
    assert report["cache"] == {"hits": 0, "calls": 3}
    # a cached, gate-free second run
    report = example.run_pytest("--promptopt-report=out/report.json", "--promptopt-record=replay").report
    assert report["record_mode"] == "replay"
    assert report["gate"] == "passed"
    assert report["cache"] == {"hits": 3, "calls": 3}
    assert scripted.count == 3


def test_json_report_from_ini(gated: pytest.Pytester, scripted: ScriptedServer) -> None:
    gated.makepyfile(test_shout=TWO_OF_THREE)
    _ini(gated, scripted, promptopt_report="ini-report.json")
    gated.runpytest()
    assert json.loads((gated.path / "ini-report.json").read_text())["prompts"][0]["cases"] == 3


def test_junitxml_has_the_score_property(gated: pytest.Pytester) -> None:
    gated.makepyfile(test_shout=TWO_OF_THREE + "\ndef test_no_llm():\n    pass\n")
    gated.runpytest("--junitxml=junit.xml")
    root = ET.parse(gated.path / "junit.xml").getroot()
    props = {}
    for case in root.iter("testcase"):
        props[case.get("name")] = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["test_shout[hello]"] == {"promptopt_score": "1.0", "promptopt_prompt": "shout.yaml"}
    assert props["test_shout[bye]"]["promptopt_score"] == "1.0"
    assert props["test_wrong"]["promptopt_score"] == "0.0"
    assert props["test_no_llm"] == {}  # a test without LM calls gets no score


# -- bad prompt files --------------------------------------------------------------------------

BAD_ROLE = "messages:\n  - role: robot\n    content: hi\n"
BAD_PLACEHOLDER = "messages:\n  - role: user\n    content: 'Hello {x.__class__}'\n"


@pytest.mark.parametrize(
    ("content", "problem", "fix"),
    [
        (BAD_ROLE, "bad.yaml:2 (field 'messages[0].role'): unknown role 'robot'", "fix: use one of the allowed roles"),
        (BAD_PLACEHOLDER, "bad.yaml:3 (field 'messages[0].content'): attribute access in placeholder '{x.__class__}'",
         "fix: pass the value you need as its own variable and write {x}"),
    ],
)
def test_bad_prompt_file_at_import_is_a_collection_error(gated: pytest.Pytester, scripted: ScriptedServer,
                                                         content: str, problem: str, fix: str) -> None:
    gated.makefile(".yaml", bad=content)
    gated.makepyfile(
        test_bad="""
            from pytest_promptopt import load_prompt
            bad = load_prompt("bad.yaml")

            def test_it(llm):
                llm(bad, x=1)
        """,
        test_good="""
            def test_good(llm):
                assert llm("shout.yaml", text="a") == "A"
        """,
    )
    result = gated.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "ERROR collecting test_bad.py" in out
    assert str(gated.path / problem) in out
    assert fix in out
    assert scripted.count == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [(BAD_ROLE, "unknown role 'robot'"), (BAD_PLACEHOLDER, "attribute access in placeholder '{x.__class__}'")],
)
def test_bad_prompt_file_in_the_test_fails_that_test(gated: pytest.Pytester, scripted: ScriptedServer,
                                                     content: str, problem: str) -> None:
    gated.makefile(".yaml", bad=content)
    gated.makepyfile(
        """
        def test_bad(llm):
            llm("bad.yaml", x=1)

        def test_good(llm):
            assert llm("shout.yaml", text="a") == "A"
        """
    )
    result = gated.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    (failed,) = result.reprec.listoutcomes()[2]  # type: ignore[attr-defined]
    message = failed.longrepr.reprcrash.message
    assert str(gated.path / "bad.yaml") in message
    assert problem in message
    assert "fix:" in failed.longreprtext
    assert scripted.count == 1


def test_wrong_variables_fail_the_test_with_the_fix(gated: pytest.Pytester) -> None:
    gated.makepyfile(
        """
        def test_missing(llm):
            llm("shout.yaml")

        def test_extra(llm):
            llm("shout.yaml", text="a", tone="calm")
        """
    )
    result = gated.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*missing variable 'text'*", "*fix: pass text=...*"])
    result.stdout.fnmatch_lines(["*unknown variable(s) [[]'tone'[]]*", "*fix: remove the extra keyword argument*"])


# -- pytest-xdist ------------------------------------------------------------------------------

def test_xdist_controller_merges_all_workers(gated: pytest.Pytester, scripted: ScriptedServer) -> None:
    example = Example(gated, {
        "test_many.py": """
            import pytest
            from pytest_promptopt import load_prompt
            shout = load_prompt("shout.yaml")

            @pytest.mark.parametrize("text", [f"word{i}" for i in range(8)])
            def test_shout(llm, text):
                assert llm(shout, text=text) == text.upper()

            @pytest.mark.parametrize("text", ["a", "b"])
            def test_wrong(llm, text):
                assert llm(shout, text=text) == "nope"
        """,
    })
    args = ("-n", "2", "-p", "no:cacheprovider", "--promptopt-report=r.json", "--promptopt-min-pass-rate=0.9",
            "--junitxml=junit.xml")
    result = example.run_pytest(*args, subprocess=True)
    result.assert_outcomes(passed=8, failed=2)
    result.stdout.fnmatch_lines(["*2 workers*", "shout.yaml*10*8*80.0%*FAIL (< 90%)*",
                                 "gate failed: shout.yaml passed 80.0% of 10 cases; at least 90% required"])
    assert scripted.count == 10
    report = result.report
    assert len(report["tests"]) == 10
    assert len({t["nodeid"] for t in report["tests"]}) == 10
    assert report["prompts"][0]["cases"] == 10 and report["prompts"][0]["calls"] == 10
    assert report["gate"] == "failed"
    scores = [p.get("value") for p in ET.parse(gated.path / "junit.xml").getroot().iter("property")
              if p.get("name") == "promptopt_score"]
    assert sorted(scores) == ["0.0"] * 2 + ["1.0"] * 8
    # the workers share the on-disk cache: a second distributed run makes no calls
    again = example.run_pytest(*args, subprocess=True)
    again.assert_outcomes(passed=8, failed=2)
    assert scripted.count == 10
    assert again.report["cache"] == {"hits": 10, "calls": 10}


def test_optimize_with_xdist_is_a_usage_error(gated: pytest.Pytester, scripted: ScriptedServer) -> None:
    gated.makepyfile(test_shout=TWO_OF_THREE)
    result = gated.runpytest("--optimize", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--optimize runs in one process*-n/--numprocesses*"])
    assert scripted.count == 0


# -- what counts against a prompt (issue 12) ----------------------------------------------------

BEFORE_THE_CALL = """
import pytest
from pytest_promptopt import load_prompt
shout = load_prompt("shout.yaml")

@pytest.mark.parametrize("text", ["hello", "bye"])
def test_shout(llm, text):
    assert llm(shout, text=text) == text.upper()

@pytest.mark.parametrize("n", [1, 2])
def test_template_error(llm, n):
    llm(shout, txt="typo")  # fails while rendering, before any LM call
"""


def test_a_test_failing_before_its_call_counts_against_its_prompt(gated: pytest.Pytester,
                                                                   scripted: ScriptedServer) -> None:
    example = Example(gated, {"test_shout.py": BEFORE_THE_CALL})
    result = example.run_pytest("--promptopt-min-pass-rate=0.9", "--promptopt-report=r.json", "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, failed=2)
    assert scripted.count == 2
    result.stdout.fnmatch_lines(["shout.yaml*4*2*50.0%*FAIL (< 90%)*",
                                 "gate failed: shout.yaml passed 50.0% of 4 cases; at least 90% required"])
    report = result.report
    assert (report["prompts"][0]["cases"], report["prompts"][0]["passed"]) == (4, 2)
    failed = [t for t in report["tests"] if not t["passed"]]
    assert len(failed) == 2 and all("txt" in t["message"] or "text" in t["message"] for t in failed)
    props = [p.get("value") for c in ET.parse(gated.path / "junit.xml").getroot().iter("testcase")
             if "template_error" in (c.get("name") or "") for p in c.iter("property") if p.get("name") == "promptopt_prompt"]
    assert props == ["shout.yaml", "shout.yaml"]


def test_an_expected_failure_is_left_out_of_the_pass_rate(gated: pytest.Pytester) -> None:
    """xfail is pytest's "known to fail": pytest counts it apart from passed and failed, so does the
    prompt table, and no gate counts it as a failure (a strict XPASS still fails, as in pytest)."""
    result = Example(gated, {"test_shout.py": TWO_OF_THREE_XFAIL}).run_pytest("--promptopt-min-pass-rate=1.0",
                                                                              "--promptopt-report=r.json")
    result.assert_outcomes(passed=2, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["shout.yaml*2*2*100.0%*ok (>= 100%)*",
                                 "expected failures (xfail) left out of the pass rate: 1 case(s) of shout.yaml"])
    report = result.report
    assert report["prompts"][0]["cases"] == 2 and report["prompts"][0]["xfailed"] == 1
    assert report["gate"] == "passed" and report["exit_code"] == 0
    assert [t["xfail"] for t in report["tests"]].count(True) == 1


def test_a_prompt_whose_cases_all_xfail_has_nothing_to_gate(gated: pytest.Pytester) -> None:
    gated.makepyfile(test_shout=TWO_OF_THREE.replace("def test_", "@pytest.mark.xfail\ndef test_"))
    result = gated.runpytest("--promptopt-min-pass-rate=0.5")
    result.assert_outcomes(xfailed=1, xpassed=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["shout.yaml*0*0*-*- (no cases)*"])


def test_the_gate_that_fails_the_session_is_in_junit_and_the_json_report(gated: pytest.Pytester) -> None:
    """The verdict of the exit code, the JUnit file and the JSON report is the same."""
    example = Example(gated, {"test_shout.py": BEFORE_THE_CALL})
    result = example.run_pytest("--promptopt-min-pass-rate=0.9", "--promptopt-report=r.json", "--junitxml=junit.xml")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    suite = ET.parse(gated.path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures") or 0) == 3  # two tests and the gate
    gate = [c for c in suite.iter("testcase") if c.get("classname") == "promptopt.gate"]
    assert [c.get("name") for c in gate] == ["min_pass_rate[shout.yaml]"] and gate[0].find("failure") is not None
    report = result.report
    assert report["gate"] == "failed" and report["exit_code"] == 1 and report["prompts"][0]["gate"] == "failed"
    ok = example.run_pytest("--promptopt-min-pass-rate=0.5", "--promptopt-report=r.json", "--junitxml=junit.xml",
                            "-k", "not template_error")
    assert ok.ret == pytest.ExitCode.OK
    assert ok.report["exit_code"] == 0
    suite = ET.parse(gated.path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures") or 0) == 0
