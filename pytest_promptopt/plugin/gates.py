"""The session's gates as pytest sees them: JUnit testcases for each gated prompt, and whether
a run stood for the whole suite (only then is it saved as a baseline)."""

from __future__ import annotations


import pytest

from ..report.gate import BaselineResult
from ..report.summary import PromptSummary, gate_lines, gate_verdicts

__all__ = ["gate_lines", "incomplete", "junit_gates"]


def incomplete(session: pytest.Session, exitstatus: int) -> str:
    """Why this run does not stand for the whole suite (then it is not saved as a baseline)."""
    if exitstatus == pytest.ExitCode.INTERRUPTED or session.exitstatus == pytest.ExitCode.INTERRUPTED:
        return "the run was interrupted"
    if session.shouldstop or session.shouldfail:
        return f"the run stopped early ({session.shouldstop or session.shouldfail})"
    return ""


def junit_gates(config: pytest.Config, summaries: list[PromptSummary], result: BaselineResult | None) -> None:
    """One JUnit testcase per gated prompt (min pass rate, baseline), failed when its gate failed,
    so CI systems that read JUnit show why a session with only passing tests failed."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    gates = gate_verdicts(summaries, None if result is None else result.comparison, config.rootpath)
    for name, failed, reason in gates:
        nodeid = f"promptopt::gate::{name}"
        for when, outcome in (("call", "failed" if failed else "passed"), ("teardown", "passed")):
            xml.pytest_runtest_logreport(pytest.TestReport(
                nodeid, ("promptopt", None, f"gate::{name}"), {}, outcome,  # type: ignore[arg-type]
                reason if failed and when == "call" else None, when,  # type: ignore[arg-type]
                user_properties=[("promptopt_gate_reason", reason)]))
    if gates:
        xml.add_global_property("promptopt_gate", "failed" if any(f for _, f, _ in gates) else "passed")
