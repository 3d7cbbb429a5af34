"""Session-level hooks: embedded server lifecycle, result merging, CI gate, write-back.

Registered as a plugin object per pytest config. On xdist workers it only records; the
controller merges outcomes (from report attributes), gates, writes files, and asks a
`RunReport` (pytest-free, in report/) for the JSON report, the terminal text and the HTML.
"""

from __future__ import annotations

import time
from collections.abc import Callable
import warnings
from typing import Any

import pytest

from ..llm.shared_cache import shared_hits
from ..prompts.write_queue import WriteQueue
from ..report.gate import BaselineResult, WrittenGroup, finish, save_after_write_back, write_html
from ..report.exit_rule import ExitDecision
from ..report.judges import CorrectedRate, JudgeRow, corrected_rates, judge_rows
from ..report.run_report import OptimizationFacts, RunReport
from ..report.summary import PromptSummary, summarize, write_json
from ..run.ahead import AheadReport, CallStore
from ..run.baseline import Baseline
from ..run.config import Settings
from ..run.record import CaseOutcome
from ..run.runtime import Runtime
from .ahead import log_calls, send_ahead_for, should_send_ahead
from .embedded import EmbeddedModel, ask_controller
from .exit_status import FailureLog, exit_decision, optimize_state
from .gates import incomplete, junit_gates, pairwise_with_baseline, unsaved_problem
from .optimization import (OptimizationRun, quiet_tracebacks, rerun_command, resume_note, run_every_test,
                           run_optimization)
from .progress import write_sections
from .signals import SigtermAsInterrupt


