"""Baseline files: what a run's cases did, per prompt, saved as diff-friendly JSON to commit.

A baseline holds, per prompt file (path relative to the rootdir) and per test case (node id):
the verdict, the score, the prompt's output and the prompt file's digest. Keys are sorted and
one value sits per line, so a team reviews a baseline change like any other diff.

`snapshot` turns a run's case outcomes into a `Baseline`, `dumps`/`save` write it, `load`
reads one back (None when the file does not exist; `BaselineError` naming the file, the field
and the fix when it cannot be read).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..errors import ConfigError
from ..userfiles import UserFileError, parse_json, read_text
from .record import JUDGE_KEY, CaseOutcome, bounded

BASELINE_FORMAT = "pytest-promptopt baseline"
BASELINE_VERSION = 1
VERDICTS = ("passed", "failed")
MAX_BASELINE_FILE_BYTES = 100_000_000  # outputs are cut to a bound per case; 100 MB is ~100,000 cases


class BaselineError(ConfigError):
    """A baseline file exists but cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class BaselineCase:
    nodeid: str
    passed: bool
    score: float
    output: str
    judged: bool = False  # the score is a judge score (compared as a number, not only pass/fail)
    message: str = ""  # why it failed, in this run only: not saved (it would make diffs noisy)
    checked: bool = False  # a deterministic checks.* call scored it (a 1/0 score, not a judge's)

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "score": round(self.score, 4), "output": self.output,
                "judged": self.judged, "checked": self.checked}


@dataclass(frozen=True)
class PromptCases:
    prompt: str  # the prompt file, relative to the rootdir with '/' separators
    digest: str  # sha256 of the prompt file's bytes ("" if unknown)
    cases: Mapping[str, BaselineCase]


@dataclass(frozen=True)
class Baseline:
    prompts: Mapping[str, PromptCases]

    @property
    def case_count(self) -> int:
        return sum(len(p.cases) for p in self.prompts.values())


def prompt_name(key: str, root: Path) -> str:
    """A prompt key (absolute path) as the baseline names it: relative to the rootdir, so a
    baseline committed on one machine matches a checkout on another."""
    path = Path(key)
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def snapshot(outcomes: Iterable[CaseOutcome], root: Path) -> Baseline:
    """The run's cases grouped by the prompts they called (the judge is not a prompt)."""
    grouped: dict[str, dict[str, BaselineCase]] = {}
    digests: dict[str, str] = {}
    for outcome in outcomes:
        if outcome.xfail:  # an expected failure is neither a pass nor a failure to compare
            continue
        for key in outcome.usage:
            if key == JUDGE_KEY:
                continue
            name = prompt_name(key, root)
            output = outcome.output_of(key)
            grouped.setdefault(name, {})[outcome.nodeid] = BaselineCase(
                outcome.nodeid, outcome.passed, outcome.score, bounded(output or ""), outcome.judged,
                outcome.message or outcome.error, outcome.checked)
            digests[name] = outcome.digests.get(key, "") or digests.get(name, "")
    return Baseline({name: PromptCases(name, digests[name], cases) for name, cases in grouped.items()})


def dumps(baseline: Baseline) -> str:
    payload = {
        "format": BASELINE_FORMAT,
        "version": BASELINE_VERSION,
        "prompts": {name: {"digest": p.digest, "cases": {n: c.to_json() for n, c in p.cases.items()}}
                    for name, p in baseline.prompts.items()},
    }
    return json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def save(baseline: Baseline, path: Path) -> None:
    """Write atomically: a baseline is committed, a half-written one would break the next CI run."""
    write_text_atomic(path, dumps(baseline))


def missing_message(path: Path) -> str:
    return (f"baseline {path} does not exist, so this run is not compared with one; "
            f"write it with --promptopt-save-baseline {path} (on the commit the baseline stands for)")


