"""The pytest boundary of `--optimize`: test items are the program.

A candidate is scored by re-running the items that called its prompts through pytest's own
runtest protocol with the candidate swapped in, so fixtures, parametrization and multi-prompt
tests keep working. Everything else is in the pytest-free core (loop, strategies).
"""

from __future__ import annotations

import inspect
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _pytest.runner import runtestprotocol

from ..errors import BudgetExhausted
from ..prompts import Prompt
from ..record import TestRecord
from ..report import display
from .base import Candidate, Case, CaseResult, Evaluation, Strategy
from .gradsum import GradSum
from .loop import GroupOutcome, assign_splits, optimize_group
from .mipro import Mipro, auto
from .runlog import RunLog, run_key

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..session import PromptOptSession

DEFAULT_BUDGET = 3000
DEFAULT_MARGIN = 0.02


def builtin_strategy(name: str) -> Strategy:
    return {"gradsum": GradSum, "mipro": Mipro, "auto": auto}[name]()


class PytestProgram:
    def __init__(self, runtime: Runtime, items: dict[str, pytest.Item], baseline: dict[str, TestRecord]) -> None:
        self.runtime = runtime
        self.items = items
        self.baseline = baseline

    def evaluate(self, candidate: Candidate, nodeids: Sequence[str]) -> Evaluation:
        from ..plugin import OUTCOME_KEY, RECORD_KEY

        items = [self.items[n] for n in nodeids]
        results: list[CaseResult] = []
        with self.runtime.override(candidate):
            self._prefetch(candidate, nodeids)
            for i, item in enumerate(items):
                before = self._requests()
                if isinstance(item, pytest.Function):
                    item._initrequest()  # fresh fixture values for the re-run
                runtestprotocol(item, nextitem=items[i + 1] if i + 1 < len(items) else None, log=False)
                if self._budget_exhausted():
                    raise BudgetExhausted("LM call budget reached while running tests")
                passed, message = item.stash.get(OUTCOME_KEY, (False, "test did not run"))
                record = item.stash.get(RECORD_KEY, None) or TestRecord(item.nodeid)
                results.append(CaseResult(item.nodeid, record.score(passed), passed, message,
                                          self._requests() - before, record))
        return Evaluation(tuple(results))

    def _requests(self) -> int:
        return sum(c.usage().requests for c in self.runtime.clients().values())

    def _budget_exhausted(self) -> bool:
        return any(c.budget is not None and c.budget.exhausted for c in self.runtime.clients().values())

    def _prefetch(self, candidate: Candidate, nodeids: Sequence[str]) -> None:
        """Send the calls we can predict (from baseline variables) concurrently, so the items,
        which run one by one, find them in the cache."""
        requests = []
        client = None
        for nodeid in nodeids:
            record = self.baseline.get(nodeid)
            if record is None:
                continue
            earlier_outputs: set[str] = set()
            for trace in record.traces:
                prompt = self.runtime.prompts.get(trace.prompt_key)
                depends = any(v in earlier_outputs for v in trace.variables.values())
                if prompt is not None and trace.prompt_key in candidate and not depends:
                    client, request = self.runtime.task_request(prompt, trace.variables)
                    requests.append(request)
                earlier_outputs.add(trace.output)
        if client is not None and len(requests) > 1:
            client.prefetch(requests)


class Progress:
    """Throttled progress lines: per prompt, step, best score, calls of budget, ETA."""

    def __init__(self, tr: Any, runtime: Runtime, label: str, budget: int | None) -> None:
        self.tr = tr
        self.runtime = runtime
        self.label = label
        self.budget = budget
        self.started = time.perf_counter()
        self.last = 0.0
        self.start_requests = sum(c.usage().requests for c in runtime.clients().values())
        self.estimate = budget or 0

    def __call__(self, message: str, *, estimate: int | None = None) -> None:
        if estimate is not None:
            self.estimate = estimate
        now = time.perf_counter()
        if self.tr is None or now - self.last < 2.0:
            return
        self.last = now
        used = sum(c.usage().requests for c in self.runtime.clients().values()) - self.start_requests
        elapsed = now - self.started
        eta = ""
        planned = min(self.budget or self.estimate, self.estimate)
        if used and planned > used:
            eta = f", ETA ~{elapsed * (planned / used - 1):.0f} s"
        of = f"/{self.budget}" if self.budget else ""
        self.tr.write_line(f"[promptopt] {self.label}: {message} | calls {used}{of} | {elapsed:.0f} s{eta}")
        self.tr.flush()  # visible as it happens in CI logs too


