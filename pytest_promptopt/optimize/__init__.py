"""`pytest --optimize`: GRAD-SUM, MIPRO and the combined default strategy, against the Program
contract in `base`. Nothing in this package imports pytest."""

from __future__ import annotations

from .base import Candidate, Case, Evaluation, Feedback, OptimizationContext, Program, Strategy, StrategyResult
from .gradsum import GradSum
from .mipro import Mipro, auto

__all__ = ["Candidate", "Case", "Evaluation", "Feedback", "GradSum", "Mipro", "OptimizationContext", "Program",
           "Strategy", "StrategyResult", "auto"]
