"""The pytest hooks: configuration, markers, and what each test run records. Each hook hands
off to the core; core errors become `pytest.UsageError` (bad settings or markers) or a failed
test (bad prompt, LM error)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from ..llm.cache import RecordMode
from ..run.assertion import compared_values
from ..run.baseline import BaselineError
from ..errors import ConfigError, PromptOptError
from ..report.gate import load_baseline
from ..report.header import header_lines
from ..run.markers import MARKER_HELP, marker_options
from ..optimize import strategies
from ..run.record import TestRecord, current_record
from ..report.summary import display
from . import hookspecs
from .options import add_options
from .session import SESSION_KEY, PromptOptSession, session_of
from .settings import build_settings
from .stash import MARKER_KEY, OUTCOME_KEY, RECORD_KEY, marker_of, record_of


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)
    pluginmanager.register(strategies, "promptopt-builtin-strategies")


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    if config.getoption("help", False):
        return  # `pytest --help` must work while the settings are wrong: it is how one finds the fix
    settings = build_settings(config)
    if settings.optimize.enabled:
        try:
            strategies.choose(strategies.registry(config.hook.pytest_promptopt_strategies()), settings.optimize.strategy)
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
        if _xdist_active(config):
            raise pytest.UsageError("--optimize runs in one process: drop -n/--numprocesses for the optimization run")
    try:  # a baseline that cannot be read stops the run before any LM call
        loaded = load_baseline(settings.baseline) if not hasattr(config, "workerinput") else None
    except BaselineError as exc:
        raise pytest.UsageError(str(exc)) from None
    session = PromptOptSession(config, settings, loaded)
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "promptopt-session")
    config.add_cleanup(session.close)


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = config.stash.get(SESSION_KEY, None)
    if session is None or session.is_worker:
        return []
    return header_lines(session.settings, config.rootpath, optimize=session.settings.optimize.enabled)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Under -q pytest prints no header: the run header still gets its one line."""
    config = session.config
    promptopt = config.stash.get(SESSION_KEY, None)
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if promptopt is None or promptopt.is_worker or tr is None or config.get_verbosity() >= 0:
        return
    for line in header_lines(promptopt.settings, config.rootpath, optimize=promptopt.settings.optimize.enabled,
                             quiet=True):
        tr.write_line(line)


def _xdist_active(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and getattr(config.option, "dist", "no") != "no"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test's promptopt markers, merged over module, class and function, checked once."""
    for item in items:
        levels = [(m.args, m.kwargs) for m in item.iter_markers("promptopt")]
        try:
            item.stash[MARKER_KEY] = marker_options(levels)
        except ConfigError as exc:
            raise pytest.UsageError(f"{item.nodeid}: {exc}") from None


# -- per-test hooks (module level so they work on xdist workers too) -----------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[RECORD_KEY] = TestRecord(item.nodeid)  # fresh on every run, re-runs included


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    token = current_record.set(item.stash.get(RECORD_KEY, None))
    try:
        return (yield)
    finally:
        current_record.reset(token)


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: object, right: object) -> None:
    """A failed `assert output == expected` tells us the expected answer (a labelled demo)."""
    record = current_record.get()
    if record is not None:
        record.compared = True
    if record is not None and op == "==":
        record.note_expected(left, right)
        record.note_expected(right, left)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> object:
    """promptopt(repeats=n, min_passes=k): run the test n times, each a fresh draw of every LM
    call it makes (the draw is on the test's record, so it reaches llm however the test does)."""
    options = marker_of(pyfuncitem)
    if options.repeats <= 1:
        return None
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        raise pytest.UsageError(f"{pyfuncitem.nodeid}: promptopt(repeats=...) does not support async tests")
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    record = record_of(pyfuncitem)
    in_setup = _calls(record)
    passes, failures, first = 0, [], None
    for draw in range(options.repeats):
        record.draw = draw
        try:
            pyfuncitem.obj(**args)
            passes += 1
        except (AssertionError, PromptOptError) as exc:
            failures.append(f"run {draw + 1}: {exc}")
            first = first or exc
        if draw == 0 and in_setup and _calls(record) == in_setup:
            pytest.fail(f"promptopt(repeats={options.repeats}): the LM call of this test is made while a fixture "
                        f"is set up, once, so the {options.repeats} runs would all judge that one answer; make the "
                        "call inside the test (a fixture can return a function that calls llm)", pytrace=False)
    record.repeats = (passes, options.repeats)
    if passes < options.min_passes:
        __tracebackhide__ = True
        error = AssertionError(f"{passes} of {options.repeats} runs passed, {options.min_passes} needed\n"
                               + "\n".join(failures))
        # reported where the first failed run failed, in the user's code, not in this hook
        raise error.with_traceback(first.__traceback__.tb_next if first and first.__traceback__ else None)
    return True


