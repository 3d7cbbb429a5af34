"""The `promptopt` marker: its keywords merged over module, class and function, and checked.

The pytest layer passes the keyword dicts of every `promptopt` marker on a test, closest first
(`item.iter_markers`); a closer level overrides a farther one keyword by keyword, so a class-level
`promptopt(holdout=True)` survives a function's own `promptopt(threshold=0.9)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import ConfigError

KEYWORDS = ("repeats", "min_passes", "threshold", "holdout")
MARKER_HELP = (
    "promptopt(repeats=1, min_passes=None, threshold=None, holdout=False): run the test `repeats` "
    "times and pass when at least `min_passes` runs pass (default: all); `threshold` is the default "
    "for judge(); holdout=True scores the test in every run but never uses it for --optimize"
)


@dataclass(frozen=True)
class MarkerOptions:
    repeats: int = 1
    min_passes: int = 1
    threshold: float | None = None
    holdout: bool = False


def marker_options(levels: Iterable[tuple[tuple[object, ...], Mapping[str, object]]]) -> MarkerOptions:
    """(args, kwargs) of each `promptopt` marker, closest first -> the merged, checked options."""
    merged: dict[str, object] = {}
    for args, kwargs in levels:
        if args:
            raise ConfigError(f"promptopt{args!r}: the marker takes keywords only ({', '.join(KEYWORDS)}); "
                              "write e.g. promptopt(repeats=5, min_passes=3)")
        unknown = sorted(set(kwargs) - set(KEYWORDS))
        if unknown:
            raise ConfigError(f"promptopt({unknown[0]}=...): unknown keyword {unknown[0]!r}; allowed: "
                              f"{', '.join(KEYWORDS)}")
        for key, value in kwargs.items():
            merged.setdefault(key, value)
    repeats, min_passes = repeat_plan(merged)
    return MarkerOptions(repeats, min_passes, _threshold(merged.get("threshold")), _holdout(merged.get("holdout", False)))


def _threshold(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"promptopt(threshold={value!r}): threshold must be a number from 0 to 1; "
                          "write e.g. promptopt(threshold=0.8)")
    return float(value)


def _holdout(value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"promptopt(holdout={value!r}): holdout must be True or False")
    return value


def repeat_plan(kwargs: Mapping[str, object]) -> tuple[int, int]:
    """(repeats, min_passes) of a `promptopt` marker's keyword arguments; min_passes defaults to repeats."""
    repeats = kwargs.get("repeats", 1)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ConfigError(f"promptopt(repeats={repeats!r}): repeats must be a whole number of at least 1; "
                          "write e.g. promptopt(repeats=5, min_passes=3)")
    if "min_passes" not in kwargs:
        return repeats, repeats
    min_passes = kwargs["min_passes"]
    problem = f"promptopt(min_passes={min_passes!r}) must be from 1 to repeats={repeats}"
    if not isinstance(min_passes, int) or isinstance(min_passes, bool) or min_passes < 1:
        raise ConfigError(f"{problem}; make min_passes a whole number from 1 to {repeats}")
    if min_passes <= repeats:
        return repeats, min_passes
    if "repeats" not in kwargs:
        raise ConfigError(f"{problem} (repeats is not set, so the test runs once and min_passes would be ignored); "
                          f"add repeats=N with N >= {min_passes}, e.g. "
                          f"promptopt(repeats={min_passes}, min_passes={min_passes})")
    raise ConfigError(f"{problem}; raise repeats to at least {min_passes} or lower min_passes to at most {repeats}")


