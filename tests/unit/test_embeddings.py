"""The embeddings client against the scripted server's /v1/embeddings: caching, record modes, bad replies."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_promptopt.llm.cache import RecordMode, ReplyCache
from pytest_promptopt.llm.embeddings import MAX_DIMENSIONS, EmbeddingClient
from pytest_promptopt.errors import CacheMissError, EndpointError
from pytest_promptopt.testing import ScriptedServer, hashed_words


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
