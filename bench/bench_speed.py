"""Speed of the regression gate: four side-by-side measurements in one run.

1. warm     A 500-case suite whose `llm()` calls all hit the cache, against the same suite with
            the call replaced by a plain function (pytest's own floor). Ratio and per-call
            overhead ((warm - constant) / N). Target: under 1 ms per cached call.
2. xdist    The same warm suite (and the constant floor) with `-n 2` against `-n 0`.
3. concurrency
            200 uncached calls through `LMClient.prefetch` (the path `--optimize` uses before it
            re-runs a candidate's test items) against a scripted server on 127.0.0.1 that answers
            after a fixed delay, at client concurrency 1, 4, 16, 64. Speed-up against the ideal
            delay x cases / concurrency. Target: within 20% of ideal (efficiency >= 0.8) at 16.
            The optimizer's path (a plain `pytest` run sends its calls ahead through the same
            bounded pool, `LMClient.send_ahead`; bench_concurrency.py times that end to end).
4. optimizer
            A real `pytest --optimize` on a generated suite against a scripted server with a fixed
            per-call delay and replies that depend on the prompt. The server records when each
            request is being served; the fraction of the optimization's wall time (run log `start`
            to `decision`) during which no request was in flight is the time spent outside LM
            calls. Target: under 10%.

Pytest suites run in fresh processes; variants are interleaved (the order rotates every
repetition) so drift on a shared machine hits them alike, and medians are reported.

Writes OUT/speed.json, OUT/speed.md (tables for BENCHMARKS.md) and one PNG per benchmark.

Usage: python bench/bench_speed.py [--quick] [--out bench/results]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_promptopt.testing import ScriptedServer

OVERHEAD_TARGET_US = 1000.0
CONCURRENCY_TARGET = 0.8  # measured speed-up / ideal speed-up at concurrency 16
OPTIMIZER_TARGET = 0.10  # fraction of optimization wall time outside LM calls

# -- 1 and 2: warm cache and xdist -----------------------------------------------------------------

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


def clean_env() -> dict[str, str]:
    """The environment without anything that would point the plugin elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTOPT_", "OPENAI_", "PYTEST_ADDOPTS"))}


def make_suite(root: Path, name: str, source: str, base_url: str, n: int) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "pytest.ini").write_text(
        f"[pytest]\npromptopt_base_url = {base_url}\npromptopt_model = scripted\n", encoding="utf-8"
    )
    (folder / "echo.yaml").write_text(PROMPT, encoding="utf-8")
    (folder / "test_suite.py").write_text(source.format(n=n), encoding="utf-8")
    return folder


