"""The fixtures a prompt test uses."""

from __future__ import annotations

import pytest

from ..run.runtime import LLM, JudgeCall, Runtime
from .session import session_of
from .stash import marker_of, record_of


@pytest.fixture
def llm(request: pytest.FixtureRequest) -> LLM:
    """Call a prompt: `llm(prompt, **variables) -> str`. Cached, traced, optimizable."""
    return LLM(session_of(request.config).runtime, record_of(request.node))


@pytest.fixture
def judge(request: pytest.FixtureRequest) -> JudgeCall:
    """LLM judge: `judge(output, criteria, expected=None, threshold=None) -> Verdict`."""
    threshold = marker_of(request.node).threshold
    return JudgeCall(session_of(request.config).runtime, record_of(request.node), threshold)


@pytest.fixture
def promptopt_runtime(request: pytest.FixtureRequest) -> Runtime:
    """The session's runtime (clients, cache, settings), for advanced use."""
    return session_of(request.config).runtime
