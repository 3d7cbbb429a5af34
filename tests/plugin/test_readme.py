"""The README's examples run as written: every Python block that defines a test, with the prompt
files the README shows, in a pytester run against the scripted server. Also: one rule for
relative prompt paths, the marker in `pytest --markers`, and YAML errors that point at the start
of the problem."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_promptopt.errors import PromptFileError
from pytest_promptopt.prompts.prompt import load_prompt
from pytest_promptopt.testing import ScriptedServer

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
NAMED = re.compile(r"`([\w./-]+\.(?:ya?ml|jsonl|txt|md|py))`")


def readme_blocks() -> list[tuple[str, str, str | None]]:
    """(language, code, file name) of each fenced block; the name is the first file named in
    backticks on the line that introduces the block (`A test, `test_intent.py`:`)."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        lead = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        named = NAMED.search(lead) if lead.rstrip().endswith(":") else None
        blocks.append((match.group(1), match.group(2), named.group(1) if named else None))
    return blocks


def answer(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    """What a capable model would say to the README's prompts (and to the judge)."""
    everything = "\n".join(m["content"] for m in messages)
    if '{"score"' in everything:
        return json.dumps({"score": 0.9, "reason": "answers from the context"})
    if "Context:" in everything:
        return "At 9:00 on weekdays."
    return "pin_blocked" if "PIN" in messages[-1]["content"] else "card_arrival"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "PROMPTOPT_BASE_URL", "PROMPTOPT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")


def test_every_readme_test_runs_as_written(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = answer
    tests = [(code, name) for lang, code, name in readme_blocks() if lang == "python" and "def test_" in code]
    assert len(tests) >= 1
    for code, name in tests:
        assert name is not None and name.startswith("test_"), f"a README test block names no file: {code[:80]!r}"
    for lang, code, name in readme_blocks():
        if name is not None:
            (suite.path / name).parent.mkdir(parents=True, exist_ok=True)
            (suite.path / name).write_text(code, encoding="utf-8")
    result = suite.runpytest("-p", "no:randomly", *{name for _, name in tests if name})
    defined = sum(len(re.findall(r"^def test_", code, re.MULTILINE)) for code, _ in tests)
    result.assert_outcomes(passed=defined)


def test_the_marker_and_its_holdout_keyword_are_listed(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.promptopt(*holdout=False)*holdout=True*never uses it for --optimize*"])


# -- one rule for relative prompt paths -----------------------------------------------------------

NESTED = """
from pytest_promptopt import load_prompt

def test_both_ways(llm):
    assert llm(load_prompt("prompts/s.txt"), text="a") == llm("prompts/s.txt", text="a") == "A"

def test_from_the_rootdir_still(llm):
    assert llm("top/t.txt", text="b") == "B"
"""


def test_llm_and_load_prompt_resolve_a_relative_path_the_same_way(suite: pytest.Pytester,
                                                                   scripted: ScriptedServer) -> None:
    """Next to the calling file first (what load_prompt always did), then the rootdir (what llm did)."""
    scripted.responder = lambda messages, body: messages[-1]["content"].split()[-1].upper()
    (suite.path / "sub" / "prompts").mkdir(parents=True)
    (suite.path / "sub" / "prompts" / "s.txt").write_text("Shout {text}")
    (suite.path / "top").mkdir()
    (suite.path / "top" / "t.txt").write_text("Shout {text}")
    (suite.path / "sub" / "test_nested.py").write_text(NESTED)
    suite.runpytest("sub").assert_outcomes(passed=2)


# -- YAML syntax errors -------------------------------------------------------------------------------

def test_a_yaml_syntax_error_names_where_the_problem_starts(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text('messages:\n  - role: system\n    content: "Classify the\n  - role: user\n'
                    "    content: '{text}'\n" + "\n" * 20 + "demos: []\n")
    with pytest.raises(PromptFileError) as exc:
        load_prompt(path)
    message = str(exc.value)
    assert f"{path}:3" in message  # the quote opened on line 3, not the end of the file (line 26)
    assert "line 3" in message and "fix:" in message and "quoted scalar" in message


def test_a_yaml_error_where_start_and_problem_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("messages:\n  - role: system\n    content: x\n   bad: [1\n")
    with pytest.raises(PromptFileError) as exc:
        load_prompt(path)
    assert re.search(rf"{re.escape(str(path))}:\d+", str(exc.value)) and "fix:" in str(exc.value)