def run_suite(folder: Path, n: int, env: dict[str, str], extra: Sequence[str] = ()) -> tuple[float, float]:
    """Run a suite once in a fresh process; return (wall seconds, CPU seconds of it and its workers)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or f"{n} passed" not in last:
        raise SystemExit(f"{folder.name} suite {' '.join(extra)} did not pass (exit {proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed, cpu


def _spread(values: Sequence[float]) -> dict[str, Any]:
    return {"runs": [round(v, 4) for v in values], "median": statistics.median(values),
            "min": min(values), "max": max(values)}


def bench_suites(n: int, repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Warm vs constant at -n 0 and -n 2, all four interleaved. Returns (warm, xdist) results."""
    env = clean_env()
    variants: dict[str, tuple[str, list[str]]] = {
        "warm -n 0": ("warm", ["-n", "0"]),
        "constant -n 0": ("constant", ["-n", "0"]),
        "warm -n 2": ("warm", ["-n", "2"]),
        "constant -n 2": ("constant", ["-n", "2"]),
    }
    with ScriptedServer() as server, tempfile.TemporaryDirectory(prefix="promptopt-speed-") as tmp:
        root = Path(tmp)
        folders = {"warm": make_suite(root, "warm", WARM_SUITE, server.base_url, n),
                   "constant": make_suite(root, "constant", CONSTANT_SUITE, server.base_url, n)}
        cold_wall, cold_cpu = run_suite(folders["warm"], n, env, ["-n", "0"])  # fills the cache
        if server.count != n:
            raise SystemExit(f"the cold run made {server.count} LM calls, expected {n}")
        wall: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        names = list(variants)
        for rep in range(repeats):
            order = names[rep % len(names):] + names[: rep % len(names)]  # rotate: no variant always goes first
            for name in order:
                suite, extra = variants[name]
                w, c = run_suite(folders[suite], n, env, extra)
                wall[name].append(w)
                cpu[name].append(c)
            print(f"  suites: repetition {rep + 1}/{repeats} done", flush=True)
        if server.count != n:
            raise SystemExit(f"the warm runs reached the server ({server.count - n} calls): the cache did not serve them")

    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    overhead_us = (med["warm -n 0"] - med["constant -n 0"]) / n * 1e6
    # The same from each repetition's own pair (run close together, so under the same load): a
    # cross-check that a load spike during one variant's runs did not make the medians disagree.
    paired_us = statistics.median(w - c for w, c in zip(wall["warm -n 0"], wall["constant -n 0"])) / n * 1e6
    warm = {
        "n": n, "repeats": repeats,
        "cold": {"wall": cold_wall, "cpu": cold_cpu},
        "wall": {k: _spread(wall[k]) for k in ("warm -n 0", "constant -n 0")},
        "cpu": {k: _spread(cpu[k]) for k in ("warm -n 0", "constant -n 0")},
        "ratio_wall": med["warm -n 0"] / med["constant -n 0"],
        "ratio_cpu": med_cpu["warm -n 0"] / med_cpu["constant -n 0"],
        "overhead_us_wall": overhead_us,
        "overhead_us_cpu": (med_cpu["warm -n 0"] - med_cpu["constant -n 0"]) / n * 1e6,
        "overhead_us_paired": paired_us,
        "target_us": OVERHEAD_TARGET_US,
        "met": overhead_us < OVERHEAD_TARGET_US,
    }
    xdist = {
        "n": n, "repeats": repeats,
        "wall": {k: _spread(v) for k, v in wall.items()},
        "cpu": {k: _spread(v) for k, v in cpu.items()},
        "ratio_warm": med["warm -n 2"] / med["warm -n 0"],
        "ratio_constant": med["constant -n 2"] / med["constant -n 0"],
        "overhead_us_n2": (med["warm -n 2"] - med["constant -n 2"]) / n * 1e6,
    }
    return warm, xdist


# -- 3: concurrency --------------------------------------------------------------------------------

# The server runs in its own process: on this 2-core machine a server thread in the client's
# process would take the client's GIL and cost, and count, as client overhead.
SERVE = """\
import sys
from pytest_promptopt.testing import ScriptedServer
with ScriptedServer(delay=float(sys.argv[1])) as server:
    print(server.base_url, flush=True)
    sys.stdin.read()  # until the parent closes stdin
    print(server.count, flush=True)
"""


