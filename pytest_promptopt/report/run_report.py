"""What one session reports, pytest-free: the JSON report, the terminal sections and the HTML
document, all drawn from one frozen `RunReport` the pytest layer fills with the run's results.

The report owns its lines (as syrupy's report object does): the session asks for them and
writes them out, it does not build them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..optimize.loop import GroupResult
from ..run.ahead import AheadReport
from ..run.baseline import prompt_name
from ..run.record import JUDGE_KEY, CaseOutcome
from .data import describe_write, optimization_view
from .exit_rule import ExitDecision
from .gate import BaselineResult, html_document
from .judges import CorrectedRate, JudgeRow, html_section, terminal_lines
from .summary import PromptSummary, display, gate_lines, optimization_lines, table


@dataclass(frozen=True)
class Line:
    text: str
    red: bool = False


@dataclass(frozen=True)
class Section:
    """Lines under a `=== title ===` separator; no title: lines without a separator."""

    title: str | None
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class OptimizationFacts:
    """What `--optimize` did, as the report needs it (the pytest layer's run, minus its writes)."""

    notes: tuple[str, ...] = ()
    groups: tuple[GroupResult, ...] = ()
    unscored: tuple[tuple[str, str], ...] = ()  # (node id, error) of re-runs whose LM call failed


@dataclass(frozen=True)
class RunReport:
    root: Path
    record_mode: str
    duration_s: float
    outcomes: tuple[CaseOutcome, ...]
    summaries: tuple[PromptSummary, ...]
    baseline: BaselineResult | None = None
    ahead: AheadReport | None = None
    optimize_notes: tuple[str, ...] = ()  # about --optimize as a whole, before its own notes
    optimization: OptimizationFacts | None = None  # None: no optimization ran
    written: tuple[str, ...] = ()  # "wrote PATH" lines of the write-back
    not_written: tuple[str, ...] = ()
    written_paths: tuple[Path, ...] = ()
    dry_run: bool = False
    priced_roles: tuple[str, ...] = ()  # roles whose model has a configured price, in settings order
    secrets: tuple[str, ...] = ()
    report_path: Path | None = None
    html_path: Path | None = None
    exit: ExitDecision | None = None  # the exit rule's verdict, once the gates are known
    rerun: str = ""  # the command that shows a written prompt's results (this one, without --optimize)
    screen_notes: tuple[str, ...] = ()  # about what the terminal shows (tracebacks off): not in the JSON
    judges: tuple[JudgeRow, ...] = ()  # each judge of the run and how far it can be trusted
    corrected: tuple[CorrectedRate, ...] = ()  # judged pass rates corrected for the judges' error
    calibration: tuple[tuple[str, bool], ...] = ()  # --promptopt-calibrate: (line, is a warning)
    tuning: bool = False  # --promptopt-optimize-judges: the calibration lines are the tuning's
    cache_tiers: dict[str, int] | None = None  # cache hits per tier (local, shared)
    tests_exit_code: int = 0  # pytest's exit code before the promptopt gates (for `promptopt merge`)

    def name(self, key: str) -> str:
        return display(key, self.root)

    def gate_verdicts(self) -> dict[str, bool]:
        """Prompt key -> whether its gate failed, for every prompt with a gate: a minimum pass
        rate over at least one case, and/or a baseline comparison with paired cases."""
        out = {s.key: s.gate_failed for s in self.summaries if s.min_pass_rate is not None and s.cases}
        comparison = self.baseline.comparison if self.baseline is not None else None
        if comparison is not None:
            compared = {p.prompt: p.gate_failed for p in comparison.prompts if p.paired}
            for s in self.summaries:
                failed = compared.get(prompt_name(s.key, self.root))
                if failed is not None:
                    out[s.key] = out.get(s.key, False) or failed
        return out

    @property
    def gate_failed(self) -> bool:
        baseline = self.baseline is not None and self.baseline.gate_failed
        return baseline or any(s.gate_failed for s in self.summaries)

    def priced(self, key: str) -> bool:
        """A prompt's calls go to the task model, the judge row's to the judge model."""
        return ("judge" if key == JUDGE_KEY else "task") in self.priced_roles

    # -- JSON --------------------------------------------------------------------------------
    def json(self, exit_code: int) -> dict[str, Any]:
        usage = [u for o in self.outcomes for u in o.usage.values()]
        return {
            "version": 2,
            "duration_s": round(self.duration_s, 3),
            "record_mode": self.record_mode,
            "prompts": [s.to_dict(self.root, self.priced(s.key)) for s in self.summaries],
            "tests": [o.to_dict() for o in self.outcomes],
            "cache": {"hits": sum(u.cache_hits for u in usage), "calls": sum(u.requests for u in usage)},
            "cache_tiers": self.cache_tiers,
            "ahead": None if self.ahead is None else self.ahead.to_dict(),
            "gate": "failed" if self.gate_failed else "passed",
            "judges": [r.to_dict() for r in self.judges],
            "corrected_pass_rates": [c.to_dict() for c in self.corrected],
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "optimization": None if self.optimization is None else self._optimization_json(self.optimization),
            "exit_code": exit_code,
            "tests_exit_code": self.tests_exit_code,
            "exit_rule": None if self.exit is None else self.exit.to_dict(),
        }

    def _optimization_json(self, run: OptimizationFacts) -> dict[str, Any]:
        return {
            "notes": [*self.optimize_notes, *run.notes],
            "groups": [g.to_dict(self.name) for g in run.groups],
            "written": list(self.written), "not_written": list(self.not_written),
            "unscored_runs": [{"nodeid": n, "error": e} for n, e in run.unscored],
        }

    # -- terminal ----------------------------------------------------------------------------
    def terminal(self) -> list[Section]:
        """The sections of pytest's terminal summary, in order; the optimization's section and
        the exit line come after pytest's own summary (`closing`)."""
        baseline = self.baseline.terminal_lines() if self.baseline is not None else []
        ahead = self.ahead if self.ahead is not None and (self.ahead.sent or self.ahead.failed) else None
        title = "promptopt: judge tuning" if self.tuning else "promptopt: calibration"
        sections = [Section(title, tuple(Line(t, bad) for t, bad in self.calibration))
                    ] if self.calibration else []
        sections += [Section("promptopt: prompts", tuple(self.prompt_lines()))] if self.summaries else []
        if self.judges:
            sections.append(Section("promptopt: judges",
                                    tuple(Line(t, bad) for t, bad in terminal_lines(self.judges, self.corrected))))
        if ahead is not None:
            sections.append(Section(None, (Line(f"promptopt: {ahead.line()}", bool(ahead.unused)),)))
        if baseline:
            sections.append(Section("promptopt: baseline", tuple(Line(t, bad) for t, bad in baseline)))
        files = [f"promptopt report: {self.report_path}"] if self.report_path is not None else []
        files += [f"promptopt HTML report: {self.html_path}"] if self.html_path is not None else []
        if files and (sections or self.optimization_lines() or self.not_written):
            sections.append(Section(None, tuple(Line(f) for f in files)))
        return sections

    def closing(self) -> list[Section]:
        """What a team reads last, after pytest's short summary: what `--optimize` did (its
        decision, before -> after, what was written and how to see the result), then which
        rule decided the exit code, and why."""
        lines = self.optimization_lines()
        sections = []
        if lines or self.not_written:
            sections.append(Section("promptopt: optimization", (
                *(Line(line) for line in lines), *(Line(f"not written: {e}", True) for e in self.not_written))))
        decision = self.exit
        if decision is not None and (sections or (self.summaries and (
                decision.code != 0 or decision.excused or self.gate_verdicts()))):
            sections.append(Section(None, (Line(decision.line(), decision.code != 0),)))
        return sections

    def prompt_lines(self) -> list[Line]:
        out = [Line(line) for line in table(list(self.summaries), self.root, self.priced)]
        for s in self.summaries:
            if s.errors:
                out.append(Line(f"not scored: {s.errors} of {s.cases} cases of {self.name(s.key)} "
                                f"(counted as failed): the LM call failed; first: {s.first_error}", True))
        xfailed = [f"{s.xfailed} case(s) of {self.name(s.key)}" for s in self.summaries if s.xfailed]
        if xfailed:
            out.append(Line(f"expected failures (xfail) left out of the pass rate: {', '.join(xfailed)}"))
        advisory = [f"{s.advisory} case(s) of {self.name(s.key)}" for s in self.summaries if s.advisory]
        if advisory:
            out.append(Line(f"graded only by advisory judges, left out of the pass rate: {', '.join(advisory)}"))
        out += [Line(line, True) for line in gate_lines(self.summaries, self.root)]
        return out

    def optimization_lines(self) -> list[str]:
        run = self.optimization
        lines = [*self.screen_notes, *self.optimize_notes, *(() if run is None else run.notes)]
        for group in () if run is None else run.groups:
            lines += optimization_lines(group, self.name, self.dry_run, lambda role: role in self.priced_roles)
        if run is not None and run.unscored:
            tests = len({n for n, _ in run.unscored})
            lines.append(f"could not score {len(run.unscored)} test run(s) of {tests} test(s) during the optimization: "
                         f"the LM call failed, so each counted as a failure with score 0; first: {run.unscored[0][1]}")
        lines += self.written
        if self.written and self.rerun:
            lines.append(f"the written prompt's results: {self.rerun}")
        return lines

    # -- HTML --------------------------------------------------------------------------------
    def html(self) -> str | None:
        """The HTML document (None without a baseline result: nothing to draw)."""
        if self.baseline is None:
            return None
        groups = self.optimization.groups if self.optimization is not None else ()
        views = [optimization_view(g, self.root, describe_write(g, self.dry_run, self.written_paths)) for g in groups]
        return html_document(self.baseline, self.outcomes, self.root, optimizations=views,
                             gate_lines=gate_lines(self.summaries, self.root), record_mode=self.record_mode,
                             secrets=self.secrets, priced_roles=self.priced_roles,
                             extra_sections=self.baseline.pairs_html()
                             + ([html_section(list(self.judges), list(self.corrected))] if self.judges else []))
