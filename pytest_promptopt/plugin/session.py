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

from ..llm import local
from ..run.ahead import AheadReport, CallStore
from ..llm.cache import RecordMode
from ..run.baseline import Baseline
from ..run.config import Settings
from ..defaults import EMBEDDED_MODEL
from ..errors import LocalModelError, WriteBackError
from ..report.gate import BaselineResult, WrittenGroup, finish, html_document, save_after_write_back, write_html
from ..report.header import header_lines
from ..run.record import JUDGE_KEY, CaseOutcome
from ..report.summary import PromptSummary, display, optimization_lines, summarize, table, write_json
from ..report.data import describe_write, optimization_view
from ..report.judges import CorrectedRate, JudgeRow, corrected_rates, html_section, judge_rows, terminal_lines
from ..run.runtime import Runtime
from ..prompts.writeback import PendingWrite, apply_write
from .ahead import log_calls, send_ahead_for, should_send_ahead
from .gates import fail_unsaved, gate_lines, incomplete, junit_gates
from .progress import write_apart
from .optimization import OptimizationRun, run_optimization


class PromptOptSession:
    def __init__(self, config: pytest.Config, settings: Settings, baseline: Baseline | None = None) -> None:
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
        self.written: list[str] = []  # what the write-back wrote, as the user names the files
        self.written_paths: list[Path] = []
        self.write_errors: list[str] = []
        self.optimization: OptimizationRun | None = None
        self.loaded_baseline = baseline  # the baseline to compare with, read when options were parsed
        self.baseline_result: BaselineResult | None = None
        self.summaries: list[PromptSummary] = []
        self.judge_rows: list[JudgeRow] = []  # each judge of the run and how far it can be trusted
        self.corrected: list[CorrectedRate] = []
        self.calls = CallStore(settings.cache_dir, settings.record_mode)  # each test's calls, for the next run
        self.ahead: AheadReport | None = None
        self.started = time.perf_counter()
        self._previous_sigterm: Any = None
        self.optimize_notes: list[str] = []  # about --optimize as a whole, before its own notes
        self.calibration_lines: list[tuple[str, bool]] = []  # --promptopt-calibrate: (line, is a warning)
        if not self.is_worker and settings.optimize.enabled:
            self._sigterm_as_interrupt()
            self._run_every_test()

    def _run_every_test(self) -> None:
        """`--optimize` learns from every test's result, so `-x`/`--maxfail` (often in addopts)
        would leave it nothing to work with: the run goes on, and the section says so."""
        maxfail = getattr(self.config.option, "maxfail", 0)
        if maxfail:
            self.config.option.maxfail = 0
            self.optimize_notes.append(f"ran every test although -x/--maxfail={maxfail} was given: --optimize "
                                       "needs the result of each test to learn from")

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

    # -- header ----------------------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        if self.is_worker:
            return []
        return header_lines(self.settings, config.rootpath, optimize=self.settings.optimize.enabled)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Under -q pytest prints no header: the run header still gets its one line."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if self.is_worker or tr is None or self.config.get_verbosity() >= 0:
            return
        for line in header_lines(self.settings, self.config.rootpath, optimize=self.settings.optimize.enabled,
                                 quiet=True):
            tr.write_line(line)

    # -- embedded model --------------------------------------------------------------------
    def _start_embedded(self) -> str:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        say = (lambda text: write_apart(tr, text)) if tr is not None else (lambda text: None)
        say(f"promptopt: starting the embedded model ({EMBEDDED_MODEL}, llama.cpp server on 127.0.0.1): "
            "a call was not in the cache")
        started = time.perf_counter()
        try:
            self._server = local.start()
        except LocalModelError as exc:
            pytest.exit(f"pytest-promptopt: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
        say(f"promptopt: embedded model ready at {self._server.base_url} ({time.perf_counter() - started:.1f} s)")
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
        self.calls.close()
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
            self.optimization = run_optimization(session, self.runtime, self.settings.optimize, before)
            self.pending_writes.extend(self.optimization.writes)
            self.write_errors.extend(self.optimization.errors)
        return result

    @pytest.hookimpl(tryfirst=True, specname="pytest_sessionfinish")
    def pytest_sessionfinish_gates(self, session: pytest.Session, exitstatus: int) -> None:
        """The gates, before junitxml writes its file in its own pytest_sessionfinish: the gate
        testcases go into it. Write-back stays in the plain hook below."""
        if self.is_worker:
            return
        self.summaries = summarize(
            self.outcomes,
            default_min_pass_rate=self.settings.min_pass_rate,
            override_min_pass_rate=self.settings.min_pass_rate_override,
        )
        self.judge_rows = judge_rows(self.outcomes, self.runtime.judges.trust_by_key, self.config.rootpath)
        self.corrected = corrected_rates(self.outcomes, self.judge_rows, self.config.rootpath)
        # After --optimize the baseline is saved once the write-back is done (pytest_sessionfinish):
        # it records the prompts as the files hold them then.
        ran = [o.nodeid for o in self.outcomes]
        self.baseline_result = finish(self.settings.baseline, self.loaded_baseline, self.outcomes, self.config.rootpath,
                                      incomplete=incomplete(session, exitstatus, self.settings.baseline.save_path, ran),
                                      save=self.optimization is None)
        fail_unsaved(session, self.baseline_result)
        if self.gate_failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        junit_gates(self.config, self.summaries, self.baseline_result)

    @property
    def gate_failed(self) -> bool:
        baseline = self.baseline_result is not None and self.baseline_result.gate_failed
        return baseline or any(s.gate_failed for s in self.summaries)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker:
            return
        if exitstatus == pytest.ExitCode.INTERRUPTED or session.exitstatus == pytest.ExitCode.INTERRUPTED:
            self._not_written(self.pending_writes)
            self.pending_writes.clear()
        self._flush_writes(session)
        if self.optimization is not None and self.baseline_result is not None:
            self.baseline_result = save_after_write_back(
                self.baseline_result, self.settings.baseline.save_path, self.outcomes,
                [WrittenGroup(writes, g.outcomes) for g, writes in zip(self.optimization.groups, self.optimization.planned)],
                self.written_paths, self.config.rootpath,
                incomplete(session, exitstatus, self.settings.baseline.save_path, [o.nodeid for o in self.outcomes]))
            fail_unsaved(session, self.baseline_result)
        if self.settings.report_path is not None:
            write_json(self.settings.report_path, {**self.json_report(), "exit_code": int(session.exitstatus)})
        if self.settings.baseline.html_path is not None and self.baseline_result is not None:
            write_html(self.settings.baseline.html_path, self._html(self.baseline_result))

    def _html(self, result: BaselineResult) -> str:
        root = self.config.rootpath
        groups = self.optimization.groups if self.optimization is not None else ()
        dry = self.settings.optimize.dry_run
        views = [optimization_view(g, root, describe_write(g, dry, self.written_paths)) for g in groups]
        return html_document(result, self.outcomes, root, optimizations=views,
                             gate_lines=gate_lines(self.summaries, root), record_mode=self.settings.record_mode.value,
                             secrets=[r.api_key for r in self.settings.roles.values()],
                             priced_roles=[r for r in self.settings.roles if self.settings.price_of(r) is not None],
                             extra_sections=[html_section(self.judge_rows, self.corrected)] if self.judge_rows else [])

    def _flush_writes(self, session: pytest.Session) -> None:
        """Write-back happens once, at the end, in this process only."""
        pending_writes, self.pending_writes = self.pending_writes, []
        for i, pending in enumerate(pending_writes):
            try:
                apply_write(pending)
                self.written_paths.extend(pending.paths)
                self.written.append(f"wrote {', '.join(str(p) for p in pending.paths)}")
            except (WriteBackError, OSError) as exc:
                self.write_errors.append(str(exc))
            except KeyboardInterrupt:
                # Ctrl-C or SIGTERM inside the write: the replace is atomic, so the file is the
                # old or the new one; say which, and write nothing more.
                session.exitstatus = pytest.ExitCode.INTERRUPTED
                if _holds(pending.path, pending.new_bytes):
                    self.written.append(f"wrote {pending.path} (then interrupted)")
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
        run = self.optimization
        usage = [u for o in self.outcomes for u in o.usage.values()]
        return {
            "version": 2,
            "duration_s": round(time.perf_counter() - self.started, 3),
            "record_mode": self.settings.record_mode.value,
            "prompts": [s.to_dict(root, self._priced(s.key)) for s in self.summaries],
            "tests": [o.to_dict() for o in self.outcomes],
            "cache": {"hits": sum(u.cache_hits for u in usage), "calls": sum(u.requests for u in usage)},
            "ahead": None if self.ahead is None else self.ahead.to_dict(),
            "gate": "failed" if self.gate_failed else "passed",
            "judges": [r.to_dict() for r in self.judge_rows],
            "corrected_pass_rates": [c.to_dict() for c in self.corrected],
            "baseline": None if self.baseline_result is None else self.baseline_result.to_dict(),
            "optimization": None if run is None else {
                "notes": [*self.optimize_notes, *run.notes],
                "groups": [g.to_dict(lambda k: display(k, root)) for g in run.groups],
                "written": list(self.written), "not_written": list(self.write_errors),
                "unscored_runs": [{"nodeid": n, "error": e} for n, e in run.unscored],
            },
        }

    def _optimization_lines(self) -> list[str]:
        run, root = self.optimization, Path(self.config.rootpath)
        lines = [*self.optimize_notes, *(() if run is None else run.notes)]
        for group in () if run is None else run.groups:
            lines += optimization_lines(group, lambda k: display(k, root), self.settings.optimize.dry_run,
                                        lambda role: self.settings.price_of(role) is not None)
        if run is not None and run.unscored:
            tests = len({n for n, _ in run.unscored})
            lines.append(f"could not score {len(run.unscored)} test run(s) of {tests} test(s) during the optimization: "
                         f"the LM call failed, so each counted as a failure with score 0; first: {run.unscored[0][1]}")
        return lines + self.written

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = self._optimization_lines()
        baseline_lines = self.baseline_result.terminal_lines() if self.baseline_result is not None else []
        ahead = self.ahead if self.ahead is not None and (self.ahead.sent or self.ahead.failed) else None
        tr = terminalreporter
        if self.calibration_lines and not self.is_worker:
            tr.write_sep("=", "promptopt: judge tuning" if self.settings.optimize_judges else "promptopt: calibration")
            for text, bad in self.calibration_lines:
                tr.write_line(text, red=bad)
        if self.is_worker or not (self.summaries or lines or self.write_errors or baseline_lines or ahead):
            return
        if self.summaries:
            self._write_prompt_table(tr)
        if self.judge_rows:
            tr.write_sep("=", "promptopt: judges")
            for text, bad in terminal_lines(self.judge_rows, self.corrected):
                tr.write_line(text, red=bad)
        if ahead is not None:
            tr.write_line(f"promptopt: {ahead.line()}", red=bool(ahead.unused))
        if baseline_lines:
            tr.write_sep("=", "promptopt: baseline")
            for text, bad in baseline_lines:
                tr.write_line(text, red=bad)
        if lines or self.write_errors:
            tr.write_sep("=", "promptopt: optimization")
            for line in lines:
                tr.write_line(line)
            for line in self.write_errors:
                tr.write_line(f"not written: {line}", red=True)
        if self.settings.report_path is not None:
            tr.write_line(f"promptopt report: {self.settings.report_path}")
        if self.settings.baseline.html_path is not None:
            tr.write_line(f"promptopt HTML report: {self.settings.baseline.html_path}")

    def _priced(self, key: str) -> bool:
        """A prompt's calls go to the task model, the judge row's to the judge model."""
        return self.settings.price_of("judge" if key == JUDGE_KEY else "task") is not None

    def _write_prompt_table(self, tr: Any) -> None:
        root = Path(self.config.rootpath)
        tr.write_sep("=", "promptopt: prompts")
        for line in table(self.summaries, root, self._priced):
            tr.write_line(line)
        for s in self.summaries:
            if s.errors:
                tr.write_line(f"not scored: {s.errors} of {s.cases} cases of {display(s.key, root)} "
                              f"(counted as failed): the LM call failed; first: {s.first_error}", red=True)
        xfailed = [f"{s.xfailed} case(s) of {display(s.key, root)}" for s in self.summaries if s.xfailed]
        if xfailed:
            tr.write_line(f"expected failures (xfail) left out of the pass rate: {', '.join(xfailed)}")
        advisory = [f"{s.advisory} case(s) of {display(s.key, root)}" for s in self.summaries if s.advisory]
        if advisory:
            tr.write_line(f"graded only by advisory judges, left out of the pass rate: {', '.join(advisory)}")
        for line in gate_lines(self.summaries, root):
            tr.write_line(line, red=True)


SESSION_KEY = pytest.StashKey[PromptOptSession]()


def session_of(config: pytest.Config) -> PromptOptSession:
    return config.stash[SESSION_KEY]


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signal.Signals(signum).name}")


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False
