"""`promptopt merge`: three shards run with -k selections, merged, equal what one unsharded run
reports (per-prompt table, gates, baseline comparison, exit code, JUnit, JSON); shards that do
not make one run are errors naming the files."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_promptopt.report.cli import main
from pytest_promptopt.testing import ScriptedServer

A = "min_pass_rate: 0.7\nmessages:\n  - role: user\n    content: 'a {i}'\n"
B = "messages:\n  - role: user\n    content: 'b {i}'\n"
FILES = {
    "test_one": "@pytest.mark.parametrize('i', range(0, 5))\ndef test_one(llm, i):\n    assert llm(a, i=i) == 'yes'\n",
    "test_two": ("@pytest.mark.parametrize('i', range(5, 10))\ndef test_two_a(llm, i):\n    assert llm(a, i=i) == 'yes'\n\n"
                 "@pytest.mark.parametrize('i', range(0, 3))\ndef test_two_b(llm, i):\n    assert llm(b, i=i) == 'yes'\n"),
    "test_three": "@pytest.mark.parametrize('i', range(3, 6))\ndef test_three(llm, i):\n    assert llm(b, i=i) == 'yes'\n",
}
HEADER = "import pytest\nfrom pytest_promptopt import load_prompt\na = load_prompt('a.yaml')\nb = load_prompt('b.yaml')\n\n"
SHARDS = ["test_one", "test_two", "test_three"]


def answering(failing: set[str]) -> Any:
    return lambda messages, body: "no" if messages[-1]["content"] in failing else "yes"


@pytest.fixture
def sharded(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    suite.makefile(".yaml", a=A, b=B)
    suite.makepyfile(**{name: HEADER + body for name, body in FILES.items()})
    scripted.responder = answering({"a 1"})
    suite.runpytest("--promptopt-cache-dir=c0", "--promptopt-save-baseline=base.json").assert_outcomes(passed=15, failed=1)
    # Now a 1, a 6 and a 8 fail: prompt a passes 7 of 10 (its gate holds), but the shard with
    # a 5-9 passes 3 of 5 on its own; b 4 breaks against the baseline.
    scripted.responder = answering({"a 1", "a 6", "a 8", "b 4"})
    return suite


def run(suite: pytest.Pytester, name: str, *args: str) -> pytest.RunResult:
    return suite.runpytest(f"--promptopt-cache-dir=cache-{name}", f"--promptopt-report={name}.json",
                           f"--junitxml={name}.xml", "--promptopt-baseline=base.json", "-p", "no:cacheprovider", *args)


def table_section(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "promptopt: prompts" in line) + 1
    return [line for line in lines[start:start + 4] if line.strip() and not line.startswith(("=", "promptopt"))]


def junit_cases(path: Path) -> set[tuple[str, str, bool]]:
    return {(c.get("classname", ""), c.get("name", ""), c.find("failure") is not None)
            for c in ET.parse(path).iter("testcase")}


def without_durations(tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tests by node id, without what a clock measured (the test's and its calls' seconds)."""
    def timeless(test: dict[str, Any]) -> dict[str, Any]:
        usage = {k: {f: v for f, v in u.items() if f != "lm_seconds"} for k, u in test["usage"].items()}
        return {**{k: v for k, v in test.items() if k != "duration"}, "usage": usage}

    return sorted(map(timeless, tests), key=lambda t: t["nodeid"])


