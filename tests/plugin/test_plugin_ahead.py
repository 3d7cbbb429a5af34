"""A plain run sends its tests' logged LM calls ahead, concurrently, and is otherwise the
sequential run: same outcomes, report order, summaries, gate and cache. Round trips through
pytester against the scripted server; no timing is asserted (speed is bench_concurrency.py's)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import diskcache
import pytest
from example import Example
from interrupt import spawn_pytest

from pytest_promptopt.llm.cache import DataOnlyDisk
from pytest_promptopt.testing import Fault, ScriptedServer

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
SUITE = f"""
import pytest
from pytest_promptopt import load_prompt

shout = load_prompt("shout.yaml")
echo = load_prompt("echo.yaml")
WORDS = {WORDS!r}


@pytest.mark.parametrize("word", WORDS)
def test_one(llm, word):
    assert llm(shout, text=word) == word.upper()


@pytest.mark.parametrize("word", WORDS[:4])
def test_chain(llm, judge, word):
    loud = llm(shout, text=word)
    again = llm(echo, text=loud)  # the first output, as it is: predicted once it is known
    assert again == "Echo: " + loud
    judge(again, "repeats the word")  # a judge call on it: predicted in the wave after
    marked = llm(echo, text=loud.strip() + "!")  # computed from an output: left to the test
    assert marked.endswith("!")
"""


def answer(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    """Shout upper-cases, whisper lower-cases, echo repeats its user message, the judge passes."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    text = messages[-1]["content"]
    if "strict grader" in system:
        return '{"score": 1, "reason": "it does"}'
    if "boom" in text and system.startswith("Whisper"):
        raise RuntimeError("the model fell over on boom")
    if system.startswith("Shout"):
        return text.upper()
    if system.startswith("Whisper"):
        return text.lower()
    return text


def _prompt(system: str, user: str) -> str:
    return f"messages:\n  - role: system\n    content: {system}\n  - role: user\n    content: '{user}'\n"


