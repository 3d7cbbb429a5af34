"""The session's gates as pytest sees them: JUnit testcases for each gated prompt, and whether
a run stood for the whole suite (only then is it saved as a baseline)."""

from __future__ import annotations

import pytest

from ..report.exit_rule import ExitDecision
from ..report.gate import BaselineResult
from ..report.summary import PromptSummary, display


def incomplete(session: pytest.Session, exitstatus: int) -> str:
    """Why this run does not stand for the whole suite (then it is not saved as a baseline)."""
    if exitstatus == pytest.ExitCode.INTERRUPTED or session.exitstatus == pytest.ExitCode.INTERRUPTED:
        return "the run was interrupted"
    if session.shouldstop or session.shouldfail:
        return f"the run stopped early ({session.shouldstop or session.shouldfail})"
    return ""


def junit_gates(config: pytest.Config, summaries: list[PromptSummary], result: BaselineResult | None,
                decision: ExitDecision | None = None) -> None:
    """One JUnit testcase per gated prompt (min pass rate, baseline), failed when its gate failed,
    so CI systems that read JUnit show why a session with only passing tests failed."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    root = config.rootpath
    gates = [(f"min_pass_rate[{display(s.key, root)}]", s.gate_failed,
              f"passed {s.pass_rate:.1%} of {s.cases} cases; at least {s.min_pass_rate:.0%} required")
             for s in summaries if s.min_pass_rate is not None]
    if result is not None and result.comparison is not None:
        gates += [(f"baseline[{p.prompt}]", p.gate_failed, p.gate_reason) for p in result.comparison.prompts]
    for name, failed, reason in gates:
        nodeid = f"promptopt::gate::{name}"
        for when, outcome in (("call", "failed" if failed else "passed"), ("teardown", "passed")):
            xml.pytest_runtest_logreport(pytest.TestReport(
                nodeid, ("promptopt", None, f"gate::{name}"), {}, outcome,  # type: ignore[arg-type]
                reason if failed and when == "call" else None, when,  # type: ignore[arg-type]
                user_properties=[("promptopt_gate_reason", reason)]))
    if gates:
        xml.add_global_property("promptopt_gate", "failed" if any(f for _, f, _ in gates) else "passed")
    if decision is not None:  # the exit code and why, so a JUnit reader agrees with CI's verdict
        xml.add_global_property("promptopt_exit_code", str(decision.code))
        xml.add_global_property("promptopt_exit_rule", decision.rule)
        xml.add_global_property("promptopt_exit_reason", decision.reason)
