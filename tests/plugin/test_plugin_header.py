"""The run header (endpoint and model per role, where the URL came from, record mode, cache
folder, the embedded model starting) and costs that say `-` when no price is known."""

from __future__ import annotations

import json
import re

import pytest
from example import Example
from wordtask import WORD_PROMPT, WORD_TESTS, reverse_when_told

from pytest_promptopt.llm import local
from pytest_promptopt.testing import ScriptedServer

ENV_VARS = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "PROMPTOPT_BASE_URL", "PROMPTOPT_MODEL", "PROMPTOPT_API_KEY",
            "PROMPTOPT_JUDGE_BASE_URL", "PROMPTOPT_JUDGE_MODEL", "PROMPTOPT_OPTIMIZER_BASE_URL",
            "PROMPTOPT_OPTIMIZER_MODEL")
SECRET = "sk-header-secret-0123456789"

TEST = """
def test_shout(llm):
    assert llm("shout.txt", text="hi") == "HI"
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")


@pytest.fixture
def shouting(pytester: pytest.Pytester, scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The endpoint comes from $OPENAI_BASE_URL only (with a user and password in it), the key from
    $OPENAI_API_KEY, the model from ini."""
    scripted.responder = lambda messages, body: messages[-1]["content"].upper()
    url = scripted.base_url.replace("http://", "http://alice:hunter2@")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    pytester.makeini("[pytest]\npromptopt_model = scripted\n")
    pytester.makefile(".txt", shout="{text}")
    pytester.makepyfile(test_shout=TEST)
    return pytester


def test_the_header_names_each_role_the_url_source_record_mode_and_cache(shouting: pytest.Pytester,
                                                                        scripted: ScriptedServer) -> None:
    result = shouting.runpytest("--promptopt-report=r.json")
    result.assert_outcomes(passed=1)
    port = scripted.base_url.split(":")[2].split("/")[0]
    result.stdout.fnmatch_lines([
        f"promptopt: task scripted @ http://***@127.0.0.1:{port}/v1 (from $OPENAI_BASE_URL); judge: as task",
        "promptopt: record normal, cache .promptopt_cache",
    ])
    out = result.stdout.str() + result.stderr.str() + (shouting.path / "r.json").read_text()
    assert SECRET not in out and "hunter2" not in out


def test_quiet_keeps_the_header_to_one_line(shouting: pytest.Pytester) -> None:
    result = shouting.runpytest("-q", "--promptopt-record=refresh", "--promptopt-cache-dir=/tmp/elsewhere-cache")
    lines = [ln for ln in result.outlines if ln.startswith("promptopt: ")]
    assert len(lines) == 1, lines
    assert re.fullmatch(r"promptopt: task scripted @ http://\*\*\*@127\.0\.0\.1:\d+/v1 \(from \$OPENAI_BASE_URL\); "
                        r"judge: as task; record refresh, cache /tmp/elsewhere-cache", lines[0]), lines[0]
    assert result.outlines.index(lines[0]) < next(i for i, ln in enumerate(result.outlines) if ln.startswith("."))


def test_the_optimizer_role_is_named_under_optimize(shouting: pytest.Pytester, scripted: ScriptedServer) -> None:
    result = shouting.runpytest("--optimize", "--optimize-dry-run", "--promptopt-optimizer-model=big",
                                f"--promptopt-optimizer-base-url={scripted.base_url}")
    result.stdout.fnmatch_lines([("promptopt: task scripted @ *; judge: as task; "
                                  f"optimizer: big @ {scripted.base_url} (from --promptopt-optimizer-base-url)")])


def test_cost_is_a_dash_without_prices_and_shown_with_them(shouting: pytest.Pytester) -> None:
    example = Example(shouting)
    result = example.run_pytest("--promptopt-report=r.json", "--promptopt-html=r.html")
    row = next(ln for ln in result.outlines if ln.startswith("shout.txt"))
    assert "$0.0000" not in row and re.search(r"\s-\s", row), row
    assert result.report["prompts"][0]["cost"] is None
    html = (shouting.path / "r.html").read_text()
    assert "$0.0000" not in html and "<td>-</td></tr>" in html
    shouting.makeini('[pytest]\npromptopt_model = scripted\npromptopt_prices = scripted = 1000000, 1000000\n')
    priced = example.run_pytest("--promptopt-report=r.json", "--promptopt-record=refresh", "--promptopt-html=r.html")
    row = next(ln for ln in priced.outlines if ln.startswith("shout.txt"))
    cost = priced.report["prompts"][0]["cost"]
    assert cost > 0 and f"${cost:.4f}" in row
    assert f"<td>${cost:.4f}</td></tr>" in (shouting.path / "r.html").read_text()


def test_the_optimizer_cost_is_shown_when_prices_are_known(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=WORD_TESTS)
    scripted.responder = reverse_when_told("Reverse the word letter by letter.")
    args = ("--optimize", "--optimize-dry-run", "--optimize-strategy=mipro", "--optimize-budget=40")
    unpriced = suite.runpytest(*args)
    line = next(ln for ln in unpriced.outlines if "LM calls" in ln and "budget" in ln)
    assert "$" not in line, line
    suite.makeini(f"[pytest]\npromptopt_base_url = {scripted.base_url}\npromptopt_model = scripted\n"
                  "promptopt_prices = scripted = 1000000, 1000000\n")
    priced = suite.runpytest(*args, "--promptopt-record=refresh")
    line = next(ln for ln in priced.outlines if "LM calls" in ln and "budget" in ln)
    assert re.search(r"optimizer \d+ \(\d+ sent: [\d,]+ tokens, \$\d+\.\d{4}\d*(; \d+ cached: [\d,]+ tokens)?\)", line), line
    warm = suite.runpytest(*args, "--promptopt-report=r.json")  # every reply from the cache: nothing paid
    line = next(ln for ln in warm.outlines if "LM calls" in ln and "budget" in ln)
    found = re.search(r"optimizer (\d+) \(0 sent: 0 tokens, \$0\.0000; (\d+) cached: ([\d,]+) tokens\)", line)
    assert found, line
    (group,) = json.loads((suite.path / "r.json").read_text())["optimization"]["groups"]
    spent = group["usage"]["optimizer"]
    assert (spent["requests"], spent["cache_hits"], spent["cached_tokens"], spent.get("cost", 0.0)) == (
        int(found[1]), int(found[2]), int(found[3].replace(",", "")), 0.0)


def test_the_embedded_model_starting_is_said_on_a_line_of_its_own(pytester: pytest.Pytester, scripted: ScriptedServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No endpoint: the embedded model starts on the first call not in the cache. The model itself
    is not started here (it takes the machine's CPU for minutes): a scripted server stands in for
    the llama.cpp server `local.start` would launch."""
    scripted.responder = lambda messages, body: messages[-1]["content"].upper()
    url = scripted.base_url  # the session stops the server it started, as it would the real one
    monkeypatch.setattr(local, "start", lambda *a, **k: scripted)
    pytester.makefile(".txt", shout="{text}")
    pytester.makepyfile(test_a=TEST, test_b=TEST.replace("test_shout", "test_shout_b"))
    result = pytester.runpytest("-q", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        ("promptopt: task smollm2-135m-instruct on the embedded model (started when a call is not in the cache); "
         "judge: as task; record normal, cache .promptopt_cache"),
        "promptopt: starting the embedded model (*): a call was not in the cache",
        f"promptopt: embedded model ready at {url} (*s)",
    ])
