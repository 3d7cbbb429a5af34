"""The built-in strategies, registered through the same hook a third-party plugin implements
(`pytest_promptopt_strategies`), and the registry that merges every plugin's answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

import pluggy

from ..defaults import PRESETS
from ..errors import ConfigError
from .base import Strategy, StrategyFactory
from .gradsum import GradSum
from .mipro import Mipro, auto

hookimpl = pluggy.HookimplMarker("pytest")


@hookimpl
def pytest_promptopt_strategies() -> dict[str, StrategyFactory]:
    return {"auto": auto, "gradsum": GradSum, "mipro": Mipro}


def registry(answers: Iterable[Mapping[str, StrategyFactory]]) -> dict[str, StrategyFactory]:
    """Every plugin's strategies by name; a name registered twice is an error."""
    out: dict[str, StrategyFactory] = {}
    for answer in answers:
        for name, factory in answer.items():
            if name in out and out[name] is not factory:
                raise ConfigError(f"two plugins register an optimization strategy named {name!r}; "
                                  "rename one of them")
            out[name] = factory
    return out


def choose(strategies: Mapping[str, StrategyFactory], name: str) -> StrategyFactory:
    if name not in strategies:
        raise ConfigError(f"--optimize-strategy {name!r} is not a registered strategy; choose one of "
                          f"{', '.join(sorted(strategies))} (plugins add more with the "
                          "pytest_promptopt_strategies hook)")
    return strategies[name]


def with_preset(strategy: Strategy, preset: str) -> Strategy:
    """A built-in strategy sized by the preset's knobs; a plugin's strategy as it is."""
    if isinstance(strategy, GradSum):
        return replace(strategy, **PRESETS[preset].gradsum)
    if isinstance(strategy, Mipro):
        return replace(strategy, **PRESETS[preset].mipro)
    return strategy
