"""Round trips of the baseline gate: save a baseline, make the prompt worse, compare, gate;
the terminal section, the JSON report, JUnit, pytest-xdist, replay mode and bad baselines."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from example import Example

from pytest_promptopt.run.pairwise import PAIR_SYSTEM
from pytest_promptopt.report.cli import main
from pytest_promptopt.testing import ScriptedServer

ENV_VARS = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "PROMPTOPT_BASE_URL", "PROMPTOPT_MODEL", "PROMPTOPT_API_KEY")
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]

SHOUT = "messages:\n  - role: system\n    content: {how}\n  - role: user\n    content: '{{text}}'\n"

TESTS = f"""
import pytest
from pytest_promptopt import load_prompt
shout = load_prompt("shout.yaml")

@pytest.mark.parametrize("text", {WORDS!r})
def test_shout(llm, text):
    assert llm(shout, text=text) == text.upper()
"""


@pytest.fixture(autouse=True)
def _clean_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")


def shout_unless_mumbling(broken: set[str]):
    """Upper-case the text; under a 'Mumble.' instruction, the words in `broken` come back lower-case."""

    def respond(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        text = messages[-1]["content"]
        if messages[0]["content"] == "Mumble." and text in broken:
            return text
        return text.upper()

    return respond


@pytest.fixture
def words(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    suite.makefile(".yaml", shout=SHOUT.format(how="Shout."))
    suite.makepyfile(test_shout=TESTS)
    scripted.responder = shout_unless_mumbling(set(WORDS[:6]))
    return suite


def save_then_mumble(words: pytest.Pytester) -> None:
    """A baseline where every case passes, then a worse prompt (a new file digest, new cache keys)."""
    saved = words.runpytest("--promptopt-save-baseline=base.json")
    saved.assert_outcomes(passed=8)
    saved.stdout.fnmatch_lines(["*promptopt: baseline*", f"baseline saved to {words.path / 'base.json'}: 8 case(s) of 1 prompt(s)"])
    words.makefile(".yaml", shout=SHOUT.format(how="Mumble."))


def test_save_then_a_significant_drop_fails_the_session(words: pytest.Pytester) -> None:
    save_then_mumble(words)
    data = json.loads((words.path / "base.json").read_text())
    assert list(data["prompts"]) == ["shout.yaml"]
    assert data["prompts"]["shout.yaml"]["cases"]["test_shout.py::test_shout[alpha]"] == {
        "checked": False, "judged": False, "output": "ALPHA", "score": 1.0, "verdict": "passed"}
    result = Example(words).run_pytest("--promptopt-baseline=base.json", "--promptopt-report=r.json",
                                       "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, failed=6)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*promptopt: baseline*",
        f"compared with baseline {words.path / 'base.json'} (alpha 0.05, maximum drop not set)",
        "shout.yaml: pass rate 25.0% [7.1%, 59.1%] of 8 now vs 100.0% [67.6%, 100.0%] of 8 in the baseline; "
        "6 now failing, 0 now passing, 0 new, 0 gone (8 paired); the prompt file changed",
        "  gate FAIL: McNemar exact p = 0.03125 on 6 now failing vs 0 now passing, < alpha 0.05; no maximum drop set",
        "regressed cases (6): passed in the baseline, fail now",
        "  test_shout.py::test_shout[alpha] (shout.yaml)",
        "    output then: 'ALPHA'",
        "    output now:  'alpha'",
        "    failure now: AssertionError: assert 'alpha' == 'ALPHA'",
    ])
    report = result.report
    assert report["gate"] == "failed"
    (prompt,) = report["baseline"]["comparison"]["prompts"]
    assert prompt["gate"] == "failed" and prompt["mcnemar_p"] == 0.03125
    assert prompt["counts"]["now failing"] == 6 and prompt["prompt_changed"] is True
    assert prompt["regressed"] == [f"test_shout.py::test_shout[{w}]" for w in sorted(WORDS[:6])]
    assert prompt["pass_rate_now"] == {"rate": 0.25, "low": 0.0715, "high": 0.5907, "cases": 8}
    tests = {t["nodeid"]: t for t in report["tests"]}
    assert tests["test_shout.py::test_shout[alpha]"]["calls"][0]["output"] == "alpha"
    gate_case = _junit_case(words, "baseline[shout.yaml]")
    failure = gate_case.find("failure")
    assert failure is not None and "McNemar exact p = 0.03125" in (failure.get("message") or "") + (failure.text or "")
    suite = ET.parse(words.path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures") or 0) == 7  # six tests and the gate
    assert {p.get("name"): p.get("value") for p in suite.findall("properties/property")}["promptopt_gate"] == "failed"


def _junit_case(pytester: pytest.Pytester, name: str) -> ET.Element:
    root = ET.parse(pytester.path / "junit.xml").getroot()
    matches = [c for c in root.iter("testcase") if c.get("name") == name and c.get("classname") == "promptopt.gate"]
    assert len(matches) == 1, [c.get("name") for c in root.iter("testcase")]
    return matches[0]


def test_a_drop_that_is_noise_passes_unless_the_maximum_drop_is_exceeded(words: pytest.Pytester,
                                                                         scripted: ScriptedServer) -> None:
    scripted.responder = shout_unless_mumbling({"alpha", "bravo"})
    save_then_mumble(words)
    result = words.runpytest("--promptopt-baseline=base.json", "--junitxml=junit.xml")
    result.assert_outcomes(passed=6, failed=2)  # the tests fail, the gate does not add to it
    result.stdout.fnmatch_lines(["  gate ok: McNemar exact p = 0.5 on 2 now failing vs 0 now passing, >= alpha 0.05*",
                                 "regressed cases (2): *"])
    assert _junit_case(words, "baseline[shout.yaml]").find("failure") is None
    capped = words.runpytest("--promptopt-baseline=base.json", "--promptopt-max-drop=0.2")
    assert capped.ret == pytest.ExitCode.TESTS_FAILED
    capped.stdout.fnmatch_lines(["  gate FAIL: *; paired pass rate fell 25.0%, more than the allowed 20.0%"])
    loose = words.runpytest("--promptopt-baseline=base.json", "--promptopt-max-drop=0.25", "--promptopt-alpha=0.6")
    loose.stdout.fnmatch_lines(["  gate FAIL: McNemar exact p = 0.5 *< alpha 0.6; paired pass rate fell 25.0%, within*"])


def test_expected_failures_are_not_compared(words: pytest.Pytester, scripted: ScriptedServer) -> None:
    """Cases now marked xfail are known to fail: not regressions (they leave the comparison), as pytest
    does not count them as failures; a strict XPASS still fails."""
    save_then_mumble(words)
    example = Example(words, {"test_shout.py": TESTS.replace("def test_shout",
                                                             "@pytest.mark.xfail(reason='known')\ndef test_shout")})
    result = example.run_pytest("--promptopt-baseline=base.json", "--promptopt-report=r.json")
    result.assert_outcomes(xfailed=6, xpassed=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*0 now failing, 0 now passing, 0 new, 8 gone (0 paired)*"])
    assert result.report["gate"] == "passed"


def test_regressions_are_capped_with_a_count_of_the_rest(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    many = [f"w{i:02}" for i in range(14)]
    suite.makefile(".yaml", shout=SHOUT.format(how="Shout."))
    suite.makepyfile(test_shout=TESTS.replace(repr(WORDS), repr(many)))
    scripted.responder = shout_unless_mumbling(set(many[:13]))
    suite.runpytest("--promptopt-save-baseline=base.json").assert_outcomes(passed=14)
    suite.makefile(".yaml", shout=SHOUT.format(how="Mumble."))
    result = suite.runpytest("--promptopt-baseline=base.json")
    out = result.stdout.str()
    assert len(re.findall(r"^    output then: ", out, re.M)) == 10
    result.stdout.fnmatch_lines(["  ... and 3 more regressed case(s); every case is in the JSON and HTML reports"])


def test_missing_baseline_says_so_and_does_not_compare(words: pytest.Pytester, scripted: ScriptedServer) -> None:
    result = Example(words).run_pytest("--promptopt-baseline=nowhere/base.json", "--promptopt-report=r.json")
    result.assert_outcomes(passed=8)
    assert result.ret == pytest.ExitCode.OK
    path = words.path / "nowhere" / "base.json"
    result.stdout.fnmatch_lines([f"baseline {path} does not exist, so this run is not compared with one; "
                                 f"write it with --promptopt-save-baseline {path}*"])
    assert result.report["baseline"]["comparison"] is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [('{"format": "pytest-promptopt baseline", "version": 0, "prompts": {}}', "baseline layout version 0"),
     ('{"version": 1, "prompts": [], "tests": []}', "this file is a pytest-promptopt JSON run report")],
)
def test_an_unusable_baseline_stops_the_run_before_any_call(words: pytest.Pytester, scripted: ScriptedServer,
                                                            content: str, problem: str) -> None:
    (words.path / "base.json").write_text(content)
    result = words.runpytest("--promptopt-baseline=base.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{words.path / 'base.json'}: {problem}*fix: re-create it with "
                                 f"`pytest --promptopt-save-baseline {words.path / 'base.json'}`*"])
    assert scripted.count == 0


def test_baseline_from_ini_is_relative_to_the_rootdir(words: pytest.Pytester, scripted: ScriptedServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    words.mkdir("ci")
    words.runpytest("--promptopt-save-baseline=ci/base.json").assert_outcomes(passed=8)
    words.makeini(f"[pytest]\npromptopt_base_url = {scripted.base_url}\npromptopt_model = scripted\n"
                  "promptopt_baseline = ci/base.json\npromptopt_max_drop = 0.1\n")
    words.makefile(".yaml", shout=SHOUT.format(how="Mumble."))
    monkeypatch.chdir(words.mkdir("elsewhere"))  # the ini path is still found from the rootdir
    result = words.runpytest(str(words.path))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"compared with baseline {words.path / 'ci' / 'base.json'} (alpha 0.05, maximum drop 10.0%)",
                                 "  gate FAIL: *"])


def test_not_saved_when_the_run_stops_early(words: pytest.Pytester) -> None:
    words.makefile(".yaml", shout=SHOUT.format(how="Mumble."))
    result = words.runpytest("-x", "--promptopt-save-baseline=base.json")
    result.stdout.fnmatch_lines(["baseline not saved to *base.json: the run stopped early*; the file is unchanged"])
    assert not (words.path / "base.json").exists()


def test_judge_scores_are_compared_too(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    grades = {"Paris": 0.9, "Rome": 0.8, "Lima": 0.7}

    def respond(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        last = messages[-1]["content"]
        if "<OUTPUT-" in last:  # a judge request: a lower-case city is graded 0.3 lower
            city = next(c for c in grades if c in last or c.lower() in last)
            drop = 0.0 if city in last else 0.3
            return f"score: {grades[city] - drop:.2f}\nreason: graded {city}"
        city = last.split()[-1]
        return city.lower() if last.startswith("Terse") else city

    scripted.responder = respond
    suite.makefile(".txt", qa="Answer: {city}")
    suite.makepyfile(test_qa="""
        import pytest

        @pytest.mark.parametrize("city", ["Paris", "Rome", "Lima"])
        def test_city(llm, judge, city):
            judge.grade(llm("qa.txt", city=city), criteria="names the city", threshold=0.5)
    """)
    suite.runpytest("--promptopt-save-baseline=base.json").assert_outcomes(passed=3)
    suite.makefile(".txt", qa="Terse answer: {city}")
    result = suite.runpytest("--promptopt-baseline=base.json")
    assert ("0 now failing, 0 now passing, 0 new, 0 gone (3 paired); judge score change -0.300 [-0.300, -0.300] "
            "over 3 paired case(s); the prompt file changed") in result.stdout.str()
    assert result.ret == pytest.ExitCode.OK  # a score change is reported, not gated


def test_xdist_and_replay_mode(words: pytest.Pytester, scripted: ScriptedServer) -> None:
    args = ("-n", "2", "-p", "no:cacheprovider")
    words.runpytest_subprocess(*args, "--promptopt-save-baseline=base.json").assert_outcomes(passed=8)
    words.makefile(".yaml", shout=SHOUT.format(how="Mumble."))
    words.runpytest_subprocess(*args).assert_outcomes(passed=2, failed=6)  # records the mumbling replies
    calls = scripted.count
    result = Example(words).run_pytest(*args, "--promptopt-record=replay", "--promptopt-baseline=base.json",
                                       "--promptopt-report=r.json", "--junitxml=junit.xml", subprocess=True)
    result.assert_outcomes(passed=2, failed=6)
    assert scripted.count == calls  # replay: nothing sent
    result.stdout.fnmatch_lines(["*2 workers*", "*6 now failing, 0 now passing, 0 new, 0 gone (8 paired)*",
                                 "  gate FAIL: McNemar exact p = 0.03125*", "    output now:  'alpha'"])
    report = result.report
    assert report["gate"] == "failed" and report["record_mode"] == "replay"
    assert len(report["baseline"]["comparison"]["prompts"][0]["regressed"]) == 6
    assert _junit_case(words, "baseline[shout.yaml]").find("failure") is not None


def test_junit_shows_the_min_pass_rate_gate_too(words: pytest.Pytester, scripted: ScriptedServer) -> None:
    words.makefile(".yaml", shout=SHOUT.format(how="Mumble."))
    result = words.runpytest("--promptopt-min-pass-rate=0.5", "--junitxml=junit.xml")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    failure = _junit_case(words, "min_pass_rate[shout.yaml]").find("failure")
    assert failure is not None and failure.get("message") == "passed 25.0% of 8 cases; at least 50% required"
    passing = words.runpytest("--promptopt-min-pass-rate=0.25", "--junitxml=junit.xml")
    assert _junit_case(words, "min_pass_rate[shout.yaml]").find("failure") is None


def pairwise_judge_preferring_capitals(biased: set[str]):
    """Task calls as `shout_unless_mumbling`; the pairwise judge picks the upper-case output,
    except for the words in `biased`, where it always picks the output shown first (a flip)."""
    shout = shout_unless_mumbling(set(WORDS[:6]))

    def respond(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        if messages[0]["content"] != PAIR_SYSTEM:
            return shout(messages, body)
        a, b = (re.search(rf"<(OUTPUT-[0-9a-f]+-{n})>\n(.*?)\n</\1>", messages[-1]["content"], re.DOTALL).group(2)  # type: ignore[union-attr]
                for n in "AB")
        if a.casefold() in biased:
            return "A"
        return "A" if a.isupper() and not b.isupper() else "B" if b.isupper() and not a.isupper() else "tie"

    return respond


def test_pairwise_comparison_with_the_baseline_counts_better_worse_tie_and_flips(
        words: pytest.Pytester, scripted: ScriptedServer) -> None:
    save_then_mumble(words)
    scripted.responder = pairwise_judge_preferring_capitals({"echo", "foxtrot"})
    result = Example(words).run_pytest("--promptopt-baseline=base.json", "--promptopt-report=r.json",
                                       "--promptopt-html=r.html", "--promptopt-baseline-pairwise=Shouted in capitals.")
    result.assert_outcomes(passed=2, failed=6)
    # alpha..delta: the baseline's capitals win both orders; echo, foxtrot: the judge picks the first
    # shown, so the orders disagree (a tie, a flip); golf, hotel: the same output, not asked
    result.stdout.fnmatch_lines(["*shout.yaml: output now vs the baseline's (pairwise judge, both orders): better 0, "
                                 "worse 4, tie 4 (2 identical, not asked); flip rate 0.333 (2 of 6 pairs)"])
    (pairs,) = result.report["baseline"]["pairwise"]
    assert pairs == {"prompt": "shout.yaml", "better": 0, "worse": 4, "tie": 4, "identical": 2, "asked": 6,
                     "flips": 2, "unread": 0, "flip_rate": 0.3333}
    assert result.report["baseline"]["comparison"]["prompts"][0]["gate"] == "failed"  # the McNemar gate as before
    page = (words.path / "r.html").read_text()
    assert 'id="baseline-pairwise"' in page and "worse 4, tie 4" in page
    asked = [r for r in scripted.requests if r["messages"][0]["content"] == PAIR_SYSTEM]
    assert len(asked) == 12  # six pairs, two orders each


def test_shards_compared_pairwise_merge_to_the_unsharded_counts(words: pytest.Pytester, scripted: ScriptedServer,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Each shard's pairwise counts are its own cases'; `promptopt merge` sums them to what one
    run reports (no judge call at merge time)."""
    save_then_mumble(words)
    scripted.responder = pairwise_judge_preferring_capitals({"echo", "foxtrot"})
    pairwise = "--promptopt-baseline-pairwise=Shouted in capitals."
    whole = Example(words).run_pytest("--promptopt-baseline=base.json", "--promptopt-report=whole.json", pairwise)
    first = "alpha or bravo or echo"
    for name, selection in (("one", first), ("two", f"not ({first})")):
        words.runpytest("--promptopt-baseline=base.json", f"--promptopt-report={name}.json", pairwise, "-k", selection)
    asked = len(scripted.requests)
    capsys.readouterr()
    main(["merge", f"{words.path}/one.json", f"{words.path}/two.json", "--rootdir", str(words.path),
          "--baseline", str(words.path / "base.json"), "--report", str(words.path / "merged.json")])
    assert "flip rate 0.333 (2 of 6 pairs)" in capsys.readouterr().out
    merged = json.loads((words.path / "merged.json").read_text())
    shards = [json.loads((words.path / f"{n}.json").read_text())["baseline"]["pairwise"][0]["asked"] for n in ("one", "two")]
    assert shards == [3, 3]
    assert merged["baseline"]["pairwise"] == whole.report["baseline"]["pairwise"]
    assert len(scripted.requests) == asked  # the merge asked nothing


def test_baseline_pairwise_is_off_by_default_and_a_missing_judge_file_is_a_usage_error(
        words: pytest.Pytester, scripted: ScriptedServer) -> None:
    save_then_mumble(words)
    scripted.responder = pairwise_judge_preferring_capitals(set())
    plain = Example(words).run_pytest("--promptopt-baseline=base.json", "--promptopt-report=r.json")
    assert plain.report["baseline"]["pairwise"] == []
    assert not [r for r in scripted.requests if r["messages"][0]["content"] == PAIR_SYSTEM]
    bad = words.runpytest("--promptopt-baseline=base.json", "--promptopt-baseline-pairwise=judges/nope.yaml")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--promptopt-baseline-pairwise*nope.yaml*judge file not found*"])
