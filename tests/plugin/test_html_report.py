"""The HTML report: escaping, no network, no API key, per-prompt statistics and the optimization
section, from plain data and through pytester round trips."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from wordtask import WORD_PROMPT, WORD_TESTS, reverse_when_told

from pytest_promptopt.run.baseline import Baseline, BaselineCase, PromptCases
from pytest_promptopt.report.compare import compare
from pytest_promptopt.report.html import HtmlInput, render
from pytest_promptopt.optimize.acceptance import Decision
from pytest_promptopt.optimize.loop import GroupResult, Scores
from pytest_promptopt.run.record import Call, CaseOutcome
from pytest_promptopt.report.data import describe_write, optimization_view, search_curve
from pytest_promptopt.prompts.writeback import PendingWrite
from pytest_promptopt.testing import ScriptedServer
from pytest_promptopt.usage import Usage

ROOT = Path("/repo")
KEY = str(ROOT / "p.yaml")
EVIL = "<script>alert('pwned')</script><img src=x onerror=alert(1)>"


class Elements(HTMLParser):
    """Tags, attributes and text of a document as a browser's parser sees them."""

    def __init__(self, document: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(document)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def count(self, tag: str, **attrs: str) -> int:
        return sum(1 for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items()))


def outcome(nodeid: str, passed: bool, output: str, message: str = "") -> CaseOutcome:
    return CaseOutcome(nodeid, passed, float(passed), message,
                       (Call(KEY, {}, output, None, ({"role": "user", "content": f"say {output}"},)),),
                       {KEY: Usage(requests=1, prompt_tokens=4, cost=0.001, cache_hits=1)})


def document(outcomes: list[CaseOutcome], then: Baseline | None, secrets: tuple[str, ...] = ()) -> str:
    now = Baseline({"p.yaml": PromptCases("p.yaml", "d", {
        o.nodeid: BaselineCase(o.nodeid, o.passed, o.score, o.output_of(KEY) or "") for o in outcomes})})
    return render(HtmlInput(tuple(outcomes), ROOT, compare(then or Baseline({}), now), then,
                            "compared with base.json", secrets=secrets))


def test_model_output_is_shown_as_text_never_as_markup() -> None:
    page = document([outcome("t::a", False, EVIL, message=f"assert {EVIL!r} == 'x'")], None)
    parsed = Elements(page)
    assert parsed.count("script") == 1  # the report's own filter script only
    assert parsed.count("img") == 0
    assert EVIL in "".join(parsed.text)  # the text itself is there, readable
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page


