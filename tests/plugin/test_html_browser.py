"""The HTML report in a real browser: headless Chromium from the system packages (`.ci/run`
installs `chromium` and `chromium-driver`), driven through Selenium and the system chromedriver.
Nothing downloads a browser at run time. In CI (CI=true) a missing browser fails the test."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_plugin_baseline import SHOUT, TESTS, WORDS, shout_unless_mumbling

from pytest_promptopt.testing import ScriptedServer

EVIL = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


def _unavailable(reason: str) -> None:
    fix = "install it with: apt-get install -y chromium chromium-driver && pip install selenium"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; the browser test must run in CI: {fix}")
    pytest.skip(f"{reason}; {fix}")


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        _unavailable(f"no system Chromium ({chromium}) or chromedriver ({chromedriver})")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Chromium's profile and its singleton socket, in a directory of its own that is removed after
    # the test; short, because a Unix socket path longer than 107 bytes makes Chromium exit.
    scratch = Path(tempfile.mkdtemp(prefix="promptopt-chromium-"))
    options.add_argument(f"--user-data-dir={scratch / 'profile'}")
    service = Service(executable_path=chromedriver, env={**os.environ, "TMPDIR": str(scratch)})
    try:
        driver = webdriver.Chrome(service=service, options=options)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "PROMPTOPT_BASE_URL", "PROMPTOPT_MODEL", "PROMPTOPT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")


def report_with_regressions(suite: pytest.Pytester, scripted: ScriptedServer) -> Path:
    """Eight cases pass in the baseline; a worse prompt breaks six; one more case echoes markup."""
    respond = shout_unless_mumbling(set(WORDS[:6]))

    def responder(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        return EVIL if messages[-1]["content"] == "evil" else respond(messages, body)

    scripted.responder = responder
    suite.makefile(".yaml", shout=SHOUT.format(how="Shout."))
    suite.makepyfile(test_shout=TESTS + "\ndef test_evil(llm):\n    assert llm(shout, text='evil') == 'EVIL'\n")
    suite.runpytest("--promptopt-save-baseline=base.json").assert_outcomes(passed=8, failed=1)
    suite.makefile(".yaml", shout=SHOUT.format(how="Mumble."))
    result = suite.runpytest("--promptopt-baseline=base.json", "--promptopt-html=report.html")
    result.assert_outcomes(passed=2, failed=7)
    return suite.path / "report.html"


def visible_cases(driver: Any) -> list[str]:
    return [e.find_element("css selector", "code.nodeid").text
            for e in driver.find_elements("css selector", "details.case") if e.is_displayed()]


def test_report_in_headless_chromium(suite: pytest.Pytester, scripted: ScriptedServer, browser: Any,
                                     tmp_path: Path) -> None:
    path = report_with_regressions(suite, scripted)
    browser.get(path.as_uri())
    assert browser.title == "pytest-promptopt report"  # the output's script did not run
    assert browser.find_elements("css selector", "img") == []
    assert len(browser.find_elements("css selector", "details.case")) == 9
    assert len(visible_cases(browser)) == 9
    assert "1 regressed" not in browser.find_element("id", "summary").text
    assert "9 cases: 2 passed, 7 failed, 6 regressed" in browser.find_element("id", "summary").text
    assert browser.find_element("id", "gate").text == "failed"

    def show(filter_name: str) -> list[str]:
        browser.find_element("css selector", f'button[data-filter="{filter_name}"]').click()
        shown = visible_cases(browser)
        assert browser.find_element("id", "shown").text == str(len(shown))
        return shown

    regressed = show("regressed")
    assert regressed == [f"test_shout.py::test_shout[{w}]" for w in sorted(WORDS[:6])]
    assert sorted(show("passed")) == [f"test_shout.py::test_shout[{w}]" for w in sorted(WORDS[6:])]
    assert set(show("failed")) == set(regressed) | {"test_shout.py::test_evil"}
    assert len(show("all")) == 9

    # the markup the model wrote is shown as text, inside the evil case
    show("failed")
    evil = next(e for e in browser.find_elements("css selector", "details.case")
                if e.find_element("css selector", "code.nodeid").text == "test_shout.py::test_evil")
    browser.execute_script("arguments[0].open = true", evil)
    assert EVIL in evil.find_element("css selector", "pre.output").text
    alpha = next(e for e in browser.find_elements("css selector", "details.case")
                 if e.find_element("css selector", "code.nodeid").text.endswith("[alpha]"))
    browser.execute_script("arguments[0].open = true", alpha)
    assert alpha.find_element("css selector", "pre.then").text == "ALPHA"
    assert alpha.find_element("css selector", "pre.output").text == "alpha"

    blocked = [e for e in browser.get_log("browser") if "Content Security Policy" in e.get("message", "")]
    assert blocked == []  # the report's own style and script are allowed by their hashes
    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")


def test_prompts_that_need_attention_come_first_and_the_header_links_to_them(
        suite: pytest.Pytester, scripted: ScriptedServer, browser: Any) -> None:
    """Issue 26: a regressed prompt is listed before a fine one (here `calm.yaml` sorts first by
    name), the header links to it, and its histogram says how many cases each bar holds."""
    scripted.responder = shout_unless_mumbling(set(WORDS[:6]))
    suite.makefile(".yaml", shout=SHOUT.format(how="Shout."), calm=SHOUT.format(how="Shout."))
    suite.makepyfile(test_shout=TESTS, test_calm="def test_calm(llm):\n    assert llm('calm.yaml', text='ok') == 'OK'\n")
    suite.runpytest("--promptopt-save-baseline=base.json").assert_outcomes(passed=9)
    suite.makefile(".yaml", shout=SHOUT.format(how="Mumble."))
    suite.runpytest("--promptopt-baseline=base.json", "--promptopt-html=report.html").assert_outcomes(passed=3, failed=6)
    browser.get((suite.path / "report.html").as_uri())
    headings = [e.text for e in browser.find_elements("css selector", "section.prompt h2")]
    assert headings == ["shout.yaml", "calm.yaml"]
    (link,) = browser.find_elements("css selector", "#attention-list a")
    assert link.text == "shout.yaml" and "baseline gate failed, 6 regressed" in link.find_element("xpath", "..").text
    link.click()
    target = browser.find_element("css selector", link.get_attribute("hash"))
    assert target.find_element("css selector", "h2").text == "shout.yaml"
    assert browser.execute_script("return location.hash") == link.get_attribute("hash")
    histogram = target.find_element("css selector", "svg.histogram")
    assert sorted(t.text for t in histogram.find_elements("css selector", "text.count")) == ["2", "6"]
    labels = [t.text for t in histogram.find_elements("css selector", "text.axis-x, text.axis-y")]
    assert labels == ["score (bins of 0.1)", "cases per bin"]


def test_the_optimization_table_and_plot_read_at_a_glance(suite: pytest.Pytester, scripted: ScriptedServer,
                                                         browser: Any) -> None:
    """Issue 26: distinct row names, this run's holdout result and notes in the table, and the
    plot's axis ending at the LM calls the table counts."""
    from wordtask import WORD_PROMPT, WORD_TESTS, reverse_when_told

    scripted.responder = reverse_when_told()
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=WORD_TESTS)
    suite.runpytest("--optimize", "--optimize-strategy=mipro", "--optimize-dry-run", "--promptopt-html=r.html")
    browser.get((suite.path / "r.html").as_uri())
    section = browser.find_element("css selector", "section.optimization")
    rows = {r.find_element("tag name", "th").text: r.find_element("tag name", "td").text
            for r in section.find_elements("css selector", "table tr")}
    names = [r.find_element("tag name", "th").text for r in section.find_elements("css selector", "table tr")]
    assert len(names) == len(set(names)), names
    assert rows["holdout score"] == "no holdout tests (mark some promptopt(holdout=True))"
    notes = [text for name, text in rows.items() if name.startswith("note ")]
    assert notes and notes[-1].startswith("train split: ")
    axis_end = section.find_element("css selector", "svg.curve text.axis-end").text
    assert axis_end == f"{rows['LM calls']} LM calls"
