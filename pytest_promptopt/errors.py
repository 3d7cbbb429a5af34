"""Errors raised by the core. The pytest layer turns them into usage errors or failed tests."""

from __future__ import annotations

from pathlib import Path


class PromptOptError(Exception):
    """Base class of every error this package raises on purpose."""


class PromptFileError(PromptOptError):
    """A prompt file (or a template inside it) is invalid.

    The message always names the file, the field (and line where known) and the fix.
    """

    def __init__(
        self,
        path: Path | str | None,
        problem: str,
        *,
        field: str | None = None,
        line: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        self.field = field
        self.line = line
        self.fix = fix
        where = str(self.path) if self.path is not None else "<template>"
        if line is not None:
            where += f":{line}"
        if field:
            where += f" (field {field!r})"
        message = f"{where}: {problem}"
        if fix:
            message += f"\n  fix: {fix}"
        super().__init__(message)


class TemplateError(PromptFileError):
    """A template uses syntax the safe renderer refuses, or its variables do not match."""


class WriteBackError(PromptOptError):
    """A prompt file could not be rewritten; the file on disk is unchanged."""


class CacheMissError(PromptOptError, AssertionError):
    """Replay mode found no recorded reply. Subclasses AssertionError so the test fails."""


class EndpointError(PromptOptError, AssertionError):
    """An LM endpoint failed after retries. It fails the test that made the call."""

    def __init__(self, message: str, *, base_url: str, model: str, retryable: bool) -> None:
        self.base_url = base_url
        self.model = model
        self.retryable = retryable
        super().__init__(message)


class JudgeError(PromptOptError, AssertionError):
    """The judge reply had no score we could read. The test fails with the raw reply."""


class ConfigError(PromptOptError):
    """A setting has a value we cannot use."""


class LocalModelError(PromptOptError):
    """The embedded model server could not be started."""


class BudgetExhausted(PromptOptError):
    """The optimizer reached its LM-call or token cap."""