def test_three_shards_merge_to_the_unsharded_run(sharded: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    whole = run(sharded, "whole", "--promptopt-html=whole.html")
    whole.assert_outcomes(passed=12, failed=4)
    for name in SHARDS:
        run(sharded, name, "-k", name)
    shard_gates = [json.loads((sharded.path / f"{n}.json").read_text())["prompts"][0]["gate"] for n in SHARDS[:2]]
    assert shard_gates == ["passed", "failed"], "the shard with a 5-9 alone fails the gate the whole run passes"
    capsys.readouterr()  # the runs' own output
    code = main(["merge", *(f"{sharded.path}/{n}.json" for n in SHARDS), "--expect", "3",
                 "--rootdir", str(sharded.path), "--baseline", str(sharded.path / "base.json"),
                 "--report", str(sharded.path / "merged.json"), "--junitxml", str(sharded.path / "merged.xml"),
                 "--html", str(sharded.path / "merged.html"),
                 *(f"--junit-shard={sharded.path}/{n}.xml" for n in SHARDS)])
    printed = capsys.readouterr().out
    # Under the default gates rule: every failed case belongs to a.yaml, whose gate passes over
    # the whole suite, so the unsharded run and the merge exit 0.
    assert code == whole.ret == pytest.ExitCode.OK
    shard_codes = [json.loads((sharded.path / f"{n}.json").read_text())["exit_code"] for n in SHARDS[:2]]
    assert shard_codes == [0, 1], "the shard whose part fails the gate exits 1 alone"
    merged = json.loads((sharded.path / "merged.json").read_text())
    unsharded = json.loads((sharded.path / "whole.json").read_text())
    for field in ("prompts", "gate", "baseline", "cache", "exit_code", "tests_exit_code"):
        assert json.dumps(merged[field]) == json.dumps(unsharded[field]), field
    assert [p["paired"] for p in merged["baseline"]["comparison"]["prompts"]] == [10, 6]  # McNemar on all cases
    assert without_durations(merged["tests"]) == without_durations(unsharded["tests"])
    assert printed.splitlines()[1:5] == table_section(whole.stdout.str())
    assert junit_cases(sharded.path / "merged.xml") == junit_cases(sharded.path / "whole.xml")
    assert (sharded.path / "merged.html").read_bytes() == (sharded.path / "whole.html").read_bytes()


def test_python_dash_m_merges_and_writes_html(sharded: pytest.Pytester) -> None:
    for name in SHARDS:
        run(sharded, name, "-k", name)
    proc = subprocess.run([sys.executable, "-m", "pytest_promptopt", "merge", *(f"{n}.json" for n in SHARDS),
                           "--html", "merged.html", "--junitxml", "merged.xml"],
                          cwd=sharded.path, capture_output=True, text=True, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "promptopt merge: 3 shard(s), 16 test(s)" in proc.stdout
    assert "test_two_a[6]" in (sharded.path / "merged.html").read_text()
    assert ("promptopt.gate", "min_pass_rate[a.yaml]", False) in junit_cases(sharded.path / "merged.xml")


def merge_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["merge", *args]) == pytest.ExitCode.USAGE_ERROR
    return capsys.readouterr().err


def test_shards_that_do_not_make_one_run_are_errors_naming_the_files(
        sharded: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    for name in SHARDS:
        run(sharded, name, "-k", name)
    capsys.readouterr()
    one, two, three = (str(sharded.path / f"{n}.json") for n in SHARDS)
    assert "missing shard: expected 3 shard reports, got 2" in merge_error(capsys, one, two, "--expect", "3")
    gone = str(sharded.path / "test_four.json")
    assert f"{gone}: no such shard report" in merge_error(capsys, one, two, three, gone)
    copy = sharded.path / "copy.json"
    copy.write_text(Path(two).read_text())
    err = merge_error(capsys, one, two, str(copy))
    assert f"duplicated shard: {two} and {copy} hold the same 8 tests" in err
    assert f"duplicated shard: {one} is given twice" in merge_error(capsys, one, one)
    run(sharded, "overlap", "-k", "test_three or test_two_b")
    err = merge_error(capsys, one, two, str(sharded.path / "overlap.json"))
    assert f"overlapping cases: {two} and {sharded.path / 'overlap.json'} both ran test_two.py::test_two_b[0]" in err
    (sharded.path / "b.yaml").write_text(B.replace("'b {i}'", "'b {i}' "))  # another version of the suite
    run(sharded, "edited", "-k", "test_three")
    err = merge_error(capsys, one, two, str(sharded.path / "edited.json"))
    assert f"another suite version: {two} ran b.yaml with sha256" in err and "edited.json" in err


JUDGE_TESTS = """\
import pytest
from pytest_promptopt import load_judge

polite = load_judge("judges/polite.yaml")
panel = load_judge("judges/panel.yaml")
IDS = [f"{'even' if i % 2 == 0 else 'odd'}{i}" for i in range(12)]

@pytest.mark.parametrize("i", range(12), ids=IDS)
def test_file_judge(judge, i):
    judge(f"thanks {i}" if i % 3 else f"go away {i}", polite)

@pytest.mark.parametrize("i", range(12), ids=IDS)
def test_panel(judge, i):
    judge.grade(f"thanks {i}" if i % 3 else f"sorry {i}", panel)

@pytest.mark.parametrize("i", range(12), ids=IDS)
def test_pair(judge, i):
    judge.pairwise(f"answer {i}: alpha", f"answer {i}: beta", "Answers the question better.")
"""


def judging(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    """Pairwise: biased to the first shown; a panel: judge-c also passes an apology; else by 'thanks'."""
    import re

    from pytest_promptopt.testing import biased_pairwise

    fenced = re.search(r"<(OUTPUT-[0-9a-f]+)>\n(.*)\n</\1>", messages[-1]["content"], re.DOTALL)
    if fenced is None:
        return biased_pairwise(0.75)(messages, body)
    output = fenced.group(2)
    passes = "thanks" in output or (body["model"] == "judge-c" and "sorry" in output)
    return "score: 0.9" if passes else "score: 0.1"


def test_shards_merge_to_the_unsharded_runs_judges_section(suite: pytest.Pytester, scripted: ScriptedServer,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    scripted.responder = judging
    (suite.path / "judges").mkdir()
    (suite.path / "judges" / "polite.yaml").write_text("criteria: Is polite.\nthreshold: 0.5\nlabels: polite.labels.jsonl\n")
    (suite.path / "judges" / "polite.labels.jsonl").write_text("".join(
        json.dumps({"output": f"{'thanks' if i % 2 else 'go away'} label {i}", "verdict": "pass" if i % 2 else "fail"})
        + "\n" for i in range(48)))
    (suite.path / "judges" / "panel.yaml").write_text("criteria: Is polite.\nthreshold: 0.5\n"
                                                      "models: [judge-a, judge-b, judge-c]\n")
    suite.makepyfile(test_judged=JUDGE_TESTS)
    assert suite.runpytest("--promptopt-calibrate", "-p", "no:cacheprovider").ret == 0
    whole = suite.runpytest("--promptopt-report=whole.json", "--promptopt-html=whole.html", "-p", "no:cacheprovider")
    whole.assert_outcomes(passed=32, failed=4)  # the file judge (calibrated, kappa 1, gates) fails "go away"
    for name, selection in (("even", "even"), ("odd", "not even")):
        suite.runpytest(f"--promptopt-report={name}.json", "-k", selection, "-p", "no:cacheprovider")
    capsys.readouterr()
    main(["merge", f"{suite.path}/even.json", f"{suite.path}/odd.json", "--rootdir", str(suite.path),
          "--report", str(suite.path / "merged.json"), "--html", str(suite.path / "merged.html")])
    printed = capsys.readouterr().out
    merged = json.loads((suite.path / "merged.json").read_text())
    unsharded = json.loads((suite.path / "whole.json").read_text())
    assert merged["judges"] == unsharded["judges"] and len(merged["judges"]) == 3
    assert merged["corrected_pass_rates"] == unsharded["corrected_pass_rates"] != []
    shards = [json.loads((suite.path / f"{n}.json").read_text())["judges"] for n in ("even", "odd")]
    panel = next(r["panel"] for r in merged["judges"] if r["panel"])
    assert panel["verdicts"] == 12 and all(next(r["panel"] for r in s if r["panel"])["verdicts"] == 6 for s in shards)
    pairwise = next(r["pairwise"] for r in merged["judges"] if r["pairwise"])
    assert pairwise["pairs_both_orders"] == 12
    assert "promptopt: judges" in printed and "Krippendorff's alpha" in printed and "first-position rate" in printed
    html = (suite.path / "merged.html").read_text()
    assert 'id="judges"' in html and "Krippendorff" in html
