"""Load, scaled down from bench/bench_load.py: 300 cases, 64 calls in flight, 5% injected 503s.

Every case gets a verdict (all pass: each error is retried), and retries stay bounded.
"""

from __future__ import annotations

from collections import Counter

import pytest
from example import Example

from pytest_promptopt.testing import Fault, ScriptedServer

CASES = 300
RETRIES = 4

CONFTEST = f"""
import pytest
from pytest_promptopt import load_prompt

N, CHUNK = {CASES}, 100
prompt = load_prompt("echo.yaml")


@pytest.fixture(autouse=True)
def _warm_the_next_chunk(request, promptopt_runtime):
    i = request.node.callspec.params["i"]
    if i % CHUNK == 0:  # the next calls go out concurrently; each test then hits the cache
        requests = [promptopt_runtime.task_request(prompt, {{"text": f"case {{j}}"}})[1]
                    for j in range(i, min(i + CHUNK, N))]
        promptopt_runtime.client("task").prefetch(requests)
"""

TESTS = f"""
import pytest
from conftest import prompt


@pytest.mark.parametrize("i", range({CASES}))
def test_case(llm, i):
    assert llm(prompt, text=f"case {{i}}") == f"echo: case {{i}}"
"""


def test_every_case_gets_a_verdict_and_retries_stay_bounded(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = lambda messages, body: "echo: " + messages[-1]["content"]
    scripted.fail_every(20, Fault(status=503))
    suite.makeconftest(CONFTEST)
    example = Example(suite, {"echo.yaml": "messages:\n  - role: user\n    content: '{text}'\n", "test_load.py": TESTS})
    result = example.run_pytest("--promptopt-concurrency=64", f"--promptopt-retries={RETRIES}",
                                "--promptopt-report=report.json")
    result.assert_outcomes(passed=CASES)
    report = result.report
    assert len(report["tests"]) == CASES and all(t["passed"] for t in report["tests"])
    attempts = Counter(body["messages"][-1]["content"] for body in scripted.requests)
    assert len(attempts) == CASES
    assert max(attempts.values()) <= RETRIES + 1  # no call needed its test's own retry round
    # one request in twenty fails, and only those are retried: about 5% extra, never a storm
    extra = scripted.count - CASES
    assert CASES // 20 - 2 <= extra <= CASES // 10
