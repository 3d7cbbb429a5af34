"""Hooks other plugins can implement to extend pytest-promptopt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .optimize.base import Strategy

hookspec = pluggy.HookspecMarker("pytest")


@hookspec(firstresult=True)
def pytest_promptopt_strategy(name: str, config: Any) -> Strategy | None:
    """Return an optimization strategy for ``--optimize-strategy NAME``, or None to pass.

    The built-in strategies (auto, gradsum, mipro) are used when no plugin answers.
    A strategy implements the :class:`pytest_promptopt.optimize.base.Strategy` protocol.
    """

