"""A regression run against a slow endpoint: our plain `pytest` against promptfoo `eval`, side by side.

One scripted OpenAI-compatible server on 127.0.0.1 answers every chat call after a fixed delay
(0.5 s by default). The same cases (200 by default: "case i" -> "CASE I", an equality check)
run through:

  pytest c=1, 4, 16   our plugin, a plain `pytest` (no xdist) after a prompt edit: the suite ran
                      once before (with the old prompt, which logged each test's calls), then the
                      prompt's instruction changed, so every call misses the cache. Each variant
                      starts from a copy of the same cache folder. The run sends the logged calls
                      ahead at `--promptopt-concurrency` c, then runs the tests on the answers.
  first c=4, 16       our plugin, the first-ever plain `pytest` run of the same suite with the edited
                      prompt: no call log, a cold cache (a fresh folder each time). The tests are
                      probed up to their first uncached call (--promptopt-probe=auto, the
                      default), those calls are sent ahead at c, then the tests run on the answers.
                      This is the run to compare with promptfoo, which caches nothing here either.
  promptfoo c=4, 16   `promptfoo eval --max-concurrency c --no-cache` (npm promptfoo, pinned below,
                      on Node 22 from the npm package node@22, both in bench/.peers-node), with
                      the edited prompt as a chat prompt and an `equals` assertion per case.
  ideal               delay x cases / c: the LM time alone, with nothing else in the way.

Walls are whole processes (interpreter start, collection, report). "LM phase" is the plugin's
own measure of the send-ahead (JSON report `ahead.seconds`); its efficiency is ideal / LM phase
(target >= 0.8 at 16). Target: at 16 our walls (after an edit, and first-ever) <= promptfoo's.

Variants are interleaved (the order rotates every repetition) and medians are reported.
Writes OUT/concurrency.json and OUT/concurrency.md.

Setup (once): npm install --prefix bench/.peers-node node@22 promptfoo@0.123.1
Usage: nice -n 19 python bench/bench_concurrency.py [--cases 200] [--delay 0.5] [--repeats 3]
       python bench/bench_concurrency.py --smoke   (8 cases at 50 ms, once; promptfoo only if installed)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_promptopt.testing import ScriptedServer

HERE = Path(__file__).resolve().parent
NODE_PREFIX = HERE / ".peers-node"
PROMPTFOO_VERSION = "0.123.1"
OURS = (1, 4, 16)
THEIRS = (4, 16)
OLD_INSTRUCTION = "Shout the text."
NEW_INSTRUCTION = "Shout the text back, in capitals."

SUITE = """\
import pytest
from pytest_promptopt import load_prompt

shout = load_prompt("shout.yaml")


@pytest.mark.parametrize("i", range({n}))
def test_case(i, llm):
    assert llm(shout, text=f"case {{i}}") == f"CASE {{i}}"
"""


def shout(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    text = messages[-1]["content"]
    return text.upper() if system.startswith("Shout") else text


def our_prompt(instruction: str) -> str:
    return f"temperature: 0\nmessages:\n  - role: system\n    content: {instruction}\n  - role: user\n    content: '{{text}}'\n"


def clean_env() -> dict[str, str]:
    """The environment of a user's shell: nothing pointing the plugin elsewhere, and .pyc files
    written (this sandbox sets PYTHONDONTWRITEBYTECODE, which makes every pytest process compile
    and assertion-rewrite its plugins from source: seconds that no installed setup pays)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PROMPTOPT_", "OPENAI_", "PYTEST_ADDOPTS", "PYTHONDONTWRITEBYTECODE"))}


def make_ours(root: Path, base_url: str, n: int, name: str = "ours", instruction: str = OLD_INSTRUCTION) -> Path:
    folder = root / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    (folder / "pytest.ini").write_text(f"[pytest]\npromptopt_base_url = {base_url}\npromptopt_model = scripted\n")
    (folder / "shout.yaml").write_text(our_prompt(instruction))
    (folder / "test_suite.py").write_text(SUITE.format(n=n))
    return folder


