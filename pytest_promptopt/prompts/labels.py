"""Labelled sets: the cases a judge is calibrated on, one JSON object a line (JSONL).

```jsonl
{"output": "Thanks for waiting! Your card ships today.", "verdict": "pass", "note": "polite, answers"}
{"output": "Read the FAQ.", "verdict": "fail", "expected": "...", "inputs": {"text": "..."}}
{"output": "Sure, done.", "verdict": 0.8}
```

Fields: `output` (the text the judge grades, required), `verdict` (the human verdict, required:
`"pass"`, `"fail"`, or a score from 0 to 1, which passes at or above the judge's threshold),
`expected` (the expected answer the judge is shown), `inputs` (a mapping, kept for reading) and
`note` (why). JSONL because every case is one line: a problem is named by its line, and a
change to one case is a one-line diff.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PromptFileError
from ..userfiles import read_bytes

MAX_LABELS_FILE_BYTES = 10_000_000
LABEL_FIELDS = ("output", "verdict", "expected", "inputs", "note")
# Fewer cases of a class than this and a card's intervals are wide: a warning, not an error
# (Wilson's interval on a rate from 20 cases is about +-0.2 wide at 0.7).
MIN_CASES_PER_CLASS = 20
_CASE_FIX = 'write one JSON object a line, e.g. {"output": "...", "verdict": "pass"}'


@dataclass(frozen=True)
class LabelledCase:
    line: int
    output: str
    score: float  # the human verdict: 1.0 pass, 0.0 fail, or a graded score
    expected: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    note: str = ""

    def passed(self, threshold: float) -> bool:
        return self.score >= threshold

    @property
    def seen(self) -> tuple[str, str | None]:
        """What a judge is shown of the case: its output and expected answer (not its inputs).
        Two cases alike here are one case to a judge: never one a demo while the other is graded."""
        return self.output, self.expected

    def to_dict(self) -> dict[str, Any]:
        """The case's fields as a labels line writes them (verdict pass/fail, or the score)."""
        verdict: Any = {1.0: "pass", 0.0: "fail"}.get(self.score, self.score)
        out: dict[str, Any] = {"output": self.output, "verdict": verdict}
        out |= {"expected": self.expected} if self.expected is not None else {}
        out |= {"inputs": dict(self.inputs)} if self.inputs else {}
        return out | ({"note": self.note} if self.note else {})


@dataclass(frozen=True)
class LabelledSet:
    path: Path
    cases: tuple[LabelledCase, ...]
    digest: str  # sha256 of the file's bytes: part of a card's identity

    def truth(self, threshold: float) -> list[bool]:
        return [c.passed(threshold) for c in self.cases]

    def check_classes(self, threshold: float) -> list[str]:
        """Raises when one class is missing (kappa, TPR or TNR would be undefined); returns
        warnings when a class has too few cases for a useful interval."""
        positives = sum(self.truth(threshold))
        negatives = len(self.cases) - positives
        if not positives or not negatives:
            only = "pass" if positives else "fail"
            raise PromptFileError(self.path, f"all {len(self.cases)} cases are '{only}' (at the judge's threshold "
                                             f"{threshold:g}): agreement on one class says nothing about a judge",
                                  field="verdict", fix="add cases of the other class; aim for about as many "
                                                       "passing as failing cases")
        return [f"{self.path}: only {count} '{name}' case(s); a card's intervals need at least "
                f"{MIN_CASES_PER_CLASS} of each class to be narrow enough to act on (add cases)"
                for name, count in (("pass", positives), ("fail", negatives)) if count < MIN_CASES_PER_CLASS]


