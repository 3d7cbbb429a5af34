"""Tokens per second through the plugin against the embedded server's raw rate, on the same
requests: the physical limit of LM calls on this machine, and how close the plugin gets.

The embedded SmolLM2 server is started once. The same requests (banking messages rendered by
the example's prompt: zero-shot, and with 4 retrieved demos from the example's train cases) are
sent in passes that alternate raw (the openai client straight to the server) and plugin
(`LMClient.complete`, cache off), A B A B, so drift on a shared machine hits both alike and
llama.cpp's prefix reuse sees the same order in every pass. Reported: prompt and completion
tokens per second and calls per second, per path, the median over passes, and plugin / raw.

Run it alone (no other llama server on the machine).
Usage: python bench/bench_throughput.py [--cases 40] [--passes 2] [--out bench/results]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import openai

from pytest_promptopt import load_prompt, local
from pytest_promptopt.llm.cache import RecordMode, ReplyCache
from pytest_promptopt.llm.client import Endpoint, LMClient
from pytest_promptopt.defaults import EMBEDDED_MODEL
from pytest_promptopt.prompts.prompt import Demo

ROOT = Path(__file__).resolve().parents[1]
BANKING = ROOT / "examples" / "banking"
LABELS = ", ".join(["age_limit", "cancel_transfer", "card_arrival", "card_not_working", "exchange_rate",
                    "lost_or_stolen_card", "pending_cash_withdrawal", "pin_blocked", "Refund_not_showing_up",
                    "top_up_failed"])


def rows(name: str) -> list[dict[str, str]]:
    with open(BANKING / "data" / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def requests(cases: int, k: int) -> list[tuple[list[dict[str, str]], dict[str, Any]]]:
    prompt = load_prompt(BANKING / "prompts" / "intent.yaml")
    if k:
        pool = tuple(Demo({"text": r["text"]}, r["category"]) for r in rows("train_cases.csv"))
        prompt = prompt.with_retrieval(pool, k)
    return [(prompt.render({"text": r["text"], "labels": LABELS}), prompt.sampling())
            for r in rows("holdout_cases.csv")[:cases]]


def raw_pass(client: openai.OpenAI, reqs: list) -> dict[str, float]:
    started, prompt_tokens, completion_tokens = time.perf_counter(), 0, 0
    for messages, params in reqs:
        reply = client.chat.completions.create(model=EMBEDDED_MODEL, messages=messages, **params)
        prompt_tokens += reply.usage.prompt_tokens
        completion_tokens += reply.usage.completion_tokens
    return rates(time.perf_counter() - started, len(reqs), prompt_tokens, completion_tokens)


def plugin_pass(client: LMClient, reqs: list) -> dict[str, float]:
    before, started = client.usage(), time.perf_counter()
    for messages, params in reqs:
        client.complete(client.request(messages, params))
    spent = client.usage() - before
    return rates(time.perf_counter() - started, len(reqs), spent.prompt_tokens, spent.completion_tokens)


def rates(seconds: float, calls: int, prompt_tokens: int, completion_tokens: int) -> dict[str, float]:
    return {"seconds": seconds, "calls_per_s": calls / seconds, "prompt_tok_per_s": prompt_tokens / seconds,
            "completion_tok_per_s": completion_tokens / seconds, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens}


def measure(server_url: str, reqs: list, passes: int) -> dict[str, Any]:
    raw = openai.OpenAI(base_url=server_url, api_key="not-needed", max_retries=0)
    ours = LMClient(Endpoint(server_url, EMBEDDED_MODEL), ReplyCache(None, RecordMode.OFF))
    out: dict[str, list[dict[str, float]]] = {"raw": [], "plugin": []}
    for _ in range(passes):
        out["raw"].append(raw_pass(raw, reqs))
        out["plugin"].append(plugin_pass(ours, reqs))
    median = {path: {key: statistics.median(p[key] for p in runs) for key in runs[0]} for path, runs in out.items()}
    ratio = {key: median["plugin"][key] / median["raw"][key] for key in ("calls_per_s", "prompt_tok_per_s",
                                                                          "completion_tok_per_s")}
    return {"passes": out, "median": median, "plugin_over_raw": ratio}


def table(results: dict[str, Any]) -> str:
    lines = ["| requests | path | calls/s | prompt tok/s | completion tok/s | plugin / raw (calls/s) |",
             "|---|---|---|---|---|---|"]
    for label, r in results.items():
        for path in ("raw", "plugin"):
            m = r["median"][path]
            ratio = f"{r['plugin_over_raw']['calls_per_s']:.2f}" if path == "plugin" else ""
            lines.append(f"| {label} | {path} | {m['calls_per_s']:.2f} | {m['prompt_tok_per_s']:.0f} | "
                         f"{m['completion_tok_per_s']:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    server = local.start()
    try:
        results = {f"zero-shot, {args.cases} messages": measure(server.base_url, requests(args.cases, 0), args.passes),
                   f"4 retrieved demos, {args.cases} messages": measure(server.base_url, requests(args.cases, 4),
                                                                        args.passes)}
    finally:
        server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "throughput.md").write_text(table(results) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
