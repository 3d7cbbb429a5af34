"""Reliability and security, second round: probes of a careless or hostile user, against small
servers on 127.0.0.1. The cache never lies or runs code, hostile files and replies do not hang
or crash a run, secrets never leak."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
import pytest

from pytest_promptopt import local
from pytest_promptopt.cache import ChatRequest, Reply, ReplyCache
from pytest_promptopt.client import Endpoint, LMClient
from pytest_promptopt.errors import EndpointError
from pytest_promptopt.testing import Fault, ScriptedServer

ASK = """
from pytest_promptopt import load_prompt
p = load_prompt("ask.yaml")

def test_ask(llm):
    assert llm(p, q="capital of France?") == "Paris"
"""
ASK_PROMPT = "model: gpt-4o-mini\nmessages:\n  - role: user\n    content: '{q}'\n"


def answer(text: str):
    return lambda messages, body: text


# -- High: the embedded model's answers are never served for a real model ----------------------

@dataclass
class _FakeEmbedded:
    """Stands in for `local.start()`'s server: a scripted server plays the embedded model."""

    base_url: str

    def stop(self) -> None:
        pass


def test_embedded_answers_are_never_served_for_a_real_endpoint(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makefile(".yaml", ask=ASK_PROMPT)
    pytester.makepyfile(test_ask=ASK)
    with ScriptedServer(answer("smol says Paris?")) as embedded, ScriptedServer(answer("Paris")) as real:
        monkeypatch.setattr(local, "start", lambda: _FakeEmbedded(embedded.base_url))
        for var in ("PROMPTOPT_BASE_URL", "OPENAI_BASE_URL"):
            monkeypatch.delenv(var, raising=False)
        # No base URL: the embedded server answers, whatever model the prompt file names.
        pytester.runpytest().assert_outcomes(failed=1)
        assert embedded.count == 1
        # The same model name at a real endpoint, in replay mode (CI): not served the embedded answer.
        at_real = (f"--promptopt-base-url={real.base_url}", "--promptopt-model=gpt-4o-mini")
        replay = pytester.runpytest(*at_real, "--promptopt-record=replay")
        replay.assert_outcomes(failed=1)
        replay.stdout.fnmatch_lines(["*replay mode: no recorded reply*"])
        # In normal mode the real endpoint is asked, and answers.
        pytester.runpytest(*at_real).assert_outcomes(passed=1)
        assert real.count == 1
        # The embedded model's own answer is still served to embedded runs, from the cache.
        pytester.runpytest().assert_outcomes(failed=1)
        assert embedded.count == 1


def test_embedded_identity_names_the_weights_not_the_requested_model() -> None:
    identity = local.embedded_identity()
    assert identity.startswith("embedded:")
    assert "gpt-4o-mini" not in identity
    asked = ChatRequest.build("gpt-4o-mini", [{"role": "user", "content": "hi"}], served_by=identity)
    real = ChatRequest.build("gpt-4o-mini", [{"role": "user", "content": "hi"}],
                             served_by=Endpoint("https://api.example.com/v1", "gpt-4o-mini").served_by)
    assert asked.cache_key != real.cache_key


def test_cache_key_leaves_out_credentials_and_query_of_the_url() -> None:
    plain = Endpoint("http://127.0.0.1:8000/v1", "m")
    with_secrets = Endpoint("http://user:pw@127.0.0.1:8000/v1/?api-key=s3cret", "m", api_key="sk-1")
    assert plain.served_by == with_secrets.served_by == "http://127.0.0.1:8000/v1"


# -- High: cache entries are data, never pickles ------------------------------------------------

class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_is_never_run_and_is_called_again_and_rewritten(
    suite: pytest.Pytester, scripted: ScriptedServer
) -> None:
    scripted.responder = answer("Paris")
    suite.makefile(".yaml", ask=ASK_PROMPT)
    suite.makepyfile(test_ask=ASK)
    suite.runpytest().assert_outcomes(passed=1)
    marker = suite.path / "pwned"
    raw = diskcache.Cache(str(suite.path / ".promptopt_cache" / "replies"))
    keys = [k for k in raw.iterkeys()]
    assert keys
    for key in keys:
        raw.set(key, _Planted(marker))  # diskcache pickles any object
    raw.close()
    suite.runpytest().assert_outcomes(passed=1)
    assert not marker.exists()
    assert scripted.count == 2  # the planted entry was a miss: called again
    raw = diskcache.Cache(str(suite.path / ".promptopt_cache" / "replies"))
    stored = [raw.get(k) for k in keys]
    raw.close()
    assert all(isinstance(v, str) and json.loads(v)["text"] == "Paris" for v in stored)  # rewritten, as text


@pytest.mark.parametrize("form", ["pickled by an older version", "JSON text"])
@pytest.mark.parametrize("record", [
    '{"v": 2, "text": "hi", "prompt_tokens": "lots"}',
    '{"v": 2, "text": "hi", "prompt_tokens": Infinity}',
    '{"v": 2, "text": "hi", "prompt_tokens": 1e999}',
    '{"v": 2, "text": "hi", "completion_tokens": 99999999999999999999999}',
    '{"v": 2, "text": "hi", "completion_tokens": -3}',
    '{"v": 2, "text": "hi", "completion_tokens": true}',
    '{"v": 2, "text": 7}',
    '{"v": 2, "text": "hi", "model": ["m"]}',
    '{"v": 2, "text": "hi", "top_logprobs": [["yes", NaN]]}',
    '{"v": 2, "text": "\\ud83d"}',
    '[1, 2]',
    'not json',
])
def test_malformed_entry_is_a_miss_called_again_and_rewritten(
    tmp_path: Path, scripted: ScriptedServer, record: str, form: str
) -> None:
    scripted.responder = answer("fresh")
    cache = ReplyCache(tmp_path)
    client = LMClient(Endpoint(scripted.base_url, "m"), cache, max_retries=0)
    request = client.request([{"role": "user", "content": "q"}])
    raw = diskcache.Cache(str(tmp_path / "replies"))
    if form == "JSON text":
        raw.set(request.cache_key, record)
    else:  # a dict, pickled by diskcache as earlier versions stored entries ("v" as theirs)
        try:
            planted = json.loads(record)
        except ValueError:
            planted = record
        if isinstance(planted, dict):
            planted["v"] = 1
        raw.set(request.cache_key, planted)
    raw.close()
    assert client.complete(request).text == "fresh"
    assert scripted.count == 1
    assert cache.get(request) == client.complete(request).reply  # rewritten: now a hit
    assert scripted.count == 1
    client.close()
    cache.close()


def test_stored_entry_is_reviewable_json_text(tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path)
    request = ChatRequest.build("m", [{"role": "user", "content": "q"}])
    cache.put(request, Reply("answer", 3, 1, "m", "stop"))
    cache.close()
    raw = diskcache.Cache(str(tmp_path / "replies"))
    value = raw.get(request.cache_key)
    raw.close()
    assert isinstance(value, str)
    assert json.loads(value) == {"v": 2, "text": "answer", "prompt_tokens": 3, "completion_tokens": 1,
                                 "model": "m", "finish_reason": "stop"}


# -- High: a refusal or a tool call is an answer, not an outage ---------------------------------

REFUSAL = {"message": {"role": "assistant", "content": None, "refusal": "I can't help with that."}}
TOOL_CALL = {"message": {"role": "assistant", "content": None, "tool_calls": [
    {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"city\": \"Paris\"}"}}]}}

