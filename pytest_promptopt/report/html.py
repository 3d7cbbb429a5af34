"""The HTML report: one self-contained file (inline CSS, SVG charts and a little script).

It needs no network: nothing is loaded from anywhere, and a Content-Security-Policy allows only
the report's own style and script (by hash), so even text that slipped through escaping could
not run or fetch anything. Every text from the model, the tests or the user goes through
`_esc`, which redacts the configured API keys from the text before escaping it: redacting the
finished document would rewrite its markup wherever a short key ("none", "x") stands alone.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..run.baseline import Baseline, prompt_name
from ..llm.client import redact
from .compare import GONE, NEW, NOW_FAILING, NOW_PASSING, CaseChange, Comparison, PromptComparison
from ..run.record import JUDGE_KEY, Call, CaseOutcome, bounded
from .summary import money
from .data import CurvePoint, OptimizationView, RoleUsage, usage_in_tests
from ..stats import Interval, MeanEstimate

FILTERS = ("all", "failed", "regressed", "passed")
_secrets: ContextVar[tuple[str, ...]] = ContextVar("promptopt_html_secrets", default=())


@dataclass(frozen=True)
class HtmlInput:
    outcomes: tuple[CaseOutcome, ...]
    root: Path
    comparison: Comparison  # against the baseline, or against an empty one when there is none
    baseline: Baseline | None
    baseline_note: str  # where the baseline came from, or why there is none
    optimizations: tuple[OptimizationView, ...] = ()
    gate_lines: tuple[str, ...] = ()  # why the session's gates failed, as the terminal says it
    record_mode: str = "normal"
    secrets: tuple[str, ...] = ()  # API keys: never shown
    priced_roles: tuple[str, ...] = ()  # roles whose model has a configured price; others' cost is "-"
    extra_sections: tuple[str, ...] = ()  # rendered, escaped sections after the header (the judges' table)

    @cached_property
    def regressed_ids(self) -> frozenset[str]:
        return frozenset(c.nodeid for _, c in self.comparison.regressions)

    @cached_property
    def regressions_by_case(self) -> Mapping[str, tuple[tuple[str, CaseChange], ...]]:
        """node id -> (prompt, change) of each of its regressions: one pass, so the report is
        linear in the cases, not quadratic."""
        found: dict[str, list[tuple[str, CaseChange]]] = {}
        for prompt, change in self.comparison.regressions:
            found.setdefault(change.nodeid, []).append((prompt, change))
        return {nodeid: tuple(changes) for nodeid, changes in found.items()}


def render(data: HtmlInput) -> str:
    token = _secrets.set(tuple(s for s in data.secrets if s))
    try:
        prompts = _attention_first(data)
        body = "\n".join([
            _header(data) + _attention(prompts),
            *data.extra_sections,
            *(_prompt_section(data, p, i) for i, (p, _) in enumerate(prompts)),
            *(_optimization_section(o) for o in data.optimizations),
            _cases_section(data),
        ])
        return _page(body)
    finally:
        _secrets.reset(token)


# -- page ----------------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}pre{background:#f7f7f7;padding:6px;white-space:pre-wrap;word-break:break-word;margin:3px 0}
.bad{color:#b00020;font-weight:600}.good{color:#17702a;font-weight:600}.muted{color:#666}
.badge{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;margin-left:4px}
.b-passed{background:#d7f0dc}.b-failed{background:#f9d6da}.b-regressed{background:#b00020;color:#fff}
.b-fixed{background:#17702a;color:#fff}.b-new{background:#dde7f7}
details.case{border:1px solid #ddd;margin:4px 0;padding:4px 8px}details.case summary{cursor:pointer}
.filters button{margin-right:4px;padding:3px 10px;border:1px solid #999;background:#fff;cursor:pointer}
.filters button.on{background:#333;color:#fff}.add{color:#17702a}.del{color:#b00020}
.charts{display:flex;flex-wrap:wrap;gap:18px}svg text{font:11px system-ui,sans-serif}
"""

