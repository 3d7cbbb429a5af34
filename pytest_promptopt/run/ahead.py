"""Send a plain run's LM calls ahead, concurrently, before its tests make them one by one.

pytest runs tests one after another, so a suite against a real endpoint would wait for every
call in turn. Instead, each test's calls are logged (`calllog.py`) in the cache folder; at the
start of the next run, the selected tests' logged calls are rendered again with the prompt
files as they are now, and those the cache cannot answer are sent through each client's
bounded pool. The tests then run as always and find their answers waiting; a call whose inputs
changed since the log (the test does something else now) is not in the log's prediction and
simply runs inline. A call that depends on an earlier call's output is sent in a later wave,
once that output is known; one whose input cannot be predicted is left to the test.

A test with no log (a first run, a new test) is probed instead (see `llm/probe.py`): run once,
unreported, up to its first call the cache cannot answer; `send_probed` sends those calls.

Nothing here changes what a test sees: an answer sent ahead is handed to the test that asks
for it as if it had made the call itself (see `LMClient.send_ahead`), so outcomes, summaries,
the gate and the cache are those of a sequential run. What was sent ahead and never asked for
is counted as unused (the cost of predicting).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import diskcache

from ..llm.cache import ChatRequest, RecordMode, decode_record, encode_record
from ..llm.store import open_store
from .calllog import JUDGE, RecordedCall, decode_calls, encode_calls
from ..llm.client import LMClient
from ..errors import PromptOptError
from ..prompts.judgefile import Judge, load_judge
from ..prompts.prompt import Prompt, load_prompt, loaded_prompt_paths
from .runtime import Runtime

CALLS_FOLDER = "calls"  # under the cache folder, next to "replies"
# A log is the test's last run only if it is one a run of this test could have written: its
# samples are draws of the test's promptopt(repeats=n), and one run of a test makes a bounded
# number of calls. A log over the bound (a planted or corrupt cache) is not sent ahead at all:
# the test runs its calls inline and writes a true log.
MAX_LOGGED_CALLS_PER_DRAW = 64

Ref = tuple[str, int]  # (test node id, index of the call in its log)


class CallStore:
    """Per test node id, the calls its last run made: JSON text in a diskcache (SQLite, safe
    across processes, such as xdist workers). Unusable storage means no log, never an error:
    the reply cache already warned about the folder, and tests run as they always did."""

    def __init__(self, directory: Path | None, mode: RecordMode) -> None:
        self.mode = mode
        self._store: diskcache.Cache | None = None
        if directory is not None and mode is not RecordMode.OFF:
            try:
                self._store = open_store(directory / CALLS_FOLDER)
            except (OSError, sqlite3.Error):
                self._store = None

    def get(self, nodeid: str, repeats: int = 1) -> tuple[RecordedCall, ...] | None:
        """The test's logged calls; None when there is no log or it is not one a run of this
        test (`repeats` draws) could have written."""
        if self._store is None:
            return None
        try:
            calls = decode_calls(decode_record(self._store.get(nodeid)))
        except Exception:  # noqa: BLE001 - an unreadable log is no log
            return None
        return calls if calls is not None and plausible(calls, repeats) else None

    def put(self, logs: Mapping[str, Sequence[RecordedCall]]) -> None:
        """Store the logs of tests that ran (one transaction); never in replay mode, which reads only."""
        if self._store is None or not self.mode.writes or not logs:
            return
        try:
            with self._store.transact():
                for nodeid, calls in logs.items():
                    self._store.set(nodeid, encode_record(encode_calls(list(calls))))
        except (OSError, sqlite3.Error):
            pass  # the next run predicts less; this one is unaffected

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def plausible(calls: Sequence[RecordedCall], repeats: int) -> bool:
    """Could one run of a test with `repeats` draws have made these calls? Every sample index
    is one of its draws, and there are no more calls than a run makes (bounded per draw)."""
    if len(calls) > MAX_LOGGED_CALLS_PER_DRAW * max(repeats, 1):
        return False
    return all(0 <= call.sample < max(repeats, 1) for call in calls)


@dataclass(frozen=True)
class AheadReport:
    """What was sent ahead at the start of a run, and (after the run) what was never used."""

    tests: int = 0  # selected tests with a logged run, or a probed one that stopped at an uncached call
    calls: int = 0  # calls in their logs
    cached: int = 0  # already answered by the cache
    sent: int = 0  # sent ahead and answered
    failed: int = 0  # sent ahead and failed: not cached, the test makes the call itself
    inline: int = 0  # not predictable (input derived from an output, prompt unreadable): left to the test
    seconds: float = 0.0  # the whole send-ahead, from rendering the first call to the last answer
    setup_seconds: float = 0.0  # of which building the HTTP client (importing openai: once per process)
    concurrency: int = 1
    unused: int | None = None  # answered ahead, then asked for by no test (None until the run ended)
    failures: tuple[str, ...] = field(default=())  # first few error messages, for the summary
    probed: int = 0  # tests without a log, run first up to their first uncached call (see llm/probe.py)

    def finished(self, unused: int) -> AheadReport:
        return replace(self, unused=unused)

    def plus(self, other: AheadReport) -> AheadReport:
        """Both sends of one run: the logged calls', then the probed tests'."""
        return AheadReport(self.tests + other.tests, self.calls + other.calls, self.cached + other.cached,
                           self.sent + other.sent, self.failed + other.failed, self.inline + other.inline,
                           self.seconds + other.seconds, self.setup_seconds + other.setup_seconds,
                           max(self.concurrency, other.concurrency), None, (self.failures + other.failures)[:3],
                           self.probed + other.probed)

    def to_dict(self) -> dict[str, Any]:
        return {"tests": self.tests, "calls": self.calls, "cached": self.cached, "sent": self.sent,
                "failed": self.failed, "inline": self.inline, "seconds": round(self.seconds, 3),
                "setup_seconds": round(self.setup_seconds, 3),
                "concurrency": self.concurrency, "unused": self.unused, "probed": self.probed}

    def line(self) -> str:
        unused = "" if self.unused is None else f"; {self.unused} sent ahead but not used by the run"
        probed = f"; {counted(self.probed, 'test')} without a log probed first" if self.probed else ""
        return (f"sent {counted(self.sent + self.failed, 'LM call')} ahead for {counted(self.tests, 'test')} at concurrency "
                f"{self.concurrency} in {self.seconds:.1f} s ({self.setup_seconds:.1f} s of it starting the client; {self.cached} of {self.calls} predicted calls already "
                f"cached, {self.failed} failed and were left to their tests, {self.inline} not predictable){probed}{unused}")


def counted(n: int, noun: str) -> str:
    """`1 test`, `2 tests`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def send_ahead(runtime: Runtime, logs: Mapping[str, Sequence[RecordedCall]]) -> AheadReport:
    """Render the logged calls of these tests with the current prompt files and send those the
    cache does not answer, wave by wave (a wave's answers feed the calls that depend on them)."""
    started = time.perf_counter()
    plan = _Plan(runtime, logs)
    while plan.wave():
        pass
    return AheadReport(len(logs), sum(len(c) for c in logs.values()), plan.cached, plan.sent, plan.failed,
                       plan.inline, time.perf_counter() - started, plan.setup_seconds,
                       runtime.client("task").concurrency, failures=tuple(plan.failures[:3]))


