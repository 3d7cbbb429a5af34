"""Run the benchmarks and write BENCHMARKS.md.

  python bench/run.py --setup                   # once: peers' virtualenv (bench/.venv-peers)
  python bench/run.py --quick                   # speed (quick) + quality (quick), < 10 min
  python bench/run.py                           # the full run: speed + quality (medium profile:
                                                #   every task and contender, 2 seeds), ~2 h here
  python bench/run.py --only quality --profile full   # larger: cap 800, 3 seeds, ~5 h (not run yet)
  python bench/run.py --only quality --profile medium --tasks banking --seeds 0 1 2

Speed (bench/bench_speed.py) uses scripted servers; quality (bench/bench_quality.py) starts the
embedded SmolLM2 server once and runs every contender against it, so nothing else that uses the
embedded model should run at the same time (two servers on 2 cores slow each other several-fold).

Each part writes its tables (speed.md, quality.md) and PNGs into --out; BENCHMARKS.md at the repo
root is assembled from whichever parts' tables exist there, with the commands and runtimes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PEERS_VENV = BENCH / ".venv-peers"
sys.path.insert(0, str(BENCH))


def setup() -> None:
    """The peers' virtualenv, apart from the plugin's environment (litellm and friends)."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(BENCH / "peers" / "requirements.txt")],
                   check=True)
    # the plugin's environment needs matplotlib for the plots
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[bench]"], check=True)


def run_log_path(out: Path) -> Path:
    return out / "runs.json"


def record(out: Path, part: str, command: str, seconds: float) -> None:
    """Remember how each part was last produced, for BENCHMARKS.md."""
    path = run_log_path(out)
    runs = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    runs[part] = {"command": command, "seconds": round(seconds, 1), "date": time.strftime("%Y-%m-%d"),
                  "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
                             f"Python {platform.python_version()}"}
    path.write_text(json.dumps(runs, indent=1) + "\n", encoding="utf-8")


def assemble(out: Path) -> Path:
    """BENCHMARKS.md from the tables in `out` and in its subfolders (other profiles' runs, e.g.
    `--out bench/results/medium`), each with the command and wall time that produced it."""
    out.mkdir(parents=True, exist_ok=True)
    folders = [out] + sorted(p for p in out.iterdir() if p.is_dir() and (p / "runs.json").exists())
    parts = ["# Benchmarks", "",
             "Every number below comes from `bench/run.py` with the command shown on this repository. "
             "Set-up once: `python bench/run.py --setup` (peer optimizers into `bench/.venv-peers`, "
             "matplotlib into the plugin's environment).", "",
             "| part | command | wall time | date | machine |", "|---|---|---|---|---|"]
    for folder in folders:
        runs = json.loads(run_log_path(folder).read_text(encoding="utf-8")) if run_log_path(folder).exists() else {}
        for part, r in runs.items():
            parts.append(f"| {part} | `{r['command']}` | {r['seconds'] / 60:.1f} min | {r['date']} | {r['machine']} |")
    parts.append("")
    speed = out / "speed.md"
    if speed.exists():
        parts += [_relink(speed.read_text(encoding="utf-8"), os.path.relpath(out, ROOT)), ""]
    quality = [f for f in folders if (f / "quality.md").exists()]
    if quality:
        parts += ["## Optimization quality", "", QUALITY_INTRO, ""]
    for folder in quality:
        runs = json.loads(run_log_path(folder).read_text(encoding="utf-8")) if run_log_path(folder).exists() else {}
        command = runs.get("quality", {}).get("command", "")
        parts += [f"### `{command}`" if command else "### quality", "",
                  _relink(quality_md(folder), os.path.relpath(folder, ROOT)), ""]
        notes = folder / "quality_notes.md"
        if notes.exists():  # a hand-written reading of the numbers, kept beside the tables it reads
            parts += [notes.read_text(encoding="utf-8"), ""]
    for name in ("concurrency.md", "concurrency_notes.md"):  # a table with its own heading, and how it was run
        if (out / name).exists():
            parts += [(out / name).read_text(encoding="utf-8").rstrip(), ""]
    for name, heading, command, intro in STANDALONE:
        table = out / name
        if table.exists():
            parts += [f"## {heading}", "", f"`{command}` (2-core machine, nothing else running). {intro}", "",
                      table.read_text(encoding="utf-8").rstrip(), ""]
    target = ROOT / "BENCHMARKS.md"
    target.write_text("\n".join(parts), encoding="utf-8")
    return target


