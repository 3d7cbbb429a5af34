"""Load: a 2,000-case suite against the scripted server, 64 calls in flight, 5% injected errors.

    python bench/bench_load.py [--cases 2000] [--concurrency 64] [--error-every 20] [--retries 4]

The scripted server runs in a child process (its request log must not count as our memory).
The suite is run in this process with pytest.main; a conftest warms the cache 500 cases at a
time through the client's concurrent `prefetch` (the path `--optimize` uses), then every test
makes its own `llm()` call. Printed: cases, verdicts, retries (total and the most attempts one
call needed), wall time, peak RSS, and RSS after 500/1000/2000 cases to show it stays flat.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

SERVER = """
import json, sys
from collections import Counter
from pytest_promptopt.testing import Fault, ScriptedServer

every = int(sys.argv[1])
with ScriptedServer(lambda messages, body: "echo: " + messages[-1]["content"]) as server:
    server.fail_every(every, Fault(status=503))
    print(server.base_url, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    attempts = Counter(body["messages"][-1]["content"] for body in server.requests)
    print(json.dumps({"requests": server.count, "max_attempts": max(attempts.values(), default=0),
                      "distinct": len(attempts)}), flush=True)
"""

CONFTEST = """
import pytest
from pytest_promptopt import load_prompt

N, CHUNK = {cases}, 500
prompt = load_prompt("echo.yaml")


@pytest.fixture(autouse=True)
def _warm_the_next_chunk(request, promptopt_runtime):
    i = request.node.callspec.params["i"]
    if i % CHUNK == 0:  # the next 500 calls go out concurrently; each test then hits the cache
        requests = [promptopt_runtime.task_request(prompt, {{"text": f"case {{j}}"}})[1]
                    for j in range(i, min(i + CHUNK, N))]
        promptopt_runtime.client("task").prefetch(requests)
"""

TESTS = """
import pytest
from conftest import prompt


@pytest.mark.parametrize("i", range({cases}))
def test_case(llm, i):
    assert llm(prompt, text=f"case {{i}}") == f"echo: case {{i}}"
"""


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


class Meter:
    """Counts verdicts and samples RSS after given numbers of cases."""

    def __init__(self, marks: tuple[int, ...]) -> None:
        self.marks = set(marks)
        self.verdicts: dict[str, int] = {"passed": 0, "failed": 0, "skipped": 0}
        self.rss: dict[int, float] = {}
        self.done = 0
        self.runtime: Any = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.verdicts[report.outcome] += 1
            self.done += 1
            if self.done in self.marks:
                self.rss[self.done] = current_rss_mb()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from pytest_promptopt.plugin import SESSION_KEY

        self.runtime = session.config.stash[SESSION_KEY].runtime
        usage = self.runtime.client("task").usage()
        self.usage = usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--error-every", type=int, default=20, help="a 503 on every N-th request (20: 5%%)")
    parser.add_argument("--retries", type=int, default=4)
    args = parser.parse_args()

    server = subprocess.Popen([sys.executable, "-c", SERVER, str(args.error_every)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdin is not None
    base_url = server.stdout.readline().strip()
    with tempfile.TemporaryDirectory(prefix="promptopt-load-") as tmp:
        root = Path(tmp)
        (root / "echo.yaml").write_text("messages:\n  - role: user\n    content: '{text}'\n")
        (root / "conftest.py").write_text(textwrap.dedent(CONFTEST.format(cases=args.cases)))
        (root / "test_load.py").write_text(textwrap.dedent(TESTS.format(cases=args.cases)))
        (root / "pytest.ini").write_text("[pytest]\n")
        marks = tuple(sorted({min(500, args.cases), min(1000, args.cases), args.cases}))
        meter = Meter(marks)
        started = time.perf_counter()
        code = pytest.main([str(root), "-q", "-p", "no:cacheprovider", "--no-header", "-o", "console_output_style=classic",
                            f"--rootdir={root}", f"--promptopt-base-url={base_url}", "--promptopt-model=scripted",
                            f"--promptopt-concurrency={args.concurrency}", f"--promptopt-retries={args.retries}",
                            f"--promptopt-cache-dir={root / 'cache'}", "--tb=line"], plugins=[meter])
        wall = time.perf_counter() - started
    server.stdin.close()
    stats = json.loads(server.stdout.readline())
    server.wait(timeout=30)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    verdicts = sum(meter.verdicts.values())
    print()
    print(f"cases                    {args.cases}")
    print(f"verdicts                 {verdicts} ({meter.verdicts['passed']} passed, {meter.verdicts['failed']} failed,"
          f" {meter.verdicts['skipped']} skipped); pytest exit code {int(code)}")
    print(f"concurrency              {args.concurrency}; a 503 on every {args.error_every}th request "
          f"({100 / args.error_every:.0f}%); retries allowed per call {args.retries}")
    print(f"requests sent            {stats['requests']} for {stats['distinct']} distinct calls")
    print(f"retries                  total {meter.usage.retries}; most attempts one call needed "
          f"{stats['max_attempts']} (bound {args.retries + 1} per try)")
    print(f"wall time                {wall:.1f} s")
    print(f"peak RSS                 {peak_mb:.0f} MB (resource.getrusage ru_maxrss)")
    print("RSS after N cases        " + ", ".join(f"{n}: {mb:.0f} MB" for n, mb in sorted(meter.rss.items())))


if __name__ == "__main__":
    main()
