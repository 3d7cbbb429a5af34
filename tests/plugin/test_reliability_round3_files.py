"""Round 3 of the reliability probes (issue 31), the file side: planted call logs, subset
baselines, report and baseline paths, baselines that pair nothing, and key redaction in the
HTML report. Round trips through pytester against the scripted server; each test's docstring
starts with the defect it covers (`../shared/probes/2026-12-07-round3.md`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import diskcache
import pytest

from pytest_promptopt.llm.cache import DataOnlyDisk
from pytest_promptopt.testing import ScriptedServer

WORD_YAML = "messages:\n  - role: system\n    content: Repeat the word.\n  - role: user\n    content: 'ANSWER:{w}'\n"
WORD_TESTS = """
import pytest
from pytest_promptopt import load_prompt
p = load_prompt("word.yaml")

@pytest.mark.parametrize("w", ["apple", "pear", "plum"])
def test_word(llm, w):
    assert llm(p, w=w) == w
"""
APPLE = "test_word.py::test_word[apple]"


def echo(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    return messages[-1]["content"].removeprefix("ANSWER:")


@pytest.fixture
def words(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    scripted.responder = echo
    suite.makefile(".yaml", word=WORD_YAML)
    suite.makepyfile(test_word=WORD_TESTS)
    return suite


def _plant_log(root: Path, nodeid: str, calls: list[dict[str, Any]]) -> None:
    with diskcache.Cache(str(root / ".promptopt_cache" / "calls"), eviction_policy="none",
                         disk=DataOnlyDisk) as store:
        store.set(nodeid, json.dumps({"v": 1, "calls": calls}))


def _apple(sample: int = 0, word: str = "apple") -> dict[str, Any]:
    call: dict[str, Any] = {"kind": "llm", "prompt": "word.yaml", "inputs": {"w": {"text": word}}}
    return call | ({"sample": sample} if sample else {})


# -- D3, D4: a planted call log ------------------------------------------------------------------

def test_planted_call_log_cannot_send_files_outside_the_session_prompts(
        words: pytest.Pytester, scripted: ScriptedServer) -> None:
    """D3: a call log naming a file outside the project (absolute, or with '..'), or a file under
    the rootdir that no test loaded as a prompt, never makes send-ahead read it and send it."""
    words.runpytest("--promptopt-concurrency=8").assert_outcomes(passed=3)
    outside = words.path.parent / f"{words.path.name}-outside"
    outside.mkdir()
    (outside / "notes.txt").write_text("TOPSECRET aws_secret_access_key = AKIAEXAMPLE\n")
    (words.path / "private.txt").write_text("TOPSECRET in the project, not a prompt\n")
    relative = os.path.relpath(outside / "notes.txt", words.path)
    _plant_log(words.path, APPLE, [_apple(),
                                   {"kind": "llm", "prompt": str(outside / "notes.txt"), "inputs": {}},
                                   {"kind": "llm", "prompt": relative, "inputs": {}},
                                   {"kind": "llm", "prompt": "private.txt", "inputs": {}}])
    before = scripted.count
    words.runpytest("--promptopt-concurrency=8").assert_outcomes(passed=3)
    sent = json.dumps(scripted.requests[before:])
    assert "TOPSECRET" not in sent
    assert scripted.count == before  # a warm run: every call the tests make is cached


@pytest.mark.parametrize("extra", ["samples beyond the test's repeats", "more calls than a run makes"])
def test_planted_call_log_cannot_multiply_a_warm_runs_calls(
        words: pytest.Pytester, scripted: ScriptedServer, extra: str) -> None:
    """D4: a call log with hundreds of calls the test cannot make (sample indices beyond its
    repeats, or more calls than a run of it makes) is not sent ahead: a warm run stays free."""
    words.runpytest("--promptopt-concurrency=8").assert_outcomes(passed=3)
    if extra == "samples beyond the test's repeats":
        calls = [_apple()] + [_apple(sample=i) for i in range(2, 502)]
    else:
        calls = [_apple()] + [_apple(word=f"apple{i}") for i in range(500)]
    _plant_log(words.path, APPLE, calls)
    before = scripted.count
    result = words.runpytest("--promptopt-concurrency=8")
    result.assert_outcomes(passed=3)
    assert scripted.count == before, f"{scripted.count - before} paid requests in a warm run"
    assert "sent ahead" not in result.stdout.str()


# -- D8: a subset run never overwrites a saved baseline -------------------------------------------

@pytest.mark.parametrize("selection", [["-k", "apple"], ["test_word.py::test_word[apple]"],
                                       ["--deselect", "test_word.py::test_word[pear]"]])
def test_a_subset_run_does_not_overwrite_the_saved_baseline(words: pytest.Pytester, selection: list[str]) -> None:
    """D8: a run narrowed by -k, --deselect or node ids (and -m, --lf: the same rule) refuses to overwrite the saved baseline with its
    subset, says why, and exits non-zero; the file keeps every case."""
    words.runpytest("--promptopt-save-baseline=bl.json").assert_outcomes(passed=3)
    saved = (words.path / "bl.json").read_text()
    result = words.runpytest(*selection, "--promptopt-baseline=bl.json", "--promptopt-save-baseline=bl.json")
    refusal = "*baseline not saved to *bl.json: this run selected part of the suite*case(s) of the saved baseline*"
    result.stdout.fnmatch_lines([refusal])
    assert (words.path / "bl.json").read_text() == saved
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_whole_run_still_saves_over_the_baseline(words: pytest.Pytester) -> None:
    """D8 (what stays): a plain run saves over the baseline, dropping the cases of deleted tests."""
    words.runpytest("--promptopt-save-baseline=bl.json").assert_outcomes(passed=3)
    words.makepyfile(test_word=WORD_TESTS.replace('"apple", ', ""))
    result = words.runpytest("--promptopt-save-baseline=bl.json")
    assert result.ret == 0
    assert json.loads((words.path / "bl.json").read_text())["prompts"]["word.yaml"]["cases"].keys() == {
        "test_word.py::test_word[pear]", "test_word.py::test_word[plum]"}


# -- D11, D12: output paths checked up front; a failed save is a failed session -------------------

@pytest.mark.parametrize("option", ["--promptopt-html", "--promptopt-save-baseline"])
@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_report_and_baseline_paths_are_checked_before_any_call(
        words: pytest.Pytester, scripted: ScriptedServer, option: str, where: str) -> None:
    """D11, D12: --promptopt-html and --promptopt-save-baseline naming a directory or a path under
    a file stop the run with a usage error before any LM call (not a traceback, or exit 0, after
    every call was made)."""
    (words.path / "adir").mkdir()
    (words.path / "afile").write_text("x")
    target = "adir" if where == "a directory" else "afile/out.json"
    result = words.runpytest(f"{option}={target}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert option in result.stderr.str() and scripted.count == 0
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_baseline_that_cannot_be_saved_fails_the_session(words: pytest.Pytester) -> None:
    """D12: when the save itself fails at the end (here a file took its folder's place during
    the run), the session exits non-zero with the reason."""
    (words.path / "out").mkdir()
    words.makepyfile(test_word=WORD_TESTS + """

