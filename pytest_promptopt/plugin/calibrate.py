"""`--promptopt-calibrate`: calibrate every judge file instead of running the tests.

Judge files: the `Judge` values the collected test modules hold (what `load_judge` returned at
import), and `judges/*.yaml` under the rootdir. Each with a labelled set is run over it, and its
card is written next to it; one without labels is listed as skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ..defaults import JUDGE_SEARCH
from ..errors import PromptOptError
from ..optimize.judges import JudgeSearch, JudgeTuner
from ..prompts.judgefile import Judge, load_judge
from ..prompts.prompt import YAML_SUFFIXES
from .progress import write_apart
from .session import session_of


def collected_judges(session: pytest.Session) -> list[Judge]:
    found: dict[str, Judge] = {}
    modules = {id(m): m for m in (getattr(item, "module", None) for item in session.items) if m is not None}
    for module in modules.values():
        for value in vars(module).values():
            if isinstance(value, Judge):
                found.setdefault(value.key, value)
    folder = Path(session.config.rootpath) / "judges"
    for path in sorted(folder.glob("*")) if folder.is_dir() else ():
        if path.suffix.lower() in YAML_SUFFIXES and str(path.resolve()) not in found:
            judge = load_judge(path)
            found[judge.key] = judge
    return sorted(found.values(), key=lambda j: j.key)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    promptopt = session_of(session.config)
    settings = promptopt.settings
    if not (settings.calibrate or settings.optimize_judges) or promptopt.is_worker:
        return None
    flag = "--promptopt-optimize-judges" if settings.optimize_judges else "--promptopt-calibrate"
    lines: list[tuple[str, bool]] = []
    try:
        judges = collected_judges(session)
        for judge in judges:
            if judge.labels_path is None:
                lines.append((f"{judge.path.name}: skipped, no labels: in the judge file", False))
                continue
            lines += _tune(promptopt, judge) if settings.optimize_judges else _calibrate(promptopt, judge)
    except PromptOptError as exc:
        raise pytest.UsageError(f"{flag}: {exc}") from None
    if not judges:
        lines.append(("no judge files found: load them in test modules (load_judge) or keep them in judges/", True))
    promptopt.calibration_lines = lines
    return True  # calibration only: no test runs


def _calibrate(promptopt: Any, judge: Judge) -> list[tuple[str, bool]]:
    result = promptopt.runtime.judges.calibrate(judge)
    return [(result.line(), False), *((f"  warning: {w}", True) for w in result.card.warnings)]


def _tune(promptopt: Any, judge: Judge) -> list[tuple[str, bool]]:
    runtime = promptopt.runtime
    settings = promptopt.settings
    search = JudgeSearch.of(JUDGE_SEARCH[settings.optimize.preset], seed=settings.optimize.seed)
    reporter = promptopt.config.pluginmanager.get_plugin("terminalreporter")

    def log(line: str) -> None:
        if reporter is not None:
            write_apart(reporter, f"promptopt: judge tuning: {line}")
    tuner = JudgeTuner(runtime.judges, runtime.client("optimizer"), objective=settings.judge_objective,
                       search=search, mode=runtime.judge_mode, log=log)
    tuning = tuner.tune(judge)
    return [(line, False) for line in tuning.lines()] + [(line, False) for line in tuning.diff.splitlines()]


__all__: list[Any] = ["collected_judges", "pytest_runtestloop"]