SCRIPT = """
(function () {
  var buttons = document.querySelectorAll('.filters button');
  function show(filter) {
    var shown = 0;
    document.querySelectorAll('details.case').forEach(function (c) {
      var on = filter === 'all' || c.dataset.verdict === filter ||
               (filter === 'regressed' && c.dataset.regressed === 'yes');
      c.hidden = !on;
      if (on) { shown += 1; }
    });
    buttons.forEach(function (b) { b.classList.toggle('on', b.dataset.filter === filter); });
    document.getElementById('shown').textContent = String(shown);
  }
  buttons.forEach(function (b) { b.addEventListener('click', function () { show(b.dataset.filter); }); });
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _page(body: str) -> str:
    policy = (f"default-src 'none'; style-src {_csp_hash(STYLE)}; script-src {_csp_hash(SCRIPT)}; "
              "img-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>pytest-promptopt report</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
            f"<script>{SCRIPT}</script>\n</body></html>\n")


def _esc(value: object) -> str:
    """A text as HTML: API keys redacted first, then escaped (so a key holding & or < is found)."""
    text = str(value)
    for secret in _secrets.get():
        text = redact(text, secret)
    return html.escape(text, quote=True)


def _header(data: HtmlInput) -> str:
    total = len(data.outcomes)
    passed = sum(o.passed for o in data.outcomes)
    regressed = len(data.regressed_ids)
    gate = data.comparison.gate_failed or bool(data.gate_lines)
    lines = "".join(f'<li class="bad">{_esc(line)}</li>' for line in data.gate_lines)
    lines += "".join(f'<li class="bad">baseline gate failed: {_esc(p.prompt)}: {_esc(p.gate_reason)}</li>'
                     for p in data.comparison.prompts if p.gate_failed)
    if data.comparison.unpaired:
        lines += f'<li class="bad" id="mismatch">{_esc(data.comparison.mismatch_reason)}</li>'
    return (f'<h1>pytest-promptopt report</h1>\n<p id="summary">{total} cases: {passed} passed, {total - passed} failed, '
            f'{regressed} regressed. Gate: <span class="{"bad" if gate else "good"}" id="gate">'
            f'{"failed" if gate else "passed"}</span>. Record mode: {_esc(data.record_mode)}.</p>\n'
            f'<p class="muted" id="baseline-note">{_esc(data.baseline_note)}</p>\n<ul>{lines}</ul>')


# -- per prompt ----------------------------------------------------------------------------------

def _attention_first(data: HtmlInput) -> list[tuple[PromptComparison, str]]:
    """The prompts, those that failed a gate or regressed first (stable otherwise), each with
    why it needs attention ("" when it does not)."""
    def why(p: PromptComparison) -> str:
        reasons = [*(["minimum pass rate failed"] if any(line.startswith(f"gate failed: {p.prompt} ")
                                                        for line in data.gate_lines) else []),
                   *(["baseline gate failed"] if p.gate_failed else []),
                   *([f"{len(p.regressions)} regressed"] if p.regressions else [])]
        return ", ".join(reasons)

    rows = [(p, why(p)) for p in data.comparison.prompts]
    return sorted(rows, key=lambda row: not row[1])


def _attention(prompts: Sequence[tuple[PromptComparison, str]]) -> str:
    links = [f'<li><a href="#prompt-{i}">{_esc(p.prompt)}</a>: {_esc(why)}</li>'
             for i, (p, why) in enumerate(prompts) if why]
    return f'\n<p id="attention">Needs attention:</p><ul id="attention-list">{"".join(links)}</ul>' if links else ""


def _prompt_section(data: HtmlInput, p: PromptComparison, index: int = 0) -> str:
    has_baseline = data.baseline is not None
    changed = '<p class="bad">The prompt file changed since the baseline.</p>' if p.prompt_changed else ""
    charts = _interval_chart(p, has_baseline) + _histogram([c.score for c in p.cases_now],
                                                           [c.score for c in p.cases_then] if has_baseline else [])
    gone = [c.nodeid for c in p.changes if c.status == GONE]
    gone_html = (f"<p>Gone since the baseline ({len(gone)}): " + ", ".join(f"<code>{_esc(n)}</code>" for n in gone)
                 + "</p>") if gone else ""
    return (f'<section class="prompt" id="prompt-{index}"><h2>{_esc(p.prompt)}</h2>{changed}\n'
            f'{_stats_table(p, has_baseline)}\n'
            f'<div class="charts">{charts}</div>\n{_usage_table(data, p.prompt)}{gone_html}</section>')


def _stats_table(p: PromptComparison, has_baseline: bool) -> str:
    passed_now = sum(c.passed for c in p.cases_now)
    rows = [("cases", str(len(p.cases_now)), str(len(p.cases_then))),
            ("pass rate (95% Wilson)", f"{passed_now}/{len(p.cases_now)} = {_rate(p.rate_now, p.interval_now)}",
             _rate(p.rate_then, p.interval_then)),
            ("mean score (95% t)", _mean(p.score_now), _mean(p.score_then))]
    head = "<tr><th></th><th>now</th><th>baseline</th></tr>"
    cells = "".join(f"<tr><th>{_esc(a)}</th><td>{_esc(b)}</td><td>{_esc(c if has_baseline else '-')}</td></tr>"
                    for a, b, c in rows)
    extra = ""
    if has_baseline:
        change = p.score_change
        extra = (f"<tr><th>paired cases</th><td colspan=2>{len(p.paired)}: {p.broken} now failing, {p.fixed} now "
                 f"passing; {p.count(NEW)} new, {p.count(GONE)} gone</td></tr>"
                 f"<tr><th>judge score change</th><td colspan=2>{_esc(_signed(change))}</td></tr>"
                 f'<tr><th>gate</th><td colspan=2 class="{"bad" if p.gate_failed else "good"}">'
                 f"{_esc(p.gate_reason)}</td></tr>")
    return f'<table class="stats">{head}{cells}{extra}</table>'


def _rate(rate: float, interval: Interval) -> str:
    return f"{rate:.1%} [{interval.low:.1%}, {interval.high:.1%}]"


def _mean(estimate: MeanEstimate) -> str:
    if not estimate.n:
        return "-"
    if estimate.interval is None:
        return f"{estimate.mean:.3f} (n={estimate.n})"
    return f"{estimate.mean:.3f} [{estimate.interval.low:.3f}, {estimate.interval.high:.3f}] (n={estimate.n})"


def _signed(estimate: MeanEstimate) -> str:
    if not estimate.n:
        return "no case judge-scored in both runs"
    interval = "" if estimate.interval is None else \
        f" [{estimate.interval.low:+.3f}, {estimate.interval.high:+.3f}]"
    return f"{estimate.mean:+.3f}{interval} over {estimate.n} paired judge-scored case(s)"


def _usage_table(data: HtmlInput, name: str) -> str:
    keys = {k for o in data.outcomes for k in o.usage if k != JUDGE_KEY and prompt_name(k, data.root) == name}
    rows: list[RoleUsage] = []
    for key in sorted(keys):
        rows.extend(usage_in_tests(data.outcomes, key))
    for view in data.optimizations:
        if name in view.prompts:
            rows.extend(view.usage)
    body = "".join(f"<tr><td>{_esc(u.role)}</td><td>{_esc(u.phase)}</td><td>{u.calls}</td>"
                   f"<td>{u.cache_hits}</td><td>{u.tokens:,}</td><td>{u.cached_tokens:,}</td>"
                   f"<td>{money(u.cost, u.role in data.priced_roles)}</td></tr>"
                   for u in rows)
    return ('<table class="usage"><tr><th>role</th><th>phase</th><th>calls</th><th>cache hits</th>'
            f"<th>tokens sent</th><th>tokens cached</th><th>cost of sent</th></tr>{body}</table>")


# -- charts (inline SVG) -------------------------------------------------------------------------

def _interval_chart(p: PromptComparison, has_baseline: bool) -> str:
    rows: list[tuple[str, float, Interval | None, str]] = [
        ("pass rate now", p.rate_now, p.interval_now, "#2f6fb0")]
    if has_baseline:
        rows.append(("pass rate baseline", p.rate_then, p.interval_then, "#999"))
    rows.append(("mean score now", p.score_now.mean, p.score_now.interval, "#2f6fb0"))
    if has_baseline:
        rows.append(("mean score baseline", p.score_then.mean, p.score_then.interval, "#999"))
    left, width, row_h = 130, 260, 24
    height = row_h * len(rows) + 24
    parts = [f'<svg class="intervals" width="{left + width + 20}" height="{height}" role="img" '
             f'aria-label="pass rate and mean score with 95% intervals">']
    for i, (label, value, interval, colour) in enumerate(rows):
        y = 6 + i * row_h
        parts.append(f'<text x="0" y="{y + 13}">{_esc(label)}</text>'
                     f'<rect x="{left}" y="{y + 3}" width="{value * width:.1f}" height="12" fill="{colour}"/>')
        if interval is not None:
            lo, hi = left + max(0.0, interval.low) * width, left + min(1.0, interval.high) * width
            parts.append(f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{y + 9}" y2="{y + 9}" stroke="#000"/>'
                         f'<line x1="{lo:.1f}" x2="{lo:.1f}" y1="{y + 4}" y2="{y + 14}" stroke="#000"/>'
                         f'<line x1="{hi:.1f}" x2="{hi:.1f}" y1="{y + 4}" y2="{y + 14}" stroke="#000"/>')
    axis_y = 6 + len(rows) * row_h
    parts.append(_x_axis(left, width, axis_y))
    parts.append("</svg>")
    return "".join(parts)


def _x_axis(left: int, width: int, y: int) -> str:
    ticks = "".join(f'<line x1="{left + t * width}" x2="{left + t * width}" y1="{y}" y2="{y + 4}" stroke="#666"/>'
                    f'<text x="{left + t * width - 8}" y="{y + 15}">{t:g}</text>' for t in (0, 0.5, 1))
    return f'<line x1="{left}" x2="{left + width}" y1="{y}" y2="{y}" stroke="#666"/>{ticks}'


def _bins(scores: Sequence[float], n_bins: int = 10) -> list[int]:
    counts = [0] * n_bins
    for s in scores:
        counts[min(n_bins - 1, max(0, int(s * n_bins)))] += 1
    return counts


def _histogram(now: Sequence[float], then: Sequence[float]) -> str:
    """Score distribution: ten bins from 0 to 1, this run filled, the baseline outlined."""
    now_bins, then_bins = _bins(now), _bins(then)
    top = max(now_bins + then_bins + [1])
    width, height, bar = 300, 110, 30
    parts = [f'<svg class="histogram" width="{width + 10}" height="{height + 30}" role="img" '
             f'aria-label="score distribution">']
    for i, (n, t) in enumerate(zip(now_bins, then_bins)):
        x = 5 + i * bar
        h_now, h_then = n / top * height, t / top * height
        parts.append(f'<rect x="{x + 2}" y="{height - h_now:.1f}" width="{bar - 4}" height="{h_now:.1f}" '
                     f'fill="#2f6fb0"><title>{i / 10:.1f}-{(i + 1) / 10:.1f}: {n} now, {t} baseline</title></rect>')
        if n:  # the count on the bar: a chart without a y scale still says how many
            parts.append(f'<text class="count" x="{x + bar / 2 - 4:.1f}" y="{max(10.0, height - h_now - 2):.1f}">'
                         f'{n}</text>')
        if then:
            parts.append(f'<rect x="{x + 2}" y="{height - h_then:.1f}" width="{bar - 4}" height="{h_then:.1f}" '
                         f'fill="none" stroke="#d08000" stroke-width="2"/>')
    parts.append(f'<text x="5" y="{height + 14}">score 0</text><text x="{width - 20}" y="{height + 14}">1</text>'
                 f'<text class="axis-x" x="70" y="{height + 14}">score (bins of 0.1)</text>'
                 f'<text class="axis-y" x="5" y="10">cases per bin</text>'
                 f'<text x="90" y="{height + 27}">filled: now; outline: baseline</text></svg>')
    return "".join(parts)


def _curve_chart(points: Sequence[CurvePoint], v_before: float, v_after: float | None, calls: int = 0) -> str:
    """Score against LM calls spent: minibatch scores (grey), full-train scores (blue) and the
    best full-train score so far (line); dashed: validation before (grey) and after (green).
    The axis ends at `calls`, the optimization's LM calls as its table counts them."""
    if not points:
        return '<p class="muted">The run log has no scores to draw.</p>'
    width, height, left = 460, 160, 34
    max_calls = max(1, calls, max(p.calls for p in points))

    def xy(calls: float, score: float) -> tuple[float, float]:
        return left + calls / max_calls * width, 10 + (1 - score) * height

    parts = [f'<svg class="curve" width="{left + width + 20}" height="{height + 40}" role="img" '
             f'aria-label="score against LM calls">']
    for p in points:
        x, y = xy(p.calls, p.score)
        fill = "#2f6fb0" if p.kind == "train" else "#aaa"
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{fill}"/>')
    parts.append(_best_line(points, xy))
    for score, colour in ((v_before, "#888"), (v_after, "#17702a")):
        if score is not None:
            y = xy(0, score)[1]
            parts.append(f'<line x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" '
                         f'stroke-dasharray="4 3"/>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="10" y2="{10 + height}" stroke="#666"/>'
                 f'<text x="0" y="16">1.0</text><text x="0" y="{10 + height}">0.0</text>'
                 f'<text x="{left}" y="{height + 28}">0</text><text class="axis-end" x="{left + width - 60}" '
                 f'y="{height + 28}">{max_calls} LM calls</text></svg>')
    return "".join(parts)


