"""Reliability and security, second round: probes of a careless or hostile user, against small
servers on 127.0.0.1. The cache never lies or runs code, hostile files and replies do not hang
or crash a run, secrets never leak."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
import pytest

from pytest_promptopt.llm import local
from pytest_promptopt.llm.cache import ChatRequest, Reply, ReplyCache
from pytest_promptopt.llm.client import Endpoint, LMClient
from pytest_promptopt.errors import EndpointError, LocalModelError
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
    from pytest_promptopt.prompts.prompt import MAX_PROMPT_FILE_BYTES, Demo, load_prompt
    from pytest_promptopt.prompts.writeback import apply_write, plan_write

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


# -- Medium: linear-time parsing of model output ------------------------------------------------

HOSTILE = {
    "spaces after score": "Score" + " " * 100_000 + "n/a",
    "digits": "7" * 100_000,
    "digits and dots": "1." * 50_000,
    "score words": "score " * 20_000,
    "braces": "{" * 100_000,
    "fences": "```" * 33_000,
    "reason": "reason:" + " " * 100_000,
}


# The parse runs in a child process limited to PARSE_CPU_LIMIT_S seconds of CPU (RLIMIT_CPU):
# CPU time, unlike wall-clock time, does not grow when other processes load the machine. The
# linear patterns need well under a second for all of it, imports included; the backtracking
# patterns they replaced need minutes of CPU for one 100 KB reply, so the kernel stops the
# child (SIGXCPU) long before it would finish. How fast the parse is belongs in bench/.
PARSE_CPU_LIMIT_S = 20
PARSE_HOSTILE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_CPU, ({limit}, {limit} + 5))
from pytest_promptopt.run import checks
from pytest_promptopt.errors import JudgeError
from pytest_promptopt.run.judge import parse_verdict
from pytest_promptopt.optimize.proposer import clean_instruction

text = sys.stdin.read()
try:
    parse_verdict(text, threshold=0.5)
    print("verdict read")
except JudgeError:
    print("no verdict")
clean_instruction(text)
try:
    checks.json_output("```json" + text + "```")
    print("json read")
except AssertionError:
    print("not json")
"""


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_100kb_reply_parses_in_linear_time(text: str) -> None:
    code = PARSE_HOSTILE.format(limit=PARSE_CPU_LIMIT_S)
    done = subprocess.run([sys.executable, "-c", code], input=text, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode not in (-signal.SIGXCPU, -signal.SIGKILL), \
        f"over {PARSE_CPU_LIMIT_S} s of CPU parsing a 100 KB reply: a pattern backtracks"
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[1:] == ["not json", ""]  # no verdict or a bare number; never JSON


def test_linear_patterns_still_read_the_usual_replies() -> None:
    from pytest_promptopt.run.judge import parse_verdict

    assert parse_verdict('{"score": 0.8, "reason": "ok"}', threshold=0.5).score == 0.8
    assert parse_verdict("Score: 7/10\nReason: fine", threshold=0.5).score == 0.7
    assert parse_verdict("**Score** (0-1): 0.25", threshold=0.5).score == 0.25
    assert parse_verdict("I give it a score of 4 out of 5", threshold=0.5).score == 0.8
    assert parse_verdict("85%", threshold=0.5).score == 0.85
    assert parse_verdict("0.9.", threshold=0.5).score == 0.9


# -- Medium: the timeout bounds the whole call; replies over a size limit are refused ---------

def _reply_bytes(text: str) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}]}).encode()


