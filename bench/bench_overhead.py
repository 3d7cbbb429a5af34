"""Per-call overhead of the `llm` fixture on a warm cache.

Two generated suites of N tests each, run as `python -m pytest -q -p no:cacheprovider` in
fresh processes, alternating, several repetitions:

  warm      each test calls a prompt through `llm` (every reply is already in the cache)
  constant  the same test with the call replaced by a plain function (no plugin call)

The suites talk to a scripted OpenAI-compatible server on 127.0.0.1, used once to fill the cache
(the `cold` run); the warm runs must not reach it. Prints median wall times, the ratio and the
overhead per call: (warm - constant) / N. The CPU time of the pytest process (user + sys) is
shown too: on a busy machine it is steadier than the wall time.

Usage: python bench/bench_overhead.py [--n 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from pytest_promptopt.testing import ScriptedServer

PROMPT = """\
temperature: 0
max_tokens: 16
messages:
  - role: system
    content: Repeat the message.
  - role: user
    content: "{text}"
"""

WARM_SUITE = """\
import pytest
from pytest_promptopt import load_prompt

echo = load_prompt("echo.yaml")


@pytest.mark.parametrize("i", range({n}))
def test_case(i, llm):
    assert llm(echo, text=f"case {{i}}") == f"case {{i}}"
"""

CONSTANT_SUITE = """\
import pytest


def echo(text):
    return text


@pytest.mark.parametrize("i", range({n}))
def test_case(i):
    assert echo(text=f"case {{i}}") == f"case {{i}}"
"""


def make_suite(root: Path, name: str, source: str, base_url: str, n: int) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "pytest.ini").write_text(
        f"[pytest]\npromptopt_base_url = {base_url}\npromptopt_model = scripted\n", encoding="utf-8"
    )
    (folder / "echo.yaml").write_text(PROMPT, encoding="utf-8")
    (folder / "test_suite.py").write_text(source.format(n=n), encoding="utf-8")
    return folder


def run(folder: Path, n: int, env: dict[str, str]) -> tuple[float, float]:
    """Run the suite once; return (wall seconds, CPU seconds of the pytest process)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or f"{n} passed" not in last:
        raise SystemExit(f"{folder.name} suite did not pass (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="tests (= LM calls) per suite (default 300)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each suite (default 5)")
    args = parser.parse_args()
    n, repeats = args.n, args.repeats
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTOPT_", "OPENAI_", "PYTEST_ADDOPTS"))}

    with ScriptedServer() as server, tempfile.TemporaryDirectory(prefix="promptopt-bench-") as tmp:
        root = Path(tmp)
        warm_dir = make_suite(root, "warm", WARM_SUITE, server.base_url, n)
        constant_dir = make_suite(root, "constant", CONSTANT_SUITE, server.base_url, n)

        cold, cold_cpu = run(warm_dir, n, env)  # fills the cache
        if server.count != n:
            raise SystemExit(f"the cold run made {server.count} LM calls, expected {n}")
        times: dict[str, list[float]] = {"warm": [], "constant": []}
        cpu: dict[str, list[float]] = {"warm": [], "constant": []}
        for _ in range(repeats):  # interleaved, so drift on the machine hits both alike
            for name, folder in (("warm", warm_dir), ("constant", constant_dir)):
                wall, used = run(folder, n, env)
                times[name].append(wall)
                cpu[name].append(used)
        if server.count != n:
            raise SystemExit(f"the warm runs reached the server ({server.count - n} calls); the cache did not serve them")

    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"pytest-promptopt per-call overhead: N={n} tests, {repeats} interleaved runs each, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print()
    print(f"{'suite':<9}  {'wall median s':>13}  {'wall min s':>10}  {'wall max s':>10}  {'CPU median s':>12}")
    print(f"{'-' * 9}  {'-' * 13}  {'-' * 10}  {'-' * 10}  {'-' * 12}")
    print(f"{'cold':<9}  {cold:>13.3f}  {'':>10}  {'':>10}  {cold_cpu:>12.3f}   (1 run, {n} LM calls)")
    for name in ("warm", "constant"):
        v = times[name]
        print(f"{name:<9}  {med[name]:>13.3f}  {min(v):>10.3f}  {max(v):>10.3f}  {med_cpu[name]:>12.3f}")
    print()
    print(f"ratio warm / constant:  wall {med['warm'] / med['constant']:.2f}   CPU {med_cpu['warm'] / med_cpu['constant']:.2f}")
    print(f"overhead per call:      wall {(med['warm'] - med['constant']) / n * 1e6:.0f} µs   "
          f"CPU {(med_cpu['warm'] - med_cpu['constant']) / n * 1e6:.0f} µs   ((warm - constant) / N)")


if __name__ == "__main__":
    main()
