"""The shared reply tier through real pytest runs against the scripted server: two machines'
worth of local caches over one shared tier (a directory, Redis), replay from the shared tier,
an unreachable tier and a planted entry."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from pytest_promptopt.llm.cache import ChatRequest, ReplyCache
from pytest_promptopt.testing import ScriptedServer

TEXTS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
ECHO = "messages:\n  - role: user\n    content: '{text}'\n"
TESTS = f"""
import pytest
from pytest_promptopt import load_prompt
p = load_prompt("echo.yaml")

@pytest.mark.parametrize("text", {TEXTS!r})
def test_echo(llm, text):
    assert llm(p, text=text) == "echo: " + text
"""
WARNING = "continuing with the local cache only"


def echo(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    return "echo: " + messages[-1]["content"]


@pytest.fixture
def echo_suite(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    scripted.responder = echo
    suite.makefile(".yaml", echo=ECHO)
    suite.makepyfile(test_echo=TESTS)
    return suite


def run(suite: pytest.Pytester, cache: str, shared: str, *extra: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    result = suite.runpytest(f"--promptopt-cache-dir={cache}", f"--promptopt-shared-cache={shared}",
                             "--promptopt-report=r.json", "-p", "no:cacheprovider", *extra)
    return result, json.loads((suite.path / "r.json").read_text())


@pytest.mark.parametrize("backend", ["directory", "redis"])
def test_a_second_machine_sends_no_request(echo_suite: pytest.Pytester, scripted: ScriptedServer,
                                           backend: str, request: pytest.FixtureRequest) -> None:
    shared = str(echo_suite.path / "team-cache") if backend == "directory" else request.getfixturevalue("redis_url")
    first, report = run(echo_suite, "machine-a", shared)
    first.assert_outcomes(passed=6)
    assert scripted.count == 6 and report["cache_tiers"] == {"local": 0, "shared": 0}
    second, report = run(echo_suite, "machine-b", shared)
    second.assert_outcomes(passed=6)
    assert scripted.count == 6, "the second machine sent requests although the shared tier held every reply"
    assert report["cache"] == {"hits": 6, "calls": 6}
    assert report["cache_tiers"] == {"local": 0, "shared": 6}
    third, report = run(echo_suite, "machine-b", shared)  # now all in machine-b's own cache
    third.assert_outcomes(passed=6)
    assert scripted.count == 6 and report["cache_tiers"] == {"local": 6, "shared": 0}


def test_replay_is_served_by_the_shared_tier(echo_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    shared = str(echo_suite.path / "team-cache")
    run(echo_suite, "machine-a", shared)[0].assert_outcomes(passed=6)
    result, report = run(echo_suite, "fresh", shared, "--promptopt-record=replay")
    result.assert_outcomes(passed=6)
    assert scripted.count == 6 and report["cache_tiers"]["shared"] == 6
    assert len(ReplyCache(echo_suite.path / "fresh")) == 0  # replay writes nothing locally


def test_the_ini_key_sets_the_shared_tier(echo_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    ini = echo_suite.path / "tox.ini"
    ini.write_text(ini.read_text().rstrip("\n") + "\npromptopt_shared_cache = team-cache\n")
    echo_suite.runpytest("--promptopt-cache-dir=a", "-p", "no:cacheprovider").assert_outcomes(passed=6)
    assert len(list((echo_suite.path / "team-cache").rglob("*.json"))) == 6
    echo_suite.runpytest("--promptopt-cache-dir=b", "-p", "no:cacheprovider").assert_outcomes(passed=6)
    assert scripted.count == 6


def test_an_unreachable_tier_warns_once_and_fails_no_test(echo_suite: pytest.Pytester,
                                                          scripted: ScriptedServer) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result, report = run(echo_suite, "local", f"redis://127.0.0.1:{port}/0")
    result.assert_outcomes(passed=6)
    assert result.stdout.str().count(WARNING) == 1, result.stdout.str()
    assert scripted.count == 6 and report["cache_tiers"] == {"local": 0, "shared": 0}


def test_a_planted_shared_entry_is_a_miss(echo_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    shared = echo_suite.path / "team-cache"
    request = ChatRequest.build("scripted", [{"role": "user", "content": "alpha"}],
                                served_by=scripted.base_url.rstrip("/"))
    run(echo_suite, "a", str(shared))[0].assert_outcomes(passed=6)
    entry = shared / request.cache_key[:2] / f"{request.cache_key}.json"
    assert entry.exists(), "the shared key is the local cache's request key"
    entry.write_text(json.dumps({"v": 2, "text": "echo: planted", "prompt_tokens": -1}))
    result, report = run(echo_suite, "b", str(shared))
    result.assert_outcomes(passed=6)  # the planted reply was not served
    assert scripted.count == 7 and report["cache_tiers"] == {"local": 0, "shared": 5}


def test_a_missing_backend_package_is_a_usage_error(echo_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a))
    result = echo_suite.runpytest("--promptopt-shared-cache=redis://:pw@127.0.0.1:1/0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*promptopt_shared_cache*redis*pytest-promptopt[[]shared[]]*"])
    assert ":pw@" not in result.stderr.str()


def test_xdist_workers_count_their_shared_hits(echo_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    shared = str(echo_suite.path / "team-cache")
    run(echo_suite, "machine-a", shared)[0].assert_outcomes(passed=6)
    result, report = run(echo_suite, "machine-b", shared, "-n", "2")
    result.assert_outcomes(passed=6)
    assert scripted.count == 6 and report["cache_tiers"] == {"local": 0, "shared": 6}
