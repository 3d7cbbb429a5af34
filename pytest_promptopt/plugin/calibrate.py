"""`--promptopt-calibrate`: calibrate every judge file instead of running the tests.

Judge files: the `Judge` values the collected test modules hold (what `load_judge` returned at
import), and `judges/*.yaml` under the rootdir. Each with a labelled set is run over it, and its
card is written next to it; one without labels is listed as skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ..errors import PromptOptError
from ..prompts.judgefile import Judge, load_judge
from ..prompts.prompt import YAML_SUFFIXES
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
    if not promptopt.settings.calibrate or promptopt.is_worker:
        return None
    lines: list[tuple[str, bool]] = []
    try:
        judges = collected_judges(session)
        for judge in judges:
            if judge.labels_path is None:
                lines.append((f"{judge.path.name}: skipped, no labels: in the judge file", False))
                continue
            result = promptopt.runtime.judges.calibrate(judge)
            lines.append((result.line(), False))
            lines += [(f"  warning: {w}", True) for w in result.card.warnings]
    except PromptOptError as exc:
        raise pytest.UsageError(f"--promptopt-calibrate: {exc}") from None
    if not judges:
        lines.append(("no judge files found: load them in test modules (load_judge) or keep them in judges/", True))
    promptopt.calibration_lines = lines
    return True  # calibration only: no test runs


__all__: list[Any] = ["collected_judges", "pytest_runtestloop"]
