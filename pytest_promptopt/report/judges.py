"""How far each judge of a run can be trusted: its card's figures or "uncalibrated", whether it
gated, and per prompt judged by one calibrated judge the pass rate corrected for its error.

Built from the run's outcomes (each verdict names its judge) and a `trust` lookup the session
supplies, so it is plain data for the terminal, the JSON report (`judges`,
`corrected_pass_rates`) and the HTML report alike.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..run.calibration import Estimate, corrected_rate
from ..run.card import CALIBRATED, JudgeTrust
from ..run.judge import INLINE_JUDGE
from ..run.pairwise import PairStats
from ..run.panel import PanelAgreement, panel_agreement
from ..run.record import CaseOutcome
from ..stats import wilson
from .summary import display

NO_PROMPT = "(tests calling no prompt)"
# a judge file's path (or INLINE_JUDGE) -> its trust in this run
TrustLookup = Callable[[str], JudgeTrust]


@dataclass(frozen=True)
class JudgeRow:
    key: str  # the judge file's path, or "<inline>: criteria"
    name: str
    trust: JudgeTrust
    verdicts: int
    failed: int
    sampled: int = 0  # verdicts drawn more than once (--promptopt-judge-samples, confirm-on-fail)
    flips: int = 0  # of those, the ones whose draws disagreed on pass or fail
    pair: PairStats = field(default_factory=PairStats)  # judge.pairwise() calls: both orders, flips, first-position picks
    panel: PanelAgreement | None = None  # a panel judge: its members' agreement over the run

    @property
    def flip_rate(self) -> Estimate | None:
        return _rate(self.flips, self.sampled)

    @property
    def pair_flip_rate(self) -> Estimate | None:
        """Of the pairs asked in both orders, the share whose winner changed with the order."""
        return _rate(self.pair.flips, self.pair.pairs)

    @property
    def first_position_rate(self) -> Estimate | None:
        """Of the pairwise answers that picked an output, the share that picked the one shown first."""
        return _rate(self.pair.first_picks, self.pair.picks)

    def pairwise_dict(self) -> dict[str, Any] | None:
        if not self.pair.pairs and not self.pair.picks:
            return None
        flip, first = self.pair_flip_rate, self.first_position_rate
        return {"pairs_both_orders": self.pair.pairs, "flips": self.pair.flips, "picks": self.pair.picks,
                "first_picks": self.pair.first_picks, "flip_rate": None if flip is None else flip.to_dict(),
                "first_position_rate": None if first is None else first.to_dict()}

    def pairwise_line(self) -> str | None:
        flip, first = self.pair_flip_rate, self.first_position_rate
        if flip is None and first is None:
            return None
        return (f"{self.name} pairwise: {self.pair.pairs} pairs asked in both orders, flip rate {_shown(flip)}; "
                f"first-position rate {_shown(first)} of {self.pair.picks} answers that picked an output "
                "(0.5 is no position bias; Wilson 95%)")

    def flips_shown(self) -> str:
        return "-" if not self.sampled else f"{self.flips}/{self.sampled}"

    def to_dict(self) -> dict[str, Any]:
        rate = self.flip_rate
        return {"judge": self.name, **self.trust.to_dict(), "verdicts": self.verdicts, "failed": self.failed,
                "sampled": self.sampled, "flips": self.flips, "flip_rate": None if rate is None else rate.to_dict(),
                "pairwise": self.pairwise_dict(), "panel": None if self.panel is None else self.panel.to_dict()}


def _rate(hits: int, n: int) -> Estimate | None:
    if not n:
        return None
    interval = wilson(hits, n)
    return Estimate(hits / n, interval.low, interval.high, "Wilson score 95%")


def _shown(e: Estimate | None) -> str:
    return "-" if e is None or e.value is None else f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]"


@dataclass(frozen=True)
class CorrectedRate:
    prompt: str
    judge: str
    n: int
    observed: int
    corrected: Estimate

    def to_dict(self) -> dict[str, Any]:
        raw = wilson(self.observed, self.n)
        return {"prompt": self.prompt, "judge": self.judge, "verdicts": self.n, "passed": self.observed,
                "raw_pass_rate": {"value": round(self.observed / self.n, 4), "low": round(raw.low, 4),
                                  "high": round(raw.high, 4), "method": "Wilson score 95%"},
                "corrected_pass_rate": self.corrected.to_dict()}

    def line(self) -> str:
        raw, c = wilson(self.observed, self.n), self.corrected
        fixed = "undefined (the judge is no better than chance on its labels)" if c.value is None else \
            f"{c.value:.3f} [{c.low:.3f}, {c.high:.3f}]"
        return (f"{self.prompt} judged by {self.judge}: raw pass rate {self.observed / self.n:.3f} "
                f"[{raw.low:.3f}, {raw.high:.3f}] ({self.observed} of {self.n}); corrected for the judge's "
                f"error {fixed} (Rogan-Gladen from its card's TPR and TNR, interval carries the labels' uncertainty)")


def _judge_key(verdict: Any) -> str | None:
    judge = verdict.get("judge")
    if not judge:
        return None  # a deterministic check, not an LLM judge
    return f"{INLINE_JUDGE}: {verdict.get('criteria', '')}" if judge == INLINE_JUDGE else str(judge)


def judge_rows(outcomes: Iterable[CaseOutcome], trust: TrustLookup, root: Path | None) -> list[JudgeRow]:
    counts: dict[str, list[int]] = {}
    pairs: dict[str, PairStats] = {}
    panels: dict[str, list[tuple[dict[str, float], float]]] = {}
    for case in outcomes:
        for p in case.pairs:
            key = _judge_key(p)
            if key is not None:
                counts.setdefault(key, [0, 0, 0, 0])
                pairs[key] = pairs.get(key, PairStats()).add(p)
        for v in case.verdicts:
            key = _judge_key(v)
            if key is not None:
                row = counts.setdefault(key, [0, 0, 0, 0])
                row[0] += 1
                row[1] += int(float(v.get("score", 0)) < float(v.get("threshold", 0)))
                row[2] += int(int(v.get("samples", 1)) > 1)
                row[3] += int(bool(v.get("flipped")))
                if v.get("members"):
                    panels.setdefault(key, []).append(({str(m): float(s) for m, s in v["members"]},
                                                       float(v.get("threshold", 0))))
    rows = []
    for key, (n, failed, sampled, flips) in sorted(counts.items()):
        inline = key.startswith(INLINE_JUDGE)
        name = f'inline "{_short(key[len(INLINE_JUDGE) + 2:])}"' if inline else display(key, root)
        rows.append(JudgeRow(key, name, trust(INLINE_JUDGE if inline else key), n, failed, sampled, flips,
                             pairs.get(key, PairStats()), panel_agreement(panels[key]) if key in panels else None))
    return rows


def corrected_rates(outcomes: Sequence[CaseOutcome], rows: Sequence[JudgeRow], root: Path | None) -> list[CorrectedRate]:
    """Per prompt and calibrated judge grading its cases: the pass rate corrected for the judge's error."""
    calibrated = {r.key: r for r in rows if r.trust.status == CALIBRATED and r.trust.card is not None}
    groups: dict[tuple[str, str], list[bool]] = {}
    for case in outcomes:
        if case.xfail:
            continue
        for v in case.verdicts:
            key = _judge_key(v)
            if key not in calibrated:
                continue
            passed = float(v.get("score", 0)) >= float(v.get("threshold", 0))
            for prompt in case.prompt_keys or [NO_PROMPT]:  # tests that grade fixed outputs call no prompt
                groups.setdefault((prompt, key), []).append(passed)
    out = []
    for (prompt, key), verdicts in sorted(groups.items()):
        row = calibrated[key]
        assert row.trust.card is not None
        observed = sum(verdicts)
        out.append(CorrectedRate(prompt if prompt == NO_PROMPT else display(prompt, root), row.name, len(verdicts),
                                 observed, corrected_rate(observed, len(verdicts), row.trust.card.confusion)))
    return out


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _figure(e: Any, name: str) -> str:
    value = e.get(name, {}).get("value") if isinstance(e.get(name), dict) else None
    return "-" if value is None else f"{value:.3f}"


