"""`pytest --optimize`: GRAD-SUM, MIPRO and the combined default strategy."""

from __future__ import annotations

from .base import Candidate, Case, CaseResult, Evaluation, OptimizationContext, Program, Strategy, StrategyResult
from .gradsum import GradSum
from .mipro import Mipro, auto

__all__ = ["Candidate", "Case", "CaseResult", "Evaluation", "GradSum", "Mipro", "OptimizationContext", "Program",
           "Strategy", "StrategyResult", "auto"]