def send_probed(runtime: Runtime, misses: Mapping[str, tuple[str, ChatRequest]], probed: int) -> AheadReport:
    """Send the first uncached call of each probed test (node id -> client role, request), as
    sent ahead from a log: each reply goes to the test that asks for it."""
    started = time.perf_counter()
    plan = _Plan(runtime, {})
    pending: dict[str, list[tuple[Ref, ChatRequest]]] = {}
    for nodeid, (role, request) in misses.items():
        pending.setdefault(role, []).append(((nodeid, 0), request))
    for role, calls in pending.items():
        plan._send(runtime.client(role), calls)
    return AheadReport(len(misses), len(misses), 0, plan.sent, plan.failed, 0, time.perf_counter() - started,
                       plan.setup_seconds, runtime.client("task").concurrency, failures=tuple(plan.failures[:3]),
                       probed=probed)


class _Plan:
    def __init__(self, runtime: Runtime, logs: Mapping[str, Sequence[RecordedCall]]) -> None:
        self.runtime = runtime
        self.logs = logs
        self.outputs: dict[Ref, str] = {}  # answers known now (cached or sent ahead)
        self.settled: set[Ref] = set()  # answered, failed or left to the test
        self.prompts: dict[str, Prompt | None] = {}
        self.judges: dict[str, Judge] = {}  # judge files as they are now, read once
        self.cached = self.sent = self.failed = self.inline = 0
        self.setup_seconds = 0.0
        self.failures: list[str] = []

    def wave(self) -> bool:
        """Settle every call that can be settled now; False once nothing more can be."""
        misses: dict[int, tuple[LMClient, list[tuple[Ref, ChatRequest]]]] = {}
        progressed = False
        for nodeid, calls in self.logs.items():
            for index, call in enumerate(calls):
                ref = (nodeid, index)
                if ref in self.settled:
                    continue
                target = self._request(nodeid, call)
                if target == "wait":
                    continue
                progressed = True
                if target is None:
                    self._settle(ref, None)
                    self.inline += 1
                    continue
                client, request = target
                reply = client.cache.get(request)
                if reply is not None:
                    self.cached += 1
                    self._settle(ref, reply.text)
                else:
                    misses.setdefault(id(client), (client, []))[1].append((ref, request))
        for client, pending in misses.values():
            self._send(client, pending)
        return progressed

    def _settle(self, ref: Ref, output: str | None) -> None:
        self.settled.add(ref)
        if output is not None:
            self.outputs[ref] = output

    def _send(self, client: LMClient, pending: list[tuple[Ref, ChatRequest]]) -> None:
        unique = list(dict.fromkeys(request for _, request in pending))
        started = time.perf_counter()
        try:
            client.connect()  # timed apart: a fixed cost per process, not a cost per call
        except PromptOptError:
            pass  # the embedded model could not start: each call reports it as it fails
        self.setup_seconds += time.perf_counter() - started
        results = dict(zip((r.cache_key for r in unique), client.send_ahead(unique)))
        for result in results.values():  # counted per request sent: two tests may ask the same
            if isinstance(result, BaseException):
                self.failed += 1
                self.failures.append(str(result))
            else:
                self.sent += 1
        for ref, request in pending:
            result = results[request.cache_key]
            self._settle(ref, None if isinstance(result, BaseException) else result.text)

    def _request(self, nodeid: str, call: RecordedCall) -> tuple[LMClient, ChatRequest] | None | str:
        """The call's request now; None if it cannot be predicted; "wait" until its inputs are known."""
        values: dict[str, str] = {}
        for name, value in call.inputs.items():
            if value.derived:
                return None
            if value.output_of is None:
                values[name] = value.text
                continue
            ref = (nodeid, value.output_of)
            if ref in self.outputs:
                values[name] = self.outputs[ref]
            elif ref in self.settled:
                return None  # what it depends on was not predicted
            else:
                return "wait"
        try:
            return self._build(call, values)
        except (PromptOptError, OSError, KeyError, ValueError, TypeError):
            return None  # the test meets the same problem inline and reports it there

    def _build(self, call: RecordedCall, values: Mapping[str, str]) -> tuple[LMClient, ChatRequest] | None:
        if call.kind == JUDGE:
            judge = self._judge(call.prompt) if call.prompt else None
            criteria = judge.criteria if judge is not None else values["criteria"]  # the file as it is now
            return self.runtime.judge_request(judge, values["output"], criteria, values.get("expected"), call.sample)
        prompt = self._prompt(call.prompt)
        return None if prompt is None else self.runtime.task_request(prompt, values, call.sample)

    def _judge(self, name: str) -> Judge:
        """A judge file named in the log; one that cannot be read raises (the call is not predicted)."""
        if name not in self.judges:
            root = self.runtime.root.resolve()
            path = (root / name).resolve()
            if not path.is_relative_to(root):  # a planted log must not make us read files outside
                raise PromptOptError(f"judge file {name!r} is outside the rootdir; not sent ahead")
            self.judges[name] = load_judge(path, root=root)
        return self.judges[name]

    def _prompt(self, name: str) -> Prompt | None:
        """The prompt file a log names, only if this session loaded it and it is under the rootdir:
        a planted log must not make us read any other file and send it to the endpoint."""
        if name not in self.prompts:
            self.prompts[name] = None  # moved, deleted, broken or not ours: the test makes the call itself
            root = self.runtime.root.resolve()
            try:
                path = (root / name).resolve()
                if path.is_relative_to(root) and path in loaded_prompt_paths():
                    self.prompts[name] = load_prompt(path, root=root)
            except (PromptOptError, OSError, ValueError):
                pass
        return self.prompts[name]