def _http(body: bytes, headers: str = "Content-Type: application/json\r\n") -> bytes:
    return (f"HTTP/1.1 200 OK\r\n{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_a_trickling_server_is_cut_off_at_the_timeout_headers_and_body(scripted: ScriptedServer) -> None:
    scripted.fail_next(Fault(kind="trickle", body=_http(_reply_bytes("slow " * 40)), seconds=0.1))
    client = LMClient(Endpoint(scripted.base_url, "m"), ReplyCache(None), timeout=1.0, max_retries=0)
    # Each 4-byte piece comes well within httpx's per-read timeout, so only a deadline for the
    # whole call can end it: without one the whole reply (~8 s of trickle) is read and returned.
    with pytest.raises(EndpointError, match=r"no answer within 1 s \(timeout\)"):
        client.complete(client.request([{"role": "user", "content": "q"}]))
    assert scripted.count == 1  # one request, cut off, not retried (max_retries=0)
    client.close()


def test_a_compressed_bomb_is_refused_once_not_buffered(scripted: ScriptedServer) -> None:
    bomb = gzip.compress(_reply_bytes("0" * 64_000_000), compresslevel=9)
    assert len(bomb) < 200_000
    scripted.fail_next(Fault(kind="raw", status=200, body=bomb,
                             headers=(("Content-Type", "application/json"), ("Content-Encoding", "gzip"))))
    client = LMClient(Endpoint(scripted.base_url, "m"), ReplyCache(None), max_retries=3)
    with pytest.raises(EndpointError, match=r"reply refused: the reply is over 16,777,216 bytes"):
        client.complete(client.request([{"role": "user", "content": "q"}]))
    assert scripted.count == 1  # not retried: it would be as large again
    client.close()


def test_a_compressed_reply_under_the_limit_is_read(scripted: ScriptedServer) -> None:
    body = gzip.compress(_reply_bytes("fine " * 1000))
    scripted.fail_next(Fault(kind="raw", status=200, body=body,
                             headers=(("Content-Type", "application/json"), ("Content-Encoding", "gzip"))))
    client = LMClient(Endpoint(scripted.base_url, "m"), ReplyCache(None), max_retries=0)
    assert client.complete(client.request([{"role": "user", "content": "q"}])).text == "fine " * 1000
    client.close()


# -- Medium: secrets never leak -------------------------------------------------------------------

SECRETS = ("hunter2", "qv9secret", "sk-1234")


def test_url_credentials_query_values_and_short_keys_never_written_or_printed(
    pytester: pytest.Pytester, scripted: ScriptedServer
) -> None:
    scripted.fail_every(1, Fault(kind="status", status=401))
    host = scripted.base_url.split("//", 1)[1]
    pytester.makeini(f"""
        [pytest]
        promptopt_base_url = http://alice:hunter2@{host}?api-key=qv9secret
        promptopt_model = scripted
        promptopt_api_key = sk-1234
        promptopt_retries = 0
        """)
    pytester.makefile(".yaml", ask="messages:\n  - role: user\n    content: '{q}'\n")
    pytester.makepyfile(test_ask="""
import pytest
from pytest_promptopt import load_prompt
p = load_prompt("ask.yaml")

@pytest.mark.parametrize("q", ["a", "b"])
def test_ask(llm, q):
    assert llm(p, q=q) == "x"
""")
    result = pytester.runpytest("--junitxml=junit.xml", "--promptopt-report=report.json")
    result.assert_outcomes(failed=2)
    written = "\n".join([result.stdout.str(), result.stderr.str(), (pytester.path / "junit.xml").read_text(),
                         (pytester.path / "report.json").read_text()])
    assert "HTTP 401" in written and "***@" in written  # the failure is shown, the secrets are not
    for secret in SECRETS:
        assert secret not in written


def test_redaction_of_short_keys_and_url_parts() -> None:
    from pytest_promptopt.llm.redaction import display_url, redact, url_secrets

    assert redact("invalid key sk-1234, try again", ["sk-1234"]) == "invalid key [redacted], try again"
    assert display_url("https://u:p@h:1/v1?api-key=abc&x=1") == "https://***@h:1/v1?api-key=***&x=***"
    assert set(url_secrets("https://u:p%40ss@h/v1?api-key=abc")) >= {"u", "p%40ss", "p@ss", "abc"}


# -- Medium: a lone surrogate in a reply is normalized once, at the boundary -------------------

def test_lone_surrogate_reply_is_normalized_cached_and_served(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = answer("X \ud83d")
    suite.makefile(".yaml", ask="messages:\n  - role: user\n    content: '{q}'\n")
    suite.makepyfile(test_ask="""
from pytest_promptopt import load_prompt
p = load_prompt("ask.yaml")

def test_ask(llm, judge):
    assert llm(p, q="q") == "X \\ufffd"
""")
    suite.runpytest().assert_outcomes(passed=1)
    again = suite.runpytest()  # from the cache
    again.assert_outcomes(passed=1)
    assert scripted.count == 1


# -- Medium: hostile YAML, FIFOs ------------------------------------------------------------------

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
) + "messages:\n  - role: user\n    content: hi\n"


@pytest.mark.parametrize(("text", "words", "line"), [
    (LAUGHS, "YAML alias *a is not allowed", 2),
    ("messages:\n  - role: user\n    content: hi\nx: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 50", 4),
    ("messages:\n  - role: user\n    content: hi\nseed: 1" + "0" * 5000 + "\n", "a number of 5,001 digits", 4),
], ids=["billion laughs", "deep nesting", "huge integer"])
def test_hostile_yaml_is_refused_before_building_naming_file_and_line(tmp_path: Path, text: str, words: str, line: int) -> None:
    from pytest_promptopt.errors import PromptFileError
    from pytest_promptopt.prompts.prompt import load_prompt

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    # Refused from the parser's events, before anything is built: the message, not a clock, shows it
    with pytest.raises(PromptFileError) as info:
        load_prompt(path)
    message = str(info.value)
    assert f"{path}:{line}:" in message and words in message


def test_a_fifo_named_as_a_prompt_is_refused_not_read_forever(tmp_path: Path) -> None:
    from pytest_promptopt.errors import PromptFileError
    from pytest_promptopt.prompts.prompt import load_prompt

    fifo = tmp_path / "prompt.yaml"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_prompt(fifo)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader so the thread ends, then fail
        with open(fifo, "w"):
            pass
        pytest.fail("load_prompt blocked reading a FIFO")
    assert isinstance(outcome[0], PromptFileError) and "not a regular file" in str(outcome[0])


# -- Low: write-back keeps what it does not own -----------------------------------------------------

WORD_YAML = "messages:\n  - role: system\n    content: Repeat the word.\n  - role: user\n    content: '{word}'\n"


def _rewrite(path: Path, instruction: str = "Reverse the word.", demos: tuple[Any, ...] | None = None) -> Any:
    from pytest_promptopt.prompts.prompt import load_prompt
    from pytest_promptopt.prompts.writeback import apply_write, plan_write

    original = load_prompt(path)
    candidate = original.with_instruction(instruction) if instruction != original.instruction else original
    if demos is not None:
        candidate = candidate.with_demos(demos)
    pending = plan_write(original, candidate)
    apply_write(pending)
    return pending


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file another owner needs root")
def test_write_back_keeps_owner_group_mode_and_xattrs(tmp_path: Path) -> None:
    path = tmp_path / "word.yaml"
    path.write_text(WORD_YAML)
    os.chown(path, 4321, 4322)
    os.chmod(path, 0o640)
    try:
        os.setxattr(path, "user.origin", b"team-a")
        has_xattrs = True
    except OSError:
        has_xattrs = False
    _rewrite(path)
    after = os.stat(path)
    assert (after.st_uid, after.st_gid, after.st_mode & 0o7777) == (4321, 4322, 0o640)
    assert "Reverse the word." in path.read_text()
    if has_xattrs:
        assert os.getxattr(path, "user.origin") == b"team-a"


def test_diff_header_names_the_real_file_a_symlink_points_to(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "real.yaml"
    real.parent.mkdir()
    real.write_text(WORD_YAML)
    link = tmp_path / "word.yaml"
    link.symlink_to(real)
    pending = _rewrite(link)
    assert pending.diff().startswith(f"--- {real.resolve()}\n")
    assert link.is_symlink() and "Reverse the word." in real.read_text()


def test_leftover_temporary_files_of_a_killed_write_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "word.yaml"
    path.write_text(WORD_YAML)
    leftover = tmp_path / ".word.yaml.k1ll3d.tmp"
    leftover.write_text("half a file")
    other = tmp_path / ".other.yaml.k1ll3d.tmp"  # another file's: not ours to remove
    other.write_text("x")
    _rewrite(path)
    assert not leftover.exists() and other.exists()


def test_crlf_inside_the_validated_text_is_kept(tmp_path: Path) -> None:
    from pytest_promptopt.prompts.prompt import Demo, load_prompt

    demos = (Demo({"word": "two\r\nlines"}, "ok"),)
    for name, text in (("w.txt", "Say {word}\n"), ("w.yaml", WORD_YAML)):
        path = tmp_path / name
        path.write_text(text)
        _rewrite(path, "Reverse\r\nthe word {word}." if name == "w.txt" else "Reverse\r\nthe word.", demos)
        loaded = load_prompt(path)
        assert loaded.demos == demos
        assert "Reverse\r\nthe word" in loaded.instruction


def test_tilde_nulls_and_document_markers_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "word.yaml"
    path.write_text("---\nstop: ~\n" + WORD_YAML + "...\n")
    _rewrite(path)
    text = path.read_text()
    assert text.startswith("---\nstop: ~\n") and text.endswith("...\n") and "Reverse the word." in text


def test_optimizing_a_text_prompt_twice_keeps_one_examples_block(tmp_path: Path) -> None:
    from pytest_promptopt.prompts.prompt import Demo, load_prompt

    path = tmp_path / "w.txt"
    path.write_text("Answer about {word}; use {{braces}}\n")
    _rewrite(path, "Answer about {word}; use {{braces}}\n", (Demo({"word": "a {b}"}, "x; y"),))
    first = load_prompt(path)
    assert first.demos == (Demo({"word": "a {b}"}, "x; y"),)
    _rewrite(path, first.instruction, (Demo({"word": "c"}, "z"),))
    text = path.read_text()
    assert text.count("Examples:") == 1 and "Input: word: c\nOutput: z" in text
    assert load_prompt(path).render({"word": "q"})[0]["content"].endswith("Answer about q; use {braces}\n")


# -- Low: the run log, the report path -----------------------------------------------------------

def test_a_torn_last_line_does_not_swallow_the_next_event(tmp_path: Path) -> None:
    from pytest_promptopt.optimize.runlog import RunLog

    log = RunLog(tmp_path, "k", resume=False)
    log.write("first", n=1)
    log.close()
    with open(log.path, "a", encoding="utf-8") as handle:
        handle.write('{"t": 1, "event": "cut-by-sigk')  # SIGKILL mid-line
    resumed = RunLog(tmp_path, "k", resume=True)
    resumed.write("after", n=2)
    resumed.close()
    again = RunLog(tmp_path, "k", resume=True)
    assert [e["event"] for e in again.replayed] == ["first", "after"]
    again.close()


@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_report_path_that_cannot_be_written_is_a_usage_error_up_front(
    suite: pytest.Pytester, scripted: ScriptedServer, where: str
) -> None:
    suite.makefile(".yaml", ask=ASK_PROMPT)
    suite.makepyfile(test_ask=ASK)
    (suite.path / "reports").mkdir()
    (suite.path / "notes.txt").write_text("x")
    target = "reports" if where == "a directory" else "notes.txt/report.json"
    result = suite.runpytest(f"--promptopt-report={target}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert "--promptopt-report" in result.stderr.str()
    assert scripted.count == 0  # refused before any test ran
    assert not list(suite.path.rglob(".*.tmp")) and not list((suite.path / "reports").iterdir())


def test_report_file_gets_the_umask_mode(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = answer("Paris")
    suite.makefile(".yaml", ask=ASK_PROMPT)
    suite.makepyfile(test_ask=ASK)
    old = os.umask(0o022)
    try:
        suite.runpytest("--promptopt-report=report.json").assert_outcomes(passed=1)
    finally:
        os.umask(old)
    assert (suite.path / "report.json").stat().st_mode & 0o777 == 0o644


# -- Low: garbage usage numbers and Retry-After: nan -------------------------------------------------

def test_garbage_usage_and_retry_after_nan_keep_the_case_in_the_table(
    suite: pytest.Pytester, scripted: ScriptedServer
) -> None:
    scripted.responder = lambda messages, body: {"content": "Paris",
                                                 "usage": {"prompt_tokens": "lots", "completion_tokens": 1e400}}
    scripted.fail_next(Fault(kind="status", status=429, retry_after="nan"))
    suite.makefile(".yaml", ask=ASK_PROMPT)
    suite.makepyfile(test_ask=ASK)
    result = suite.runpytest("--promptopt-model=gpt-4o-mini")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["ask.yaml*1*1*100.0%*"])
    assert scripted.count == 2  # the 429 was retried, the garbage usage did not fail the answer


@pytest.mark.parametrize("raw, expected", [("", None), ("1", 1), (" 3 ", 3)])
def test_embedded_server_threads_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str,
                                                           expected: int | None) -> None:
    monkeypatch.setenv(local.THREADS_ENV, raw)
    assert local.server_threads() == (expected or max(1, min(4, os.cpu_count() or 1)))


@pytest.mark.parametrize("raw", ["0", "two", "-1", "1.5"])
def test_a_bad_thread_count_names_the_variable_and_the_fix(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(local.THREADS_ENV, raw)
    with pytest.raises(LocalModelError, match=rf"PROMPTOPT_EMBEDDED_THREADS must be a whole number.*{raw!r}.*unset it"):
        local.server_threads()
