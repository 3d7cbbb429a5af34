"""Held-out accuracy of the banking example's own instruction with retrieved demos, by pool and k.

No search: the example's unchanged prompt, plus the k most similar pool entries per message
(BM25; in each order of `--orders`), answers its 100 holdout messages with the embedded SmolLM2. Two
pools: the optimizer's train split (the cases `--optimize` may put in a pool; the rest of
train_cases.csv is its validation split) and all 100 train cases. This is the ceiling the
optimizer's retrieval options can reach on this example, and what each k costs per call.

Replies go through the project's cache folder (`.promptopt_cache`), so a rerun is free.
Run it alone (no other llama server on the machine).
Usage: python bench/bench_retrieval.py [--ks 0,4,6,8] [--orders nearest_last,majority_last] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from bench_throughput import BANKING, LABELS, ROOT, rows

from pytest_promptopt import load_prompt, local
from pytest_promptopt.llm.cache import RecordMode, ReplyCache
from pytest_promptopt.llm.client import Endpoint, LMClient
from pytest_promptopt.defaults import CACHE_DIR_NAME, EMBEDDED_MODEL
from pytest_promptopt.optimize.loop import split_of
from pytest_promptopt.prompts.prompt import Demo

NODEID = "examples/banking/test_intent.py::test_intent[{}]"


def slug(text: str) -> str:
    """The example's test id of a message (as `examples/banking/test_intent.py` builds it)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def pools() -> dict[str, tuple[Demo, ...]]:
    train = rows("train_cases.csv")
    split = tuple(Demo({"text": r["text"]}, r["category"]) for r in train
                  if split_of(NODEID.format(slug(r["text"]))) == "train")
    every = tuple(Demo({"text": r["text"]}, r["category"]) for r in train)
    return {f"train split ({len(split)})": split, f"all train ({len(every)})": every}


def score(client: LMClient, pool: tuple[Demo, ...], k: int, order: str) -> dict[str, Any]:
    prompt = load_prompt(BANKING / "prompts" / "intent.yaml")
    if k:
        prompt = prompt.with_retrieval(pool, k, order=order)
    holdout = rows("holdout_cases.csv")
    before, started, correct = client.usage(), time.perf_counter(), 0
    for r in holdout:
        messages = prompt.render({"text": r["text"], "labels": LABELS})
        reply = client.complete(client.request(messages, prompt.sampling()))
        correct += reply.text.strip() == r["category"]
    spent = client.usage() - before
    return {"k": k, "order": order if k else "-", "holdout": correct / len(holdout), "cases": len(holdout),
            "prompt_tokens_per_call": spent.prompt_tokens / max(1, spent.requests),
            "seconds": time.perf_counter() - started, "sent": spent.api_calls}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", default="0,4,6,8")
    parser.add_argument("--orders", default="nearest_last,majority_last")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of the embedded server (1 keeps it steady on a busy machine)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    server = local.start(threads=args.threads)
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        client = LMClient(Endpoint(server.base_url, EMBEDDED_MODEL, identity=local.embedded_identity()),
                          ReplyCache(ROOT / CACHE_DIR_NAME, RecordMode.NORMAL))
        for index, (name, pool) in enumerate(pools().items()):
            results[name] = []
            for k in ks:
                for order in args.orders.split(",") if k else ["-"]:
                    if k == 0 and index > 0:
                        continue  # zero-shot does not depend on the pool: scored once
                    results[name].append(score(client, pool, k, order))
                    print(name, results[name][-1], flush=True)
    finally:
        server.stop()
    lines = ["| pool | k | order | holdout | prompt tokens per call |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['k']} | {r['order']} | {r['holdout']:.2f} | {r['prompt_tokens_per_call']:.0f} |"
              for name, rs in results.items() for r in rs]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrieval.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "retrieval.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
