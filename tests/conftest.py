from __future__ import annotations

from collections.abc import Iterator

import openai  # the plugin imports it lazily; loaded here, pytester's in-process runs keep it
import optuna  # noqa: F401 - pytester's in-process runs drop new modules; numpy cannot be imported twice
import pytest

from pytest_promptopt.testing import ScriptedServer

# The openai client's HTTP stack imports its transport (and caches its exception map) on first
# use; loaded during a pytester run, it would be dropped afterwards and a later run's timeouts
# would escape the map. Creating one client here loads it for the whole session.
openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1").close()


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
