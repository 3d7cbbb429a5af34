from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_promptopt.testing import ScriptedServer


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    """A scripted OpenAI-compatible server on 127.0.0.1; tests set `.responder`."""
    with ScriptedServer() as server:
        yield server


@pytest.fixture
def suite(pytester: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    """A pytester dir whose ini points the plugin at the scripted server."""
    pytester.makeini(
        f"""
        [pytest]
        promptopt_base_url = {scripted.base_url}
        promptopt_model = scripted
        promptopt_retries = 1
        """
    )
    return pytester
