"""A broken, read-only, old or shared cache, through real pytest runs against the scripted server.

A cache that cannot be used means one clear warning and an uncached run; it never means a wrong
answer. Many xdist workers writing one cache lose nothing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache
import pytest
from example import Example

from pytest_promptopt.llm.cache import ChatRequest, Reply, ReplyCache
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

WARNING = "continuing without the cache"


def echo(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    return "echo: " + messages[-1]["content"]


@pytest.fixture
def cached_suite(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    scripted.responder = echo
    suite.makefile(".yaml", echo=ECHO)
    suite.makepyfile(test_echo=TESTS)
    return suite


def request_for(text: str) -> ChatRequest:
    return ChatRequest.build("scripted", [{"role": "user", "content": text}])


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_cache_database_one_warning_right_answers(
    cached_suite: pytest.Pytester, scripted: ScriptedServer, damage: str
) -> None:
    cache_dir = cached_suite.path / ".promptopt_cache"
    cached_suite.runpytest().assert_outcomes(passed=len(TEXTS))
    databases = sorted(cache_dir.rglob("cache.db"))  # the replies, and each test's logged calls
    assert [d.parent.name for d in databases] == ["calls", "replies"]
    for database in databases:
        data = database.read_bytes()
        database.write_bytes(b"not a database " * 100 if damage == "garbage" else data[: len(data) // 2])
    for leftover in cache_dir.rglob("cache.db-*"):  # the write-ahead log would repair the cut
        leftover.unlink()
    sent = scripted.count
    result = cached_suite.runpytest()
    result.assert_outcomes(passed=len(TEXTS))  # every answer right, from the endpoint or intact entries
    assert "INTERNALERROR" not in result.stdout.str()
    warnings = result.stdout.str().count(WARNING)
    assert warnings == 1
    result.stdout.fnmatch_lines([f"*promptopt: cannot use the cache folder {cache_dir}: *; {WARNING}"])
    assert scripted.count == sent + len(TEXTS)


def test_cache_written_by_an_older_version_is_never_served(
    cached_suite: pytest.Pytester, scripted: ScriptedServer
) -> None:
    store = diskcache.Cache(str(cached_suite.path / ".promptopt_cache" / "replies"))
    for i, text in enumerate(TEXTS):
        # an older record layout, a bare string and a pickle of something else, under today's keys
        store.set(request_for(text).cache_key, [{"v": 0, "text": "WRONG"}, "WRONG", ("WRONG", 1)][i % 3])
    store.close()
    result = cached_suite.runpytest()
    result.assert_outcomes(passed=len(TEXTS))
    assert scripted.count == len(TEXTS)
    # and it is rebuilt: the next run is served from the cache
    cached_suite.runpytest("--promptopt-record=replay").assert_outcomes(passed=len(TEXTS))
    assert scripted.count == len(TEXTS)


@contextlib.contextmanager
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    """A real read-only file system (a tmpfs remounted read-only) holding a seeded cache."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only file system needs root (test_cache.py covers a read-only folder)")
    mount = tmp_path / "ro-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        cache = ReplyCache(mount / "cache")
        cache.put(request_for(TEXTS[0]), Reply("echo: " + TEXTS[0]))
        cache.close()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)
        yield mount / "cache"
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_cache_on_a_read_only_disk_runs_with_one_warning(
    cached_suite: pytest.Pytester, scripted: ScriptedServer, tmp_path: Path
) -> None:
    with read_only_disk(tmp_path) as cache_dir:
        with pytest.raises(OSError):
            (cache_dir / "probe").write_text("x")  # it really is read-only
        result = cached_suite.runpytest(f"--promptopt-cache-dir={cache_dir}")
        result.assert_outcomes(passed=len(TEXTS))
        assert "INTERNALERROR" not in result.stdout.str()
        assert result.stdout.str().count(WARNING) == 1
        result.stdout.fnmatch_lines([f"*promptopt: cannot use the cache folder {cache_dir}: *; {WARNING}"])
        assert scripted.count == len(TEXTS)  # uncached: every call sent
        again = cached_suite.runpytest(f"--promptopt-cache-dir={cache_dir}")
        again.assert_outcomes(passed=len(TEXTS))  # nothing was written, nothing breaks
        assert scripted.count == 2 * len(TEXTS)


# -- many xdist workers, one cache ----------------------------------------------------------------

MANY = 320


def test_xdist_workers_writing_one_cache_lose_nothing(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = echo
    example = Example(suite, {"echo.yaml": ECHO}, tests=f"""
        import pytest
        from pytest_promptopt import load_prompt
        p = load_prompt("echo.yaml")

        @pytest.mark.parametrize("i", range({MANY}))
        def test_echo(llm, i):
            assert llm(p, text=f"case {{i}}") == f"echo: case {{i}}"
        """)
    recorded = example.run_pytest("-n", "4", "--promptopt-report=record.json")
    recorded.assert_outcomes(passed=MANY)
    assert WARNING not in recorded.stdout.str()
    assert scripted.count == MANY
    report = recorded.report
    assert report["cache"] == {"hits": 0, "calls": MANY}
    cache = ReplyCache(suite.path / ".promptopt_cache")
    try:
        assert len(cache) == MANY
    finally:
        cache.close()
    # replay: every call served from the cache, none sent, none missing
    replayed = example.run_pytest("--promptopt-record=replay", "--promptopt-report=replay.json")
    replayed.assert_outcomes(passed=MANY)
    assert scripted.count == MANY
    assert replayed.report["cache"] == {"hits": MANY, "calls": MANY}
