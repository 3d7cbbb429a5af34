"""The round trip the plugin tests repeat: write a prompt file and a test module, run pytest with
the plugin against the scripted server, read the JSON report and the files afterwards.

    example = Example(suite, {"shout.yaml": SHOUT}, tests=TESTS)
    result = example.run_pytest("--promptopt-min-pass-rate=0.9")
    result.assert_outcomes(passed=2, failed=1)
    assert result.report["prompts"][0]["passed"] == 2

`suite` (tests/conftest.py) is a pytester dir whose ini points the plugin at the `scripted`
server; any pytester works. Files are written when the Example is made (and by `write`), not at
each run, so a second run sees what the first one wrote back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPORT_OPTION = "--promptopt-report"


@dataclass(frozen=True)
class Result:
    """What one run left: its exit code, outcome counts, JSON report and files."""

    run: pytest.RunResult
    written_report: dict[str, Any] | None  # None when the run wrote none (a usage error, report=None)
    files_after: dict[str, str]  # each file the Example wrote, as it is after the run ("" if deleted)

    @property
    def report(self) -> dict[str, Any]:
        """The JSON report this run wrote; a run that wrote none fails the test with its output."""
        if self.written_report is None:
            raise AssertionError("the run wrote no JSON report; its output:\n" + "\n".join(self.run.outlines))
        return self.written_report

    @property
    def ret(self) -> int:
        return int(self.run.ret)

    @property
    def outcomes(self) -> dict[str, int]:
        """pytest's summary counts ({"passed": 2, "failed": 1}); {} when there is no summary line."""
        try:
            return self.run.parseoutcomes()
        except ValueError:
            return {}

    @property
    def stdout(self) -> pytest.LineMatcher:
        return self.run.stdout

    @property
    def stderr(self) -> pytest.LineMatcher:
        return self.run.stderr

    @property
    def outlines(self) -> list[str]:
        return self.run.outlines

    def assert_outcomes(self, **counts: int) -> None:
        self.run.assert_outcomes(**counts)


class Example:
    """Files in a pytester dir, and pytest runs on them (after inline-snapshot's `Example`)."""

    def __init__(self, pytester: pytest.Pytester, files: Mapping[str, str] | None = None, *,
                 tests: str | None = None) -> None:
        self.pytester = pytester
        self.written: list[str] = []
        self.write(files or {}, tests=tests)

    @property
    def path(self) -> Path:
        return self.pytester.path

    def write(self, files: Mapping[str, str], *, tests: str | None = None) -> None:
        """Write `files` (name -> text, dedented and stripped as pytester's makefile does) and
        `tests`, a test module named after the running test (as `makepyfile(source)` names it)."""
        for name, text in files.items():
            suffix = Path(name).suffix
            stem = name[: -len(suffix)] if suffix else name
            if suffix and "." not in Path(stem).name:
                self.pytester.makefile(suffix, **{stem: text})
            else:  # makefile would cut the name at its first dot: written as given
                (self.path / name).parent.mkdir(parents=True, exist_ok=True)
                (self.path / name).write_text(text, encoding="utf-8")
            self._remember(name)
        if tests is not None:
            self._remember(self.pytester.makepyfile(tests).name)

    def _remember(self, name: str) -> None:
        if name not in self.written:
            self.written.append(name)

    def run_pytest(self, *args: str, report: str | None = "report.json", subprocess: bool = False) -> Result:
        """Run pytest with `args` (in process unless `subprocess`) and read the JSON report: at
        `report` (added as --promptopt-report), or where `args` already ask for it."""
        path = _report_path(args, report)
        if path is not None and REPORT_OPTION not in " ".join(args):
            args = (*args, f"{REPORT_OPTION}={path}")
        if path is not None:
            (self.path / path).unlink(missing_ok=True)  # a stale report must not pass for this run's
        run = self.pytester.runpytest_subprocess(*args) if subprocess else self.pytester.runpytest(*args)
        written = self.path / path if path is not None else None
        data = json.loads(written.read_text(encoding="utf-8")) if written is not None and written.exists() else None
        return Result(run, data, {name: self._read(name) for name in self.written})

    def _read(self, name: str) -> str:
        file = self.path / name
        return file.read_text(encoding="utf-8") if file.exists() else ""


def _report_path(args: tuple[str, ...], default: str | None) -> str | None:
    """The report file `args` name (`--promptopt-report=x` or `--promptopt-report x`), else `default`."""
    for i, arg in enumerate(args):
        if arg.startswith(REPORT_OPTION + "="):
            return arg.split("=", 1)[1]
        if arg == REPORT_OPTION and i + 1 < len(args):
            return args[i + 1]
    return default
