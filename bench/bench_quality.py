"""Optimization quality: our strategies against peer optimizers, same model, data and call cap.

Every contender runs on the same task, with the same task and optimizer model (the embedded
SmolLM2-135M server, started once per benchmark run), the same train / validation / test split,
the same starting instruction and the same cap on LM calls:

  gradsum, mipro, auto   this plugin, through the real `pytest --optimize --optimize-dry-run`
                         on a suite in bench/suites/<task>/ (test cases marked holdout)
  gepa                   gepa.optimize with its DefaultAdapter on our starting system prompt
  dspy-light             DSPy MIPROv2(auto="light"): its own budget, not capped
  dspy-matched           DSPy MIPROv2 with candidates/trials sized to the cap, capped
  deepeval               deepeval's PromptOptimizer (GEPA), pointed at the same server

Peers run in their own virtualenv (bench/.venv-peers, `python bench/run.py --setup`) as
subprocesses, so their dependencies never touch the plugin's environment.

All LM traffic goes through a counting proxy on 127.0.0.1 in front of the embedded server, so
calls and tokens are counted the same way for everyone. A request belongs to the test phase when
its last user message carries one of the test cases' inputs (every contender sends each test
input in the user turn), otherwise to optimization. Optimization calls over the cap are refused
with HTTP 400 (counted as `refused`); test calls are never capped.

The train/validation partition is the plugin's own hash split (optimize/loop.py: split_of) of
the suite's node ids, so peers train and validate on exactly the sets the plugin uses; the run
log's `start` event is checked against it.

Usage: python bench/run.py --only quality [--quick]   (this module's main() does the work)
"""

from __future__ import annotations

import csv
import http.server
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
DATA = ROOT.parent / "shared" / "data"
PEERS_VENV = BENCH / ".venv-peers"
MODEL = "smollm2-135m-instruct"
sys.path.insert(0, str(BENCH / "peers"))
from tasks import BANKING_LABELS, IRIS_LABELS, UNKNOWN, case_marker

OURS = ("gradsum", "mipro", "auto")
PEERS = ("gepa", "dspy-light", "dspy-matched", "deepeval")
ALL_CONTENDERS = OURS + PEERS
ALL_TASKS = ("banking", "iris", "qa")


@dataclass(frozen=True)
class Profile:
    """How big a run is. Sizes are per class (banking intents, iris species) or in cases (qa)."""

    name: str
    budget: int  # LM calls for optimization, per run, the same for every capped contender
    seeds: tuple[int, ...]
    tasks: tuple[str, ...]
    contenders: tuple[str, ...]
    pool: dict[str, int]  # cases per class for train + validation
    test: dict[str, int]  # held-out cases per class
    timeout_s: float  # per run; a run over it is killed and reported as failed


PROFILES = {
    # quick: enough train cases that a demo set leaves some unseen to score it, and a cap that
    # reaches the search; one seed, so it shows the pipeline and a first lift, not a ranking. DSPy
    # is left to medium: it fails in its proposer on every task here and would take the quick run
    # past 10 minutes (10m50s measured with it)
    "quick": Profile("quick", 250, (0,), ("banking",), ("auto", "gepa"),
                     {"banking": 5, "iris": 8, "qa": 24}, {"banking": 3, "iris": 4, "qa": 12}, 360),
    # medium: the complete comparison measured on this machine (every task, two seeds)
    "medium": Profile("medium", 400, (0, 1), ALL_TASKS,
                      ("auto", "mipro", "gradsum", "gepa", "dspy-matched", "deepeval"),
                      {"banking": 5, "iris": 10, "qa": 40}, {"banking": 4, "iris": 8, "qa": 24}, 900),
    "full": Profile("full", 800, (0, 1, 2), ALL_TASKS, ALL_CONTENDERS,
                    {"banking": 10, "iris": 15, "qa": 60}, {"banking": 10, "iris": 15, "qa": 40}, 3600),
}


# ---------------------------------------------------------------- data and splits

def suite_nodeid(task: str, case_id: str) -> str:
    return f"bench/suites/{task}/test_{task}.py::test_case[{case_id}]"


