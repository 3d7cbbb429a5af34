"""The session's exit code under `--promptopt-exit-rule`: the failed reports of the run, as the
rule in report/exit_rule.py needs them, and the decision applied to `session.exitstatus`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ..report.exit_rule import ExitDecision, Failure, OptimizeState, decide
from ..report.run_report import RunReport
from ..report.summary import display
from ..run.record import CaseOutcome
from .gates import incomplete
from .optimization import OptimizationRun


class FailureLog:
    """Every failed report (test phases and collection), kept on the controller (xdist too)."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed and not hasattr(report, "wasxfail"):
            self.failures.append(_failure(report))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.failures.append(Failure(report.nodeid, outside="a collection error"))


def _failure(report: pytest.TestReport) -> Failure:
    if report.when != "call":
        return Failure(report.nodeid, outside=f"an error in {report.when}")
    if isinstance(report.longrepr, str) and "XPASS(strict)" in report.longrepr:
        return Failure(report.nodeid, outside="a strict XPASS: it passed although marked xfail(strict=True)")
    data: Any = getattr(report, "promptopt", None)
    if not isinstance(data, dict):
        return Failure(report.nodeid)
    outcome = CaseOutcome.from_dict(data)
    return Failure(report.nodeid, tuple(outcome.prompt_keys), outcome.error)


def exit_decision(session: pytest.Session, rule: str, report: RunReport, log: FailureLog,
                  optimize: OptimizeState | None = None, problems: Sequence[str] = ()) -> ExitDecision:
    """The rule's verdict on this session; the caller sets `session.exitstatus` to its code."""
    status = int(session.exitstatus)
    return decide(rule, status, log.failures, report.gate_verdicts(), name=report.name,
                  incomplete=incomplete(session, status), unrecorded=max(0, session.testsfailed - len(log.failures)),
                  optimize=optimize, problems=problems)


def optimize_state(enabled: bool, run: OptimizationRun | None, notes: Sequence[str],
                   write_errors: Sequence[str], root: Path) -> OptimizeState | None:
    """What an `--optimize` run reached: the prompts whose decision was made (their failed cases
    are the "before"), or why it has no verdict (it did not run, its budget ran out before
    validation, its re-runs could not be scored, the winner could not be written)."""
    if not enabled:
        return None
    if run is None:
        said = [n for n in notes if n.startswith("not optimized")]
        return OptimizeState(problem=said[-1] if said else "not optimized: the run before the optimization did not finish")
    problems = []
    starved = [g for g in run.groups if g.starved]
    if starved:
        names = ", ".join(display(k, root) for g in starved for k in g.prompts)
        problems.append(f"the LM call budget ran out before the optimization of {names} could decide "
                        f"({starved[0].decision.reason}); raise --optimize-budget")
    if run.unscored:
        problems.append(f"{len(run.unscored)} test run(s) could not be scored during the optimization, the LM call "
                        f"failed (first: {run.unscored[0][1]})")
    if write_errors:
        problems.append(f"the winner was not written: {write_errors[0]}")
    decided = frozenset(k for g in run.groups if not g.starved for k in g.prompts)
    return OptimizeState(decided, "; ".join(problems))
