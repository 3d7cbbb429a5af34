"""Session-level hooks: embedded server lifecycle, result merging, CI gate, report, optimization.

Registered as a plugin object per pytest config. On xdist workers it only records; the
controller merges outcomes (from report attributes), gates, reports and writes files.
"""

from __future__ import annotations

import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from . import local
from .baseline import Baseline
from .cache import RecordMode
from .config import Settings
from .errors import LocalModelError, WriteBackError
from .gate import BaselineResult, BaselineSettings, finish, html_document, write_html
from .report import CaseOutcome, PromptSummary, summarize, table, write_json
from .report_data import describe_write, optimization_view
from .runtime import Runtime
from .writeback import PendingWrite, apply_write


class PromptOptSession:
    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.is_worker = hasattr(config, "workerinput")
        self._server: local.EmbeddedServer | None = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.runtime = Runtime(settings, config.rootpath, start_embedded=self._start_embedded)
        for warning in caught:  # e.g. an unusable cache: once, in pytest's warnings summary
            config.issue_config_time_warning(warning.message, stacklevel=2)
        if self.is_worker:
            url = config.workerinput.get("promptopt_embedded_url")  # type: ignore[attr-defined]
            if url:
                self.runtime.set_embedded_url(url)
        self.outcomes: list[CaseOutcome] = []
        self.pending_writes: list[PendingWrite] = []
        self.write_errors: list[str] = []
        self.optimization_lines: list[str] = []
        self.summaries: list[PromptSummary] = []
        self.started = time.perf_counter()
        self.optimizing = False
        self.unscored_runs: list[tuple[str, str]] = []  # (node id, error) of optimizer re-runs
        self.baseline_settings = BaselineSettings()  # set by the plugin with the loaded baseline
        self.loaded_baseline: Baseline | None = None
        self.baseline_result: BaselineResult | None = None
        self.optimization_outcomes: list[Any] = []  # the optimizer's GroupOutcomes, for the HTML report
        self._previous_sigterm: Any = None
        if not self.is_worker and config.getoption("optimize", False):
            self._sigterm_as_interrupt()

    # -- signals ---------------------------------------------------------------------------
    def _sigterm_as_interrupt(self) -> None:
        """SIGTERM (CI cancel, `kill`) ends the session like Ctrl-C does: the run log is closed,
        a half-made temporary file is removed, the embedded server is stopped and nothing is
        written back. Only for `--optimize` runs, and only when nobody else handles SIGTERM."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        self._previous_sigterm = signal.SIG_DFL
        signal.signal(signal.SIGTERM, _raise_interrupt)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) is _raise_interrupt:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    # -- embedded model --------------------------------------------------------------------
    def _start_embedded(self) -> str:
        try:
            self._server = local.start()
        except LocalModelError as exc:
            pytest.exit(f"pytest-promptopt: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
        return self._server.base_url

    def embedded_url_for_workers(self) -> str | None:
        """Start the embedded server once on the xdist controller, for all workers."""
        if not self.settings.roles["task"].embedded and not self.settings.needs_embedded:
            return None
        if self.settings.record_mode is RecordMode.REPLAY:
            return None  # replay never calls a model
        return self.runtime.embedded_url()

    def close(self) -> None:
        self._restore_sigterm()
        self.runtime.close()
        if self._server is not None:
            self._server.stop()

    # -- results ---------------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "promptopt", None)
        if report.when == "call" and isinstance(data, dict):
            self.outcomes.append(CaseOutcome.from_dict(data))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        result = yield
        if self.config.getoption("optimize") and not session.shouldstop:
            from .optimize.pytest_program import run_optimization

            self.optimizing = True
            try:
                run_optimization(self, session)
            finally:
                self.optimizing = False
                self._report_unscored_runs()
        return result

    def queue_write(self, pending: PendingWrite) -> None:
        self.pending_writes.append(pending)

    def note_unscored(self, nodeid: str, error: str) -> None:
        """A test whose LM call failed; during optimization its re-run scored the candidate 0."""
        if self.optimizing:
            self.unscored_runs.append((nodeid, error))

    def _report_unscored_runs(self) -> None:
        if not self.unscored_runs:
            return
        tests = len({n for n, _ in self.unscored_runs})
        self.optimization_lines.append(
            f"could not score {len(self.unscored_runs)} test run(s) of {tests} test(s) during the optimization: "
            f"the LM call failed, so each counted as a failure with score 0; first: {self.unscored_runs[0][1]}"
        )

    @pytest.hookimpl(tryfirst=True, specname="pytest_sessionfinish")
    def pytest_sessionfinish_gates(self, session: pytest.Session, exitstatus: int) -> None:
        """The gates, before junitxml writes its file in its own pytest_sessionfinish: the gate
        testcases go into it. Write-back stays in the plain hook below, as before."""
        if self.is_worker:
            return
        self.summaries = summarize(
            self.outcomes,
            default_min_pass_rate=self.settings.min_pass_rate,
            override_min_pass_rate=self.config.getoption("promptopt_min_pass_rate", None),
        )
        self.baseline_result = finish(self.baseline_settings, self.loaded_baseline, self.outcomes,
                                      self.config.rootpath, incomplete=_incomplete(session, exitstatus))
        gate_failed = any(s.gate_failed for s in self.summaries) or self.baseline_result.gate_failed
        if gate_failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        _junit_gates(self.config, self.summaries, self.baseline_result)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker:
            return
        if exitstatus == pytest.ExitCode.INTERRUPTED or session.exitstatus == pytest.ExitCode.INTERRUPTED:
            self._not_written(self.pending_writes)
            self.pending_writes.clear()
        self._flush_writes(session)
        if self.settings.report_path is not None:
            write_json(self.settings.report_path, self.json_report())
        if self.baseline_settings.html_path is not None:
            write_html(self.baseline_settings.html_path, self._html())

    def _html(self) -> str:
        assert self.baseline_result is not None
        root = self.config.rootpath
        dry = bool(self.config.getoption("optimize_dry_run", False))
        written = [w.path for o in self.optimization_outcomes for w in o.writes if _holds(w.path, w.new_bytes)]
        views = [optimization_view(o, root, describe_write(o, dry, written)) for o in self.optimization_outcomes]
        return html_document(self.baseline_result, self.outcomes, root, optimizations=views,
                             gate_lines=self._gate_lines(), record_mode=self.settings.record_mode.value,
                             secrets=[r.api_key for r in self.settings.roles.values()])

    def _gate_lines(self) -> list[str]:
        root = self.config.rootpath
        return [f"gate failed: {s.to_dict(root)['prompt']} passed {s.pass_rate:.1%} of {s.cases} cases; "
                f"at least {s.min_pass_rate:.0%} required" for s in self.summaries if s.gate_failed]

    def _flush_writes(self, session: pytest.Session) -> None:
        """Write-back happens once, at the end, in this process only."""
        pending_writes, self.pending_writes = self.pending_writes, []
        for i, pending in enumerate(pending_writes):
            try:
                apply_write(pending)
                self.optimization_lines.append(f"wrote {pending.path}")
            except (WriteBackError, OSError) as exc:
                self.write_errors.append(str(exc))
            except KeyboardInterrupt:
                # Ctrl-C or SIGTERM inside the write: the replace is atomic, so the file is the
                # old or the new one; say which, and write nothing more.
                session.exitstatus = pytest.ExitCode.INTERRUPTED
                if _holds(pending.path, pending.new_bytes):
                    self.optimization_lines.append(f"wrote {pending.path} (then interrupted)")
                else:
                    self.write_errors.append(f"{pending.path}: interrupted during the write; the file is unchanged. "
                                             "Rerun with --optimize-resume to finish and write it")
                self._not_written(pending_writes[i + 1:])
                return

    def _not_written(self, pending_writes: list[PendingWrite]) -> None:
        for pending in pending_writes:
            self.write_errors.append(f"{pending.path}: the run was interrupted, so the improved prompt was not "
                                     "written; rerun with --optimize-resume to finish and write it")

    def json_report(self) -> dict[str, Any]:
        root = self.config.rootpath
        return {
            "version": 1,
            "duration_s": round(time.perf_counter() - self.started, 3),
            "record_mode": self.settings.record_mode.value,
            "prompts": [s.to_dict(root) for s in self.summaries],
            "tests": [o.to_dict() for o in self.outcomes],
            "cache": {"hits": sum(int(u.get("cache_hits", 0)) for o in self.outcomes for u in o.prompts.values()),
                      "calls": sum(int(u.get("calls", 0)) for o in self.outcomes for u in o.prompts.values())},
            "gate": "failed" if any(s.gate_failed for s in self.summaries) or self._baseline_failed() else "passed",
            "optimization": self.optimization_lines,
            "baseline": None if self.baseline_result is None else self.baseline_result.to_dict(),
        }

    def _baseline_failed(self) -> bool:
        return self.baseline_result is not None and self.baseline_result.gate_failed

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        baseline_lines = self.baseline_result.terminal_lines() if self.baseline_result is not None else []
        if self.is_worker or not (self.summaries or self.optimization_lines or self.write_errors or baseline_lines):
            return
        tr = terminalreporter
        root = Path(self.config.rootpath)
        if self.summaries:
            tr.write_sep("=", "promptopt: prompts")
            for line in table(self.summaries, root):
                tr.write_line(line)
            for s in self.summaries:
                if s.errors:
                    tr.write_line(f"not scored: {s.errors} of {s.cases} cases of {s.to_dict(root)['prompt']} "
                                  f"(counted as failed): the LM call failed; first: {s.first_error}", red=True)
            for line in self._gate_lines():
                tr.write_line(line, red=True)
        if baseline_lines:
            tr.write_sep("=", "promptopt: baseline")
            for text, bad in baseline_lines:
                tr.write_line(text, red=bad)
        if self.optimization_lines or self.write_errors:
            tr.write_sep("=", "promptopt: optimization")
            for line in self.optimization_lines:
                tr.write_line(line)
            for line in self.write_errors:
                tr.write_line(f"not written: {line}", red=True)
        if self.settings.report_path is not None:
            tr.write_line(f"promptopt report: {self.settings.report_path}")
        if self.baseline_settings.html_path is not None:
            tr.write_line(f"promptopt HTML report: {self.baseline_settings.html_path}")


def _incomplete(session: pytest.Session, exitstatus: int) -> str:
    """Why this run does not stand for the whole suite (then it is not saved as a baseline)."""
    if exitstatus == pytest.ExitCode.INTERRUPTED or session.exitstatus == pytest.ExitCode.INTERRUPTED:
        return "the run was interrupted"
    if session.shouldstop or session.shouldfail:
        return f"the run stopped early ({session.shouldstop or session.shouldfail})"
    return ""


def _junit_gates(config: pytest.Config, summaries: list[PromptSummary], result: BaselineResult | None) -> None:
    """One JUnit testcase per gated prompt (min pass rate, baseline), failed when its gate failed,
    so CI systems that read JUnit show why a session with only passing tests failed."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    root = config.rootpath
    gates = [(f"min_pass_rate[{s.to_dict(root)['prompt']}]", s.gate_failed,
              f"passed {s.pass_rate:.1%} of {s.cases} cases; at least {s.min_pass_rate:.0%} required")
             for s in summaries if s.min_pass_rate is not None]
    if result is not None and result.comparison is not None:
        gates += [(f"baseline[{p.prompt}]", p.gate_failed, p.gate_reason) for p in result.comparison.prompts]
    for name, failed, reason in gates:
        nodeid = f"promptopt::gate::{name}"
        for when, outcome in (("call", "failed" if failed else "passed"), ("teardown", "passed")):
            xml.pytest_runtest_logreport(pytest.TestReport(
                nodeid, ("promptopt", None, f"gate::{name}"), {}, outcome,
                reason if failed and when == "call" else None, when, user_properties=[("promptopt_gate_reason", reason)]))
    if gates:
        xml.add_global_property("promptopt_gate", "failed" if any(f for _, f, _ in gates) else "passed")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signal.Signals(signum).name}")


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False
