"""pytest-promptopt: prompt regression testing and automatic prompt tuning for pytest."""

from __future__ import annotations

from . import checks
from .errors import PromptFileError, PromptOptError, TemplateError
from .prompts import Demo, Prompt, load_prompt
from .record import Verdict

__all__ = ["Demo", "Prompt", "PromptFileError", "PromptOptError", "TemplateError", "Verdict", "checks", "load_prompt"]
__version__ = "0.1.0"