# Benchmarks run on their own (each writes one table into bench/results): heading, the command
# that wrote the table, and how to read it.
STANDALONE = (
    ("throughput.md", "Tokens per second: the plugin against the embedded server's raw rate",
     "python bench/bench_throughput.py --cases 30 --passes 2",
     "The same requests (30 banking holdout messages rendered by the example's prompt, zero-shot and "
     "with 4 retrieved demos) sent straight to the embedded server with the openai client (raw) and "
     "through `LMClient.complete` with the cache off (plugin), in alternating passes, medians of 2. "
     "A ratio of 1 or above means no measurable cost of the plugin's own; the raw pass runs first in "
     "each pair, so part of a lead is order. With retrieved demos a call costs about twice a zero-shot "
     "one: the prompt is ~3x longer and, since the demos differ per input, shares only the instruction "
     "prefix with the call before."),
    ("servers.md", "What one call costs on the embedded model: one server or two one-thread servers",
     "python bench/bench_servers.py",
     "40 banking requests per row (the example's instruction, k train messages as chat-turn demos), "
     "uncached: one server with a thread per core answering one request at a time (what the plugin "
     "runs), against two one-thread servers answering two at a time. Prompt evaluation is compute-bound "
     "on 2 cores, so a second server helps short zero-shot calls and hardly helps calls with demos; "
     "the plugin runs one server (see NOTES.md)."),
    ("retrieval.md", "The ceiling of retrieved demos on the banking example",
     "python bench/bench_retrieval.py --ks 0,4,6,8",
     "No search: the example's unchanged instruction plus the k most similar pool entries per message "
     "(BM25; `nearest_last`: the most similar last, `majority_last`: grouped by answer, the answer most "
     "of them share last) answers its 100 holdout messages. The train split (71) is the pool "
     "`--optimize` may use; all 100 train cases include its 29 validation cases, which the optimizer "
     "never puts in a pool."),
    ("strategies/strategies.md", "auto against each single strategy at equal budget (banking example)",
     "python bench/bench_strategies.py --preset light",
     "The README's main command (`--optimize-preset light`, so the same budget for each) per strategy "
     "and seed (0, 1, 2), dry run; held-out is the example's 100 holdout tests scored by the plugin for "
     "what the run would write (the original's score when nothing is written). All runs share one "
     "cache folder, so wall times are not comparable between runs."),
)


def quality_md(folder: Path) -> str:
    """The quality tables one heading level down (they sit under a per-command heading here)."""
    text = (folder / "quality.md").read_text(encoding="utf-8")
    return "\n".join("#" + line if line.startswith("### ") else line for line in text.splitlines())