def _best_line(points: Sequence[CurvePoint], xy: object) -> str:
    """The best full-train score so far, as steps: it holds until a better one is measured."""
    best, coords = -1.0, []
    for p in points:
        if p.kind == "train" and p.score > best:
            if coords:
                coords.append(xy(p.calls, best))  # type: ignore[operator]
            best = p.score
            coords.append(xy(p.calls, best))  # type: ignore[operator]
    if not coords:
        return ""
    coords.append(xy(max(p.calls for p in points), best))  # type: ignore[operator]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    return f'<polyline points="{path}" fill="none" stroke="#2f6fb0" stroke-width="1.5"/>'


# -- optimization --------------------------------------------------------------------------------

def _optimization_section(o: OptimizationView) -> str:
    after = "not run" if o.validation_after is None else f"{o.validation_after:.3f}"
    decision = "accepted" if o.accepted else "rejected"
    rows = [("strategy", o.strategy), ("validation score", f"{o.validation_before:.3f} -> {after}"),
            ("train score", f"{o.train_before:.3f} -> {o.train_after:.3f}"),
            ("holdout score", o.holdout or "no holdout tests (mark some promptopt(holdout=True))"),
            ("LM calls", str(o.calls)),
            *((f"baseline ({i} of {len(o.baseline)})" if len(o.baseline) > 1 else "baseline", line)
              for i, line in enumerate(o.baseline, 1)),
            *((("candidate", o.one_answer),) if o.one_answer else ()),
            ("decision", f"{decision}: {o.reason}"), ("diff", o.write_status),
            *((f"note {i}", note) for i, note in enumerate(o.notes, 1)), ("run log", o.log_path)]
    table = "".join(f"<tr><th>{_esc(a)}</th><td>{_esc(b)}</td></tr>" for a, b in rows)
    return (f'<section class="optimization"><h2>Optimization: {_esc(", ".join(o.prompts))}</h2>'
            f"<table>{table}</table>{_curve_chart(o.curve, o.validation_before, o.validation_after, o.calls)}"
            '<p class="muted">Score against LM calls spent: grey dots minibatch scores, blue dots full-train scores, '
            "the line the best full-train score so far; dashed: validation before (grey) and after (green).</p>"
            f"{_diff(o.diff)}</section>")