class PromptOptSession:
    def __init__(self, config: pytest.Config, settings: Settings, baseline: Baseline | None = None) -> None:
        self.config = config
        self.settings = settings
        self.is_worker = hasattr(config, "workerinput")
        self.embedded = EmbeddedModel(config)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.runtime = Runtime(settings, config.rootpath, start_embedded=self._embedded_starter())
        for warning in caught:  # e.g. an unusable cache: once, in pytest's warnings summary
            config.issue_config_time_warning(warning.message, stacklevel=2)
        self.outcomes: list[CaseOutcome] = []
        self.writes = WriteQueue()
        self.optimization: OptimizationRun | None = None
        self.loaded_baseline = baseline  # the baseline to compare with, read when options were parsed
        self.baseline_result: BaselineResult | None = None
        self.summaries: list[PromptSummary] = []
        self.calls = CallStore(settings.cache_dir, settings.record_mode)  # each test's calls, for the next run
        self.ahead: AheadReport | None = None
        self.started = time.perf_counter()
        self.sigterm = SigtermAsInterrupt()
        self.optimize_notes: list[str] = []  # about --optimize as a whole, before its own notes
        self.screen_notes: list[str] = []
        self.failures = FailureLog()
        self.exit: ExitDecision | None = None
        self.judge_rows: list[JudgeRow] = []  # each judge of the run and how far it can be trusted
        self.corrected: list[CorrectedRate] = []
        self.calibration_lines: list[tuple[str, bool]] = []  # --promptopt-calibrate: (line, is a warning)
        self.worker_shared_hits = 0  # xdist: the workers' shared-tier hits
        self.tests_exit_code = 0  # pytest's exit code before the promptopt gates
        if not self.is_worker:
            config.pluginmanager.register(self.failures, "promptopt-failures")
        if not self.is_worker and settings.optimize.enabled:
            self.sigterm.install()
            self.optimize_notes += run_every_test(config)
            self.screen_notes = quiet_tracebacks(config)  # about the terminal: not in the JSON report

    def _embedded_starter(self) -> Callable[[], str]:
        """An xdist worker asks the controller, which shares one server; others start their own."""
        broker = getattr(self.config, "workerinput", {}).get("promptopt_embedded_broker")
        if broker:
            return lambda: ask_controller(broker)
        return self.embedded.start

    def close(self) -> None:
        self.sigterm.restore()
        self.calls.close()
        self.runtime.close()
        self.embedded.stop()

    # -- results ---------------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "promptopt", None)
        if report.when == "call" and isinstance(data, dict):
            self.outcomes.append(CaseOutcome.from_dict(data))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        if should_send_ahead(session, self.runtime) and not self.settings.judges_only:
            self.ahead = send_ahead_for(session, self.runtime, self.calls)
        try:
            result = yield
        except (session.Failed, session.Interrupted) as exc:
            if self.settings.optimize.enabled:
                self.optimize_notes.append(f"not optimized: the run stopped early ({exc}); --optimize needs the "
                                           "result of every test")
            raise
        finally:
            log_calls(session, self.calls)
            unused = sum(client.unused_ahead() for client in self.runtime.clients().values())
            if self.ahead is not None:
                self.ahead = self.ahead.finished(unused)
        if self.settings.optimize.enabled and not session.shouldstop and not self.settings.judges_only:
            path = self.settings.baseline.baseline_path
            before = None if self.loaded_baseline is None or path is None else (self.loaded_baseline, str(path))
            try:
                self.optimization = run_optimization(session, self.runtime, self.settings.optimize, before)
            except KeyboardInterrupt:
                self.optimize_notes.append(resume_note(self.config, self.settings.cache_dir))
                raise
            self.writes.queue(self.optimization.writes, self.optimization.errors)
        return result

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.is_worker:  # registered now, after junitxml's plugin: see _Finish
            self.config.pluginmanager.register(_Finish(self), "promptopt-finish")

    @pytest.hookimpl(tryfirst=True, specname="pytest_sessionfinish")
    def pytest_sessionfinish_gates(self, session: pytest.Session, exitstatus: int) -> None:
        """The gates. After --optimize the baseline is saved once the write-back is done: it
        records the prompts as the files hold them then."""
        if self.is_worker:
            self.config.workeroutput[SHARED_HITS] = shared_hits(self.runtime.cache)  # type: ignore[attr-defined]
            return
        self.summaries = summarize(self.outcomes, default_min_pass_rate=self.settings.min_pass_rate,
                                   override_min_pass_rate=self.settings.min_pass_rate_override)
        self.judge_rows = judge_rows(self.outcomes, self.runtime.judges.trust_by_key, self.config.rootpath)
        self.corrected = corrected_rates(self.outcomes, self.judge_rows, self.config.rootpath)
        self.baseline_result = finish(self.settings.baseline, self.loaded_baseline, self.outcomes, self.config.rootpath,
                                      incomplete=self._incomplete(session, exitstatus), save=self.optimization is None)
        self.baseline_result = pairwise_with_baseline(self.runtime, self.settings.baseline, self.baseline_result)
        self.tests_exit_code = int(session.exitstatus)  # pytest's own, for `promptopt merge`

    def _incomplete(self, session: pytest.Session, exitstatus: int) -> str:
        """Why this run does not stand for the saved baseline's suite (then it is not saved)."""
        return incomplete(session, exitstatus, self.settings.baseline.save_path, [o.nodeid for o in self.outcomes])

    def finish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write-back (once, at the end, in this process only), then the exit code, JUnit's
        gate testcases and properties, the JSON report and the HTML report."""
        if exitstatus == pytest.ExitCode.INTERRUPTED or session.exitstatus == pytest.ExitCode.INTERRUPTED:
            self.writes.drop()
        if self.writes.flush():
            session.exitstatus = pytest.ExitCode.INTERRUPTED
        if self.optimization is not None and self.baseline_result is not None:
            written = [WrittenGroup(writes, g.outcomes) for g, writes in zip(self.optimization.groups,
                                                                              self.optimization.planned)]
            self.baseline_result = save_after_write_back(
                self.baseline_result, self.settings.baseline.save_path, self.outcomes, written,
                self.writes.written_paths, self.config.rootpath, self._incomplete(session, exitstatus))
        state = optimize_state(self.settings.optimize.enabled, self.optimization, self.optimize_notes,
                               self.writes.errors, self.config.rootpath)
        self.exit = exit_decision(session, self.settings.exit_rule, self.report(), self.failures, state,
                                  problems=unsaved_problem(self.baseline_result))
        session.exitstatus = self.exit.code
        junit_gates(self.config, self.summaries, self.baseline_result, self.exit)
        report = self.report()
        if self.settings.report_path is not None:
            write_json(self.settings.report_path, report.json(int(session.exitstatus)))
        document = report.html()
        if self.settings.baseline.html_path is not None and document is not None:
            write_html(self.settings.baseline.html_path, document)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.is_worker:
            write_sections(terminalreporter, self.report().terminal())

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist: a worker's shared-tier hits, for the controller's report."""
        self.worker_shared_hits += int(getattr(node, "workeroutput", {}).get(SHARED_HITS, 0))

    def _cache_tiers(self) -> dict[str, int]:
        """Cache hits per tier: replies the shared tier served, and the rest (local entries)."""
        hits = sum(u.cache_hits for o in self.outcomes for u in o.usage.values())
        shared = shared_hits(self.runtime.cache) + self.worker_shared_hits
        return {"local": max(0, hits - shared), "shared": shared}

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """After pytest's own summary: the optimization's result, then why this exit code."""
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if not self.is_worker and tr is not None:
            write_sections(tr, self.report().closing())

    # -- the report ----------------------------------------------------------------------------
    def report(self) -> RunReport:
        """The run's results as they stand, for the report object to render."""
        settings, run = self.settings, self.optimization
        facts = None if run is None else OptimizationFacts(run.notes, run.groups, run.unscored)
        return RunReport(
            self.config.rootpath, settings.record_mode.value, time.perf_counter() - self.started,
            tuple(self.outcomes), tuple(self.summaries), self.baseline_result, self.ahead,
            tuple(self.optimize_notes), facts, tuple(self.writes.written), tuple(self.writes.errors),
            tuple(self.writes.written_paths), settings.optimize.dry_run,
            priced_roles=tuple(r for r in settings.roles if settings.price_of(r) is not None),
            secrets=tuple(r.api_key for r in settings.roles.values() if r.api_key),
            report_path=settings.report_path, html_path=settings.baseline.html_path, exit=self.exit,
            rerun=rerun_command(self.config) if self.writes.written else "", screen_notes=tuple(self.screen_notes),
            judges=tuple(self.judge_rows), corrected=tuple(self.corrected),
            calibration=tuple(self.calibration_lines), tuning=self.settings.optimize_judges,
            cache_tiers=self._cache_tiers(),
            tests_exit_code=self.tests_exit_code)


class _Finish:
    """The session's plain pytest_sessionfinish, registered at session start. Plain hooks run
    last-registered first, so this runs after every tryfirst one (a conftest's among them: the
    write-back is the session's very last step) and before junitxml's, registered at configure
    time, writes its file: the gate testcases and the exit rule's verdict go into it."""

    def __init__(self, session: PromptOptSession) -> None:
        self.session = session

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.session.finish(session, exitstatus)


SESSION_KEY = pytest.StashKey[PromptOptSession]()
SHARED_HITS = "promptopt_shared_hits"  # xdist workeroutput key


def session_of(config: pytest.Config) -> PromptOptSession:
    return config.stash[SESSION_KEY]
