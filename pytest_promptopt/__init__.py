"""pytest-promptopt: prompt regression testing and automatic prompt tuning for pytest."""

from __future__ import annotations

from .errors import PromptFileError, PromptOptError, TemplateError
from .prompts.judgefile import Judge, load_judge
from .prompts.prompt import Demo, Prompt, load_prompt
from .run import checks
from .run.record import Verdict
from .run.runtime import LLM, JudgeCall

__all__ = [
    "LLM", "Demo", "Judge", "JudgeCall", "Prompt", "PromptFileError", "PromptOptError", "TemplateError", "Verdict",
    "checks", "load_judge", "load_prompt",
]
__version__ = "0.1.0"