@pytest.fixture
def words(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    scripted.responder = answer
    suite.makefile(".yaml", shout=_prompt("Shout.", "{text}"), echo=_prompt("Echo.", "Echo: {text}"))
    suite.makepyfile(test_words=SUITE)
    return suite


def _edit_prompt(suite: pytest.Pytester) -> None:
    (suite.path / "shout.yaml").write_text(_prompt("Whisper.", "{text}"))


def _run(suite: pytest.Pytester, cache: str, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    result = Example(suite).run_pytest("-v", f"--promptopt-cache-dir={cache}", f"--promptopt-report={cache}.json",
                                       *args)
    return result.run, result.report


def _order(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if re.search(r"::test_\w+.* (PASSED|FAILED)", line)]


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what a clock decides (durations, seconds spent in LM calls)."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if "duration" not in k and "seconds" not in k}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip({k: report[k] for k in ("prompts", "tests", "cache", "gate")})


def _replies(folder: Path) -> dict[str, Any]:
    with diskcache.Cache(str(folder / "replies"), disk=DataOnlyDisk) as store:
        return {key: store.get(key) for key in store}


def test_sent_ahead_is_the_sequential_run(words: pytest.Pytester, scripted: ScriptedServer) -> None:
    first, report = _run(words, "a", "--promptopt-concurrency=8")
    first.assert_outcomes(passed=14)
    # the first-ever run has no log: each test is probed up to its first uncached call, and those are
    # sent ahead (test_chain's first calls are test_one's: 10 distinct); the rest run inline, then logged
    assert report["ahead"] == {**report["ahead"], "probed": 14, "tests": 14, "sent": 10, "unused": 0}
    assert scripted.count == 22  # test_chain's first calls are test_one's: cached
    shutil.copytree(words.path / "a", words.path / "b")
    _edit_prompt(words)

    ahead, ahead_report = _run(words, "a", "--promptopt-concurrency=8")
    assert scripted.count == 22 + 22
    sequential, sequential_report = _run(words, "b", "--promptopt-concurrency=1")
    assert scripted.count == 22 + 22 + 22

    assert ahead_report["ahead"] == {**ahead_report["ahead"], "tests": 14, "calls": 26, "cached": 0, "sent": 18,
                                     "failed": 0, "inline": 4, "concurrency": 8, "unused": 0}
    assert sequential_report["ahead"] is None  # concurrency 1: nothing to overlap
    ahead.assert_outcomes(passed=4, failed=10)
    sequential.assert_outcomes(passed=4, failed=10)
    assert _order(ahead) == _order(sequential) and len(_order(ahead)) == 14
    assert _comparable(ahead_report) == _comparable(sequential_report)
    assert _replies(words.path / "a") == _replies(words.path / "b")
    ahead.stdout.fnmatch_lines(["promptopt: sent 18 LM calls ahead for 14 tests at concurrency 8 *; "
                                + "0 sent ahead but not used by the run"])


def test_sent_ahead_calls_count_as_the_tests_own(words: pytest.Pytester, scripted: ScriptedServer) -> None:
    """A test whose call was sent ahead reports it as sent (not a cache hit), with its tokens."""
    _run(words, "a", "--promptopt-concurrency=8")
    _edit_prompt(words)
    _, report = _run(words, "a", "--promptopt-concurrency=8", "-k", "test_one")
    usage = report["tests"][0]["usage"]
    shout = next(k for k in usage if k.endswith("shout.yaml"))
    assert usage[shout]["requests"] == usage[shout]["api_calls"] == 1 and "cache_hits" not in usage[shout]
    assert report["cache"] == {"hits": 0, "calls": 10}


def test_deselected_tests_are_never_sent_ahead(words: pytest.Pytester, scripted: ScriptedServer) -> None:
    _run(words, "a", "--promptopt-concurrency=8")
    _edit_prompt(words)
    before = scripted.count
    result, report = _run(words, "a", "--promptopt-concurrency=8", "-k", "test_one and (alpha or bravo)")
    result.assert_outcomes(failed=2)
    sent = [r["messages"][-1]["content"] for r in scripted.requests[before:]]
    assert sorted(sent) == ["alpha", "bravo"]
    assert report["ahead"]["sent"] == 2 and report["ahead"]["tests"] == 2


def test_unused_calls_are_counted_and_shown(words: pytest.Pytester, scripted: ScriptedServer) -> None:
    """Changed test inputs and prompt: what was predicted from the old log is sent for nothing."""
    _run(words, "a", "--promptopt-concurrency=8")
    _edit_prompt(words)
    words.makepyfile(test_words=SUITE.replace("llm(shout, text=word) ==", "llm(shout, text=word + '?') =="))
    result, report = _run(words, "a", "--promptopt-concurrency=8", "-k", "test_one")
    assert report["ahead"]["sent"] == 10 and report["ahead"]["unused"] == 10
    result.stdout.fnmatch_lines(["promptopt: sent 10 LM calls ahead *; 10 sent ahead but not used by the run"])
    assert scripted.count == 22 + 10 + 10  # the predictions, then the tests' own calls inline
    _, report = _run(words, "a", "--promptopt-concurrency=8", "-k", "test_one")
    assert report["ahead"]["sent"] == 0 and report["ahead"]["cached"] == 10  # the log is the new one


def test_failed_call_ahead_fails_its_test_inline_with_the_endpoint_error(
        words: pytest.Pytester, scripted: ScriptedServer) -> None:
    words.makepyfile(test_words=SUITE.replace("'alpha'", "'boom'"))
    _run(words, "a", "--promptopt-concurrency=8", "-k", "test_one")
    _edit_prompt(words)
    before = scripted.count
    result, report = _run(words, "a", "--promptopt-concurrency=8", "-k", "test_one")
    assert report["ahead"]["failed"] == 1 and report["ahead"]["sent"] == 9
    result.assert_outcomes(failed=10)  # the whisper fails the upper-case check; boom fails on its call
    boom = next(t for t in report["tests"] if "boom" in t["nodeid"])
    assert "HTTP 500" in boom["error"] and "the model fell over on boom" in boom["error"]
    assert "gave up after 2 attempts" in boom["message"]
    booms = [r for r in scripted.requests[before:] if r["messages"][-1]["content"] == "boom"]
    assert len(booms) == 4  # two attempts ahead (retries=1), then the test's own two


def test_rate_limits_back_off_and_every_case_gets_a_verdict(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = answer
    suite.makefile(".yaml", shout=_prompt("Shout.", "{text}"))
    suite.makepyfile(test_many="""
        import pytest
        from pytest_promptopt import load_prompt
        shout = load_prompt("shout.yaml")

        @pytest.mark.parametrize("n", range(100))
        def test_case(llm, n):
            assert llm(shout, text=f"case {n}") == f"CASE {n}"
        """)
    _run(suite, "a", "--promptopt-concurrency=16")
    (suite.path / "shout.yaml").write_text(_prompt("Shout!", "{text}"))
    scripted.fail_every(20, Fault(status=429, retry_after="0.05"))  # 5% of requests
    before = scripted.count
    result, report = _run(suite, "a", "--promptopt-concurrency=16", "--promptopt-retries=4")
    result.assert_outcomes(passed=100)
    assert report["ahead"]["sent"] == 100 and report["ahead"]["failed"] == 0
    assert all(t["passed"] and not t["error"] for t in report["tests"])
    assert scripted.count - before == 105  # each refused call sent once more, no storm of retries


def test_replay_makes_no_calls(words: pytest.Pytester, scripted: ScriptedServer) -> None:
    _run(words, "a", "--promptopt-concurrency=8")
    _edit_prompt(words)
    before = scripted.count
    result, report = _run(words, "a", "--promptopt-concurrency=8", "--promptopt-record=replay")
    assert scripted.count == before
    assert report["ahead"] is None
    result.assert_outcomes(failed=14)


class Held:
    """A responder that holds every request until `release` is set, and sets `busy` once
    `width` requests are held at once (only send-ahead has more than one call in flight)."""

    def __init__(self, width: int) -> None:
        self.width, self.held = width, 0
        self.lock = threading.Lock()
        self.busy, self.release = threading.Event(), threading.Event()

    def __call__(self, messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        with self.lock:
            self.held += 1
            if self.held >= self.width:
                self.busy.set()
        self.release.wait(600)
        return answer(messages, body)


def test_ctrl_c_during_send_ahead_exits_without_waiting_for_the_calls(words: pytest.Pytester,
                                                                     scripted: ScriptedServer) -> None:
    """D19: Ctrl-C while calls sent ahead are in flight ends the run without waiting for their
    replies: here the server holds every request until the process has exited (with a 600 s
    call timeout); before the fix the process waited for the calls in flight."""
    _run(words, "a", "--promptopt-concurrency=4")  # records the call log
    _edit_prompt(words)
    held = Held(width=2)
    scripted.responder = held
    # spawn_pytest: SIGINT is not ignored in the child even when this suite runs with it ignored
    # (started in the background by a non-interactive shell, as nohup and CI scripts do)
    process = spawn_pytest(words.path, "--promptopt-cache-dir=a", "--promptopt-concurrency=4",
                           "--promptopt-timeout=600")
    try:
        assert held.busy.wait(120), "send-ahead never had two calls in flight"
        process.send_signal(signal.SIGINT)
        # A bound for the old behaviour (waiting up to the 600 s timeout), not a measurement.
        output, _ = process.communicate(timeout=60)
        assert not held.release.is_set()  # it exited while every request was still held
    finally:
        held.release.set()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == pytest.ExitCode.INTERRUPTED
    assert "KeyboardInterrupt" in output


# -- the first-ever run: tests without a log are probed, their first calls sent ahead ---------------

class Wide:
    """A responder that holds each request until `width` requests are in flight at once, and
    notes the most it saw. A run whose calls do not overlap that wide never gets there: after
    `patience` seconds (generous: a bound, not a measurement) it gives up holding, for good, so
    such a run finishes and the test fails on `peak`, saying so."""

    def __init__(self, width: int, patience: float = 120.0) -> None:
        self.width, self.patience = width, patience
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()
        self.wide, self.gave_up = threading.Event(), threading.Event()

    def __call__(self, messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            if self.in_flight >= self.width:
                self.wide.set()
        try:
            if not self.gave_up.is_set() and not self.wide.wait(self.patience):
                self.gave_up.set()
            return answer(messages, body)
        finally:
            with self.lock:
                self.in_flight -= 1


ONE_CALL_SUITE = """
import pytest
from pytest_promptopt import load_prompt

shout = load_prompt("shout.yaml")


@pytest.mark.parametrize("n", range(16))
def test_case(llm, n):
    assert llm(shout, text=f"case {n}") == f"CASE {n}"
"""


def test_first_run_calls_overlap_up_to_the_concurrency(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    """No call log, a cold cache, a plain `pytest` (default concurrency 8): the server holds every
    request until 8 are in flight at once, which a run making its calls one by one never reaches.
    The result is the one-by-one run's (--promptopt-probe=off): outcomes, order, report, cache."""
    wide = Wide(width=8)
    scripted.responder = wide
    suite.makefile(".yaml", shout=_prompt("Shout.", "{text}"))
    suite.makepyfile(test_many=ONE_CALL_SUITE)
    probed, probed_report = _run(suite, "a")
    assert not wide.gave_up.is_set(), f"the first run's calls never had 8 in flight at once (at most {wide.peak})"
    assert wide.peak == 8  # and never more than --promptopt-concurrency
    assert scripted.count == 16
    assert probed_report["ahead"] == {**probed_report["ahead"], "probed": 16, "tests": 16, "sent": 16, "failed": 0,
                                      "concurrency": 8, "unused": 0}
    probed.stdout.fnmatch_lines([("promptopt: sent 16 LM calls ahead for 16 tests at concurrency 8 *"
                                  "; 16 tests without a log probed first; 0 sent ahead but not used by the run")])

    scripted.responder = answer
    sequential, sequential_report = _run(suite, "b", "--promptopt-probe=off")
    assert scripted.count == 32 and sequential_report["ahead"] is None
    probed.assert_outcomes(passed=16)
    sequential.assert_outcomes(passed=16)
    assert _order(probed) == _order(sequential) and len(_order(probed)) == 16
    assert _comparable(probed_report) == _comparable(sequential_report)
    assert _replies(suite.path / "a") == _replies(suite.path / "b")

    again, again_report = _run(suite, "a")  # the second run has its log and a warm cache: no probe
    assert scripted.count == 32 and again_report["ahead"]["probed"] == 0
    again.assert_outcomes(passed=16)


OBSERVED_SUITE = """
import pytest
from pytest_promptopt import load_prompt

shout = load_prompt("shout.yaml")


def note(text):
    with open("seen.txt", "a") as seen:
        seen.write(text + "\\n")


@pytest.fixture
def counted():
    note("fixture")
    yield
    note("fixture teardown")


def test_side_effects(llm, counted):
    note("before the call")
    out = llm(shout, text="kilo")
    note("after the call")
    assert out == "KILO"


def test_swallows_exceptions(llm):
    try:
        out = llm(shout, text="lima")
    except Exception as exc:
        note("swallowed " + type(exc).__name__)
        raise
    assert out == "LIMA"


def test_fails_before_its_call(llm):
    print("printed before the failure")
    assert 1 == 2, "failed before the call"
    llm(shout, text="mike")


def test_prints_then_fails_after_its_call(llm, record_property):
    print("printed before the call")
    record_property("mine", 1)
    assert llm(shout, text="november") == "no"
"""


def test_first_run_tests_observe_what_they_observe_one_by_one(suite: pytest.Pytester,
                                                              scripted: ScriptedServer) -> None:
    """What the README states: a probed test's fixtures and code before its first uncached call
    run twice (probe, then the test); everything after it, and everything reported, once. User
    code's `except Exception` never sees the probe's stop; a test failing before its call is
    reported once, with its own traceback, and nothing is sent for it."""
    scripted.responder = answer
    suite.makefile(".yaml", shout=_prompt("Shout.", "{text}"))
    suite.makepyfile(test_observed=OBSERVED_SUITE)
    runs = {}
    for cache, probe in (("a", "auto"), ("b", "off")):
        (suite.path / "seen.txt").unlink(missing_ok=True)
        result, report = _run(suite, cache, f"--promptopt-probe={probe}", f"--junitxml={cache}.xml")
        result.assert_outcomes(passed=2, failed=2)
        runs[probe] = (result, report, (suite.path / "seen.txt").read_text().splitlines(),
                       (suite.path / f"{cache}.xml").read_text())
    (probed, probed_report, probed_seen, probed_xml), (sequential, sequential_report, sequential_seen, sequential_xml) \
        = runs["auto"], runs["off"]
    assert sequential_seen == ["fixture", "before the call", "after the call", "fixture teardown"]
    assert probed_seen == ["fixture", "before the call", "fixture teardown"] + sequential_seen
    assert probed_report["ahead"]["probed"] == 4 and probed_report["ahead"]["sent"] == 3  # kilo, lima, november
    sent = [r["messages"][-1]["content"] for r in scripted.requests]
    assert sorted(sent) == sorted(["kilo", "lima", "november"] * 2)  # each once per run; never "mike"

    for result in (probed, sequential):
        assert len([line for line in result.outlines if "FAILED" in line and "fails_before" in line]) == 2  # -v, summary
        assert result.outlines.count("printed before the failure") == 1
        assert result.outlines.count("printed before the call") == 1
        result.stdout.fnmatch_lines(["*assert 1 == 2*", "*AssertionError: failed before the call*"])
    assert _order(probed) == _order(sequential)
    assert _comparable(probed_report) == _comparable(sequential_report)
    assert _replies(suite.path / "a") == _replies(suite.path / "b")
    assert probed_xml.count('name="mine"') == sequential_xml.count('name="mine"') == 1
    assert probed_xml.count("promptopt_prompt") == sequential_xml.count("promptopt_prompt") > 0


EXIT_SUITE = """
import pytest
from pytest_promptopt import load_prompt

shout = load_prompt("shout.yaml")


@pytest.fixture
def opened():
    with open("seen.txt", "a") as seen:
        seen.write("opened\\n")
    yield
    with open("seen.txt", "a") as seen:
        seen.write("closed\\n")


def test_a(llm, opened):
    assert llm(shout, text="oscar") == "OSCAR"


def test_b(llm, opened):
    pytest.exit("stopping here")


def test_c(llm):
    assert llm(shout, text="papa") == "PAPA"
"""


def test_pytest_exit_in_a_probed_test_stops_the_run_where_it_would(suite: pytest.Pytester,
                                                                     scripted: ScriptedServer) -> None:
    """pytest.exit() before a test's first LM call ends the probe pass (its fixtures torn down), not
    the session: the run proper reports the tests before it and exits there, as one by one."""
    scripted.responder = answer
    suite.makefile(".yaml", shout=_prompt("Shout.", "{text}"))
    suite.makepyfile(test_exit=EXIT_SUITE)
    result, _ = _run(suite, "a")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*Exit: stopping here*"])
    # probes of test_a and test_b (its fixture torn down at the exit), then test_a and test_b again
    assert (suite.path / "seen.txt").read_text().splitlines() == ["opened", "closed"] * 4
    assert [r["messages"][-1]["content"] for r in scripted.requests] == ["oscar"]


def test_probe_setting_is_checked_and_the_ini_key_turns_it_off(suite: pytest.Pytester,
                                                               scripted: ScriptedServer) -> None:
    scripted.responder = answer
    suite.makefile(".yaml", shout=_prompt("Shout.", "{text}"))
    suite.makepyfile(test_many=ONE_CALL_SUITE)
    result = suite.runpytest("--promptopt-probe=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--promptopt-probe*invalid choice: 'sometimes'*auto*off*"])
    ini = suite.path / "tox.ini"
    ini.write_text(ini.read_text().replace("[pytest]", "[pytest]\npromptopt_probe = sometimes"))
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini option promptopt_probe = 'sometimes': expected one of auto, off*"])
    assert scripted.count == 0
    ini.write_text(ini.read_text().replace("promptopt_probe = sometimes", "promptopt_probe = off"))
    result, report = _run(suite, "a")
    result.assert_outcomes(passed=16)
    assert report["ahead"] is None and scripted.count == 16  # every call inline, one by one
