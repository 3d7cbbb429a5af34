"""The baseline gate of one session, pytest-free: load, compare, save, and the HTML report.

The pytest layer builds `BaselineSettings` from options, calls `load_baseline` at configure
time (so a broken baseline stops the run before any LM call), and `finish` at the end with the
run's case outcomes; it shows what `finish` returns and fails the session when its gate failed.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..atomic import write_text_atomic
from ..prompts.writeback import PendingWrite
from ..run.baseline import Baseline, load, missing_message, prompt_name, save, snapshot
from ..run.baseline_pairs import OutputPairs
from ..run.config import BaselineSettings
from ..run.record import CaseOutcome
from .compare import Comparison, compare, summary_lines
from .data import OptimizationView
from .html import HtmlInput, render


@dataclass(frozen=True)
class BaselineResult:
    now: Baseline
    baseline: Baseline | None
    comparison: Comparison | None
    note: str  # what was compared, or why nothing was
    saved: str = ""  # what became of --promptopt-save-baseline
    save_failed: bool = False
    pairs: tuple[OutputPairs, ...] = ()  # --promptopt-baseline-pairwise: outputs now vs the baseline's

    @property
    def gate_failed(self) -> bool:
        return self.comparison is not None and self.comparison.gate_failed

    def to_dict(self) -> dict[str, object]:
        return {"note": self.note, "saved": self.saved,
                "comparison": None if self.comparison is None else self.comparison.to_dict(),
                "pairwise": [p.to_dict() for p in self.pairs]}

    def terminal_lines(self) -> list[tuple[str, bool]]:
        lines: list[tuple[str, bool]] = [(self.note, self.comparison is None)] if self.note else []
        if self.comparison is not None:
            lines += summary_lines(self.comparison)
        lines += [(p.line(), p.worse > p.better) for p in self.pairs]
        if self.saved:
            lines.append((self.saved, self.save_failed))
        return lines

    def pairs_html(self) -> list[str]:
        """The pairwise comparison as an HTML section of the baseline's (escaped); none without one."""
        if not self.pairs:
            return []
        items = "".join(f"<li>{html.escape(p.line())}</li>" for p in self.pairs)
        return ['<section id="baseline-pairwise"><h2>Baseline: outputs compared pairwise</h2>'
                f"<p>Each case's output now against its output in the baseline, asked in both orders; "
                f"a report, not a gate.</p><ul>{items}</ul></section>"]


def load_baseline(settings: BaselineSettings) -> Baseline | None:
    """The baseline to compare with (None: none asked for, or the file is missing).
    Raises BaselineError when the file exists but cannot be used."""
    return None if settings.baseline_path is None else load(settings.baseline_path)


def finish(settings: BaselineSettings, loaded: Baseline | None, outcomes: Iterable[CaseOutcome], root: Path,
           *, incomplete: str = "", save: bool = True) -> BaselineResult:
    """Compare this run with the loaded baseline, and save its own baseline when asked (unless
    `save` is False: `save_after_write_back` saves it later). `incomplete` says why the run did
    not finish (then no baseline is saved)."""
    outcomes = list(outcomes)
    now = snapshot(outcomes, root)
    called = {prompt_name(k, root) for o in outcomes for k in o.prompt_keys}  # xfail cases too
    comparison, note = None, ""
    if settings.baseline_path is not None:
        if loaded is None:
            note = missing_message(settings.baseline_path)
        else:
            # a run of some tests (-k, a path) compares the prompts it ran, not the rest as "0 of 0 now"
            ran = Baseline({name: p for name, p in loaded.prompts.items() if name in now.prompts or name in called})
            comparison = compare(ran, now, alpha=settings.alpha, max_drop=settings.max_drop,
                                 baseline_path=str(settings.baseline_path))
            note = (f"compared with baseline {settings.baseline_path} (alpha {settings.alpha:g}, maximum drop "
                    f"{'not set' if settings.max_drop is None else f'{settings.max_drop:.1%}'})")
            left = sorted(set(loaded.prompts) - set(ran.prompts))
            if left:
                note += f"; not compared, no test of them ran: {', '.join(left)}"
    saved, failed = _save(settings.save_path, now, incomplete) if save else ("", False)
    return BaselineResult(now, loaded, comparison, note, saved, failed)


@dataclass(frozen=True)
class WrittenGroup:
    """One optimization's winner: the writes it needed, by prompt key, and its outcome on every
    case of the group (empty when it was not scored on all of them)."""

    writes: tuple[tuple[str, PendingWrite], ...]
    outcomes: tuple[CaseOutcome, ...]


def save_after_write_back(result: BaselineResult, path: Path | None, outcomes: Sequence[CaseOutcome],
                          groups: Sequence[WrittenGroup], written: Collection[Path], root: Path,
                          incomplete: str = "") -> BaselineResult:
    """Save the baseline of the prompts as the files hold them at the end of an `--optimize` run.

    A prompt the optimization wrote gets the winner's outcomes (the optimizer re-ran every case
    of its group with the winner, the same tests with the same text) and the written file's
    digest; every other case is the run's. When a write failed, or the winner was not scored on
    every case, the run's cases are saved and the message says so."""
    if path is None:
        return result
    final = {o.nodeid: o for o in outcomes}
    digests: dict[str, str] = {}
    said: list[str] = []
    for group in groups:
        if not group.writes:
            continue  # nothing written: the run's cases are of the file as it is
        names = ", ".join(prompt_name(k, root) for k, _ in group.writes)
        if not all(w.path in written for _, w in group.writes):
            said.append(f"{names} from before write-back (not written)")
        elif not group.outcomes:
            said.append(f"{names} from before write-back (the optimizer did not score the written prompt on every "
                        "case; run pytest --promptopt-save-baseline again to record it)")
        else:
            final.update({o.nodeid: o for o in group.outcomes})
            digests.update({prompt_name(k, root): hashlib.sha256(w.new_bytes).hexdigest() for k, w in group.writes})
            ids, keys = {o.nodeid for o in group.outcomes}, {k for k, _ in group.writes}
            kept = sum(1 for o in final.values() if o.nodeid not in ids and keys & set(o.usage))
            said.append(f"{names} as written by the optimization ({len(group.outcomes)} case(s) re-scored "
                        "by its re-runs of the written prompt" + (f"; {kept} kept from the run above, whose LM "
                                                                  "call failed" if kept else "") + ")")
    now = snapshot(final.values(), root)
    now = Baseline({n: replace(p, digest=digests.get(n, p.digest)) for n, p in now.prompts.items()})
    saved, failed = _save(path, now, incomplete)
    return replace(result, saved=saved + ("; " + "; ".join(said) if said and not failed else ""), save_failed=failed)


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
                  record_mode: str = "normal", secrets: Sequence[str] = (), priced_roles: Sequence[str] = (),
                  extra_sections: Sequence[str] = ()) -> str:
    """`extra_sections`: rendered, escaped HTML sections shown after the header (the judges' table)."""
    comparison = result.comparison or compare(Baseline({}), result.now)  # no baseline: every case is new
    note = result.note or "No baseline was given (--promptopt-baseline PATH compares with one)."
    return render(HtmlInput(tuple(outcomes), root, comparison, result.baseline if result.comparison else None,
                            note, tuple(optimizations), tuple(gate_lines), record_mode,
                            tuple(s for s in secrets if s), tuple(priced_roles), tuple(extra_sections)))


def write_html(path: Path, document: str) -> None:
    write_text_atomic(path, document)


__all__ = ["BaselineResult", "BaselineSettings", "WrittenGroup", "finish", "html_document", "load_baseline",
           "save_after_write_back", "write_html"]