def terminal_lines(rows: Sequence[JudgeRow], rates: Sequence[CorrectedRate]) -> list[tuple[str, bool]]:
    """(line, is a warning) pairs of the `promptopt: judges` section."""
    headers = ("judge", "status", "gates", "labels", "agreement", "kappa [95%]", "TPR", "TNR", "verdicts", "failed",
               "flips")
    table = [headers]
    for r in rows:
        d = r.trust.to_dict()
        kappa = d.get("kappa") or {}
        shown = "-" if kappa.get("value") is None else \
            f"{kappa['value']:.3f} [{kappa['low']:.3f}, {kappa['high']:.3f}]"
        table.append((r.name, r.trust.status, "yes" if r.trust.gates else "advisory",
                      "-" if d["labels"] is None else str(d["labels"]), _figure(d, "agreement"), shown,
                      _figure(d, "tpr"), _figure(d, "tnr"), str(r.verdicts), str(r.failed), r.flips_shown()))
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [(fmt.format(*row).rstrip(), False) for row in (table[0], tuple("-" * w for w in widths), *table[1:])]
    lines += [(f"{r.name}: {r.trust.reason}", not r.trust.gates) for r in rows if r.trust.status != CALIBRATED
              or not r.trust.gates]
    lines += [(line, False) for r in rows if (line := r.pairwise_line()) is not None]
    lines += [(r.panel.line(r.name), False) for r in rows if r.panel is not None]
    lines += [(rate.line(), False) for rate in rates]
    return lines


