"""The shared reply tier's cost on a warm run: every call a local hit, with and without the tier.

Two measures, side by side in one run, variants interleaved (the order rotates every repetition),
medians reported:

  per call, in process   `LMClient.complete` on N cached requests: the local cache alone, then
                         the local cache over a shared directory (and over Redis with --redis).
  per call, whole run    a plain `pytest` of N one-call tests against the scripted server, warm
                         (every reply in the local cache), without and with
                         `--promptopt-shared-cache` (a directory): wall / N, interpreter start,
                         collection and report included.

Also checks the tier does what it is for: a second cache folder over the same shared tier sends
0 requests to the server. Goal: the ratio with/without within 1.10.
No embedded model: the scripted server on 127.0.0.1 answers.

Usage: nice -n 19 python bench/bench_shared_cache.py [--cases 200] [--calls 5000] [--repeats 5] [--redis]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_promptopt.llm.cache import ChatRequest, RecordMode, Reply
from pytest_promptopt.llm.client import Endpoint, LMClient
from pytest_promptopt.llm.shared_cache import open_cache
from pytest_promptopt.testing import ScriptedServer

HERE = Path(__file__).resolve().parent
PROMPT = "temperature: 0\nmessages:\n  - role: user\n    content: '{text}'\n"
SUITE = """
import pytest
from pytest_promptopt import load_prompt
p = load_prompt("echo.yaml")

@pytest.mark.parametrize("i", range({n}))
def test_case(i, llm):
    assert llm(p, text=f"case {{i}}") == f"case {{i}}"
"""


def run_pytest(folder: Path, cache: str, shared: str | None, n: int) -> tuple[float, int]:
    """Wall seconds of one plain pytest process, and the chat calls it made (JSON report)."""
    report = folder / "report.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "pytest_promptopt.plugin",
           "-p", "anyio.pytest_plugin", f"--promptopt-cache-dir={cache}", f"--promptopt-report={report}"]
    cmd += [f"--promptopt-shared-cache={shared}"] if shared else []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTOPT_", "OPENAI_", "PYTEST_ADDOPTS"))}
    env.update(PYTHONPATH=str(HERE.parent), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=1200, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or f"{n} passed" not in proc.stdout:
        raise SystemExit(f"the suite did not pass:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return wall, json.loads(report.read_text())["cache"]["hits"]


def whole_runs(root: Path, server: ScriptedServer, n: int, repeats: int) -> dict[str, Any]:
    folder = root / "suite"
    folder.mkdir()
    (folder / "pytest.ini").write_text(f"[pytest]\npromptopt_base_url = {server.base_url}\npromptopt_model = scripted\n")
    (folder / "echo.yaml").write_text(PROMPT)
    (folder / "test_suite.py").write_text(SUITE.format(n=n))
    shared = str(root / "team-cache")
    run_pytest(folder, "machine-a", shared, n)  # records every reply, locally and in the tier
    recorded = server.count
    run_pytest(folder, "machine-b", shared, n)  # another machine: served by the shared tier
    second_machine_requests = server.count - recorded
    variants: dict[str, Callable[[], float]] = {
        "without": lambda: run_pytest(folder, "machine-a", None, n)[0],
        "with directory tier": lambda: run_pytest(folder, "machine-a", shared, n)[0],
    }
    walls = interleaved(variants, repeats)
    if server.count != recorded + second_machine_requests:
        raise SystemExit("a warm run sent requests")
    return {"first_machine_requests": recorded, "second_machine_requests": second_machine_requests,
            "per_call_ms": {k: 1000 * statistics.median(v) / n for k, v in walls.items()}}


def in_process(root: Path, server: ScriptedServer, calls: int, repeats: int, redis_url: str | None) -> dict[str, Any]:
    endpoint = Endpoint(server.base_url, "scripted")
    requests = [ChatRequest.build("scripted", [{"role": "user", "content": f"case {i}"}], served_by="bench")
                for i in range(calls)]
    tiers = {"without": None, "with directory tier": str(root / "inproc-shared")}
    if redis_url:
        tiers["with redis tier"] = redis_url
    clients = {}
    for name, shared in tiers.items():
        cache = open_cache(root / f"inproc-{len(clients)}", RecordMode.NORMAL, shared)
        for request in requests:
            cache.put(request, Reply(request.messages[-1][1]))
        clients[name] = LMClient(endpoint, cache)

    def timed(client: LMClient) -> float:
        t0 = time.perf_counter()
        for request in requests:
            if not client.complete(request).cached:
                raise SystemExit("a warm call missed the local cache")
        return time.perf_counter() - t0

    walls = interleaved({name: (lambda c=client: timed(c)) for name, client in clients.items()}, repeats)
    return {"per_call_us": {k: 1e6 * statistics.median(v) / calls for k, v in walls.items()}}


def interleaved(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    names, walls = list(variants), {name: [] for name in variants}
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            walls[name].append(variants[name]())
    return walls


def start_redis() -> tuple[subprocess.Popen[str], str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Ready to accept connections" in line:
            return proc, f"redis://127.0.0.1:{port}/0"
    raise SystemExit("redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--redis", action="store_true", help="also the Redis tier (starts its own redis-server)")
    args = parser.parse_args()
    redis = start_redis() if args.redis else None
    try:
        with tempfile.TemporaryDirectory() as tmp, ScriptedServer() as server:
            result = {"cases": args.cases, "calls": args.calls, "repeats": args.repeats,
                      "whole_run": whole_runs(Path(tmp), server, args.cases, args.repeats),
                      "in_process": in_process(Path(tmp), server, args.calls, args.repeats,
                                               redis[1] if redis else None)}
    finally:
        if redis is not None:
            redis[0].terminate()
            redis[0].wait()
    for part, unit in (("whole_run", "per_call_ms"), ("in_process", "per_call_us")):
        base = result[part][unit]["without"]
        result[part]["ratio"] = {k: round(v / base, 3) for k, v in result[part][unit].items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