def _calls(record: TestRecord) -> int:
    return len(record.traces) + len(record.judge_traces) + len(record.errors)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when == "call" or (call.when == "setup" and report.failed):
        record = item.stash.get(RECORD_KEY, None) or TestRecord(item.nodeid)
        if call.when == "call" and call.excinfo is not None and not record.compared:
            _note_plain_assert(record, call.excinfo)
        runtime = session_of(item.config).runtime
        prompts = {k: runtime.prompts[k] for k in record.prompt_keys if k in runtime.prompts}
        outcome = record.outcome(report.passed, _failure_message(report), duration=call.duration,
                                 min_pass_rates={k: p.min_pass_rate for k, p in prompts.items()},
                                 digests={k: p.source_digest for k, p in prompts.items()},
                                 xfail=hasattr(report, "wasxfail"))
        item.stash[OUTCOME_KEY] = outcome
        if call.when == "call" and (record.prompt_keys or record.verdicts or record.pairs or record.errors):
            _attach(item, report, outcome, record)
    return report


def _attach(item: pytest.Item, report: pytest.TestReport, outcome: Any, record: TestRecord) -> None:
    """The outcome rides on the report as plain data (it survives xdist), and the score and
    prompts go to JUnit as properties."""
    if report.skipped and not hasattr(report, "wasxfail"):
        return  # a skipped case is not a failed one; an xfailed case is
    report.promptopt = outcome.to_dict()
    props = [("promptopt_score", round(outcome.score, 4))]
    props += [("promptopt_prompt", display(k, item.config.rootpath)) for k in record.prompt_keys]
    report.user_properties.extend(props)
    item.user_properties.extend(props)  # junitxml reads them from the teardown report, made from the item


def _note_plain_assert(record: TestRecord, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Without assertion rewriting (`--assert=plain`, or a module pytest does not rewrite), read
    the failed `assert out == expected` from its frame. Skipped when rewriting already reported
    the comparison: reading the statement's source is not free, and re-runs pay it per failure."""
    if type(excinfo.value) is not AssertionError or not record.traces:
        return
    entry = excinfo.traceback[-1]
    sides = compared_values(str(entry.statement), entry.locals)
    if sides is not None:
        record.note_expected(sides[0], sides[1])
        record.note_expected(sides[1], sides[0])


def _failure_message(report: pytest.TestReport) -> str:
    if report.passed:
        return ""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", None) or report.longreprtext
    return str(message)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller -> worker: where to ask for the embedded server the controller shares."""
    folder = _embedded_broker_for_workers(session_of(node.config))
    if folder:
        node.workerinput["promptopt_embedded_broker"] = folder


def _embedded_broker_for_workers(session: PromptOptSession) -> str | None:
    """The controller's broker folder: the server starts once, when a worker first asks for it."""
    settings = session.settings
    if not settings.roles["task"].embedded and not settings.needs_embedded:
        return None
    if settings.record_mode is RecordMode.REPLAY:
        return None  # replay never calls a model
    return session.embedded.broker_folder(session.runtime.embedded_url)