def html_section(rows: Sequence[JudgeRow], rates: Sequence[CorrectedRate]) -> str:
    """A small table of the judges (escaped), for the HTML report."""
    esc = html.escape
    body = "".join(
        f"<tr><td>{esc(r.name)}</td><td>{esc(r.trust.status)}</td><td>{'yes' if r.trust.gates else 'advisory'}</td>"
        f"<td>{'-' if r.trust.card is None else r.trust.card.confusion.n}</td>"
        + "".join(f"<td>{esc(_html_estimate(r, m))}</td>" for m in ("agreement", "kappa", "tpr", "tnr"))
        + f"<td>{r.verdicts}</td><td>{r.flips_shown()}</td><td>{esc(_shown(r.pair_flip_rate))}</td>"
        f"<td>{esc(_shown(r.first_position_rate))}</td><td>{esc(r.trust.reason)}</td></tr>" for r in rows)
    rates_html = "".join(f"<li>{esc(r.panel.line(r.name))}</li>" for r in rows if r.panel is not None)
    rates_html += "".join(f"<li>{esc(rate.line())}</li>" for rate in rates)
    return ('<section id="judges"><h2>Judges</h2><table><tr><th>judge</th><th>status</th><th>gates</th>'
            "<th>labels</th><th>agreement</th><th>kappa [95%]</th><th>TPR</th><th>TNR</th><th>verdicts</th>"
            f"<th>flips</th><th>pairwise flip rate</th><th>first-position rate</th><th>why</th></tr>{body}</table><ul>{rates_html}</ul></section>")


def _html_estimate(row: JudgeRow, metric: str) -> str:
    card = row.trust.card
    if card is None or card.metrics.get(metric) is None or card.metrics[metric].value is None:
        return "-"
    e = card.metrics[metric]
    return f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]"


__all__ = ["CorrectedRate", "JudgeRow", "corrected_rates", "html_section", "judge_rows", "terminal_lines"]
