from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai  # the plugin imports it lazily; loaded here, pytester's in-process runs keep it
import optuna  # noqa: F401 - pytester's in-process runs drop new modules; numpy cannot be imported twice
import pytest
import sklearn.metrics  # noqa: F401 - the same for scipy's numpy.fft, which judge calibration and tuning load

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


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server of its own on a free 127.0.0.1 port (no persistence), stopped at the end."""
    import shutil
    import socket
    import subprocess

    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server); the Redis backend is untested")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert server.stdout is not None
    for line in server.stdout:  # the server says when it accepts connections
        if "Ready to accept connections" in line:
            break
    else:
        pytest.fail(f"redis-server on port {port} exited with {server.wait()} before accepting connections")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()
