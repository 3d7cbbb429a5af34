"""Reply cache: keys, record modes through the real client and server, failure fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diskcache
import pytest

import pytest_promptopt.llm.cache as cache_module
from pytest_promptopt.llm.cache import ChatRequest, RecordMode, Reply, ReplyCache
from pytest_promptopt.llm.client import Endpoint, LMClient
from pytest_promptopt.errors import CacheMissError
from pytest_promptopt.testing import Fault, ScriptedServer

USER = [{"role": "user", "content": "What is 2+2?"}]


class Versioned:
    """A responder whose answers carry a version, so a refreshed reply is distinguishable."""

    def __init__(self) -> None:
        self.version = 1

    def __call__(self, messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        return f"v{self.version}: {messages[-1]['content']}"


@pytest.fixture
def responder() -> Versioned:
    return Versioned()


@pytest.fixture
def server(responder: Versioned) -> Iterator[ScriptedServer]:
    srv = ScriptedServer(responder).start()
    yield srv
    # stop() waits for the serve loop's 0.5 s poll; let it finish in the background.
    threading.Thread(target=srv.stop, daemon=True).start()


ClientFactory = Callable[..., LMClient]


@pytest.fixture
def make_client(server: ScriptedServer) -> Iterator[ClientFactory]:
    clients: list[LMClient] = []

    def make(cache: ReplyCache, *, api_key: str = "sk-test", max_retries: int = 2) -> LMClient:
        # Backoff sleeps are skipped: they are the client's business, tested in test_client.py.
        client = LMClient(Endpoint(server.base_url, "m", api_key=api_key), cache,
                          max_retries=max_retries, sleep=lambda s: None, timeout=10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
        client.cache.close()


def ask(client: LMClient, messages: list[dict[str, str]] = USER, **params: Any) -> Any:
    return client.complete(client.request(messages, params))


# -- keys -----------------------------------------------------------------------------------------


def key(**overrides: Any) -> str:
    args: dict[str, Any] = {"model": "m", "messages": USER, "params": {"temperature": 0.0}, "sample": 0}
    args.update(overrides)
    return ChatRequest.build(**args).cache_key


def test_key_is_stable() -> None:
    assert key() == key()
    # dict order of params does not matter
    assert key(params={"a": 1, "b": 2}) == key(params={"b": 2, "a": 1})


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other"},
        {"messages": [{"role": "user", "content": "What is 2+3?"}]},
        {"messages": [{"role": "system", "content": "What is 2+2?"}]},
        {"messages": [*USER, {"role": "assistant", "content": "4"}]},
        {"params": {"temperature": 0.5}},
        {"params": {"temperature": 0.0, "max_tokens": 5}},
        {"params": {}},
        {"sample": 1},
    ],
)
def test_key_changes_with_anything_that_changes_the_answer(change: dict[str, Any]) -> None:
    assert key(**change) != key()


def test_key_distinguishes_message_boundaries() -> None:
    # Two messages must not collide with one message holding the same text.
    one = [{"role": "user", "content": "a\nb"}]
    two = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert key(messages=one) != key(messages=two)


def test_key_ignores_api_key_and_url(tmp_path: Path, make_client: ClientFactory, server: ScriptedServer) -> None:
    first = make_client(ReplyCache(tmp_path), api_key="sk-one")
    ask(first)
    second = make_client(ReplyCache(tmp_path), api_key="sk-two-different")
    assert ask(second).cached
    assert server.count == 1


def test_reply_record_round_trip() -> None:
    reply = Reply("hi", 3, 4, "m", "stop")
    assert Reply.from_record(reply.to_record()) == reply
    assert Reply.from_record({"v": 999, "text": "hi"}) is None
    assert Reply.from_record("hi") is None
    assert Reply.from_record({"v": cache_module.CACHE_FORMAT, "text": 5}) is None


# -- record modes ---------------------------------------------------------------------------------


def test_normal_mode_second_call_is_a_hit(tmp_path: Path, make_client: ClientFactory, server: ScriptedServer) -> None:
    client = make_client(ReplyCache(tmp_path, RecordMode.NORMAL))
    first = ask(client)
    second = ask(client)
    assert not first.cached and second.cached
    assert first.text == second.text == "v1: What is 2+2?"
    assert second.reply.prompt_tokens == first.reply.prompt_tokens > 0
    assert server.count == 1
    usage = client.usage()
    assert usage.cache_hits == 1 and usage.api_calls == 1 and usage.requests == 2
    assert len(client.cache) == 1


def test_normal_mode_different_params_miss(tmp_path: Path, make_client: ClientFactory, server: ScriptedServer) -> None:
    client = make_client(ReplyCache(tmp_path))
    ask(client, temperature=0.0)
    assert not ask(client, temperature=0.5).cached
    assert server.count == 2


def test_replay_miss_raises_with_fix(tmp_path: Path, make_client: ClientFactory, server: ScriptedServer) -> None:
    client = make_client(ReplyCache(tmp_path, RecordMode.REPLAY))
    with pytest.raises(CacheMissError) as info:
        ask(client)
    assert isinstance(info.value, AssertionError)  # fails the test rather than erroring
    message = str(info.value)
    assert "replay mode" in message
    assert "--promptopt-record=normal" in message
    assert server.base_url in message
    assert server.count == 0


def test_replay_hit(tmp_path: Path, make_client: ClientFactory, server: ScriptedServer) -> None:
    recorded = ask(make_client(ReplyCache(tmp_path, RecordMode.NORMAL)))
    replay = make_client(ReplyCache(tmp_path, RecordMode.REPLAY))
    again = ask(replay)
    assert again.cached and again.text == recorded.text
    assert server.count == 1


def test_replay_never_writes(tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path, RecordMode.REPLAY)
    request = ChatRequest.build("m", USER)
    cache.put(request, Reply("x"))
    assert cache.get(request) is None and len(cache) == 0


def test_refresh_always_calls_and_overwrites(
    tmp_path: Path, make_client: ClientFactory, server: ScriptedServer, responder: Versioned
) -> None:
    ask(make_client(ReplyCache(tmp_path, RecordMode.NORMAL)))
    responder.version = 2
    refresh = make_client(ReplyCache(tmp_path, RecordMode.REFRESH))
    first, second = ask(refresh), ask(refresh)
    assert not first.cached and not second.cached
    assert first.text == "v2: What is 2+2?"
    assert server.count == 3
    # the refreshed reply replaced the old one
    normal = make_client(ReplyCache(tmp_path, RecordMode.NORMAL))
    hit = ask(normal)
    assert hit.cached and hit.text == "v2: What is 2+2?"
    assert server.count == 3


def test_off_never_stores(tmp_path: Path, make_client: ClientFactory, server: ScriptedServer) -> None:
    folder = tmp_path / "cache"
    client = make_client(ReplyCache(folder, RecordMode.OFF))
    assert not ask(client).cached
    assert not ask(client).cached
    assert server.count == 2
    assert not folder.exists()  # off does not even create the folder
    assert len(ReplyCache(folder)) == 0


def test_off_ignores_existing_entries(tmp_path: Path, make_client: ClientFactory, server: ScriptedServer) -> None:
    ask(make_client(ReplyCache(tmp_path)))
    assert not ask(make_client(ReplyCache(tmp_path, RecordMode.OFF))).cached
    assert server.count == 2


def test_no_directory_means_no_cache(make_client: ClientFactory, server: ScriptedServer) -> None:
    client = make_client(ReplyCache(None))
    ask(client)
    ask(client)
    assert server.count == 2


# -- errors are never cached ----------------------------------------------------------------------


def test_error_then_success_caches_the_success(
    tmp_path: Path, make_client: ClientFactory, server: ScriptedServer
) -> None:
    server.fail_next(Fault(status=500))
    client = make_client(ReplyCache(tmp_path))
    done = ask(client)
    assert done.attempts == 2 and done.text == "v1: What is 2+2?"
    assert server.count == 2
    hit = ask(make_client(ReplyCache(tmp_path)))
    assert hit.cached and hit.text == done.text
    assert server.count == 2


def test_failed_call_is_not_cached(tmp_path: Path, make_client: ClientFactory, server: ScriptedServer) -> None:
    server.fail_next(Fault(status=400))
    with pytest.raises(AssertionError):
        ask(make_client(ReplyCache(tmp_path)))
    assert len(ReplyCache(tmp_path)) == 0
    fresh = make_client(ReplyCache(tmp_path))
    done = ask(fresh)
    assert not done.cached and done.text == "v1: What is 2+2?"
    assert server.count == 2


def test_exhausted_retries_not_cached(tmp_path: Path, make_client: ClientFactory, server: ScriptedServer) -> None:
    server.fail_next(Fault(kind="malformed"), times=3)
    client = make_client(ReplyCache(tmp_path), max_retries=2)
    with pytest.raises(AssertionError):
        ask(client)
    assert server.count == 3
    assert not ask(client).cached  # the same client also calls again
    assert server.count == 4


# -- a broken cache falls back to no cache, never a wrong answer ----------------------------------


def test_corrupted_database_warns_once_and_continues(
    tmp_path: Path, make_client: ClientFactory, server: ScriptedServer
) -> None:
    seed = ReplyCache(tmp_path)
    seed.put(ChatRequest.build("m", USER), Reply("stale answer"))
    seed.close()
    databases = list(tmp_path.rglob("*.db"))
    assert databases, "expected diskcache's sqlite file under the cache folder"
    for db in databases:
        db.write_bytes(b"this is not a sqlite database " * 200)
    with pytest.warns(RuntimeWarning) as caught:
        cache = ReplyCache(tmp_path)
        client = make_client(cache)
        answers = [ask(client) for _ in range(3)]
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert "continuing without the cache" in str(caught[0].message)
    assert not cache.enabled
    assert all(not a.cached and a.text == "v1: What is 2+2?" for a in answers)
    assert server.count == 3


def test_foreign_record_is_a_miss(tmp_path: Path, make_client: ClientFactory, server: ScriptedServer) -> None:
    # Something not written by this format under our key must never be served as a reply.
    request = ChatRequest.build("m", USER)
    store = diskcache.Cache(str(tmp_path / "replies"))
    store.set(request.cache_key, {"v": 0, "text": "WRONG"})
    store.close()
    done = ask(make_client(ReplyCache(tmp_path)))
    assert not done.cached and done.text == "v1: What is 2+2?"
    assert server.count == 1


def test_unusable_folder_warns_once_and_continues(
    tmp_path: Path, make_client: ClientFactory, server: ScriptedServer
) -> None:
    # A folder below a regular file cannot be created, whoever runs the test (even root).
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.warns(RuntimeWarning) as caught:
        cache = ReplyCache(blocker / "cache")
        client = make_client(cache)
        answers = [ask(client) for _ in range(2)]
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert str(blocker / "cache") in str(caught[0].message)
    assert not cache.enabled
    assert [a.text for a in answers] == ["v1: What is 2+2?"] * 2
    assert server.count == 2


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_warns_and_continues(tmp_path: Path, make_client: ClientFactory) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o500)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cache = ReplyCache(folder)
            assert ask(make_client(cache)).text == "v1: What is 2+2?"
        assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    finally:
        os.chmod(folder, 0o700)


# -- shared across processes ------------------------------------------------------------------------

WRITER = """
import sys
from pathlib import Path
from pytest_promptopt.llm.cache import ChatRequest, Reply, ReplyCache

folder, tag = Path(sys.argv[1]), sys.argv[2]
cache = ReplyCache(folder)
assert cache.enabled
for i in range(40):
    request = ChatRequest.build("m", [{"role": "user", "content": f"{tag}-{i}"}])
    cache.put(request, Reply(f"{tag} reply {i}", 1, 2))
cache.close()
"""


def test_two_processes_share_the_cache(tmp_path: Path) -> None:
    repo = Path(cache_module.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), tag], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for tag in ("alpha", "beta")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    cache = ReplyCache(tmp_path)
    try:
        for tag in ("alpha", "beta"):
            for i in range(40):
                reply = cache.get(ChatRequest.build("m", [{"role": "user", "content": f"{tag}-{i}"}]))
                assert reply == Reply(f"{tag} reply {i}", 1, 2)
        assert len(cache) == 80
    finally:
        cache.close()
