"""The session's exit code under `--promptopt-exit-rule`: the failed reports of the run, as the
rule in report/exit_rule.py needs them, and the decision applied to `session.exitstatus`."""

from __future__ import annotations

from typing import Any

import pytest

from ..report.exit_rule import ExitDecision, Failure, OptimizeState, decide
from ..report.run_report import RunReport
from ..run.record import CaseOutcome
from .gates import incomplete


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
                  optimize: OptimizeState | None = None) -> ExitDecision:
    """The rule's verdict on this session; the caller sets `session.exitstatus` to its code."""
    status = int(session.exitstatus)
    return decide(rule, status, log.failures, report.gate_verdicts(), name=report.name,
                  incomplete=incomplete(session, status), unrecorded=max(0, session.testsfailed - len(log.failures)),
                  optimize=optimize)


def write_last_line(config: pytest.Config, decision: ExitDecision | None, report: RunReport | None) -> None:
    """The terminal's last line: which rule decided the exit code, and why. Said when the run
    called prompts and there was something to decide: a failure, or a gate."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None or decision is None or report is None:
        return
    if report.summaries and (decision.code != 0 or decision.excused or report.gate_verdicts()):
        tr.write_line(decision.line(), red=decision.code != 0, green=decision.code == 0, bold=True)
