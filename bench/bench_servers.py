"""What one LM call costs on the embedded model, and whether two one-thread servers beat one.

The same banking requests (the example's instruction, k train messages as chat-turn demos, one
message to classify) go to the embedded SmolLM2 server, uncached, in two set-ups side by side:
one server with one thread per core answering one request at a time (what the plugin runs), and
two servers with one thread each answering two at a time. Printed per k: wall seconds for the
requests, seconds per call, prompt and completion tokens per call, and the ratio of the two
set-ups. Run it alone (no other llama server on the machine).
Usage: python bench/bench_servers.py [--ks 0,3] [--requests 40] [--out bench/results]
(the table is printed and written to <out>/servers.md)
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_throughput import LABELS
from bench_throughput import rows as read_rows
from openai import OpenAI

from pytest_promptopt.llm import local
from pytest_promptopt.defaults import EMBEDDED_MODEL


def messages(rows: list[dict[str, str]], i: int, k: int) -> list[dict[str, str]]:
    system = f"Classify the customer message into one of: {LABELS}.\nAnswer with the intent name only."
    out = [{"role": "system", "content": system}]
    start = (i * 7 + 1) % (len(rows) - k)
    for demo in rows[start:start + k]:
        out += [{"role": "user", "content": demo["text"]}, {"role": "assistant", "content": demo["category"]}]
    return out + [{"role": "user", "content": rows[i]["text"]}]


def run(clients: list[OpenAI], rows: list[dict[str, str]], k: int, n: int) -> dict[str, Any]:
    usage: list[tuple[int, int]] = []

    def one(i: int) -> None:
        reply = clients[i % len(clients)].chat.completions.create(
            model=EMBEDDED_MODEL, messages=messages(rows, i, k), temperature=0, max_tokens=16)  # type: ignore[arg-type]
        usage.append((reply.usage.prompt_tokens, reply.usage.completion_tokens))  # type: ignore[union-attr]

    started = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - started
    return {"wall": wall, "per_call": wall / n, "prompt": sum(p for p, _ in usage) / n,
            "completion": sum(c for _, c in usage) / n}


def measure(threads: list[int], rows: list[dict[str, str]], ks: list[int], n: int) -> dict[int, dict[str, Any]]:
    servers = [local.start(threads=t) for t in threads]
    try:
        clients = [OpenAI(base_url=f"http://127.0.0.1:{s.port}/v1", api_key="unused") for s in servers]
        run(clients, rows, 0, 4)  # warm-up: model pages in, first-request costs paid
        return {k: run(clients, rows, k, n) for k in ks}
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", default="0,3")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    rows = read_rows("train_cases.csv")
    one = measure([local.server_threads()], rows, ks, args.requests)
    two = measure([1, 1], rows, ks, args.requests)
    lines = ["| k | one server, s | two 1-thread servers, s | one/two | s per call (one) | prompt tokens | completion tokens |",
             "|---|---|---|---|---|---|---|"]
    for k in ks:
        a, b = one[k], two[k]
        lines.append(f"| {k} | {a['wall']:.2f} | {b['wall']:.2f} | {a['wall'] / b['wall']:.2f} | {a['per_call']:.3f} "
                     f"| {a['prompt']:.0f} | {a['completion']:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "servers.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