def run_ours(folder: Path, n: int, concurrency: int) -> dict[str, Any]:
    report = folder / "report.json"
    # Only the plugins a user of this package has: ours and anyio's (httpx, under openai, needs
    # anyio); not this machine's dev plugins (hypothesis alone costs ~2 s per process here).
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "pytest_promptopt.plugin",
           "-p", "anyio.pytest_plugin", f"--promptopt-concurrency={concurrency}", f"--promptopt-report={report}"]
    env = {**clean_env(), "PYTHONPATH": str(HERE.parent), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=1200, check=False)
    wall = time.perf_counter() - t0
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or f"{n} passed" not in last:
        raise SystemExit(f"our suite at {concurrency} did not pass:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    ahead = json.loads(report.read_text())["ahead"] or {}
    return {"wall": wall, "lm": ahead.get("seconds"), "setup": ahead.get("setup_seconds"), "sent": ahead.get("sent", 0),
            "unused": ahead.get("unused"), "probed": ahead.get("probed", 0)}


def make_theirs(root: Path, base_url: str, n: int) -> Path:
    folder = root / "theirs"
    folder.mkdir()
    messages = [{"role": "system", "content": NEW_INSTRUCTION}, {"role": "user", "content": "{{text}}"}]
    (folder / "prompt.json").write_text(json.dumps(messages))
    tests = [{"vars": {"text": f"case {i}"}, "assert": [{"type": "equals", "value": f"CASE {i}"}]} for i in range(n)]
    config = {"prompts": ["file://prompt.json"],
              "providers": [{"id": "openai:chat:scripted",
                             "config": {"apiBaseUrl": base_url, "apiKey": "not-needed", "temperature": 0}}],
              "tests": tests}
    (folder / "promptfooconfig.json").write_text(json.dumps(config))
    return folder


def run_theirs(folder: Path, n: int, concurrency: int) -> dict[str, Any]:
    bin_dir = NODE_PREFIX / "node_modules" / ".bin"
    out = folder / f"out-{concurrency}.json"
    env = {**clean_env(), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "PROMPTFOO_CONFIG_DIR": str(folder / ".pf"),
           "PROMPTFOO_DISABLE_TELEMETRY": "1", "PROMPTFOO_DISABLE_UPDATE": "1", "PROMPTFOO_CACHE_ENABLED": "false",
           "PROMPTFOO_DISABLE_SHARING": "1", "NO_COLOR": "1"}
    cmd = [str(bin_dir / "promptfoo"), "eval", "-c", "promptfooconfig.json", "--max-concurrency", str(concurrency),
           "--no-cache", "--no-table", "--no-progress-bar", "--no-write", "-o", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=1200, check=False)
    wall = time.perf_counter() - t0
    try:
        stats = json.loads(out.read_text())["results"]["stats"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"promptfoo at {concurrency} wrote no results ({exc}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-2000:]}") from None
    if stats.get("successes") != n:
        raise SystemExit(f"promptfoo at {concurrency}: {stats} (expected {n} successes)")
    out.unlink()
    return {"wall": wall}


def fresh_copy(warm: Path, root: Path, name: str) -> Path:
    """The warmed suite (its cache and call log) with the prompt edited, in a folder of its own."""
    folder = root / name
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(warm, folder)
    (folder / "shout.yaml").write_text(our_prompt(NEW_INSTRUCTION))
    return folder


def measure(n: int, delay: float, repeats: int, peers: bool = True) -> dict[str, Any]:
    with ScriptedServer(shout, delay=delay) as server, tempfile.TemporaryDirectory(prefix="promptopt-conc-") as tmp:
        root = Path(tmp)
        warm = make_ours(root, server.base_url, n)
        run_ours(warm, n, 16)  # logs each test's calls, for the runs after a prompt edit
        theirs = make_theirs(root, server.base_url, n)
        variants = ([("pytest", c) for c in OURS] + [("first", c) for c in THEIRS]
                    + [("promptfoo", c) for c in THEIRS if peers])
        runs: dict[str, list[dict[str, Any]]] = {f"{tool} c={c}": [] for tool, c in variants}
        for rep in range(repeats):
            shift = rep % len(variants)
            for tool, c in variants[shift:] + variants[:shift]:
                if tool == "pytest" and c == 1 and rep > 0:
                    continue  # 100 s a run: once is enough to place it
                before = server.count
                if tool == "pytest":
                    result = run_ours(fresh_copy(warm, root, f"c{c}"), n, c)
                elif tool == "first":  # no log, a cold cache: the probe pass finds the calls
                    result = run_ours(make_ours(root, server.base_url, n, f"first-c{c}", NEW_INSTRUCTION), n, c)
                    if result["probed"] != n:
                        raise SystemExit(f"the first-ever run at {c} probed {result['probed']} of {n} tests")
                else:
                    result = run_theirs(theirs, n, c)
                result["requests"] = server.count - before
                runs[f"{tool} c={c}"].append(result)
                print(f"{tool} c={c}: {result}", flush=True)
    return {"runs": runs}


LABELS = {"pytest": "`pytest` after a prompt edit", "first": "first-ever `pytest` run (no log, cold cache: probed)",
          "promptfoo": "promptfoo `eval --no-cache`"}


def summarize(data: dict[str, Any], n: int, delay: float) -> list[str]:
    lines = ["| run | concurrency | wall s (median) | runs s | LM phase s (of it: client start) | ideal s "
             "| LM phase efficiency (without client start) | requests |",
             "|---|---|---|---|---|---|---|---|"]
    for name, results in data["runs"].items():
        tool, c = name.split(" c=")
        ideal = delay * n / int(c)
        walls = [r["wall"] for r in results]
        lm_cell = eff = "-"
        timed = [r for r in results if r.get("lm") is not None]
        if timed:
            lm = statistics.median(r["lm"] for r in timed)
            sending = statistics.median(r["lm"] - r["setup"] for r in timed)
            setup = statistics.median(r["setup"] for r in timed)
            lm_cell, eff = f"{lm:.2f} ({setup:.2f})", f"{ideal / lm:.2f} ({ideal / sending:.2f})"
        label = LABELS[tool]
        lines.append(f"| {label} | {c} | {statistics.median(walls):.2f} | {', '.join(f'{w:.2f}' for w in walls)} | "
                     f"{lm_cell} | {ideal:.2f} | {eff} | {results[0]['requests']} |")
    for c in sorted(set(OURS) | set(THEIRS)):
        lines.append(f"| ideal (delay x cases / c) | {c} | {delay * n / c:.2f} | | | | | |")
    return lines


def command_line() -> str:
    """The command as it ran, with the niceness it ran at (0: not niced)."""
    niceness = os.nice(0)
    return (f"nice -n {niceness} " if niceness else "") + " ".join(["python bench/bench_concurrency.py", *sys.argv[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds the server takes per call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--smoke", action="store_true",
                        help="a check that the bench runs: 8 cases at 50 ms, once, promptfoo only if installed, "
                             "results under a temporary folder")
    args = parser.parse_args()
    peers = (NODE_PREFIX / "node_modules" / ".bin" / "promptfoo").exists()
    if args.smoke:
        args.cases, args.delay, args.repeats = 8, 0.05, 1
        args.out = Path(tempfile.mkdtemp(prefix="promptopt-conc-smoke-"))
    elif not peers:
        raise SystemExit(f"promptfoo is not installed: npm install --prefix {NODE_PREFIX} node@22 "
                         f"promptfoo@{PROMPTFOO_VERSION}")
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    data = measure(args.cases, args.delay, args.repeats, peers)
    lines = summarize(data, args.cases, args.delay)
    data.update({"cases": args.cases, "delay_s": args.delay, "promptfoo": PROMPTFOO_VERSION,
                 "python": platform.python_version(), "cpus": os.cpu_count(),
                 "wall_s": round(time.perf_counter() - started, 1),
                 "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                 "command": command_line()})
    args.out.mkdir(parents=True, exist_ok=True)
    head = (f"## A regression run against a slow endpoint: {args.cases} cases, {args.delay * 1000:.0f} ms per call\n\n"
            f"`{data['command']}` ({data['cpus']} CPUs, Python {data['python']}, "
            f"{f'promptfoo {PROMPTFOO_VERSION} on Node 22' if peers else 'promptfoo not installed: not run'}; whole bench {data['wall_s']:.0f} s; load average {data['load_average'][0]} before, "
            f"{data['load_average'][1]} after)\n\n")
    (args.out / "concurrency.md").write_text(head + "\n".join(lines) + "\n")
    (args.out / "concurrency.json").write_text(json.dumps(data, indent=1) + "\n")
    print(head + "\n".join(lines))


if __name__ == "__main__":
    main()
