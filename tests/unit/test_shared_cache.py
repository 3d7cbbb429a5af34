"""The shared reply tier: its three backends for real (a directory, fsspec's in-memory filesystem,
a redis-server of the test's own), write-once keys, verification on read, and degrading to the
local cache with one warning."""

from __future__ import annotations

import json
import os
import socket
import uuid
import warnings
from pathlib import Path

import pytest

from pytest_promptopt.llm.cache import ChatRequest, RecordMode, Reply, ReplyCache, encode_record
from pytest_promptopt.llm.shared_cache import SharedTier, TieredReplyCache, open_cache, shared_hits
from pytest_promptopt.llm.shared_stores import DirectoryStore, FsspecStore, RedisStore, store_for

CAP = 4096
REQUEST = ChatRequest.build("m", [{"role": "user", "content": "hello"}], served_by="http://127.0.0.1:1/v1")
REPLY = Reply("hi there", 3, 2, "m", "stop")


def entry(reply: Reply = REPLY) -> bytes:
    return encode_record(reply.to_record()).encode()


@pytest.fixture(params=["directory", "memory", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> DirectoryStore | FsspecStore | RedisStore:
    if request.param == "directory":
        made: DirectoryStore | FsspecStore | RedisStore = DirectoryStore(tmp_path / "shared", CAP)
    elif request.param == "memory":
        made = FsspecStore(f"memory://promptopt-{uuid.uuid4().hex}", CAP)
    else:
        made = RedisStore(request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/1", CAP, 5.0)
    made.open()
    return made


def test_store_round_trip_is_write_once(store: DirectoryStore | FsspecStore | RedisStore) -> None:
    key = uuid.uuid4().hex * 2
    assert store.get(key) is None
    store.add(key, b"first")
    store.add(key, b"second")  # a later writer never replaces an entry
    assert store.get(key) == b"first"


def test_store_does_not_read_an_entry_over_the_cap(store: DirectoryStore | FsspecStore | RedisStore) -> None:
    key = uuid.uuid4().hex * 2
    store.add(key, b"x" * (CAP + 1))
    assert store.get(key) is None


def test_urls_choose_the_backend(tmp_path: Path) -> None:
    assert isinstance(store_for(str(tmp_path), CAP, 1.0), DirectoryStore)
    assert store_for(f"file://{tmp_path}", CAP, 1.0).directory == tmp_path  # type: ignore[union-attr]
    assert isinstance(store_for("redis://127.0.0.1:6379/0", CAP, 1.0), RedisStore)
    assert isinstance(store_for("memory://x", CAP, 1.0), FsspecStore)
    assert isinstance(store_for("s3://bucket/prefix", CAP, 1.0), FsspecStore)


def test_tier_verifies_entries_like_the_local_cache(tmp_path: Path) -> None:
    """Whatever is planted under a key is a miss unless it is a reply record: never executed."""
    directory = DirectoryStore(tmp_path / "shared", CAP)
    tier = SharedTier(directory, str(tmp_path / "shared"), max_bytes=CAP)
    bad = {
        "a pickle": b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x01x\x94.",
        "not utf-8": b"\xff\xfe",
        "not a record": b'{"text": 1}',
        "another format": json.dumps({"v": 1, "text": "old"}).encode(),
        "NaN counts": b'{"v": 2, "text": "t", "prompt_tokens": NaN}',
        "truncated": entry()[:20],
    }
    for what, data in bad.items():
        key = uuid.uuid4().hex * 2
        directory.add(key, data)
        assert tier.get(key) is None, what
    assert tier.get("../../etc/passwd") is None  # a key is a sha256, never a path
    assert tier.hits == 0 and tier.down is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symlinks")
def test_directory_backend_skips_planted_symlinks_fifos_and_folders(tmp_path: Path) -> None:
    directory = DirectoryStore(tmp_path / "shared", CAP)
    directory.open()
    secret = tmp_path / "secret.json"
    secret.write_bytes(entry())
    keys = [uuid.uuid4().hex * 2 for _ in range(3)]
    for key in keys:
        (tmp_path / "shared" / key[:2]).mkdir(exist_ok=True)
    (tmp_path / "shared" / keys[0][:2] / f"{keys[0]}.json").symlink_to(secret)
    os.mkfifo(tmp_path / "shared" / keys[1][:2] / f"{keys[1]}.json")  # would block a plain open()
    (tmp_path / "shared" / keys[2][:2] / f"{keys[2]}.json").mkdir()
    assert [directory.get(key) for key in keys] == [None, None, None]


def test_a_local_miss_reads_through_and_copies_the_entry_locally(tmp_path: Path) -> None:
    shared = str(tmp_path / "shared")
    first = open_cache(tmp_path / "one", RecordMode.NORMAL, shared)
    first.put(REQUEST, REPLY)
    second = open_cache(tmp_path / "two", RecordMode.NORMAL, shared)
    assert isinstance(second, TieredReplyCache)
    assert second.get(REQUEST) == REPLY and shared_hits(second) == 1
    assert second.get(REQUEST) == REPLY and shared_hits(second) == 1  # now a local hit
    assert ReplyCache(tmp_path / "two").get(REQUEST) == REPLY


def test_replay_reads_the_shared_tier_and_writes_nothing_locally(tmp_path: Path) -> None:
    shared = str(tmp_path / "shared")
    open_cache(tmp_path / "one", RecordMode.NORMAL, shared).put(REQUEST, REPLY)
    replay = open_cache(tmp_path / "two", RecordMode.REPLAY, shared)
    assert replay.get(REQUEST) == REPLY
    assert ReplyCache(tmp_path / "two").get(REQUEST) is None


def test_refresh_does_not_overwrite_a_shared_entry(tmp_path: Path) -> None:
    shared = str(tmp_path / "shared")
    open_cache(tmp_path / "one", RecordMode.NORMAL, shared).put(REQUEST, REPLY)
    open_cache(tmp_path / "two", RecordMode.REFRESH, shared).put(REQUEST, Reply("other"))
    assert open_cache(tmp_path / "three", RecordMode.NORMAL, shared).get(REQUEST) == REPLY


def test_the_model_identity_is_part_of_the_shared_key(tmp_path: Path) -> None:
    shared = str(tmp_path / "shared")
    open_cache(tmp_path / "one", RecordMode.NORMAL, shared).put(REQUEST, REPLY)
    elsewhere = ChatRequest.build("m", [{"role": "user", "content": "hello"}], served_by="http://other:1/v1")
    assert open_cache(tmp_path / "two", RecordMode.NORMAL, shared).get(elsewhere) is None


def test_the_shared_tier_in_memory_through_fsspec(tmp_path: Path) -> None:
    shared = f"memory://promptopt-{uuid.uuid4().hex}"
    open_cache(tmp_path / "one", RecordMode.NORMAL, shared).put(REQUEST, REPLY)
    assert open_cache(tmp_path / "two", RecordMode.NORMAL, shared).get(REQUEST) == REPLY


def test_the_shared_tier_in_redis(tmp_path: Path, redis_url: str) -> None:
    shared = redis_url.rsplit("/", 1)[0] + "/2"
    open_cache(tmp_path / "one", RecordMode.NORMAL, shared).put(REQUEST, REPLY)
    assert open_cache(tmp_path / "two", RecordMode.NORMAL, shared).get(REQUEST) == REPLY


def test_unreachable_redis_warns_once_and_the_local_cache_goes_on(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = open_cache(tmp_path / "local", RecordMode.NORMAL, f"redis://:s3cret-pass@127.0.0.1:{port}/0")
        cache.put(REQUEST, REPLY)
        assert cache.get(REQUEST) == REPLY  # local hit
        other = ChatRequest.build("m", [{"role": "user", "content": "other"}])
        assert cache.get(other) is None
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "continuing with the local cache only" in messages[0], messages
    assert "s3cret-pass" not in messages[0] and str(port) in messages[0]


def test_a_store_failing_mid_run_warns_once(tmp_path: Path) -> None:
    class Failing(DirectoryStore):
        def get(self, key: str) -> bytes | None:
            raise ConnectionError("the share went away")

    tier = SharedTier(Failing(tmp_path / "shared", CAP), str(tmp_path / "shared"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tier.get(REQUEST.cache_key) is None
        assert tier.get(REQUEST.cache_key) is None
    assert len(caught) == 1 and "the share went away" in str(caught[0].message)
