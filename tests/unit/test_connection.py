"""The one factory of HTTP clients (issue 31): every client of an endpoint is built by
`llm/connection.py`, on the guarded transport, with its errors redacted."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest_promptopt

PACKAGE = Path(pytest_promptopt.__file__).parent
CLIENT_CONSTRUCTORS = {"OpenAI", "AsyncOpenAI", "AzureOpenAI", "DefaultHttpxClient", "Client", "AsyncClient",
                       "HTTPConnection", "HTTPSConnection", "urlopen"}
ALLOWED = {
    ("llm/connection.py", "OpenAI"), ("llm/connection.py", "DefaultHttpxClient"),  # the factory itself
    ("llm/local.py", "urlopen"),  # the embedded server's readiness probe: our own child on loopback
}


def _constructed(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in CLIENT_CONSTRUCTORS:
                names.add(name)
    return names


def test_every_http_client_is_built_by_the_one_factory() -> None:
    """Factory: no module but llm/connection.py builds an HTTP client of an endpoint (chat,
    embeddings, any later one), so none can skip the transport guards or the redaction."""
    found = {(path.relative_to(PACKAGE).as_posix(), name)
             for path in PACKAGE.rglob("*.py") for name in _constructed(path)}
    assert found - ALLOWED == set()
    assert ("llm/connection.py", "OpenAI") in found