def test_zz_last():
    import os
    os.rmdir("out")
    open("out", "w").close()  # the folder is a file now: the save at the end cannot succeed
""")
    result = words.runpytest("--promptopt-save-baseline=out/bl.json")
    result.stdout.fnmatch_lines(["*baseline not saved to *bl.json*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


# -- forged eval events in a run log under --optimize-resume ------------------------------------

def test_forged_eval_events_cannot_make_a_worse_candidate_win_on_resume(
        suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    """RUNLOG: eval events planted in the run log (every candidate passing every case) do not
    make a candidate win under --optimize-resume: the results a decision rests on are re-run,
    the re-run contradicts the log, the log's results are dropped and nothing is written."""
    from wordtask import WORD_PROMPT, reverse_when_told
    from wordtask import WORD_TESTS as REVERSE_TESTS

    scripted.responder = reverse_when_told("Echo the word back exactly.")  # no proposal helps
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=REVERSE_TESTS)
    original = (suite.path / "word.yaml").read_text()
    first = suite.runpytest("--optimize", "--optimize-strategy=mipro")
    first.stdout.fnmatch_lines(["*not written:*"])  # no candidate beats the original
    (log,) = list((suite.path / ".promptopt_cache" / "runs").glob("*.jsonl"))
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    start = next(e for e in events if e["event"] == "start")
    evals = [e for e in events if e["event"] == "eval"]
    assert evals, "the first run scored no candidate"
    template = evals[0]["results"][0]
    forged = []
    for e in evals:
        results = [{**template, "nodeid": n, "passed": True, "score": 1.0, "message": ""}
                   for n in [*start["train"], *start["validation"]]]
        forged.append(json.dumps({**e, "results": results}))
    log.write_text("\n".join(forged) + "\n")

    resumed = suite.runpytest("--optimize", "--optimize-strategy=mipro", "--optimize-resume")
    assert "wrote" not in resumed.stdout.str()
    assert (suite.path / "word.yaml").read_text() == original
    assert "accepted:" not in resumed.stdout.str()
    resumed.stdout.fnmatch_lines(["*note: the run log's result for * did not match a re-run*"])