MANY = """
import pytest
from pytest_promptopt import load_prompt
p = load_prompt("ask.yaml")

@pytest.mark.parametrize("q", ["a", "b", "c", "d", "e"])
def test_ask(llm, q):
    assert llm(p, q=q) == "fine"
"""


def test_refusals_are_answers_shown_not_retried_and_never_take_the_endpoint_down(
    suite: pytest.Pytester, scripted: ScriptedServer
) -> None:
    scripted.responder = lambda messages, body: "fine" if messages[-1]["content"] == "e" else REFUSAL
    suite.makefile(".yaml", ask="messages:\n  - role: user\n    content: '{q}'\n")
    suite.makepyfile(test_ask=MANY)
    result = suite.runpytest()
    result.assert_outcomes(passed=1, failed=4)  # the fifth test is still sent, and passes
    assert scripted.count == 5  # nothing retried
    out = result.stdout.str()
    assert "I can't help with that." in out
    assert "not sent" not in out and "no message text" not in out


def test_tool_call_reply_is_the_output_the_test_sees(tmp_path: Path, scripted: ScriptedServer) -> None:
    scripted.responder = lambda messages, body: TOOL_CALL
    client = LMClient(Endpoint(scripted.base_url, "m"), ReplyCache(tmp_path), max_retries=2)
    text = client.complete(client.request([{"role": "user", "content": "weather?"}])).text
    assert json.loads(text) == [{"name": "lookup", "arguments": "{\"city\": \"Paris\"}"}]
    assert scripted.count == 1
    client.close()


def test_reply_with_no_answer_at_all_is_not_retried_and_not_an_outage(scripted: ScriptedServer) -> None:
    scripted.responder = lambda messages, body: {"message": {"role": "assistant", "content": None}}
    client = LMClient(Endpoint(scripted.base_url, "m"), ReplyCache(None), max_retries=3, down_after=1)
    for _ in range(2):
        with pytest.raises(EndpointError, match="no text, refusal or tool call"):
            client.complete(client.request([{"role": "user", "content": "q"}]))
    assert scripted.count == 2  # one attempt each, and the second was still sent
    client.close()


# -- High: --optimize never writes a file the loader then refuses -------------------------------

def test_planned_write_leaves_out_demos_that_would_not_fit_and_says_so(tmp_path: Path) -> None:
    from pytest_promptopt.prompts import MAX_PROMPT_FILE_BYTES, Demo, load_prompt
    from pytest_promptopt.writeback import apply_write, plan_write

    path = tmp_path / "word.yaml"
    path.write_text("messages:\n  - role: system\n    content: Repeat the word.\n"
                    "  - role: user\n    content: '{word}'\ndemos: []\n")
    original = load_prompt(path)
    big = [Demo({"word": c * 400_000}, c) for c in "abc"]  # demos copy each case's 400 KB input
    pending = plan_write(original, original.with_demos(tuple(big)))
    assert len(pending.new_bytes) <= MAX_PROMPT_FILE_BYTES
    assert pending.notes and "1 of 3 demo(s) left out" in pending.notes[0] and "1,000,000-byte limit" in pending.notes[0]
    apply_write(pending)
    assert load_prompt(path).demos == tuple(big[:2])  # the next run loads it
