"""Faults from the LM endpoint, end to end: the real openai client against the scripted server.

Every fault ends as a failed test (or an optimizer candidate scored 0) that names the endpoint
and the error; the session itself never crashes, errors are never cached, a case that could
not be scored is reported as such and counts against its prompt, and the API key never shows.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from example import Example
from wordtask import WORD_PROMPT, WORD_TESTS, is_optimizer

from pytest_promptopt.errors import EndpointError
from pytest_promptopt.llm.cache import ReplyCache
from pytest_promptopt.llm.client import DOWN_AFTER, Endpoint, LMClient
from pytest_promptopt.testing import Fault, ScriptedServer

API_KEY = "sk-reliability-secret-0123456789abcdef"

ECHO = "messages:\n  - role: user\n    content: '{text}'\n"

ECHO_TESTS = """
import pytest
from pytest_promptopt import load_prompt
p = load_prompt("echo.yaml")

@pytest.mark.parametrize("text", {texts!r})
def test_echo(llm, text):
    assert llm(p, text=text) == text
"""


def closed_port_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


NO_FAULT = Fault(kind="hang", seconds=0.0)  # a queued no-op: that request is answered normally

FAULTS = {
    "429 with Retry-After": (Fault(status=429, retry_after="0"), "HTTP 429"),
    "429 without Retry-After": (Fault(status=429), "HTTP 429"),
    "500": (Fault(status=500), "HTTP 500"),
    "502": (Fault(status=502), "HTTP 502"),
    "503": (Fault(status=503), "HTTP 503"),
    "hang past the timeout": (Fault(kind="hang", seconds=1.0), "no answer within 0.4 s (timeout)"),
    "body cut mid-stream": (Fault(kind="cut"), "peer closed connection without sending complete message body"),
    "malformed JSON": (Fault(kind="malformed"), "not valid JSON"),
    "empty choices": (Fault(kind="empty"), "the response has no choices"),
    "wrong content type": (Fault(kind="content_type"), "the response is not JSON (wrong content type"),
}


def test_each_fault_fails_only_its_test_names_endpoint_and_error_and_is_not_cached(
    suite: pytest.Pytester, scripted: ScriptedServer
) -> None:
    # One session, one test per fault, each followed by a test the endpoint answers: the faults
    # are queued in request order (a fault for a call and for its one retry, promptopt_retries = 1).
    names = list(FAULTS)
    lines = ["from pytest_promptopt import load_prompt", "p = load_prompt('echo.yaml')"]
    for i, name in enumerate(names):
        lines += [f"def test_{i:02d}_fault(llm):", f"    assert llm(p, text={name!r}) == {name!r}",
                  f"def test_{i:02d}_ok(llm):", f"    assert llm(p, text='ok {i}') == 'ok {i}'"]
        scripted.fail_next(FAULTS[name][0], times=2)
        scripted.fail_next(NO_FAULT)  # the ok test's call is answered
    example = Example(suite, {"echo.yaml": ECHO, "test_echo.py": "\n".join(lines) + "\n"})
    # the faults are queued in request order: the calls go one by one, inline (no probe pass sending
    # the first calls ahead in any order; test_plugin_ahead.py covers faults of calls sent ahead)
    result = example.run_pytest("--promptopt-timeout=0.4", "--promptopt-report=report.json", "--promptopt-probe=off")
    result.assert_outcomes(passed=len(names), failed=len(names))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "INTERNALERROR" not in result.stdout.str()
    assert scripted.count == 3 * len(names)  # each fault retried once, every ok case sent once
    tests = {t["nodeid"].split("::")[1]: t for t in result.report["tests"]}
    for i, name in enumerate(names):
        error = tests[f"test_{i:02d}_fault"]["error"]
        assert error.startswith(f"LM call to model 'scripted' at {scripted.base_url} failed: "), (name, error)
        assert FAULTS[name][1] in error, (name, error)
        assert error.endswith("(gave up after 2 attempts)"), (name, error)
        assert tests[f"test_{i:02d}_ok"]["passed"] and not tests[f"test_{i:02d}_ok"]["error"]
    # the cases that could not be scored are reported, and count against the prompt
    result.stdout.fnmatch_lines([f"not scored: {len(names)} of {2 * len(names)} cases of echo.yaml "
                                 "(counted as failed): the LM call failed; first: *HTTP 429*"])
    (prompt,) = result.report["prompts"]
    assert (prompt["cases"], prompt["passed"], prompt["errors"]) == (2 * len(names), len(names), len(names))
    # no error was cached: the next run asks again for exactly the failed cases, and passes
    sent = scripted.count
    again = suite.runpytest()
    again.assert_outcomes(passed=2 * len(names))
    assert sorted(b["messages"][-1]["content"] for b in scripted.requests[sent:]) == sorted(names)


def test_connection_refused_fails_every_test_and_the_run_ends_fast(suite: pytest.Pytester) -> None:
    url = closed_port_url()
    example = Example(suite, {"echo.yaml": ECHO, "test_echo.py": ECHO_TESTS.format(texts=[f"t{i}" for i in range(8)])})
    # inline calls, one by one, as they are asserted here (no probe pass sending the first calls ahead)
    result = example.run_pytest(f"--promptopt-base-url={url}", "--promptopt-retries=1", "--promptopt-report=r.json",
                                "--promptopt-probe=off")
    result.assert_outcomes(failed=8)
    assert "INTERNALERROR" not in result.stdout.str()
    text = result.stdout.str()
    assert text.count(f"LM call to model 'scripted' at {url} failed: connection error") >= 3
    # after three calls that failed every retry, the rest fail at once, saying why
    assert f"LM call to model 'scripted' at {url} not sent: the endpoint failed 3 calls in a row" in text
    result.stdout.fnmatch_lines(["not scored: 8 of 8 cases of echo.yaml (counted as failed): *connection error*"])
    # "Ends fast", counted rather than timed (a wall-clock bound fails on a loaded machine): the
    # only waits are backoffs, one per retry. The first three calls retried once each (a backoff
    # of at most 0.5 s: test_client.py::test_429_without_retry_after_uses_backoff); the other
    # five never retried: each was not sent at all or, had a 10 s cool-down passed, was a probe
    # with a single attempt.
    errors = [t["error"] for t in result.report["tests"]]
    assert [attempts(e) for e in errors[:3]] == [2, 2, 2]
    assert all(attempts(e) <= 1 for e in errors[3:]), errors[3:]
    assert any(attempts(e) == 0 for e in errors[3:])


def attempts(error: str) -> int:
    """Requests one failed LM call sent, as its error says (each one after the first followed a
    backoff): none when not sent, N when it gave up after N, else one."""
    if " not sent: " in error:
        return 0
    found = re.search(r"\(gave up after (\d+) attempts\)$", error)
    return int(found.group(1)) if found else 1


def test_judge_endpoint_fault_fails_the_test_and_is_reported(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    with ScriptedServer() as judge_server:
        judge_server.fail_every(1, Fault(status=503))
        suite.makefile(".yaml", echo=ECHO)
        suite.makepyfile(
            """
            def test_judged(llm, judge):
                judge(llm("echo.yaml", text="Paris"), "names a city")
            """
        )
        url = judge_server.base_url
        result = suite.runpytest(f"--promptopt-judge-base-url={url}", "--promptopt-judge-model=grader")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*LM call to model 'grader' at {url} failed: HTTP 503*",
                                 "not scored: 1 of 1 cases of <judge> (counted as failed): *HTTP 503*"])


# -- client level: the endpoint that is down ------------------------------------------------------


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def ask(client: LMClient, text: str) -> str:
    return client.complete(client.request([{"role": "user", "content": text}])).text


def test_an_endpoint_that_stays_down_is_not_retried_forever_and_comes_back(server: ScriptedServer) -> None:
    sleeps = Sleeps()
    client = LMClient(Endpoint(server.base_url, "m", API_KEY), ReplyCache(None), max_retries=2, sleep=sleeps,
                      down_cooldown_s=0.3)
    server.fail_every(1, Fault(status=503))
    for i in range(3):
        with pytest.raises(EndpointError, match="gave up after 3 attempts"):
            ask(client, f"q{i}")
    assert server.count == 9 and len(sleeps) == 6
    with pytest.raises(EndpointError) as info:  # down: fails at once, without a request
        ask(client, "q3")
    message = str(info.value)
    assert server.base_url in message and "not sent" in message and "HTTP 503" in message
    assert server.count == 9 and len(sleeps) == 6
    server.fail_every(1_000_000, Fault(status=503))  # the endpoint recovers
    time.sleep(0.35)
    assert ask(client, "q4") == "q4"  # the probe goes out after the cool-down, and succeeds
    server.fail_next(Fault(status=500))
    assert ask(client, "q5") == "q5"  # up again: retries are back
    assert client.usage().errors == 4
    client.close()


def test_a_refused_request_does_not_mark_the_endpoint_down(server: ScriptedServer) -> None:
    client = LMClient(Endpoint(server.base_url, "m"), ReplyCache(None), max_retries=2, sleep=Sleeps())
    server.fail_next(Fault(status=400), times=5)
    for i in range(5):
        with pytest.raises(EndpointError, match="HTTP 400"):
            ask(client, f"q{i}")
    assert server.count == 5  # each sent once, none skipped
    assert ask(client, "ok") == "ok"
    client.close()


def test_cut_body_exhausted_names_endpoint_and_error(server: ScriptedServer) -> None:
    client = LMClient(Endpoint(server.base_url, "m"), ReplyCache(None), max_retries=1, sleep=Sleeps())
    server.fail_next(Fault(kind="cut"), times=2)
    with pytest.raises(EndpointError) as info:
        ask(client, "hello")
    assert server.base_url in str(info.value) and "peer closed connection" in str(info.value)
    client.close()


# -- API keys ---------------------------------------------------------------------------------------


def test_api_key_echoed_by_the_endpoint_is_redacted(server: ScriptedServer) -> None:
    def leaky(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        raise RuntimeError(f"Incorrect API key provided: {server.headers[-1]['authorization']}")

    server.responder = leaky
    client = LMClient(Endpoint(server.base_url, "m", API_KEY), ReplyCache(None), max_retries=0)
    with pytest.raises(EndpointError) as info:
        ask(client, "hello")
    assert "Incorrect API key provided: Bearer [api key]" in str(info.value)
    assert API_KEY not in str(info.value) and API_KEY[:12] not in str(info.value)
    client.close()


WORD = WORD_PROMPT


def test_api_key_never_reaches_cache_run_log_reports_or_output(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    def respond(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        if messages[-1]["content"] == "banana":  # one case whose error body quotes the key back
            raise RuntimeError(f"bad key {scripted.headers[-1]['authorization']}")
        if is_optimizer(messages):
            return "Reverse the word."
        user = messages[-1]["content"]
        return user[::-1] if "Reverse" in messages[0]["content"] else user

    scripted.responder = respond
    suite.makefile(".yaml", word=WORD)
    suite.makepyfile(test_word=WORD_TESTS)
    result = suite.runpytest(f"--promptopt-api-key={API_KEY}", "--optimize", "--optimize-dry-run",
                             "--promptopt-report=report.json", "--junitxml=junit.xml")
    assert scripted.headers[0]["authorization"] == f"Bearer {API_KEY}"  # it was used
    output = result.stdout.str() + result.stderr.str()
    assert "bad key Bearer [api key]" in output  # the failure is shown, the key is not
    files = [p for p in suite.path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files) and (suite.path / "report.json").exists()
    assert any("replies" in p.parts for p in files)  # the cache was written
    for text in [output, *(p.read_bytes().decode("latin-1") for p in files)]:
        assert API_KEY not in text
        assert API_KEY[:12] not in text


# -- the endpoint dies half way through --optimize ----------------------------------------------------


def test_endpoint_dying_mid_optimization_finishes_reports_and_writes_nothing(
    suite: pytest.Pytester, scripted: ScriptedServer
) -> None:
    died = threading.Event()

    def respond(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        if is_optimizer(messages) and "Write a better instruction" in messages[-1]["content"] and not died.is_set():
            # half way: the first instruction proposal is the last request this endpoint answers
            died.set()
            scripted.fail_every(1, Fault(kind="cut"))  # kept-alive connections are cut
            threading.Thread(target=scripted.stop, daemon=True).start()  # new ones are refused
        if is_optimizer(messages):
            return "Reverse the word letter by letter."
        user = messages[-1]["content"]
        return user[::-1] if "Reverse" in messages[0]["content"] else user

    scripted.responder = respond
    url = scripted.base_url
    suite.makefile(".yaml", word=WORD)
    suite.makepyfile(test_word=WORD_TESTS)
    before = (suite.path / "word.yaml").read_bytes()
    result = suite.runpytest("--optimize", "--optimize-strategy=auto")
    assert died.is_set()
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the baseline run's verdicts
    output = result.stdout.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output
    result.stdout.re_match_lines([rf"could not score \d+ test run\(s\) of \d+ test\(s\) during the optimization: "
                                  rf"the LM call failed, so each counted as a failure with score 0; first: "
                                  rf"LM call to model 'scripted' at {url} .*"])
    result.stdout.fnmatch_lines(["*not written: *"])
    assert (suite.path / "word.yaml").read_bytes() == before
    assert not [p for p in suite.path.iterdir() if p.name.endswith(".tmp")]
    (log,) = (suite.path / ".promptopt_cache" / "runs").glob("*.jsonl")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[-1]["event"] == "decision" and not events[-1]["accepted"]
    # candidates re-run after the death scored 0, each with the endpoint's error as the reason
    zeroed = [r for e in events if e["event"] == "eval" for r in e["results"] if url in r["message"]]
    assert zeroed and all(r["score"] == 0 and not r["passed"] for r in zeroed)
    # The run does not spend the rest of the optimization retrying a dead endpoint, counted rather
    # than timed: re-runs call one after another, so at most DOWN_AFTER of them retried (and
    # waited a backoff) before the endpoint was marked down; every later one was not sent, or
    # was a single-attempt probe (one per 10 s cool-down, however long a loaded machine takes).
    sent = [attempts(r["error"]) for r in zeroed]
    assert sum(1 for n in sent if n > 1) <= DOWN_AFTER, [r["message"] for r in zeroed]
    assert sent.count(0) > len(sent) // 2
    assert any("optimizer_error" == e["event"] for e in events)