def build_cases(task: str, profile: Profile) -> list[dict[str, Any]]:
    """Cases with a fixed sample (data seed 0): the optimizer seeds vary, the split does not."""
    from pytest_promptopt.optimize.loop import split_of

    rng = random.Random(0)
    pool, test = profile.pool[task], profile.test[task]
    rows: list[tuple[dict[str, str], str, str]] = []  # inputs, answer, "pool"/"test"
    if task == "banking":
        for name, kind, n in (("train.csv", "pool", pool), ("test.csv", "test", test)):
            by_label: dict[str, list[str]] = defaultdict(list)
            with open(DATA / "banking77" / name, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    by_label[row["category"]].append(row["text"])
            for label in BANKING_LABELS:
                rows += [({"text": t}, label, kind) for t in rng.sample(by_label[label], n)]
    elif task == "iris":
        seen: set[tuple[str, ...]] = set()
        by_label = defaultdict(list)
        with open(DATA / "iris" / "iris.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                key = (row["sepal_length"], row["sepal_width"], row["petal_length"], row["petal_width"])
                if key not in seen:  # a duplicated flower in both train and test would leak
                    seen.add(key)
                    by_label[row["species"]].append(
                        f"sepal length {key[0]} cm, sepal width {key[1]} cm, "
                        f"petal length {key[2]} cm, petal width {key[3]} cm")
        for label in IRIS_LABELS:
            chosen = rng.sample(by_label[label], pool + test)
            rows += [({"features": t}, label, "test") for t in chosen[:test]]
            rows += [({"features": t}, label, "pool") for t in chosen[test:]]
    elif task == "qa":
        for i, (context, question, answer) in enumerate(qa_cases(pool + test, rng)):
            rows.append(({"context": context, "question": question}, answer, "test" if i < test else "pool"))
    else:
        raise ValueError(f"unknown task {task!r}")
    cases = []
    for i, (inputs, answer, kind) in enumerate(rows):
        cid = f"{task[0]}{i:03d}"
        split = "test" if kind == "test" else split_of(suite_nodeid(task, cid))
        cases.append({"id": cid, "inputs": inputs, "answer": answer, "split": split})
    return cases


QA_NAMES = ["Anna", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam"]
QA_CITIES = ["Oslo", "Lyon", "Porto", "Leeds", "Graz", "Turin", "Cork", "Bergen", "Malmo", "Ghent"]
QA_ITEMS = ["basic plan", "premium plan", "family ticket", "monthly pass", "bike rental", "museum card"]
QA_PLACES = ["library", "bakery", "pool", "post office", "pharmacy", "gym"]
QA_PETS = ["cats", "dogs", "rabbits", "parrots"]


def qa_cases(n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """Grounded QA generated from templates: a fact, a distractor, a question; about one in
    five asks for something the context does not say (answer "I don't know")."""
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    while len(out) < n:
        name, other = rng.sample(QA_NAMES, 2)
        city, city2 = rng.sample(QA_CITIES, 2)
        item, place, pets = rng.choice(QA_ITEMS), rng.choice(QA_PLACES), rng.choice(QA_PETS)
        price, count, hour = rng.randint(3, 90), rng.randint(2, 9), rng.randint(4, 9)
        facts = [
            (f"{name} was born in {city} and later moved to {city2} for work.", f"Where was {name} born?", city),
            (f"The {item} costs {price} dollars per month. Cancelling is free.",
             f"How much does the {item} cost per month?", f"{price} dollars"),
            (f"The {place} opens at 8 am. On Sundays it closes at {hour} pm.",
             f"When does the {place} close on Sundays?", f"{hour} pm"),
            (f"{name} lives in {city} with {count} {pets}. {other} visits every week.",
             f"How many {pets} does {name} have?", str(count)),
            (f"{name} works as a nurse in {city}. {other} is a teacher.", f"What is {other}'s job?", "teacher"),
            (f"{name} lives in {city} and works as a baker.", f"What is the name of {name}'s dog?", UNKNOWN),
            (f"The {item} costs {price} dollars per month.", f"When does the {place} open?", UNKNOWN),
        ]
        weights = [3, 3, 3, 3, 3, 2, 2]
        context, question, answer = rng.choices(facts, weights)[0]
        if context + question not in seen:
            seen.add(context + question)
            out.append((context, question, answer))
    return out


def write_cases(task: str, cases: list[dict[str, Any]], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{task}.json"
    path.write_text(json.dumps({"task": task, "cases": cases}, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------- counting proxy

@dataclass
class Counter:
    """Calls and tokens of one contender run, by phase."""

    markers: tuple[str, ...] = ()
    cap: int | None = None
    calls: dict[str, int] = field(default_factory=lambda: {"opt": 0, "test": 0})
    tokens: dict[str, int] = field(default_factory=lambda: {"opt": 0, "test": 0})
    refused: int = 0
    errors: int = 0
    timeline: list[tuple[float, str]] = field(default_factory=list)

    def phase(self, body: dict[str, Any]) -> str:
        users = [m for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
        content = users[-1].get("content", "") if users else ""
        if isinstance(content, list):  # content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return "test" if any(m in content for m in self.markers) else "opt"


class CountingProxy:
    """A tiny OpenAI-compatible pass-through on 127.0.0.1 that counts and caps calls."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")  # .../v1
        self.counter = Counter()
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                proxy.forward(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                proxy.forward(self, self.rfile.read(length))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def reset(self, markers: Iterable[str], cap: int | None) -> Counter:
        with self.lock:
            self.counter = Counter(tuple(markers), cap)
            return self.counter

    def forward(self, handler: http.server.BaseHTTPRequestHandler, body: bytes | None) -> None:
        path = handler.path
        path = path.removeprefix("/v1")
        counter, phase = self.counter, None
        if body is not None and path.endswith("/chat/completions"):
            try:
                phase = counter.phase(json.loads(body))
            except ValueError:
                phase = "opt"
            with self.lock:
                if phase == "opt" and counter.cap is not None and counter.calls["opt"] >= counter.cap:
                    counter.refused += 1
                    refuse = True
                else:
                    counter.calls[phase] += 1
                    counter.timeline.append((time.time(), phase))
                    refuse = False
            if refuse:
                self._reply(handler, 400, json.dumps({"error": {
                    "message": f"benchmark LM call cap reached ({counter.cap} optimization calls)",
                    "type": "invalid_request_error", "code": "budget_exhausted"}}).encode())
                return
        request = urllib.request.Request(self.upstream + path, data=body, method=handler.command,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=600) as response:  # loopback only
                status, data = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            status, data = 502, json.dumps({"error": {"message": f"upstream: {exc}"}}).encode()
        if phase is not None:
            try:
                usage = json.loads(data).get("usage") or {}
                with self.lock:
                    counter.tokens[phase] += int(usage.get("total_tokens") or 0)
                    if status >= 400:
                        counter.errors += 1
            except (ValueError, AttributeError):
                pass
        self._reply(handler, status, data)

    @staticmethod
    def _reply(handler: http.server.BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout, exit): its loss
            pass

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- one run per contender

@dataclass
class RunResult:
    task: str
    contender: str
    seed: int
    cap: int | None
    version: str
    before: float | None = None
    after: float | None = None
    opt_calls: int = 0
    opt_tokens: int = 0
    test_calls: int = 0
    refused: int = 0
    wall_s: float = 0.0
    status: str = "ok"  # ok | failed
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    curve: list[tuple[int, float]] = field(default_factory=list)  # (optimization calls, held-out score)


def ours_version() -> str:
    try:
        return f"pytest-promptopt {metadata.version('pytest-promptopt')}"
    except metadata.PackageNotFoundError:
        return "pytest-promptopt (source)"


def run_ours(strategy: str, task: str, seed: int, cap: int, cases: list[dict[str, Any]], cases_file: Path,
             proxy: CountingProxy, work: Path, timeout_s: float) -> RunResult:
    result = RunResult(task, strategy, seed, cap, ours_version())
    n_fit = sum(1 for c in cases if c.get("split") != "test")
    # The suite's first run scores every train and validation case once (n_fit calls, before any
    # optimization); the cap covers those too, so the plugin's budget is the rest.
    budget = cap - n_fit
    cache, report = work / "cache", work / "report.json"
    cmd = [sys.executable, "-m", "pytest", f"bench/suites/{task}", "-q", "-p", "no:cacheprovider",
           "--optimize", "--optimize-dry-run", "--optimize-strategy", strategy,
           "--optimize-budget", str(budget), "--optimize-seed", str(seed),
           "--promptopt-base-url", proxy.base_url, "--promptopt-model", MODEL, "--promptopt-api-key", "x",
           "--promptopt-cache-dir", str(cache), "--promptopt-report", str(report)]
    result.notes.append(f"--optimize-budget {budget} (cap {cap} less the {n_fit} calls of the first run)")
    env = {**os.environ, "PROMPTOPT_BENCH_CASES": str(cases_file)}
    log = work / "pytest.log"
    rc, seconds, timed_out = _run(cmd, env, log, timeout_s)
    result.wall_s = seconds
    if timed_out:
        return _failed(result, f"timed out after {timeout_s:.0f} s")
    if not report.exists():
        return _failed(result, f"pytest exited {rc} without a report: {_tail(log)}")
    data = json.loads(report.read_text(encoding="utf-8"))
    test_ids = {suite_nodeid(task, c["id"]) for c in cases if c["split"] == "test"}
    scores = {t["nodeid"]: float(t["score"]) for t in data.get("tests", [])}
    held = [scores[n] for n in test_ids if n in scores]
    if len(held) != len(test_ids):
        return _failed(result, f"{len(test_ids) - len(held)} held-out tests did not run: {_tail(log)}")
    result.before = sum(held) / len(held)
    optimization = data.get("optimization") or {}
    result.after, notes = read_decision(optimization, result.before)
    result.notes.extend(notes)
    result.notes.extend(_check_split(optimization, cases, task))
    return result


def read_decision(optimization: dict[str, Any], before: float) -> tuple[float, list[str]]:
    """The held-out score of what the run would write, and its decision lines, from the JSON
    report's `optimization` section (one group: the suite has one prompt)."""
    groups = optimization.get("groups", [])
    notes = [*optimization.get("notes", [])]
    if not groups:
        return before, notes or ["nothing to optimize"]
    group = groups[0]
    verdict = "accepted" if group["accepted"] else "not written"
    notes.append(f"{verdict}: {group['reason']}; LM calls {group['calls']} of {group['budget']}")
    notes.extend(n for n in group.get("notes", []) if n.startswith(("dropped", "kept")))
    holdout = group.get("holdout")
    # not accepted: the prompt stays as it was, so its held-out score is the one before
    after = holdout["after"] if group["accepted"] and holdout and holdout.get("after") is not None else before
    return after, notes


def _check_split(optimization: dict[str, Any], cases: list[dict[str, Any]], task: str) -> list[str]:
    """The peers were handed the split computed with split_of; confirm the plugin used it."""
    groups = optimization.get("groups", [])
    log = Path(groups[0]["log"]) if groups and groups[0].get("log") else None
    if log is None or not log.exists():
        return ["run log not found: split not cross-checked"]
    for line in log.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("event") == "start":
            want_train = {suite_nodeid(task, c["id"]) for c in cases if c["split"] == "train"}
            want_val = {suite_nodeid(task, c["id"]) for c in cases if c["split"] == "validation"}
            if set(event["train"]) == want_train and set(event["validation"]) == want_val:
                return []
            return ["WARNING: the plugin's train/validation split differs from the one given to peers"]
    return ["run log has no start event"]


def peer_python() -> Path:
    return PEERS_VENV / "bin" / "python"


def run_peer(contender: str, task: str, seed: int, cap: int, cases_file: Path, proxy: CountingProxy,
             work: Path, timeout_s: float) -> RunResult:
    script = {"gepa": "run_gepa.py", "dspy-light": "run_dspy.py", "dspy-matched": "run_dspy.py",
              "deepeval": "run_deepeval.py"}[contender]
    capped = contender != "dspy-light"  # auto="light" is DSPy's own budget; reported, not capped
    result = RunResult(task, contender, seed, cap if capped else None, "")
    if not peer_python().exists():
        return _failed(result, "peers' virtualenv missing: run `python bench/run.py --setup`")
    spec = {"task": task, "seed": seed, "budget": cap, "cases": str(cases_file), "base_url": proxy.base_url,
            "model": MODEL, "api_key": "x", "mode": contender.split("-", 1)[1] if "-" in contender else "",
            "work": str(work)}
    spec_file, out_file = work / "spec.json", work / "result.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PROMPTOPT_"))}
    env.update({"DSPY_CACHEDIR": str(work / "dspy-cache"), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "DEEPEVAL_TELEMETRY_OPT_OUT": "YES", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": str(BENCH / "peers")})
    log = work / "peer.log"
    rc, seconds, timed_out = _run([str(peer_python()), str(BENCH / "peers" / script), str(spec_file), str(out_file)],
                                  env, log, timeout_s)
    result.wall_s = seconds
    data = json.loads(out_file.read_text(encoding="utf-8")) if out_file.exists() else {}
    result.version = data.get("version", "")
    result.before, result.after = data.get("before"), data.get("after")
    result.notes.extend(data.get("notes", []))
    if timed_out:
        return _failed(result, f"timed out after {timeout_s:.0f} s" + (f"; {data['error']}" if data.get("error") else ""))
    if data.get("error"):
        return _failed(result, data["error"])
    if rc != 0 or result.after is None:
        return _failed(result, f"exited {rc}: {_tail(log)}")
    return result


def _run(cmd: list[str], env: dict[str, str], log: Path, timeout_s: float) -> tuple[int, float, bool]:
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = process.wait(timeout=timeout_s)
            return rc, time.perf_counter() - started, False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: the run and nothing else
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            return -1, time.perf_counter() - started, True


def _tail(log: Path, n: int = 400) -> str:
    text = log.read_text(errors="replace").strip() if log.exists() else ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-4:])[-n:]


def _failed(result: RunResult, reason: str) -> RunResult:
    reason = " ".join(reason.split())
    result.status, result.reason = "failed", reason if len(reason) <= 240 else reason[:240] + "…"
    return result


# ---------------------------------------------------------------- tables and plots

def spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(mean: float, sd: float, n: int, digits: int = 3) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if n > 1 else "")


def aggregate(results: list[RunResult]) -> dict[str, dict[str, dict[str, Any]]]:
    table: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    groups: dict[tuple[str, str], list[RunResult]] = defaultdict(list)
    for r in results:
        groups[(r.task, r.contender)].append(r)
    for (task, contender), runs in groups.items():
        ok = [r for r in runs if r.status == "ok" and r.after is not None]
        after = [r.after for r in ok if r.after is not None]
        before = [r.before for r in ok if r.before is not None]
        table[task][contender] = {
            "runs": len(runs), "ok": len(ok), "version": next((r.version for r in runs if r.version), ""),
            "cap": runs[0].cap,
            "before": spread(before), "after": spread(after),
            "gain": spread(gains := [r.after - r.before for r in ok if r.after is not None and r.before is not None]),
            "gain_range": (min(gains), max(gains)) if gains else None,
            "opt_calls": spread([float(r.opt_calls) for r in runs]),
            "opt_tokens": spread([float(r.opt_tokens) for r in runs]),
            "test_calls": spread([float(r.test_calls) for r in runs]),
            "refused": sum(r.refused for r in runs),
            "wall_s": spread([r.wall_s for r in runs]),
            "reasons": sorted({r.reason for r in runs if r.reason}),
        }
    return table


def verdicts(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Does the best contender's lead exceed the seed spread? Compared by the gain (held-out after
    less held-out before, each contender's own program scoring its own starting prompt: peers
    render the same template their own way, so their starting scores can differ), and a lead
    counts only when the seed ranges of the gains do not overlap."""
    ranked = sorted(((c, v) for c, v in rows.items() if v["gain_range"]), key=lambda cv: -cv[1]["gain"][0])
    if len(ranked) < 2:
        return []
    best, b = ranked[0]
    if all(v["gain"][0] == b["gain"][0] for _, v in ranked):
        return [f"Every contender that finished gains the same on average ({b['gain'][0]:+.3f})."]
    if b["ok"] < 2:
        return [f"Largest mean gain: {best}. One seed only: no spread, so no difference "
                "here is shown to exceed seed noise."]
    out = [f"Largest mean gain (held-out after less before): {best} ({b['gain'][0]:+.3f})."]
    for other, v in ranked[1:]:
        gap = b["gain"][0] - v["gain"][0]
        separate = b["gain_range"][0] > v["gain_range"][1]
        out.append(f"- vs {other}: {gap:+.3f}; " + ("exceeds the spread (seed ranges do not overlap)" if separate
                                                   else "within the spread (seed ranges overlap)"))
    return out


def markdown(profile: Profile, results: list[RunResult], meta: dict[str, Any]) -> str:
    table = aggregate(results)
    lines = [f"Profile `{profile.name}`: tasks {', '.join(profile.tasks)}; seeds {', '.join(map(str, meta['seeds']))}; "
             f"cap {meta['budget']} optimization LM calls per run; task and optimizer model: embedded "
             f"{MODEL} (temperature 0 for the task), one server for the whole run. "
             f"Wall time of the whole quality run: {meta['seconds']:.0f} s.", ""]
    lines.append("Columns: held-out test score before and after optimization (mean ± sample standard deviation "
                 "over seeds), optimization LM calls and tokens actually sent (counted at the proxy, test-set "
                 "evaluation excluded), calls refused at the cap, wall time per run (optimization and both "
                 "test evaluations).")
    for task in profile.tasks:
        rows = table.get(task, {})
        sizes = meta["sizes"].get(task, {})
        lines += ["", f"### {task}", "",
                  f"{sizes.get('train', 0)} train / {sizes.get('validation', 0)} validation / "
                  f"{sizes.get('test', 0)} test cases; metric: {METRICS[task]}.", "",
                  "| contender | version | runs ok | held-out before | held-out after | gain | opt. LM calls (cap) "
                  "| opt. tokens | refused | wall s | notes |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for contender in [c for c in ALL_CONTENDERS if c in rows]:
            v = rows[contender]
            n = v["ok"]
            cap = "uncapped" if v["cap"] is None else str(v["cap"])
            why = "; ".join(v["reasons"])
            if n and v["after"][0] == 0:
                why = ("scored zero. " + why).strip()
            lines.append(
                f"| {contender} | {v['version'] or '-'} | {n}/{v['runs']} | {fmt(*v['before'], n)} | "
                f"{fmt(*v['after'], n)} | {fmt(*v['gain'], n)} | {fmt(*v['opt_calls'], v['runs'], 0)} ({cap}) | "
                f"{fmt(*v['opt_tokens'], v['runs'], 0)} | {v['refused']} | {fmt(*v['wall_s'], v['runs'], 0)} | "
                f"{_cell(why)} |")
        lines += ["", *verdicts(rows), "", f"![held-out score against LM calls, {task}](quality_{task}.png)"]
    lines += ["", "Per-run notes (the plugin's decision lines, peers' settings):", ""]
    for r in results:
        notes = "; ".join(r.notes + ([r.reason] if r.reason else []))
        lines.append(f"- {r.task} / {r.contender} / seed {r.seed}: {_cell(notes, 600)}")
    return "\n".join(lines) + "\n"


METRICS = {"banking": "exact intent name", "iris": "exact species name",
           "qa": "rubric judge, 0..1 per answer (token F1; \"I don't know\" for unanswerable)"}


def _cell(text: str, limit: int = 300) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


def plot(task: str, results: list[RunResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, contender in enumerate(c for c in ALL_CONTENDERS if any(r.contender == c and r.task == task for r in results)):
        runs = [r for r in results if r.task == task and r.contender == contender and r.status == "ok"
                and r.before is not None and r.after is not None]
        color = f"C{i}"
        if not runs:  # failed runs: an x where they stopped (calls sent), at the score they started from
            stopped = [r for r in results if r.task == task and r.contender == contender]
            ax.plot([r.opt_calls for r in stopped], [r.before or 0.0 for r in stopped], "x", color=color, ms=9,
                    label=f"{contender} (failed)")
            continue
        for r in runs:  # one faint line per seed
            ax.plot([0, r.opt_calls], [r.before, r.after], color=color, alpha=0.25, lw=1)
        b, a = spread([r.before for r in runs]), spread([r.after for r in runs])  # type: ignore[misc]
        x = statistics.fmean(r.opt_calls for r in runs)
        ax.errorbar([0, x], [b[0], a[0]], yerr=[b[1], a[1]], color=color, marker="o", capsize=3,
                    label=f"{contender} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
    ax.set_xlabel("optimization LM calls sent")
    ax.set_ylabel("held-out test score")
    ax.set_title(f"{task}: held-out score against LM calls ({MODEL})")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- entry point

def write_tables(prof: Profile, results: list[RunResult], meta: dict[str, Any], out_dir: Path) -> None:
    (out_dir / "quality.md").write_text(markdown(prof, results, meta), encoding="utf-8")
    for task in prof.tasks:
        plot(task, results, out_dir / f"quality_{task}.png")


def render(out_dir: Path) -> None:
    """quality.md and the plots again from quality.json, without running anything (after a change
    to how the tables are written)."""
    payload = json.loads((out_dir / "quality.json").read_text(encoding="utf-8"))
    meta = payload["meta"]
    base = PROFILES[meta["profile"]]
    prof = Profile(base.name, meta["budget"], tuple(meta["seeds"]), tuple(meta["tasks"]), tuple(meta["contenders"]),
                   base.pool, base.test, base.timeout_s)
    write_tables(prof, [RunResult(**r) for r in payload["runs"]], meta, out_dir)


def main(quick: bool, out_dir: Path, tasks: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
         contenders: Sequence[str] | None = None, profile: str | None = None, budget: int | None = None) -> dict[str, Any]:
    prof = PROFILES[profile or ("quick" if quick else "medium")]
    tasks = tuple(tasks or prof.tasks)
    seeds = tuple(seeds if seeds is not None else prof.seeds)
    contenders = tuple(contenders or prof.contenders)
    unknown = set(contenders) - set(ALL_CONTENDERS)
    if unknown:
        raise SystemExit(f"unknown contender(s) {sorted(unknown)}; choose from {', '.join(ALL_CONTENDERS)}")
    budget = budget or prof.budget
    prof = Profile(prof.name, budget, seeds, tasks, contenders, prof.pool, prof.test, prof.timeout_s)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_root = Path(tempfile.mkdtemp(prefix="promptopt-quality-"))
    from pytest_promptopt.llm import local

    started = time.perf_counter()
    server = local.start()
    proxy = CountingProxy(server.base_url)
    results: list[RunResult] = []
    sizes: dict[str, dict[str, int]] = {}
    try:
        for task in tasks:
            cases = build_cases(task, prof)
            cases_file = write_cases(task, cases, out_dir / "splits")
            sizes[task] = {s: sum(1 for c in cases if c["split"] == s) for s in ("train", "validation", "test")}
            markers = [case_marker(task, c["inputs"]) for c in cases if c["split"] == "test"]
            for seed in seeds:
                for contender in contenders:
                    work = work_root / f"{task}-{contender}-{seed}"
                    work.mkdir(parents=True)
                    counter = proxy.reset(markers, None if contender == "dspy-light" else budget)
                    print(f"[quality] {task} / {contender} / seed {seed} ...", flush=True)
                    if contender in OURS:
                        r = run_ours(contender, task, seed, budget, cases, cases_file, proxy, work, prof.timeout_s)
                    else:
                        r = run_peer(contender, task, seed, budget, cases_file, proxy, work, prof.timeout_s)
                    r.opt_calls, r.opt_tokens = counter.calls["opt"], counter.tokens["opt"]
                    r.test_calls, r.refused = counter.calls["test"], counter.refused
                    if r.refused:
                        r.notes.append(f"{r.refused} optimization calls refused at the cap")
                    results.append(r)
                    print(f"[quality]   before {r.before} after {r.after} opt calls {r.opt_calls} "
                          f"test calls {r.test_calls} refused {r.refused} {r.wall_s:.0f} s {r.status} {r.reason}",
                          flush=True)
    finally:
        proxy.close()
        server.stop()
    meta = {"profile": prof.name, "seeds": list(seeds), "budget": budget, "tasks": list(tasks),
            "contenders": list(contenders), "seconds": time.perf_counter() - started, "sizes": sizes,
            "model": MODEL}
    payload = {"meta": meta, "runs": [asdict(r) for r in results]}
    (out_dir / "quality.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    write_tables(prof, results, meta, out_dir)
    for cache in work_root.glob("*/cache"):  # keep the logs, drop the LM caches
        shutil.rmtree(cache, ignore_errors=True)
    print(f"[quality] logs of every run: {work_root}", flush=True)
    return payload


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--tasks", nargs="*")
    parser.add_argument("--seeds", nargs="*", type=int)
    parser.add_argument("--contenders", nargs="*")
    parser.add_argument("--budget", type=int)
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--render", action="store_true", help="only rewrite the tables and plots in --out from its quality.json")
    a = parser.parse_args()
    if a.render:
        render(a.out)
    else:
        main(a.profile == "quick", a.out, a.tasks, a.seeds, a.contenders, a.profile, a.budget)
