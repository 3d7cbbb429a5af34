"""Hooks other plugins (and conftest files) implement to extend pytest-promptopt."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ..optimize.base import StrategyFactory

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_promptopt_strategies() -> dict[str, StrategyFactory]:
    """Register optimization strategies: return ``{name: factory}``.

    ``--optimize-strategy NAME`` picks one; ``factory()`` must return an object implementing
    :class:`pytest_promptopt.optimize.base.Strategy`. The built-in strategies (auto, gradsum,
    mipro) are registered through this same hook; registering a name that is already taken is
    a usage error. Implement it in a plugin or in a conftest.py that pytest loads at start-up
    (the rootdir's or the test folder's given on the command line).
    """
