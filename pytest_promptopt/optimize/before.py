"""A saved baseline as the "before" of an optimization.

When `--optimize` runs with `--promptopt-baseline`, the summary shows, per prompt of a group,
what the baseline recorded for its cases (pass rate, cases, whether the prompt file changed
since) and the baseline's mean score on each split next to the candidate's. The acceptance
decision still compares with this run's scores of the prompt as written: that is the file a
write replaces, and the baseline may stand for another version of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..run.baseline import Baseline, BaselineCase


@dataclass(frozen=True)
class SplitBefore:
    """The baseline's mean score on the cases of one split that it holds."""

    split: str  # train, validation or holdout
    cases: int  # cases of the split in this run
    in_baseline: int  # of them, how many the baseline holds
    before: float | None  # the baseline's mean score on those (None: it holds none)

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "cases": self.cases, "in_baseline": self.in_baseline, "before": self.before}


@dataclass(frozen=True)
class BaselineBefore:
    """One prompt's cases in the baseline file."""

    source: str  # the baseline file, as the user named it
    prompt: str  # the prompt as the baseline names it (relative to the rootdir)
    cases: int  # the prompt's cases in the baseline (0: the baseline does not hold the prompt)
    passed: int
    mean_score: float
    prompt_changed: bool | None  # the file's digest differs from the baseline's (None: unknown)
    splits: tuple[SplitBefore, ...] = ()

    @property
    def pass_rate(self) -> float:
        return self.passed / self.cases if self.cases else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.source, "prompt": self.prompt, "cases": self.cases, "passed": self.passed,
                "pass_rate": round(self.pass_rate, 4), "mean_score": round(self.mean_score, 4),
                "prompt_changed": self.prompt_changed, "splits": [s.to_dict() for s in self.splits]}


def before_from_baseline(baseline: Baseline, source: str, prompts: Mapping[str, str],
                         splits: Mapping[str, Sequence[str]]) -> tuple[BaselineBefore, ...]:
    """`prompts` maps each prompt of the group, as the baseline names it, to the digest of its
    file now; `splits` maps train / validation / holdout to their node ids. A test calling
    several prompts of the group is one end-to-end case: its verdict is the same under each."""
    group_cases: dict[str, BaselineCase] = {}
    out = []
    for name, digest in sorted(prompts.items()):
        entry = baseline.prompts.get(name)
        cases = dict(entry.cases) if entry is not None else {}
        group_cases.update(cases)
        changed = None if entry is None or not entry.digest or not digest else entry.digest != digest
        scores = [c.score for c in cases.values()]
        out.append(BaselineBefore(source, name, len(cases), sum(c.passed for c in cases.values()),
                                  sum(scores) / len(scores) if scores else 0.0, changed))
    per_split = tuple(_split(split, ids, group_cases) for split, ids in splits.items() if ids)
    return tuple(BaselineBefore(b.source, b.prompt, b.cases, b.passed, b.mean_score, b.prompt_changed, per_split)
                 for b in out)


def _split(split: str, nodeids: Sequence[str], cases: Mapping[str, BaselineCase]) -> SplitBefore:
    held = [cases[n].score for n in nodeids if n in cases]
    return SplitBefore(split, len(nodeids), len(held), sum(held) / len(held) if held else None)


def before_lines(befores: Sequence[BaselineBefore], after: Mapping[str, float | None]) -> list[str]:
    """The terminal lines: per prompt what the baseline holds, then per split the baseline's
    score -> the candidate's (`after`: split -> the candidate's mean score, None if not run)."""
    if not befores:
        return []
    lines = []
    for b in befores:
        if not b.cases:
            lines.append(f"  before, from baseline {b.source}: it holds no case of {b.prompt}")
            continue
        changed = {True: "; the prompt file changed since", False: "; the prompt file is the same",
                   None: ""}[b.prompt_changed]
        lines.append(f"  before, from baseline {b.source}: {b.prompt} passed {b.passed} of {b.cases} case(s) "
                     f"(pass rate {b.pass_rate:.3f}, mean score {b.mean_score:.3f}){changed}")
    parts = []
    for s in befores[0].splits:
        then = "n/a" if s.before is None else f"{s.before:.3f}"
        now = after.get(s.split)
        parts.append(f"{s.split} {then} -> {'not run' if now is None else f'{now:.3f}'} "
                     f"({s.in_baseline} of {s.cases} case(s) in the baseline)")
    if parts and any(b.cases for b in befores):
        lines.append("  baseline -> candidate: " + ", ".join(parts)
                     + "; the decision compares with this run's scores above (of the file a write replaces)")
    return lines


__all__ = ["BaselineBefore", "SplitBefore", "before_from_baseline", "before_lines"]