QUALITY_INTRO = """\
`bench/bench_quality.py`: every contender optimizes the same starting prompt on the same task, with
the same task and optimizer model (the embedded SmolLM2-135M-Instruct server, one instance for the
whole run), the same train / validation / test cases (`splits/<task>.json` beside the tables) and the
same cap on optimization LM calls, then is scored on the held-out test cases.

- Ours (`gradsum`, `mipro`, `auto`) run as `pytest bench/suites/<task> --optimize --optimize-dry-run
  --optimize-strategy S --optimize-budget B --optimize-seed K` with the test cases marked
  `promptopt(holdout=True)`; held-out before is the first run's score on them, after is the plugin's
  own holdout line (the original's score when nothing was accepted). The cap covers the suite's first
  run over train and validation, so B is the cap less those calls.
- Peers run their own code in `bench/.venv-peers` (`bench/peers/run_*.py`): `gepa.optimize` with
  its `DefaultAdapter`, DSPy `MIPROv2` (`auto="light"`, DSPy's own budget, and a setting sized to the
  cap), deepeval's `PromptOptimizer` (GEPA). Each is scored with the task's own metric
  (`bench/peers/tasks.py`) and evaluated on the held-out cases with its own program.
- Calls and tokens are counted at a proxy in front of the server, identically for everyone; a request
  whose user turn carries a test case's input is a test call, anything else an optimization call.
  Optimization calls over the cap are refused (HTTP 400) and counted.
- The train/validation partition is the plugin's hash split (`split_of`) of the suite's node ids,
  handed to peers as is and cross-checked against the plugin's run log.
- A run that fails, times out or scores zero stays in the table with the reason.
- The complete comparison measured here is the `medium` profile on all three tasks, run in parts:
  banking (44.7 min), Iris and QA for every contender but DSPy (48.6 min), DSPy MIPROv2 matched to
  the cap on Iris and QA with one seed (9.6 min; it fails the same way on every task). DSPy MIPROv2
  with `auto="light"` (its own budget, not part of `medium`) ran once on banking (8.7 min; same failure).
  `python bench/run.py` runs the speed part (5.7 min) and then this profile in one go, DSPy with
  both seeds: about 2 h on this machine, the sum of those measured wall times with the DSPy part
  counted twice.
- The `full` profile (3 tasks, 3 seeds, 7 contenders, cap 800, twice the cases: 63 runs) has not been
  run. Scaled from the medium runs' measured times (twice the calls per run, 1.5x the seeds) it is
  about 5 hours on this machine, plus DSPy's `auto="light"` runs, which have their own budget."""


def _relink(markdown: str, rel: str) -> str:
    """Image links in the parts' tables are relative to --out; BENCHMARKS.md sits at the root."""
    import re

    return re.sub(r"\]\((?!https?://|/)([^)]+\.(?:png|svg))\)", lambda m: f"]({rel}/{m.group(1)})", markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: both parts in under 10 minutes")
    parser.add_argument("--setup", action="store_true", help="install the peers' virtualenv and matplotlib, then exit")
    parser.add_argument("--only", choices=("speed", "quality"))
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--profile", choices=("quick", "medium", "full"), help="quality sizes (default: quick with --quick, else medium)")
    parser.add_argument("--tasks", nargs="*", help="quality tasks (banking, iris, qa)")
    parser.add_argument("--seeds", nargs="*", type=int)
    parser.add_argument("--contenders", nargs="*", help="gradsum mipro auto gepa dspy-light dspy-matched deepeval")
    parser.add_argument("--budget", type=int, help="cap on optimization LM calls per quality run")
    parser.add_argument("--assemble", action="store_true", help="only rebuild BENCHMARKS.md from --out")
    args = parser.parse_args()
    out = args.out.resolve()
    if args.setup:
        setup()
        return
    if not args.assemble:
        out.mkdir(parents=True, exist_ok=True)
        command = "python bench/run.py " + " ".join(sys.argv[1:])
        if args.only in (None, "speed"):
            import bench_speed

            started = time.perf_counter()
            bench_speed.main(args.quick, out)
            record(out, "speed", command, time.perf_counter() - started)
        if args.only in (None, "quality"):
            import bench_quality

            started = time.perf_counter()
            bench_quality.main(args.quick, out, args.tasks, args.seeds, args.contenders, args.profile, args.budget)
            record(out, "quality", command, time.perf_counter() - started)
    # BENCHMARKS.md is built from bench/results and its subfolders, whichever --out was used
    print(f"wrote {assemble(BENCH / 'results')}")


if __name__ == "__main__":
    main()
