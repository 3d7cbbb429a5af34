"""The baseline gate of one session, pytest-free: load, compare, save, and the HTML report.

The pytest layer builds `BaselineSettings` from options, calls `load_baseline` at configure
time (so a broken baseline stops the run before any LM call), and `finish` at the end with the
run's case outcomes; it shows what `finish` returns and fails the session when its gate failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .baseline import Baseline, load, missing_message, save, snapshot
from .compare import Comparison, compare, summary_lines
from .config import BaselineSettings
from .html_report import HtmlInput, render
from .atomic import write_text_atomic
from .record import CaseOutcome
from .report_data import OptimizationView


@dataclass(frozen=True)
class BaselineResult:
    now: Baseline
    baseline: Baseline | None
    comparison: Comparison | None
    note: str  # what was compared, or why nothing was
    saved: str = ""  # what became of --promptopt-save-baseline
    save_failed: bool = False

    @property
    def gate_failed(self) -> bool:
        return self.comparison is not None and self.comparison.gate_failed

    def to_dict(self) -> dict[str, object]:
        return {"note": self.note, "saved": self.saved,
                "comparison": None if self.comparison is None else self.comparison.to_dict()}

    def terminal_lines(self) -> list[tuple[str, bool]]:
        lines: list[tuple[str, bool]] = [(self.note, self.comparison is None)] if self.note else []
        if self.comparison is not None:
            lines += summary_lines(self.comparison)
        if self.saved:
            lines.append((self.saved, self.save_failed))
        return lines


def load_baseline(settings: BaselineSettings) -> Baseline | None:
    """The baseline to compare with (None: none asked for, or the file is missing).
    Raises BaselineError when the file exists but cannot be used."""
    return None if settings.baseline_path is None else load(settings.baseline_path)


def finish(settings: BaselineSettings, loaded: Baseline | None, outcomes: Iterable[CaseOutcome], root: Path,
           *, incomplete: str = "") -> BaselineResult:
    """Compare this run with the loaded baseline, and save its own baseline when asked.
    `incomplete` says why the run did not finish (then no baseline is saved)."""
    now = snapshot(outcomes, root)
    comparison, note = None, ""
    if settings.baseline_path is not None:
        if loaded is None:
            note = missing_message(settings.baseline_path)
        else:
            comparison = compare(loaded, now, alpha=settings.alpha, max_drop=settings.max_drop,
                                 baseline_path=str(settings.baseline_path))
            note = (f"compared with baseline {settings.baseline_path} (alpha {settings.alpha:g}, maximum drop "
                    f"{'not set' if settings.max_drop is None else f'{settings.max_drop:.1%}'})")
    saved, failed = _save(settings.save_path, now, incomplete)
    return BaselineResult(now, loaded, comparison, note, saved, failed)


def _save(path: Path | None, now: Baseline, incomplete: str) -> tuple[str, bool]:
    if path is None:
        return "", False
    if incomplete:
        return f"baseline not saved to {path}: {incomplete}; the file is unchanged", True
    try:
        save(now, path)
    except OSError as exc:
        return f"baseline not saved to {path}: {exc}", True
    return f"baseline saved to {path}: {now.case_count} case(s) of {len(now.prompts)} prompt(s)", False


def html_document(result: BaselineResult, outcomes: Sequence[CaseOutcome], root: Path, *,
                  optimizations: Sequence[OptimizationView] = (), gate_lines: Sequence[str] = (),
                  record_mode: str = "normal", secrets: Sequence[str] = (), priced_roles: Sequence[str] = ()) -> str:
    comparison = result.comparison or compare(Baseline({}), result.now)  # no baseline: every case is new
    note = result.note or "No baseline was given (--promptopt-baseline PATH compares with one)."
    return render(HtmlInput(tuple(outcomes), root, comparison, result.baseline if result.comparison else None,
                            note, tuple(optimizations), tuple(gate_lines), record_mode,
                            tuple(s for s in secrets if s), tuple(priced_roles)))


def write_html(path: Path, document: str) -> None:
    write_text_atomic(path, document)


__all__ = ["BaselineResult", "BaselineSettings", "finish", "html_document", "load_baseline", "write_html"]
