"""`auto` against each single strategy at equal budget, on the banking example's own holdout.

Each strategy and seed is one run of the README's main command with `--optimize-strategy` and
`--optimize-seed` added (dry run, so the example's prompt file is never touched): the same
preset, so the same budget of LM calls, the same train / validation split, and the example's
100 holdout tests scored by the plugin for the original and for the winner. A run that writes
nothing keeps the original, so its holdout score is the original's.

All runs share one cache folder (under --out): the first plain run's 200 calls are paid once
and a reply is the same whether it is cached or not (temperature 0). The budget counts
requests, cached or sent, so every run has the same budget. Wall time per run is printed but
is not comparable between runs for that reason.

Printed: one row per run, then per strategy the mean held-out score over the seeds with its
range, and whether `auto`'s mean is beyond the other strategy's seed range.
Run it alone (no other llama server on the machine).
Usage: python bench/bench_strategies.py [--preset light] [--strategies auto mipro gradsum]
                                        [--seeds 0 1 2] [--out bench/results/strategies]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOLDOUT = re.compile(r"holdout \((\d+) tests never used for selection\): ([\d.]+) -> ([\d.]+)")
CALLS = re.compile(r"LM calls (\d+) of budget (\d+)")
VALIDATION = re.compile(r"validation score ([\d.]+) -> ([\d.]+|not run)")


def one_run(strategy: str, seed: int, preset: str, cache: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "pytest", "examples/banking", "-q", "-p", "no:cacheprovider",
               "--optimize", "--optimize-dry-run", f"--optimize-preset={preset}",
               f"--optimize-strategy={strategy}", f"--optimize-seed={seed}", f"--promptopt-cache-dir={cache}"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, check=False, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    out = done.stdout
    calls, validation = CALLS.search(out), VALIDATION.search(out)
    if calls is None or validation is None:
        raise SystemExit(f"{strategy} seed {seed}: no optimization report in the output "
                         f"(exit code {done.returncode}):\n{out[-3000:]}\n{done.stderr[-2000:]}")
    holdout = HOLDOUT.search(out)
    accepted = "  accepted:" in out
    # the plugin scores the holdout of an accepted winner; a run that writes nothing keeps the
    # original, whose holdout score is the plain run's (0 passing tests of the 100 on banking)
    before = float(holdout.group(2)) if holdout else None
    after = float(holdout.group(3)) if holdout else None
    decision = next(line.strip() for line in out.splitlines()
                    if line.startswith(("  accepted:", "  not written:")))
    return {"strategy": strategy, "seed": seed, "calls": int(calls.group(1)), "budget": int(calls.group(2)),
            "validation": [validation.group(1), validation.group(2)], "accepted": accepted,
            "holdout_before": before, "holdout_after": after, "decision": decision[:160],
            "seconds": round(seconds, 1)}


def written_holdout(run: dict[str, Any], original: float) -> float:
    """Held-out score of what the run would leave in the prompt file."""
    return run["holdout_after"] if run["accepted"] and run["holdout_after"] is not None else original


def summary(runs: list[dict[str, Any]], strategies: list[str]) -> list[str]:
    originals = [r["holdout_before"] for r in runs if r["holdout_before"] is not None]
    original = originals[0] if originals else 0.0
    lines = ["| strategy | seed | held-out (written) | validation | LM calls / budget | s | decision |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['strategy']} | {r['seed']} | {written_holdout(r, original):.3f} | "
                     f"{r['validation'][0]} -> {r['validation'][1]} | {r['calls']} / {r['budget']} | "
                     f"{r['seconds']:.0f} | {r['decision']} |")
    scores = {s: [written_holdout(r, original) for r in runs if r["strategy"] == s] for s in strategies}
    lines += ["", f"Original prompt's held-out score: {original:.3f}", "",
              "| strategy | mean held-out | range over seeds |", "|---|---|---|"]
    for s, values in scores.items():
        lines.append(f"| {s} | {statistics.mean(values):.3f} | {min(values):.3f} - {max(values):.3f} |")
    if "auto" in scores:
        auto = scores["auto"]
        for s, values in scores.items():
            if s == "auto":
                continue
            apart = min(auto) > max(values) or max(auto) < min(values)
            lines.append(f"- auto vs {s}: {statistics.mean(auto) - statistics.mean(values):+.3f}; "
                         + ("beyond the seed spread (ranges do not overlap)" if apart
                            else "within the seed spread (ranges overlap)"))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="light")
    parser.add_argument("--strategies", nargs="+", default=["auto", "mipro", "gradsum"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "strategies")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        for strategy in args.strategies:
            runs.append(one_run(strategy, seed, args.preset, args.out / "cache"))
            print(json.dumps(runs[-1]), flush=True)
    lines = summary(runs, args.strategies)
    (args.out / "strategies.json").write_text(json.dumps(runs, indent=1), encoding="utf-8")
    (args.out / "strategies.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