def run_optimization(ps: PromptOptSession, session: pytest.Session) -> None:
    from ..plugin import OUTCOME_KEY, RECORD_KEY

    config = session.config
    runtime = ps.runtime
    tr = config.pluginmanager.get_plugin("terminalreporter")
    root = Path(config.rootpath)

    def say(line: str) -> None:
        ps.optimization_lines.append(line)

    items: dict[str, pytest.Item] = {}
    baseline: dict[str, TestRecord] = {}
    outcomes: dict[str, tuple[bool, str]] = {}
    holdout: set[str] = set()
    by_prompt: dict[str, list[str]] = defaultdict(list)
    unscored = 0
    for item in session.items:
        record, outcome = item.stash.get(RECORD_KEY, None), item.stash.get(OUTCOME_KEY, None)
        if record is None or outcome is None or not record.traces:
            continue
        if record.errors:  # its baseline is the endpoint's failure, not the prompt's: no evidence either way
            unscored += 1
            continue
        items[item.nodeid], baseline[item.nodeid], outcomes[item.nodeid] = item, record, outcome
        marker = item.get_closest_marker("promptopt")
        if marker is not None and marker.kwargs.get("holdout"):
            holdout.add(item.nodeid)
            continue
        for key in record.prompt_keys:
            by_prompt[key].append(item.nodeid)

    if unscored:
        say(f"left out {unscored} test(s) whose LM call failed in the run above: they could not be scored")
    named = [_resolve(p, config) for p in config.getoption("optimize_prompt")]
    for path in named:
        if str(path) not in by_prompt:
            say(f"{display(str(path), root)}: no test called this prompt, so it cannot be optimized")
    targets = [k for k, ids in by_prompt.items() if any(not outcomes[n][0] for n in ids)]
    if named:
        targets = [k for k in by_prompt if Path(k) in named]
    if not by_prompt:
        say("no test made a successful LM call through the llm fixture: nothing to optimize")
        return
    if not targets:
        say("every test of every prompt passes: nothing to optimize")
        return
    for group in _groups(targets, by_prompt, baseline):
        nodeids = sorted({n for k in group for n in by_prompt[k]})
        splits = assign_splits(nodeids)
        cases = [Case(n, splits[n], outcomes[n][0], baseline[n].score(outcomes[n][0]), outcomes[n][1],
                      baseline[n], _source(items[n])) for n in nodeids]
        original: dict[str, Prompt] = {k: runtime.prompts[k] for k in group}
        outcome = _optimize(ps, config, runtime, tr, original, cases, items, baseline)
        _report(ps, config, outcome, root, say)
        if outcome.accepted:
            held = sorted({n for n in holdout if any(k in group for k in baseline[n].prompt_keys)})
            if held:
                program = PytestProgram(runtime, items, baseline)
                after = program.evaluate(outcome.best, held)
                before = sum(baseline[n].score(outcomes[n][0]) for n in held) / len(held)
                say(f"  holdout ({len(held)} tests never used for selection): {before:.3f} -> {after.mean:.3f}")


def _optimize(ps: PromptOptSession, config: pytest.Config, runtime: Runtime, tr: Any, original: dict[str, Prompt],
              cases: list[Case], items: dict[str, pytest.Item], baseline: dict[str, TestRecord]) -> GroupOutcome:
    name = config.getoption("optimize_strategy")
    strategy = config.hook.pytest_promptopt_strategy(name=name, config=config) or builtin_strategy(name)
    seed = config.getoption("optimize_seed")
    budget = config.getoption("optimize_budget") or DEFAULT_BUDGET
    clients = {role: runtime.client(role) for role in ("task", "judge", "optimizer")}
    log = RunLog(ps.settings.cache_dir / "runs", run_key(original.values(), strategy.name, seed, budget),
                 resume=config.getoption("optimize_resume"))
    label = ", ".join(display(k, Path(config.rootpath)) for k in sorted(original))
    try:
        return optimize_group(
            original, cases, PytestProgram(runtime, items, baseline),
            strategy=strategy, clients=clients, log=log, seed=seed, budget_calls=budget,
            budget_tokens=config.getoption("optimize_token_budget"),
            margin=_or(config.getoption("optimize_margin"), DEFAULT_MARGIN),
            max_regressions=config.getoption("optimize_max_regressions"),
            progress=Progress(tr, runtime, label, budget),
        )
    finally:
        log.close()


def _report(ps: PromptOptSession, config: pytest.Config, o: GroupOutcome, root: Path, say: Any) -> None:
    names = ", ".join(display(k, root) for k in o.prompts)
    say(f"{names}: strategy {o.strategy}, {o.n_train} train / {o.n_validation} validation tests")
    after = "not run" if o.validation_after is None else f"{o.validation_after:.3f}"
    say(f"  validation score {o.validation_before:.3f} -> {after}; train score {o.train_before:.3f} -> {o.train_after:.3f}")
    calls = ", ".join(f"{role} {u.requests} ({u.api_calls} sent, {u.tokens:,} tokens)" for role, u in o.usage.items())
    say(f"  LM calls {o.calls} of budget {o.budget} (estimated {o.estimate}): {calls}; {o.seconds:.1f} s")
    for note in dict.fromkeys(o.notes):
        for key in o.prompts:  # notes name prompts by key; show them as the heading does
            note = note.replace(key, display(key, root))
        say(f"  note: {note}")
    dry = config.getoption("optimize_dry_run")
    if o.accepted:
        verb = "would write (dry run)" if dry else "writing"
        say(f"  accepted: {o.reason}; {verb} {', '.join(display(str(w.path), root) for w in o.writes)}")
        for w in o.writes:
            for line in w.diff().splitlines():
                say("    " + line)
            if not dry:
                ps.queue_write(w)
    else:
        say(f"  not written: {o.reason}")
    say(f"  run log: {o.log_path}")
    ps.optimization_outcomes.append(o)  # for the HTML report: decision, usage, diff, run log


def _groups(targets: list[str], by_prompt: dict[str, list[str]], baseline: dict[str, TestRecord]) -> list[list[str]]:
    """Prompts that share a test are optimized together (a multi-stage program)."""
    parent = {k: k for k in targets}

    def find(k: str) -> str:
        while parent[k] != k:
            k = parent[k]
        return k

    for key in targets:
        for nodeid in by_prompt[key]:
            for other in baseline[nodeid].prompt_keys:
                if other in parent:
                    parent[find(other)] = find(key)
    groups: dict[str, list[str]] = defaultdict(list)
    for key in targets:
        groups[find(key)].append(key)
    return [sorted(g) for g in groups.values()]


def _resolve(path: str, config: pytest.Config) -> Path:
    p = Path(path)
    if not p.is_absolute():
        p = Path(config.invocation_params.dir) / p
    return p.resolve()


def _source(item: pytest.Item) -> str:
    try:
        return inspect.getsource(item.function)  # type: ignore[attr-defined]
    except (AttributeError, OSError, TypeError):
        return ""


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value