def _diff(diff: str) -> str:
    if not diff:
        return '<p class="muted">No diff: nothing changed in the prompt files.</p>'
    lines = []
    for line in diff.splitlines():
        css = "add" if line.startswith("+") and not line.startswith("+++") else \
            "del" if line.startswith("-") and not line.startswith("---") else ""
        lines.append(f'<span class="{css}">{_esc(line)}</span>' if css else _esc(line))
    return '<pre class="diff">' + "\n".join(lines) + "</pre>"


# -- cases ---------------------------------------------------------------------------------------

def _cases_section(data: HtmlInput) -> str:
    statuses = data.comparison.statuses() if data.baseline is not None else {}
    regressed = data.regressed_ids
    cases = "\n".join(_case(data, o, statuses.get(o.nodeid, set()), o.nodeid in regressed)
                      for o in sorted(data.outcomes, key=lambda o: o.nodeid))
    buttons = "".join(f'<button type="button" data-filter="{f}"{" class=on" if f == "all" else ""}>{f}</button>'
                      for f in FILTERS)
    return (f'<section id="cases"><h2>Cases</h2><p class="filters">{buttons} '
            f'<span class="muted">showing <span id="shown">{len(data.outcomes)}</span> of '
            f"{len(data.outcomes)}</span></p>\n{cases}</section>")