def load_labels(path: Path) -> LabelledSet:
    """Read and validate a labelled set; every problem names the file, line, field and fix."""
    data = _read(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptFileError(path, f"is not valid UTF-8 (byte {exc.start})", line=data[: exc.start].count(b"\n") + 1,
                              fix="save the file as UTF-8") from None
    cases: list[LabelledCase] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        case = _case(path, number, raw)
        identity = case_identity(case)
        if identity in seen:
            raise PromptFileError(path, f"the same case (output, expected and inputs) as line {seen[identity]}",
                                  line=number, field="output",
                                  fix="remove one of the two lines (or, if they disagree, decide which verdict is right)")
        seen[identity] = number
        cases.append(case)
    if not cases:
        raise PromptFileError(path, "the labelled set has no cases", fix=_CASE_FIX)
    return LabelledSet(path, tuple(cases), hashlib.sha256(data).hexdigest())


def case_identity(case: LabelledCase) -> str:
    return json.dumps([case.output, case.expected, dict(case.inputs)], sort_keys=True)


def load_reviewed(path: Path) -> tuple[LabelledCase, ...]:
    """The cases of a panel's review file (`<judge>.review.jsonl`, the labels' format) that a human
    has given a verdict; lines still `"verdict": null` wait for one, a repeated case counts once.
    No file: no cases."""
    if not os.path.isfile(path):
        return ()
    text = _read(path).decode("utf-8-sig", errors="replace")
    cases: dict[str, LabelledCase] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            pending = isinstance(item := json.loads(raw), dict) and item.get("verdict") in (None, "")
        except ValueError:
            pending = False  # _case names the line and the fix
        if not pending:
            case = _case(path, number, raw)
            cases.setdefault(case_identity(case), case)
    return tuple(cases.values())


def merged_cases(labels: LabelledSet, reviewed: tuple[LabelledCase, ...]) -> tuple[LabelledCase, ...]:
    """The labelled set and the reviewed cases it does not hold already (the labels file wins)."""
    known = {case_identity(c) for c in labels.cases}
    return labels.cases + tuple(c for c in reviewed if case_identity(c) not in known)


def _read(path: Path) -> bytes:
    """The labels file through the one reader of user files (regular file, size while reading)."""
    try:
        return read_bytes(path, limit=MAX_LABELS_FILE_BYTES, what="labels file")
    except FileNotFoundError:
        raise PromptFileError(path, "labels file not found", fix="create it or fix labels: in the judge file") from None


def _case(path: Path, line: int, raw: str) -> LabelledCase:
    try:
        item = json.loads(raw)
    except ValueError as exc:
        raise PromptFileError(path, f"not a JSON object: {exc}", line=line, fix=_CASE_FIX) from None
    if not isinstance(item, dict):
        raise PromptFileError(path, f"a case must be a JSON object, got {type(item).__name__}", line=line, fix=_CASE_FIX)
    return case_of(path, line, item)


def case_of(path: Path, line: int, item: Mapping[str, Any]) -> LabelledCase:
    """One labelled case from its fields (a labels line, or a judge file's demo); every problem
    names the file, line, field and fix."""
    unknown = [k for k in item if k not in LABEL_FIELDS]
    if unknown:
        raise PromptFileError(path, f"unknown field {unknown[0]!r}; allowed: {', '.join(LABEL_FIELDS)}",
                              line=line, field=unknown[0], fix="remove or rename the field")
    output = item.get("output")
    if not isinstance(output, str) or not output.strip():
        problem = "missing output" if output is None else f"output must be non-empty text, got {output!r}"
        raise PromptFileError(path, problem, line=line, field="output",
                              fix="give the text the judge grades as \"output\": \"...\"")
    return LabelledCase(line, output, _score(path, line, item.get("verdict")), _optional_text(path, line, item, "expected"),
                        _inputs(path, line, item.get("inputs")), _optional_text(path, line, item, "note") or "")


def _score(path: Path, line: int, verdict: Any) -> float:
    if isinstance(verdict, str) and verdict.strip().casefold() in ("pass", "fail"):
        return 1.0 if verdict.strip().casefold() == "pass" else 0.0
    if isinstance(verdict, (int, float)) and not isinstance(verdict, bool) and 0 <= verdict <= 1:
        return float(verdict)
    problem = "missing verdict" if verdict is None else f"unknown verdict {verdict!r}"
    raise PromptFileError(path, problem, line=line, field="verdict",
                          fix='write "verdict": "pass", "verdict": "fail", or a score from 0 to 1')


def _optional_text(path: Path, line: int, item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is None or isinstance(value, str):
        return value
    raise PromptFileError(path, f"{key} must be text, got {type(value).__name__}", line=line, field=key,
                          fix=f'write "{key}": "..." or leave it out')


def _inputs(path: Path, line: int, value: Any) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PromptFileError(path, f"inputs must be a JSON object, got {type(value).__name__}", line=line,
                              field="inputs", fix='write "inputs": {"name": "value"} or leave it out')
    return {str(k): str(v) for k, v in value.items()}