def test_the_page_loads_nothing_and_runs_only_its_own_script() -> None:
    page = document([outcome("t::a", True, "ok")], None)
    parsed = Elements(page)
    (csp,) = [a["content"] for t, a in parsed.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp is not None and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", csp)
    for tag, attrs in parsed.tags:  # nothing refers to another file or host
        assert not {k: v for k, v in attrs.items() if k in ("src", "href")}, (tag, attrs)
    assert "http://" not in page and "https://" not in page


def test_api_keys_are_redacted_wherever_they_appear() -> None:
    key = "sk-live-0123456789abcdef"
    page = document([outcome("t::a", True, f"the key is {key}")], None, secrets=(key,))
    assert key not in page and "sk-live-0" not in page
    assert "the key is [api key]" in page


def test_prompt_statistics_against_the_baseline() -> None:
    then = Baseline({"p.yaml": PromptCases("p.yaml", "d", {f"t::{i}": BaselineCase(f"t::{i}", True, 1.0, "OK")
                                                           for i in range(4)})})
    page = document([outcome("t::0", False, "ko"), outcome("t::1", True, "OK"), outcome("t::2", True, "OK"),
                     outcome("t::5", True, "OK")], then)
    parsed = Elements(page)
    text = " ".join(parsed.text)
    assert "3/4 = 75.0% [30.1%, 95.4%]" in text and "100.0% [51.0%, 100.0%]" in text
    assert "3: 1 now failing, 0 now passing; 1 new, 1 gone" in text
    assert parsed.count("details", **{"class": "case"}) == 4
    assert parsed.count("details", **{"class": "case", "data-regressed": "yes"}) == 1
    assert "output in the baseline" in text and "Gone since the baseline (1)" in text
    assert parsed.count("svg", **{"class": "intervals"}) == 1 and parsed.count("svg", **{"class": "histogram"}) == 1


def logged(nodeid: str, requests: int) -> dict[str, Any]:
    """A case result as the run log holds it."""
    return CaseOutcome(nodeid, True, 1.0, usage={KEY: Usage(requests=requests)}).to_dict()


def test_search_curve_counts_calls_as_the_budget_does() -> None:
    events = [
        {"event": "start"},
        {"event": "eval", "results": [logged("t1", 2), logged("t2", 3)]},
        {"event": "score", "split": "minibatch", "score": 0.4},
        {"event": "optimizer_reply"},
        {"event": "eval", "results": [logged("t1", 4)]},
        {"event": "score", "split": "train", "score": 0.75},
        {"event": "decision", "train_before": 0.25},
    ]
    assert [(p.calls, p.score, p.kind) for p in search_curve(events)] == [
        (0, 0.25, "train"), (5, 0.4, "minibatch"), (10, 0.75, "train")]


# -- round trips ---------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "PROMPTOPT_BASE_URL", "PROMPTOPT_MODEL", "PROMPTOPT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")


def echo(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    return messages[-1]["content"]


def test_round_trip_escapes_output_and_hides_the_api_key(pytester: pytest.Pytester, scripted: ScriptedServer) -> None:
    key = "sk-test-SECRET0123456789"
    scripted.responder = echo
    pytester.makeini(f"[pytest]\npromptopt_base_url = {scripted.base_url}\npromptopt_model = scripted\n"
                     f"promptopt_api_key = {key}\npromptopt_html = out/report.html\n")
    pytester.makefile(".txt", echo="{text}")
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.parametrize("text", [{EVIL!r}, "fine", {key!r}])
        def test_echo(llm, text):
            assert llm("echo.txt", text=text) == "fine"
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=2)
    path = pytester.path / "out" / "report.html"
    result.stdout.fnmatch_lines([f"promptopt HTML report: {path}"])
    page = path.read_text(encoding="utf-8")
    parsed = Elements(page)
    assert parsed.count("script") == 1 and parsed.count("img") == 0
    assert EVIL in "".join(parsed.text)
    assert key not in page and key[:8] not in page
    assert parsed.count("details", **{"class": "case"}) == 3
    assert "No baseline was given" in page


def test_optimization_section_shows_search_decision_and_diff(pytester: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = reverse_when_told()
    pytester.makeini(f"[pytest]\npromptopt_base_url = {scripted.base_url}\npromptopt_model = scripted\n")
    pytester.makefile(".yaml", word=WORD_PROMPT)
    pytester.makepyfile(test_word=WORD_TESTS)
    pytester.runpytest("--optimize", "--optimize-strategy=mipro", "--promptopt-html=r.html")
    page = (pytester.path / "r.html").read_text(encoding="utf-8")
    parsed = Elements(page)
    text = " ".join(parsed.text)
    assert "Optimization: word.yaml" in text
    assert "validation score 0.000 -> 1.000" in text.replace("  ", " ")
    assert "accepted: validation 0.000 -> 1.000" in text and "written" in text
    assert parsed.count("svg", **{"class": "curve"}) == 1
    assert parsed.count("circle") >= 2  # scores along the search
    assert parsed.count("span", **{"class": "add"}) >= 1  # the added line of the diff
    assert "+    content: Reverse the word letter by letter." in text
    assert "optimization" in text  # usage rows of the optimization phase
    assert "Reverse the word letter by letter." in (pytester.path / "word.yaml").read_text()


def group_outcome(accepted: bool, path: Path) -> GroupResult:
    write = PendingWrite(path, "digest", b"new\n", b"old\n")
    return GroupResult((str(path),), "mipro", Decision(accepted, "because"), Scores(4, 0.0, 1.0),
                       Scores(2, 0.0, 1.0 if accepted else 0.0), None, 10, 100, {}, 1.0,
                       diff=write.diff() if accepted else "")


def test_what_became_of_the_diff(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    assert describe_write(group_outcome(True, path), False, [path]) == "written"
    assert describe_write(group_outcome(True, path), True, []) == "not written: dry run"
    assert describe_write(group_outcome(False, path), False, []) == "not written: the candidate was rejected"
    assert describe_write(group_outcome(True, path), False, []).startswith(f"not written: {path}")
    view = optimization_view(group_outcome(True, path), tmp_path, "written")
    assert view.prompts == ("p.yaml",) and view.diff.splitlines()[-2:] == ["-old", "+new"] and view.curve == ()