def _case(data: HtmlInput, o: CaseOutcome, statuses: set[str], regressed: bool) -> str:
    verdict = "passed" if o.passed else "failed"
    badges = f'<span class="badge b-{verdict}">{verdict}</span>'
    if regressed:
        badges += '<span class="badge b-regressed">regressed</span>'
    if NOW_PASSING in statuses:
        badges += '<span class="badge b-fixed">fixed</span>'
    if statuses == {NEW}:
        badges += '<span class="badge b-new">new</span>'
    prompts = ", ".join(prompt_name(k, data.root) for k in o.usage if k != JUDGE_KEY)
    summary = (f'<summary><code class="nodeid">{_esc(o.nodeid)}</code>{badges} '
               f'<span class="muted">score {o.score:.3f}{_graded_by(o)}; {_esc(prompts)}</span>'
               "</summary>")
    return (f'<details class="case" data-verdict="{verdict}" data-regressed="{"yes" if regressed else "no"}">'
            f"{summary}{_case_body(data, o, regressed)}</details>")


def _graded_by(o: CaseOutcome) -> str:
    """What the score came from: an LM judge, deterministic checks (1/0), or pass/fail alone."""
    return " (judge)" if o.judged else " (checks)" if o.checked else ""


def _case_body(data: HtmlInput, o: CaseOutcome, regressed: bool) -> str:
    parts = []
    if o.message or o.error:
        parts.append(f'<p><b>failure</b></p><pre class="message">{_esc(o.message or o.error)}</pre>')
    for v in o.verdicts:
        kind = "check" if v.get("kind") == "check" else "judge"
        parts.append(f'<p><b>{kind}</b> score {float(v.get("score", 0)):.3f} (threshold '
                     f'{float(v.get("threshold", 0)):.2f}): <span class="reason">{_esc(v.get("reason", ""))}</span>'
                     f'<br><span class="muted">criteria: {_esc(v.get("criteria", ""))}</span></p>')
    if regressed:
        parts.append(_then_outputs(data, o))
    for call in o.calls:
        parts.append(_call(data, call))
    return "".join(parts) or '<p class="muted">No LM call was recorded.</p>'


def _then_outputs(data: HtmlInput, o: CaseOutcome) -> str:
    outs = []
    for prompt, c in data.regressions_by_case.get(o.nodeid, ()):
        if c.status == NOW_FAILING and c.then is not None:
            outs.append(f'<p><b>output in the baseline</b> ({_esc(prompt)}, {c.then.verdict}, score '
                        f'{c.then.score:.3f})</p><pre class="then">{_esc(c.then.output)}</pre>')
    return "".join(outs)


def _call(data: HtmlInput, call: Call) -> str:
    rendered = "".join(f'<pre class="msg"><b>{_esc(m.get("role", ""))}</b>: {_esc(m.get("content", ""))}</pre>'
                       for m in call.messages)
    return (f'<p><b>call</b> {_esc(prompt_name(call.prompt_key, data.root))}</p>{rendered}'
            f'<p><b>output</b></p><pre class="output">{_esc(bounded(call.output))}</pre>')


__all__ = ["HtmlInput", "render"]