def load(path: Path) -> Baseline | None:
    """The baseline at `path`, or None when there is no such file."""
    try:
        text, _ = read_text(path, limit=MAX_BASELINE_FILE_BYTES, what="baseline")
        data = parse_json(path, text, what="baseline", fix=_recreate(path))
    except FileNotFoundError:
        return None
    except UserFileError as exc:
        raise BaselineError(str(exc)) from None
    return parse(data, path)


def _recreate(path: Path) -> str:
    return (f"re-create it with `pytest --promptopt-save-baseline {path}` on the commit it stands for "
            "(e.g. the main branch) and commit the new file")


def parse(data: Any, path: Path) -> Baseline:
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        what = "a pytest-promptopt JSON run report (--promptopt-report)" if _looks_like_report(data) \
            else "not a pytest-promptopt baseline"
        raise BaselineError(f"{path}: this file is {what} (field 'format' is not {BASELINE_FORMAT!r}); "
                            f"fix: {_recreate(path)}")
    version = data.get("version")
    if version != BASELINE_VERSION:
        raise BaselineError(f"{path}: baseline layout version {version!r} is not the one this pytest-promptopt reads "
                            f"({BASELINE_VERSION}); fix: {_recreate(path)}")
    prompts = _field(data, "prompts", dict, path, "prompts")
    return Baseline({name: _parse_prompt(name, entry, path) for name, entry in sorted(prompts.items())})


def _looks_like_report(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("tests"), list) and isinstance(data.get("prompts"), list)


def _parse_prompt(name: str, entry: Any, path: Path) -> PromptCases:
    where = f"prompts[{name!r}]"
    if not isinstance(entry, dict):
        raise _bad(path, where, "an object with 'digest' and 'cases'", entry)
    digest = _field(entry, "digest", str, path, f"{where}.digest")
    cases = _field(entry, "cases", dict, path, f"{where}.cases")
    return PromptCases(name, digest, {nodeid: _parse_case(nodeid, case, path, f"{where}.cases[{nodeid!r}]")
                                      for nodeid, case in sorted(cases.items())})


def _parse_case(nodeid: str, case: Any, path: Path, where: str) -> BaselineCase:
    if not isinstance(case, dict):
        raise _bad(path, where, "an object with 'verdict', 'score', 'output', 'judged' and 'checked'", case)
    verdict = case.get("verdict")
    if verdict not in VERDICTS:
        raise _bad(path, f"{where}.verdict", '"passed" or "failed"', verdict)
    score = case.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
        raise _bad(path, f"{where}.score", "a number from 0 to 1", score)
    output = _field(case, "output", str, path, f"{where}.output")
    judged, checked = (_flag(case, name, path, where) for name in ("judged", "checked"))
    return BaselineCase(nodeid, verdict == "passed", float(score), output, judged, checked=checked)


def _flag(case: dict[str, Any], name: str, path: Path, where: str) -> bool:
    """A true/false field of a case; absent is false ("checked" is newer than the format's
    version 1: a baseline saved before it still loads, its cases not marked as checked)."""
    value = case.get(name, False)
    if not isinstance(value, bool):
        raise _bad(path, f"{where}.{name}", "true or false", value)
    return value


def _field(data: dict[str, Any], name: str, kind: type, path: Path, where: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind):
        raise _bad(path, where, {dict: "an object", str: "a string"}.get(kind, kind.__name__), value)
    return value


def _bad(path: Path, where: str, expected: str, got: Any) -> BaselineError:
    shown = "nothing" if got is None else repr(got)[:80]
    return BaselineError(f"{path}: field {where}: expected {expected}, got {shown}; fix: correct the field, "
                         f"or {_recreate(path)}")


__all__ = ["BASELINE_FORMAT", "BASELINE_VERSION", "Baseline", "BaselineCase", "BaselineError", "PromptCases",
           "dumps", "load", "missing_message", "parse", "prompt_name", "save", "snapshot"]
