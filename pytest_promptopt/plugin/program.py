"""The Program of `--optimize` on the pytest side: test items are the program.

A candidate is scored by re-running the items that called its prompts through pytest's own
runtest protocol with the candidate swapped in, so fixtures, parametrization and multi-prompt
tests keep working. Each re-run's outcome is the same `CaseOutcome` a plain run reports.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from _pytest.runner import runtestprotocol

from ..llm.cache import ChatRequest
from ..errors import BudgetExhausted
from ..optimize.base import Candidate, Evaluation
from ..optimize.feedback import Feedback, feedback_of
from ..optimize.demos import DemoOption, demo_pool
from ..run.record import CaseOutcome
from ..run.runtime import Runtime
from .stash import OUTCOME_KEY


class PytestProgram:
    def __init__(self, runtime: Runtime, items: Mapping[str, pytest.Item], first_run: Mapping[str, CaseOutcome]) -> None:
        self.runtime = runtime
        self.items = items
        self.first_run = first_run
        self.unscored: list[tuple[str, str]] = []  # (node id, error) of re-runs whose LM call failed

    def evaluate(self, candidate: Candidate, nodeids: Sequence[str]) -> Evaluation:
        items = [self.items[n] for n in nodeids]
        results: list[CaseOutcome] = []
        with self.runtime.override(candidate), quiet_rerun([i.config for i in items[:1]]), self._prefetched():
            self._prefetch(candidate, nodeids)
            for i, item in enumerate(items):
                if isinstance(item, pytest.Function):
                    item._initrequest()  # fresh fixture values for the re-run
                if OUTCOME_KEY in item.stash:
                    del item.stash[OUTCOME_KEY]
                item.ihook.pytest_runtest_protocol(item=item, nextitem=items[i + 1] if i + 1 < len(items) else None)
                if self.runtime.budget_exhausted():
                    raise BudgetExhausted("LM call budget reached while running tests")
                outcome = item.stash.get(OUTCOME_KEY, None) or CaseOutcome(item.nodeid, False, 0.0, "test did not run")
                if outcome.error:
                    self.unscored.append((item.nodeid, outcome.error))
                results.append(outcome)
        return Evaluation(tuple(results))

    def feedback(self, results: Sequence[CaseOutcome]) -> list[Feedback]:
        return feedback_of(results)

    def demo_pool(self, prompt_key: str, nodeids: Sequence[str]) -> list[DemoOption]:
        return demo_pool(prompt_key, [self.first_run[n] for n in nodeids])

    def inputs(self, nodeid: str) -> tuple[Mapping[str, str], ...]:
        return tuple(call.inputs for call in self.first_run[nodeid].calls)

    def source(self, nodeid: str) -> str:
        try:
            return inspect.getsource(self.items[nodeid].function)  # type: ignore[attr-defined]
        except (AttributeError, OSError, TypeError):
            return ""

    def calls_per_case(self, nodeids: Sequence[str]) -> float:
        calls = sum(self.first_run[n].requests for n in nodeids)
        return max(1.0, calls / max(1, len(nodeids)))

    @contextlib.contextmanager
    def _prefetched(self) -> Iterator[None]:
        """What this evaluation prefetched and did not use stays paid for, and no later call
        rides on it: a warm rerun, which prefetches nothing, then counts the same."""
        try:
            yield
        finally:
            budget = self.runtime.client("task").budget
            if budget is not None:
                budget.drop_prepaid()

    def _prefetch(self, candidate: Candidate, nodeids: Sequence[str]) -> None:
        """Send the calls we can predict (the first run's inputs) concurrently, so the items,
        which run one by one, find them in the cache. A call whose inputs hold an earlier call's
        output depends on it and is left to the test; it, and the test's judge calls, still go
        into the plan (as None) for the budget to leave room for them."""
        plan: list[ChatRequest | None] = []
        for nodeid in nodeids:
            earlier_outputs: set[str] = set()
            first = self.first_run[nodeid]
            for call in first.calls:
                prompt = self.runtime.prompts.get(call.prompt_key)
                depends = any(v in earlier_outputs for v in call.inputs.values())
                if prompt is not None and call.prompt_key in candidate and not depends:
                    plan.append(self.runtime.task_request(prompt, call.inputs)[1])
                else:
                    plan.append(None)
                earlier_outputs.add(call.output)
            plan.extend([None] * max(0, first.requests - len(first.calls)))  # judge calls and the like
        if any(r is not None for r in plan):
            self.runtime.client("task").prefetch(plan)

class _Rerun:
    """Runs an item's protocol without reporting it (no dots, no JUnit entry, no logreport).

    Going through the `pytest_runtest_protocol` hook, rather than calling `runtestprotocol`
    directly, keeps the hook's wrappers: pytest's assertion plugin installs the
    `pytest_assertrepr_compare` explanation there (without it a failed `assert out == expected`
    reads `+ where 'x' = <...LLM object at 0x7f...>(...)`, which differs from the plain run and
    changes on every run), and the warnings filters, faulthandler and plugins such as
    pytest-timeout wrap it too. Registered only for the re-run; tryfirst and firstresult, it
    replaces pytest's own impl, which would report the run."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool:
        runtestprotocol(item, nextitem=nextitem, log=False)
        return True


@contextlib.contextmanager
def quiet_rerun(configs: list[pytest.Config]) -> Iterator[None]:
    if not configs:
        yield
        return
    config, plugin = configs[0], _Rerun()
    config.pluginmanager.register(plugin, f"promptopt-rerun-{id(plugin)}")
    warnings = _warning_reports(config)
    seen = len(warnings)
    try:
        yield
    finally:
        config.pluginmanager.unregister(plugin)
        del warnings[seen:]  # a re-run's warnings are the plain run's again: counted once, in the plain run


def _warning_reports(config: pytest.Config) -> list[Any]:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    stats = getattr(reporter, "stats", None)
    return stats.setdefault("warnings", []) if isinstance(stats, dict) else []