def bench_concurrency(cases: int, delay: float, levels: Sequence[int], repeats: int) -> dict[str, Any]:
    import openai  # noqa: F401 - imported once up front, as in a session: its ~1 s import is not the client's

    from pytest_promptopt.llm.cache import ReplyCache
    from pytest_promptopt.llm.client import Endpoint, LMClient

    server = subprocess.Popen([sys.executable, "-c", SERVE, str(delay)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=clean_env())
    assert server.stdin is not None and server.stdout is not None
    base_url = server.stdout.readline().strip()
    times: dict[int, list[float]] = {c: [] for c in levels}
    sent = 0
    try:
        with tempfile.TemporaryDirectory(prefix="promptopt-conc-") as tmp:
            for rep in range(repeats):
                order = list(levels) if rep % 2 == 0 else list(reversed(levels))
                for c in order:
                    cache = ReplyCache(Path(tmp) / f"r{rep}-c{c}")  # empty: every call reaches the server
                    client = LMClient(Endpoint(base_url, "scripted"), cache, concurrency=c, max_retries=0)
                    # One untimed call builds the openai client (once per session in real use).
                    client.complete(client.request([{"role": "user", "content": "warm-up"}]))
                    requests = [client.request([{"role": "system", "content": "Repeat the message."},
                                                {"role": "user", "content": f"case {i}"}], {"temperature": 0})
                                for i in range(cases)]
                    t0 = time.perf_counter()
                    client.prefetch(requests)
                    elapsed = time.perf_counter() - t0
                    usage = client.usage()
                    client.close()
                    cache.close()
                    if usage.api_calls != cases + 1 or usage.errors:
                        raise SystemExit(f"concurrency {c}: {usage.api_calls - 1} calls sent, {usage.errors} errors; "
                                         f"expected {cases} and none")
                    sent += cases + 1
                    times[c].append(elapsed)
                print(f"  concurrency: repetition {rep + 1}/{repeats} done", flush=True)
    finally:
        server.stdin.close()
        served = int(server.stdout.readline().strip() or 0)
        server.wait(timeout=10)
    if served != sent:
        raise SystemExit(f"the server answered {served} requests, the client sent {sent}")

    rows = []
    for c in levels:
        median = statistics.median(times[c])
        ideal = delay * cases / c
        rows.append({"concurrency": c, **_spread(times[c]), "ideal": ideal,
                     "ideal_rounds": delay * -(-cases // c),  # whole rounds of c calls
                     "speedup": delay * cases / median, "efficiency": ideal / median})
    at16 = next((r for r in rows if r["concurrency"] == 16), None)
    return {"path": "LMClient.prefetch -> complete_many (what --optimize runs before re-running test items)",
            "cases": cases, "delay_s": delay, "repeats": repeats, "levels": rows,
            "target_efficiency": CONCURRENCY_TARGET,
            "met": None if at16 is None else at16["efficiency"] >= CONCURRENCY_TARGET}


# -- 4: optimizer overhead -------------------------------------------------------------------------

WORDS = ["apple", "banana", "cherry", "delta", "eagle", "falcon", "grape", "hotel", "india", "juliet", "kilo", "lima", "mango", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "umbrella", "victor", "whiskey", "xray", "yankee", "zulu", "amber", "basil", "cobalt", "dune", "ember", "fjord", "glacier", "harbor", "iris", "jasper"]

WORD_PROMPT = """\
temperature: 0
max_tokens: 16
messages:
  - role: system
    content: Repeat the word.
  - role: user
    content: "{word}"
demos: []
"""

WORD_TEST = """\
import pytest
from pytest_promptopt import load_prompt

word = load_prompt("word.yaml")


@pytest.mark.parametrize("w", {words!r})
def test_word(llm, w):
    assert llm(word, word=w) == w[::-1]
"""

PROPOSALS = (
    "Reverse the word letter by letter.",
    "Write the word backwards.",
    "Repeat the word.",
    "Answer with the word only.",
    "Spell the word in reverse order, nothing else.",
    "Return the given word.",
)


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts: the scripted model's coin."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class TimedResponder:
    """Replies that depend on the prompt, after a fixed delay, with every in-flight interval kept.

    The task model reverses the word with a probability that depends on the instruction (one
    that says reverse/backwards works most of the time) and on the demos shown, so candidates
    really differ and the search has something to find. The optimizer model returns one of a
    few instructions, picked by a hash of what it was asked.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        t0 = time.time()  # wall clock: compared with the run log's timestamps from another process
        time.sleep(self.delay)
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        if system.startswith("You improve instructions"):
            answer = PROPOSALS[int(_unit(json.dumps(messages)) * len(PROPOSALS))]
        else:
            word = messages[-1]["content"]
            demos = sum(m["role"] == "assistant" for m in messages)
            told = any(k in system.lower() for k in ("reverse", "backwards"))
            skill = min(0.95, (0.7 if told else 0.1) + 0.08 * min(demos, 4))
            answer = word[::-1] if _unit(system, demos, word) < skill else word
        with self._lock:
            self.intervals.append((t0, time.time()))
        return answer


def union_seconds(intervals: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    """Total time within [lo, hi] covered by at least one interval."""
    total, end = 0.0, lo
    for a, b in sorted(intervals):
        a, b = max(a, end), min(b, hi)
        if b > a:
            total += b - a
            end = b
    return total


def run_optimization(delay: float, budget: int, strategy: str, words: Sequence[str], root: Path,
                     label: str) -> dict[str, Any]:
    responder = TimedResponder(delay)
    folder = root / label
    folder.mkdir()
    cache = folder / "cache"
    (folder / "word.yaml").write_text(WORD_PROMPT, encoding="utf-8")
    (folder / "test_word.py").write_text(WORD_TEST.format(words=list(words)), encoding="utf-8")
    with ScriptedServer(responder) as server:
        (folder / "pytest.ini").write_text(
            f"[pytest]\npromptopt_base_url = {server.base_url}\npromptopt_model = scripted\n", encoding="utf-8")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--optimize",
               f"--optimize-strategy={strategy}", f"--optimize-budget={budget}", "--optimize-dry-run",
               f"--promptopt-cache-dir={cache}"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=folder, env=clean_env(), capture_output=True, text=True, timeout=900, check=False)
        session_wall = time.perf_counter() - t0
        served = server.count
    logs = sorted((cache / "runs").glob("*.jsonl"))
    if not logs:
        raise SystemExit(f"--optimize wrote no run log (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    events = [json.loads(line) for line in logs[-1].read_text(encoding="utf-8").splitlines() if line.strip()]
    start = next(e["t"] for e in events if e["event"] == "start")
    decision = next(e for e in events if e["event"] == "decision")
    wall = decision["t"] - start
    inside = union_seconds(responder.intervals, start, decision["t"])
    in_window = sum(1 for a, _ in responder.intervals if start <= a <= decision["t"])
    busy = sum(min(b, decision["t"]) - max(a, start) for a, b in responder.intervals
               if b > start and a < decision["t"])
    summary = re.search(r"LM calls (\d+) of budget \d+ .*; ([\d.]+) s$", proc.stdout, re.MULTILINE)
    result = re.search(r"validation score ([\d.]+) -> ([^;]+);", proc.stdout)
    return {
        "wall": wall, "in_lm": inside, "outside": wall - inside, "fraction_outside": (wall - inside) / wall,
        "mean_in_flight": busy / inside if inside else 0.0,  # average requests in flight while any is
        "requests_sent": in_window, "requests_total": served,
        "calls_counted": int(summary.group(1)) if summary else None,
        "summary_seconds": float(summary.group(2)) if summary else None,
        "session_wall": session_wall,
        "validation": f"{result.group(1)} -> {result.group(2)}" if result else None,
        "intervals": [(round(a - start, 4), round(b - start, 4)) for a, b in responder.intervals
                      if b > start and a < decision["t"]],
    }


def bench_optimizer(delay: float, budget: int, strategy: str, n_words: int, repeats: int) -> dict[str, Any]:
    runs = []
    words = WORDS[:n_words]
    with tempfile.TemporaryDirectory(prefix="promptopt-opt-") as tmp:
        for rep in range(repeats):
            runs.append(run_optimization(delay, budget, strategy, words, Path(tmp), f"run{rep}"))
            print(f"  optimizer: run {rep + 1}/{repeats} done ({runs[-1]['wall']:.1f} s, "
                  f"{runs[-1]['fraction_outside']:.1%} outside LM calls)", flush=True)
    median = statistics.median(r["fraction_outside"] for r in runs)
    return {"strategy": strategy, "budget": budget, "delay_s": delay, "cases": len(words), "repeats": repeats,
            "runs": runs, "median_fraction_outside": median, "median_wall": statistics.median(r["wall"] for r in runs),
            "target_fraction": OPTIMIZER_TARGET, "met": median < OPTIMIZER_TARGET}


# -- output ----------------------------------------------------------------------------------------

def tables(data: dict[str, Any]) -> list[str]:
    """Markdown tables (also what is printed)."""
    w, x, c, o, m = data["warm"], data["xdist"], data["concurrency"], data["optimizer"], data["meta"]
    yes = {True: "met", False: "**not met**", None: "n/a"}
    out = [(f"Measured {m['date']} with `{m['command']}`: python {m['python']}, {m['cpus']} CPUs, "
           f"load average {m['load_before']:.1f} before / {m['load_after']:.1f} after, total {m['runtime_s']:.0f} s."),
           ""]
    out += [f"### Warm cache: {w['n']} cached `llm()` calls vs a constant function ({w['repeats']} interleaved runs each)",
            "",
            "| suite | wall median s | wall min s | wall max s | CPU median s |",
            "|---|---:|---:|---:|---:|",
            f"| cold (fills the cache, 1 run) | {w['cold']['wall']:.3f} | | | {w['cold']['cpu']:.3f} |"]
    for k in ("warm -n 0", "constant -n 0"):
        s = w["wall"][k]
        out.append(f"| {k.split()[0]} | {s['median']:.3f} | {s['min']:.3f} | {s['max']:.3f} | {w['cpu'][k]['median']:.3f} |")
    out += ["",
            "| quantity | wall | CPU | target |",
            "|---|---:|---:|---|",
            f"| ratio warm / constant | {w['ratio_wall']:.2f} | {w['ratio_cpu']:.2f} | |",
            (f"| overhead per cached call | {w['overhead_us_wall']:.0f} µs | {w['overhead_us_cpu']:.0f} µs | "
            f"< {w['target_us']:.0f} µs: {yes[w['met']]} |"),
            f"| overhead per cached call, median of per-repetition differences | {w['overhead_us_paired']:.0f} µs | | |",
            ""]
    out += [f"### xdist: the warm {x['n']}-case suite with `-n 2` vs `-n 0`",
            "",
            "| suite | `-n 0` wall median s | `-n 2` wall median s | ratio `-n 2` / `-n 0` | `-n 0` CPU s | `-n 2` CPU s |",
            "|---|---:|---:|---:|---:|---:|"]
    for suite, ratio in (("warm", x["ratio_warm"]), ("constant", x["ratio_constant"])):
        out.append(f"| {suite} | {x['wall'][f'{suite} -n 0']['median']:.3f} | {x['wall'][f'{suite} -n 2']['median']:.3f} | "
                   f"{ratio:.2f} | {x['cpu'][f'{suite} -n 0']['median']:.3f} | {x['cpu'][f'{suite} -n 2']['median']:.3f} |")
    out += ["", f"Overhead per cached call under `-n 2`: {x['overhead_us_n2']:.0f} µs.", ""]
    out += [(f"### Concurrency: {c['cases']} uncached calls, server delay {c['delay_s'] * 1000:.0f} ms, "
            f"{c['repeats']} run(s) per level, levels interleaved"),
            "",
            f"Path: `{c['path']}`.",
            "",
            ("| concurrency | median s | min s | max s | ideal s | ideal in whole rounds s | speed-up | ideal speed-up "
            "| efficiency |"),
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in c["levels"]:
        out.append(f"| {r['concurrency']} | {r['median']:.3f} | {r['min']:.3f} | {r['max']:.3f} | {r['ideal']:.3f} | "
                   f"{r['ideal_rounds']:.3f} | {r['speedup']:.1f} | {r['concurrency']} | {r['efficiency']:.2f} |")
    out += ["", f"Target: efficiency (ideal / measured) >= {c['target_efficiency']:.2f} at 16: {yes[c['met']]}.", ""]
    out += [(f"### Optimizer: `pytest --optimize --optimize-strategy={o['strategy']} --optimize-budget={o['budget']}`, "
            f"{o['cases']} tests, server delay {o['delay_s'] * 1000:.0f} ms"),
            "",
            ("| run | optimization wall s | in LM calls s | outside s | outside % | mean requests in flight | "
            "requests sent | LM calls counted | validation |"),
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for i, r in enumerate(o["runs"], 1):
        out.append(f"| {i} | {r['wall']:.2f} | {r['in_lm']:.2f} | {r['outside']:.2f} | {r['fraction_outside']:.1%} | "
                   f"{r['mean_in_flight']:.2f} | {r['requests_sent']} | {r['calls_counted']} | {r['validation']} |")
    out += ["", (f"Median fraction outside LM calls: {o['median_fraction_outside']:.1%} "
                f"(target < {o['target_fraction']:.0%}: {yes[o['met']]})."), ""]
    return out


METHOD = """\
### How each quantity is measured

- **Warm cache.** Two generated suites of N tests run as `python -m pytest -q -p no:cacheprovider -n 0`
  in fresh processes: `warm` calls a prompt through `llm` (every reply already cached by one cold
  run against a scripted server on 127.0.0.1; the server's request count proves the warm runs never
  reach it), `constant` makes the same assertion on a plain function. Overhead per call =
  (median warm - median constant) / N; as a cross-check, the median of each repetition's own
  warm - constant difference, / N. The CPU time (user + sys of the pytest process and its
  children) is shown too: on a busy machine it is steadier than the wall time. The overhead
  includes fixed per-session costs (opening the cache, loading the prompt file) spread over N.
- **xdist.** The same two suites with `-n 2`, interleaved with the `-n 0` runs above.
- **Concurrency.** The client's bounded pool, as the optimizer uses it (a plain run sends its
  logged calls ahead through the same pool; `bench/bench_concurrency.py` times that end to end against
  promptfoo): before re-running a
  candidate's test items it sends their predictable calls through `LMClient.prefetch`
  (`complete_many` on a thread pool bounded by the concurrency), and the items then hit the cache.
  That is the path timed here: `prefetch` of N distinct uncached requests, fresh cache per run, a
  fresh client per run (its openai client built by one untimed call, as it is once per session),
  against a `ScriptedServer` in its own process that answers after a fixed delay. Ideal =
  delay x N / concurrency; efficiency = ideal / measured (1.0 is perfect; with 200 calls at 16 the
  last round is half full, so 12.5/13 = 0.96 is the best possible).
- **Optimizer overhead.** A real `pytest --optimize --optimize-dry-run` in a fresh process on a
  generated suite (words to reverse; the scripted task model reverses more often when the
  instruction says so or demos are shown, and the scripted optimizer model proposes one of a few
  instructions by a hash of its request), fresh cache, against a `ScriptedServer` (in the benchmark's
  process, so its work never competes with pytest's GIL) that sleeps a fixed delay per request.
  The server records the interval during which it is serving each request; time inside LM calls =
  the length of the union of those intervals (time during which at least one request was in
  flight), within the optimization's window from the run log's `start` event to its `decision`
  event (the window the terminal summary's seconds also cover). Outside = window - inside: our
  code, pytest's runtest protocol re-running items, cache reads and writes, Optuna, and the openai
  client's own request and response handling. Calls the cache answers count as outside, as they
  should. The server-side interval misses only the server's HTTP parsing and writing (well under
  a millisecond per request), so the fraction is if anything slightly overstated.
"""


def plots(data: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(name)

    # warm cache
    w = data["warm"]
    fig, ax = plt.subplots(figsize=(6, 4))
    names = ["constant -n 0", "warm -n 0"]
    med = [w["wall"][k]["median"] for k in names]
    err = [[m - w["wall"][k]["min"] for m, k in zip(med, names)], [w["wall"][k]["max"] - m for m, k in zip(med, names)]]
    ax.bar(["constant function\n(pytest's floor)", "cached llm() calls"], med, yerr=err, capsize=6,
           color=["#999999", "#3b75af"])
    ax.set_ylabel("wall time, s (median, min-max)")
    ax.set_title(f"{w['n']}-case suite, warm cache: {w['overhead_us_wall']:.0f} µs per call, ratio {w['ratio_wall']:.2f}")
    save(fig, "speed_warm.png")

    # xdist
    x = data["xdist"]
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.38
    for j, suite in enumerate(("constant", "warm")):
        vals = [x["wall"][f"{suite} -n 0"]["median"], x["wall"][f"{suite} -n 2"]["median"]]
        pos = [i + (j - 0.5) * width for i in range(2)]
        ax.bar(pos, vals, width, label=suite, color="#999999" if suite == "constant" else "#3b75af")
    ax.set_xticks([0, 1], ["-n 0", "-n 2"])
    ax.set_ylabel("wall time, s (median)")
    ax.set_title(f"{x['n']}-case warm suite under xdist: -n 2 / -n 0 = {x['ratio_warm']:.2f}")
    ax.legend()
    save(fig, "speed_xdist.png")

    # concurrency
    c = data["concurrency"]
    fig, ax = plt.subplots(figsize=(6, 4))
    levels = [r["concurrency"] for r in c["levels"]]
    ax.plot(levels, levels, "k--", label="ideal")
    ax.plot(levels, [CONCURRENCY_TARGET * lv for lv in levels], ":", color="#999999",
            label=f"{CONCURRENCY_TARGET:.0%} of ideal")
    ax.plot(levels, [r["speedup"] for r in c["levels"]], "o-", color="#3b75af", label="measured (median)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(levels, [str(lv) for lv in levels])
    ax.set_yticks(levels, [str(lv) for lv in levels])
    ax.set_xlabel("client concurrency")
    ax.set_ylabel("speed-up (delay x calls / wall)")
    ax.set_title(f"{c['cases']} calls, {c['delay_s'] * 1000:.0f} ms each, through LMClient.prefetch")
    ax.legend()
    save(fig, "speed_concurrency.png")

    # optimizer: in/out bars per run, and the in-flight timeline of the median run
    o = data["optimizer"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5.5), gridspec_kw={"height_ratios": [1, 1.4]})
    runs = o["runs"]
    labels = [f"run {i}" for i in range(1, len(runs) + 1)]
    ax1.barh(labels, [r["in_lm"] for r in runs], color="#3b75af", label="in LM calls")
    ax1.barh(labels, [r["outside"] for r in runs], left=[r["in_lm"] for r in runs], color="#d9822b",
             label="outside LM calls")
    for i, r in enumerate(runs):
        ax1.text(r["wall"], i, f" {r['fraction_outside']:.1%}", va="center")
    ax1.set_xlabel("optimization wall time, s")
    ax1.set_title(f"--optimize ({o['strategy']}, budget {o['budget']}), {o['delay_s'] * 1000:.0f} ms per LM call")
    ax1.set_xlim(0, max(r["wall"] for r in runs) * 1.15)  # room for the percentages
    ax1.set_ylim(-0.6, len(runs) + 0.4)  # room for the legend above the bars
    ax1.legend(loc="upper center", ncol=2, fontsize="small")
    mid = sorted(runs, key=lambda r: r["fraction_outside"])[len(runs) // 2]
    events = sorted([(a, 1) for a, _ in mid["intervals"]] + [(b, -1) for _, b in mid["intervals"]])
    ts, ys, level = [0.0], [0], 0
    for t, d in events:
        ts.append(max(t, 0.0))
        ys.append(level)
        level += d
        ts.append(max(t, 0.0))
        ys.append(level)
    ts.append(mid["wall"])
    ys.append(level)
    ax2.fill_between(ts, ys, step=None, color="#3b75af", linewidth=0)
    ax2.set_xlim(0, mid["wall"])
    ax2.set_xlabel("seconds since the optimization started (median run)")
    ax2.set_ylabel("requests in flight")
    save(fig, "speed_optimizer.png")
    return written


def main(quick: bool, out_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 500
    levels = (1, 4, 16, 64)
    if quick:
        suite_repeats, conc_cases, conc_delay, conc_repeats = 3, 200, 0.1, 1
        opt_repeats = 1
    else:
        suite_repeats, conc_cases, conc_delay, conc_repeats = 7, 200, 0.2, 3
        opt_repeats = 3
    # 16 tests and a budget the run does not reach (it ends near 370 calls): every phase runs
    # (demo screening, critique, proposals, TPE search, validation), not just the first.
    opt_delay, opt_budget, opt_words = 0.15, 500, 16
    strategy = "auto"

    print(f"[1+2/4] warm cache and xdist: {n}-case suites, {suite_repeats} interleaved repetitions", flush=True)
    warm, xdist = bench_suites(n, suite_repeats)
    print(f"[3/4] concurrency: {conc_cases} calls at {conc_delay * 1000:.0f} ms, levels {levels}", flush=True)
    concurrency = bench_concurrency(conc_cases, conc_delay, levels, conc_repeats)
    print(f"[4/4] optimizer: --optimize-strategy={strategy} --optimize-budget={opt_budget}, "
          f"{opt_delay * 1000:.0f} ms per call", flush=True)
    optimizer = bench_optimizer(opt_delay, opt_budget, strategy, opt_words, opt_repeats)

    runtime = time.perf_counter() - started
    command = "python bench/bench_speed.py" + (" --quick" if quick else "")
    data: dict[str, Any] = {
        "meta": {"quick": quick, "runtime_s": runtime, "date": time.strftime("%Y-%m-%d %H:%M"),
                 "command": command, "python": platform.python_version(), "cpus": os.cpu_count(),
                 "load_before": load_before, "load_after": os.getloadavg()[0]},
        "warm": warm, "xdist": xdist, "concurrency": concurrency, "optimizer": optimizer,
    }
    lines = tables(data)
    print()
    print("\n".join(lines))
    (out_dir / "speed.md").write_text("## Speed of the regression gate\n\n" + "\n".join(lines) + "\n" + METHOD,
                                      encoding="utf-8")
    (out_dir / "speed.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    written = plots(data, out_dir)
    print(f"wrote {out_dir / 'speed.json'}, {out_dir / 'speed.md'}, " + ", ".join(str(out_dir / w) for w in written))
    print(f"runtime {runtime:.0f} s ({'quick' if quick else 'full'} mode)")
    return data


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller budget (under ~3 min)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="output folder (default bench/results)")
    args = parser.parse_args()
    main(args.quick, args.out)
