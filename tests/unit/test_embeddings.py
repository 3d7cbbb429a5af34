"""The embeddings client against the scripted server's /v1/embeddings: caching, record modes, bad replies."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pytest_promptopt.llm.cache import RecordMode, ReplyCache
from pytest_promptopt.llm.embeddings import MAX_DIMENSIONS, EmbeddingClient
from pytest_promptopt.errors import CacheMissError, EndpointError
from pytest_promptopt.testing import Fault, ScriptedServer, hashed_words


def client(server: ScriptedServer, cache: ReplyCache, model: str = "toy") -> EmbeddingClient:
    return EmbeddingClient(lambda: server.base_url, model, cache, timeout=10, retries=0)


def test_vectors_come_back_in_order_and_each_text_is_sent_once(scripted: ScriptedServer, tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path / "c")
    embed = client(scripted, cache)
    texts = ["card never came", "reset PIN", "card never came"]
    assert embed(texts) == [tuple(v) for v in hashed_words(texts)]
    assert embed(["reset PIN", "new text"])[0] == tuple(hashed_words(["reset PIN"])[0])
    assert [r["input"] for r in scripted.embedding_requests] == [["card never came", "reset PIN"], ["new text"]]
    assert scripted.count == 0  # embeddings are not chat calls
    embed.close()
    cache.close()


def test_vectors_are_cached_on_disk_per_model(scripted: ScriptedServer, tmp_path: Path) -> None:
    first = ReplyCache(tmp_path / "c")
    client(scripted, first)(["a b", "c d"])
    first.close()
    second = ReplyCache(tmp_path / "c")
    assert client(scripted, second)(["c d", "a b"]) == [tuple(v) for v in hashed_words(["c d", "a b"])]
    assert len(scripted.embedding_requests) == 1
    client(scripted, second, model="other")(["a b"])  # another model: not the same vector
    assert len(scripted.embedding_requests) == 2
    second.close()
    replay = ReplyCache(tmp_path / "c", RecordMode.REPLAY)
    assert client(scripted, replay)(["a b"]) == [tuple(hashed_words(["a b"])[0])]
    with pytest.raises(CacheMissError, match="no recorded embedding"):
        client(scripted, replay)(["never seen"])
    assert len(scripted.embedding_requests) == 2
    replay.close()


@pytest.mark.parametrize(
    "vectors",
    [
        lambda texts: [[float("nan"), 1.0] for _ in texts],  # not finite
        lambda texts: [[1.0, 2.0]],  # too few vectors for two texts
        lambda texts: [[] for _ in texts],  # empty
        lambda texts: [[0.0] * (MAX_DIMENSIONS + 1) for _ in texts],  # unbounded
    ],
)
def test_unusable_vectors_are_an_endpoint_error_and_not_cached(scripted: ScriptedServer, tmp_path: Path,
                                                                vectors: object) -> None:
    scripted.embedder = vectors  # type: ignore[assignment]
    cache = ReplyCache(tmp_path / "c")
    with pytest.raises(EndpointError, match="embedding call to model 'toy'.*failed.*retrieve by: bm25"):
        client(scripted, cache)(["x", "y"])
    scripted.embedder = hashed_words
    assert client(scripted, cache)(["x", "y"]) == [tuple(v) for v in hashed_words(["x", "y"])]
    cache.close()


def test_http_error_names_the_model_and_status(scripted: ScriptedServer, tmp_path: Path) -> None:
    def broken(texts: list[str]) -> list[list[float]]:
        raise RuntimeError("no such model")

    scripted.embedder = broken
    cache = ReplyCache(tmp_path / "c")
    with pytest.raises(EndpointError, match="HTTP 500.*no such model"):
        client(scripted, cache)(["x"])
    cache.close()


def _embedding_response(body: bytes, headers: str = "Content-Type: application/json\r\n") -> bytes:
    return (f"HTTP/1.1 200 OK\r\n{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_a_trickling_embeddings_reply_is_cut_off_at_the_timeout(scripted: ScriptedServer, tmp_path: Path) -> None:
    """D6: an embeddings reply sent 4 bytes at a time is cut off at the whole-call timeout,
    as a chat reply is (httpx's own timeout is per read, and each piece comes well within it)."""
    body = json.dumps({"object": "list", "model": "toy", "data": [{"object": "embedding", "index": 0,
                                                                   "embedding": [0.5] * 40}]}).encode()
    scripted.fail_next_embedding(Fault(kind="trickle", body=_embedding_response(body), seconds=0.1))
    embed = EmbeddingClient(lambda: scripted.base_url, "toy", ReplyCache(None), timeout=1.0, retries=0)
    with pytest.raises(EndpointError, match=r"no answer within 1 s \(timeout\)"):
        embed(["x"])  # without the deadline the reply (~30 s of trickle) is read and used
    embed.close()


def test_an_oversized_embeddings_reply_is_refused_not_buffered(scripted: ScriptedServer, tmp_path: Path) -> None:
    """D6: an embeddings reply over the 16 MB reply cap (here a 20 MB body, gzip-compressed to a
    few KB) is refused, as a chat reply is, and not retried."""
    body = json.dumps({"object": "list", "model": "x" * 20_000_000,
                       "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}]}).encode()
    scripted.fail_next_embedding(Fault(kind="raw", status=200, body=gzip.compress(body), headers=(
        ("Content-Type", "application/json"), ("Content-Encoding", "gzip"))))
    embed = EmbeddingClient(lambda: scripted.base_url, "toy", ReplyCache(None), timeout=30.0, retries=2)
    with pytest.raises(EndpointError, match=r"reply refused: the reply is over 16,777,216 bytes"):
        embed(["x"])
    assert len(scripted.embedding_requests) == 1
    embed.close()


def test_embedding_errors_never_show_url_credentials_query_values_or_key(scripted: ScriptedServer) -> None:
    """D7: an embeddings error names the endpoint by its display URL; the URL's user, password
    and query values and the API key appear nowhere in it, even when the server echoes them."""
    host = scripted.base_url.split("//", 1)[1]
    url = f"http://alice:hunter2pw@{host}?api-key=qv9secretq"
    scripted.fail_next_embedding(Fault(kind="status", status=401))
    scripted.fail_every(1, Fault(kind="status", status=401))  # the query in the base URL hides the path
    embed = EmbeddingClient(lambda: url, "toy", ReplyCache(None), api_key="sk-1234", timeout=10, retries=0)
    with pytest.raises(EndpointError) as info:
        embed(["x"])
    text = f"{info.value} {info.value.base_url}"
    assert "HTTP 401" in str(info.value) and "embedding call to model 'toy'" in str(info.value)
    for secret in ("alice", "hunter2pw", "qv9secretq", "sk-1234"):
        assert secret not in text
    embed.close()
