"""Session-level hooks: embedded server lifecycle, result merging, CI gate, report, optimization.

Registered as a plugin object per pytest config. On xdist workers it only records; the
controller merges outcomes (from report attributes), gates, reports and writes files.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from . import local
from .cache import RecordMode
from .config import Settings
from .errors import LocalModelError, WriteBackError
from .report import CaseOutcome, PromptSummary, summarize, table, write_json
from .runtime import Runtime
from .writeback import PendingWrite, apply_write


class PromptOptSession:
    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.is_worker = hasattr(config, "workerinput")
        self._server: local.EmbeddedServer | None = None
        self.runtime = Runtime(settings, config.rootpath, start_embedded=self._start_embedded)
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

            run_optimization(self, session)
        return result

    def queue_write(self, pending: PendingWrite) -> None:
        self.pending_writes.append(pending)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker:
            return
        self.summaries = summarize(
            self.outcomes,
            default_min_pass_rate=self.settings.min_pass_rate,
            override_min_pass_rate=self.config.getoption("promptopt_min_pass_rate", None),
        )
        if any(s.gate_failed for s in self.summaries) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self._flush_writes()
        if self.settings.report_path is not None:
            write_json(self.settings.report_path, self.json_report())

    def _flush_writes(self) -> None:
        """Write-back happens once, at the end, in this process only."""
        for pending in self.pending_writes:
            try:
                apply_write(pending)
                self.optimization_lines.append(f"wrote {pending.path}")
            except (WriteBackError, OSError) as exc:
                self.write_errors.append(str(exc))
        self.pending_writes.clear()

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
            "gate": "failed" if any(s.gate_failed for s in self.summaries) else "passed",
            "optimization": self.optimization_lines,
        }

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not (self.summaries or self.optimization_lines or self.write_errors):
            return
        tr = terminalreporter
        root = Path(self.config.rootpath)
        if self.summaries:
            tr.write_sep("=", "promptopt: prompts")
            for line in table(self.summaries, root):
                tr.write_line(line)
            for s in self.summaries:
                if s.gate_failed:
                    tr.write_line(f"gate failed: {s.to_dict(root)['prompt']} passed {s.pass_rate:.1%} of "
                                  f"{s.cases} cases; at least {s.min_pass_rate:.0%} required", red=True)
        if self.optimization_lines or self.write_errors:
            tr.write_sep("=", "promptopt: optimization")
            for line in self.optimization_lines:
                tr.write_line(line)
            for line in self.write_errors:
                tr.write_line(f"not written: {line}", red=True)
        if self.settings.report_path is not None:
            tr.write_line(f"promptopt report: {self.settings.report_path}")
