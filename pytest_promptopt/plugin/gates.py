"""The session's gates as pytest sees them: JUnit testcases for each gated prompt, whether a
run stood for the whole suite (only then is it saved as a baseline), and the exit status of a
baseline that was asked for and not saved."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest

from ..prompts.judgefile import load_judge
from ..report.exit_rule import ExitDecision
from ..report.gate import BaselineResult
from ..report.summary import PromptSummary, gate_lines, gate_verdicts
from ..run.baseline import BaselineError, load
from ..run.baseline_pairs import compare_outputs
from ..run.config import BaselineSettings
from ..run.runtime import Runtime

__all__ = ["gate_lines", "incomplete", "junit_gates", "pairwise_with_baseline", "subset", "unsaved_problem"]

SELECTING_OPTIONS = ("--lf", "--last-failed", "--deselect", "--sw", "--stepwise")


def incomplete(session: pytest.Session, exitstatus: int, save_path: Path | None = None,
               ran: Iterable[str] = ()) -> str:
    """Why this run does not stand for the whole suite (then it is not saved as a baseline)."""
    if exitstatus == pytest.ExitCode.INTERRUPTED or session.exitstatus == pytest.ExitCode.INTERRUPTED:
        return "the run was interrupted"
    if session.shouldstop or session.shouldfail:
        return f"the run stopped early ({session.shouldstop or session.shouldfail})"
    return subset(session.config, save_path, ran)


def subset(config: pytest.Config, save_path: Path | None, ran: Iterable[str]) -> str:
    """Why saving would overwrite the baseline at `save_path` with part of it: the command line
    selected part of the suite (-k, -m, --lf, --deselect, test paths or ids) and cases of the
    saved baseline did not run. A plain run may drop cases: their tests are gone."""
    narrowed = selection(config)
    if not narrowed or save_path is None:
        return ""
    try:
        saved = load(save_path)
    except BaselineError:
        return ""  # unreadable: nothing worth keeping
    missing = sorted({n for p in saved.prompts.values() for n in p.cases} - set(ran)) if saved else []
    if not missing:
        return ""
    return (f"this run selected part of the suite ({narrowed}) and {len(missing)} case(s) of the saved baseline did "
            f"not run (e.g. {missing[0]}); saving would drop them. Run the whole suite to save it (or delete the "
            "file to start a new baseline)")


def selection(config: pytest.Config) -> str:
    """What on the command line selected part of the suite ("" when nothing did); ini addopts
    are part of the suite's definition, so only the invocation's own arguments count."""
    found = ["test paths or ids"] if config.args_source is pytest.Config.ArgsSource.ARGS else []
    for arg in map(str, config.invocation_params.args):
        name = arg.split("=", 1)[0]
        if arg[:2] in ("-k", "-m") and not arg.startswith("--"):
            found.append(arg[:2])
        elif name in SELECTING_OPTIONS:
            found.append(name)
    return ", ".join(dict.fromkeys(found))


def unsaved_problem(result: BaselineResult | None) -> list[str]:
    """A baseline asked for and not saved fails the session under either exit rule: a CI job
    that refreshes the baseline must not pass without writing it."""
    if result is None or not result.save_failed:
        return []
    return [f"the baseline was asked for and not saved ({result.saved})"]


def junit_gates(config: pytest.Config, summaries: list[PromptSummary], result: BaselineResult | None,
                decision: ExitDecision | None = None) -> None:
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
    if decision is not None:  # the exit code and why, so a JUnit reader agrees with CI's verdict
        xml.add_global_property("promptopt_exit_code", str(decision.code))
        xml.add_global_property("promptopt_exit_rule", decision.rule)
        xml.add_global_property("promptopt_exit_reason", decision.reason)


def pairwise_with_baseline(runtime: Runtime, settings: BaselineSettings, result: BaselineResult) -> BaselineResult:
    """With --promptopt-baseline-pairwise and a baseline compared: each shared case's output now
    against the baseline's, by the pairwise judge in both orders (a report; the gate is unchanged)."""
    if settings.pairwise is None or result.baseline is None or result.comparison is None:
        return result
    judge = load_judge(settings.pairwise_judge) if settings.pairwise_judge is not None else None
    model = None if judge is None else judge.models[0] if judge.models else judge.model
    pairs = compare_outputs(runtime.client("judge"), result.baseline, result.now, settings.pairwise, model)
    return replace(result, pairs=pairs)
