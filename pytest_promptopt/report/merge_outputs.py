"""What `promptopt merge` writes: the JSON report, JUnit XML, the HTML report and the terminal
lines, each in the shape a single unsharded run gives (the same table, gate and baseline code)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..run.record import JUDGE_KEY, CaseOutcome
from .gate import html_document
from .judges import html_section
from .judges import terminal_lines as judges_terminal_lines
from .merge import Merged
from .shard_reader import MergeError
from .summary import gate_lines, gate_verdicts, table

GATE_CLASS = "promptopt.gate"  # the classname pytest's junitxml gives the plugin's gate testcases


def json_payload(merged: Merged) -> dict[str, Any]:
    """The plugin's JSON report layout, with the shards it came from."""
    usage = [u for o in merged.outcomes for u in o.usage.values()]
    tiers: dict[str, int] = {}
    for shard in merged.shards:
        for tier, hits in shard.cache_tiers.items():
            tiers[tier] = tiers.get(tier, 0) + hits
    modes = sorted({s.record_mode for s in merged.shards})
    return {
        "version": 2,
        "duration_s": round(sum(s.duration_s for s in merged.shards), 3),
        "record_mode": modes[0] if len(modes) == 1 else ", ".join(modes),
        "prompts": [s.to_dict(merged.root, merged.priced(s.key)) for s in merged.summaries],
        "tests": [o.to_dict() for o in merged.outcomes],
        "cache": {"hits": sum(u.cache_hits for u in usage), "calls": sum(u.requests for u in usage)},
        "cache_tiers": tiers or {"local": 0, "shared": 0},
        "ahead": None,
        "gate": "failed" if merged.gate_failed else "passed",
        "judges": [r.to_dict() for r in merged.judges],
        "corrected_pass_rates": [c.to_dict() for c in merged.corrected],
        "baseline": merged.baseline.to_dict(),
        "optimization": None,
        "exit_code": merged.exit_code,
        "tests_exit_code": max((s.tests_exit_code for s in merged.shards if s.tests_exit_code != 5), default=5),
        "merged_from": [str(s.path) for s in merged.shards],
    }


def terminal_lines(merged: Merged) -> list[str]:
    lines = ["promptopt: prompts", *table(merged.summaries, merged.root, merged.priced)]
    lines += gate_lines(merged.summaries, merged.root)
    if merged.judges:
        lines += ["promptopt: judges", *(text for text, _ in judges_terminal_lines(merged.judges, merged.corrected))]
    baseline = merged.baseline.terminal_lines()
    if baseline:
        lines += ["promptopt: baseline", *(text for text, _ in baseline)]
    lines.append(f"promptopt merge: {len(merged.shards)} shard(s), {len(merged.outcomes)} test(s) with LM calls; "
                 f"gate {'failed' if merged.gate_failed else 'passed'}; exit code {merged.exit_code}")
    return lines


def html(merged: Merged) -> str:
    priced = {name for s in merged.shards for name, yes in s.priced.items() if yes}
    roles = [r for r, yes in (("task", bool(priced - {JUDGE_KEY})), ("judge", JUDGE_KEY in priced)) if yes]
    return html_document(merged.baseline, merged.outcomes, merged.root, gate_lines=gate_lines(merged.summaries, merged.root),
                         record_mode=json_payload(merged)["record_mode"], priced_roles=roles,
                         extra_sections=merged.baseline.pairs_html()
                         + ([html_section(list(merged.judges), list(merged.corrected))] if merged.judges else []))


def junit_xml(merged: Merged, shard_xml: Sequence[Path] = ()) -> str:
    """One testsuite: every shard's testcases (from their JUnit files, else from the reports'
    tests), without the shards' own gate testcases, plus the merged gates."""
    cases = _shard_cases(shard_xml) if shard_xml else [_case(o) for o in merged.outcomes]
    cases += _gate_cases(merged)
    suite = ET.Element("testsuite", name="pytest", tests=str(len(cases)),
                       failures=str(sum(c.find("failure") is not None for c in cases)),
                       errors=str(sum(c.find("error") is not None for c in cases)),
                       skipped=str(sum(c.find("skipped") is not None for c in cases)),
                       time=f"{sum(float(c.get('time', '0')) for c in cases):.3f}")
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="promptopt_gate", value="failed" if merged.gate_failed else "passed")
    suite.extend(cases)
    root = ET.Element("testsuites", name="pytest tests")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _shard_cases(paths: Sequence[Path]) -> list[ET.Element]:
    cases: list[ET.Element] = []
    for path in paths:
        try:
            tree = ET.parse(path)  # the shards' own JUnit files, written by pytest in CI
        except (OSError, ET.ParseError) as exc:
            raise MergeError(f"{path}: not a JUnit XML file ({exc})") from None
        cases += [c for c in tree.iter("testcase") if c.get("classname") != GATE_CLASS]
    return cases


def _case(outcome: CaseOutcome) -> ET.Element:
    path, _, rest = outcome.nodeid.partition("::")
    parts = rest.split("::")
    classname = ".".join([path.removesuffix(".py").replace("/", "."), *parts[:-1]])
    case = ET.Element("testcase", classname=classname, name=parts[-1], time=f"{outcome.duration:.3f}")
    if outcome.xfail:
        ET.SubElement(case, "skipped", type="pytest.xfail", message="expected failure")
    elif not outcome.passed:
        ET.SubElement(case, "failure", message=outcome.message.splitlines()[0] if outcome.message else "failed")
    return case


def _gate_cases(merged: Merged) -> list[ET.Element]:
    cases = []
    for name, failed, reason in gate_verdicts(merged.summaries, merged.baseline.comparison, merged.root):
        case = ET.Element("testcase", classname=GATE_CLASS, name=name, time="0.000")
        if failed:
            ET.SubElement(case, "failure", message=reason).text = reason
        cases.append(case)
    return cases


def write_text(path: Path, text: str) -> None:
    write_text_atomic(path, text)
