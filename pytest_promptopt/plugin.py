"""The pytest layer: options, fixtures and hooks. Each hook hands off to a core module.

Core errors become `pytest.UsageError` (bad settings) or a failed test (bad prompt, LM error).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from . import hookspecs
from .baseline import BaselineError
from .cache import RecordMode
from .compare import DEFAULT_ALPHA
from .config import (
    ROLES,
    Settings,
    base_url,
    env_names,
    fraction,
    non_negative_int,
    option_name,
    parse_prices,
    positive_float,
    positive_int,
    repeat_plan,
    resolve_path,
    resolve_roles,
)
from .errors import ConfigError, PromptOptError
from .gate import BaselineSettings, load_baseline
from .judge import JUDGE_MODES
from .record import TestRecord, current_record
from .report import JUDGE_KEY, CaseOutcome, case_details, display
from .runtime import LLM, JudgeCall, Runtime
from .session import PromptOptSession

SESSION_KEY = pytest.StashKey[PromptOptSession]()
RECORD_KEY = pytest.StashKey[TestRecord]()
OUTCOME_KEY = pytest.StashKey["tuple[bool, str]"]()  # (passed, failure message) of the last run

STRATEGIES = ("auto", "gradsum", "mipro")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("promptopt", "prompt testing and optimization (pytest-promptopt)")

    def add(flag: str, ini_type: str | None = None, ini_help: str | None = None, **kwargs: Any) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        group.addoption(flag, dest=dest, **kwargs)
        if ini_type is not None:
            parser.addini(dest, ini_help or kwargs.get("help", ""), type=ini_type, default=None)  # type: ignore[arg-type]

    for role in ROLES:
        label = "" if role == "task" else f"{role}-"
        who = "the model under test" if role == "task" else f"the {role} model (default: the task endpoint)"
        for what, typ, text in (("base-url", base_url, "OpenAI-compatible base URL of"),
                                ("model", str, "model name of"),
                                ("api-key", str, "API key of")):
            key = option_name(role, what.replace("-", "_"))
            env = " or $".join(env_names(role, what.replace("-", "_")))
            add(f"--promptopt-{label}{what}", "string", default=None, type=typ, metavar="VALUE",
                help=f"{text} {who} (ini {key}; env ${env})")
    add("--promptopt-record", "string", default=None, choices=[m.value for m in RecordMode],
        help="cache mode: normal (read, call on miss), replay (cache only; a miss fails the test), "
             "refresh (always call, overwrite), off (no cache). Default normal.")
    add("--promptopt-cache-dir", "string", default=None, metavar="DIR",
        help="where LM replies are cached (default .promptopt_cache under the rootdir); relative to the "
             "current directory, or to the rootdir when set in ini")
    add("--promptopt-timeout", "string", default=None, type=positive_float, metavar="SECONDS",
        help="timeout of one LM call (default 120)")
    add("--promptopt-retries", "string", default=None, type=non_negative_int, metavar="N",
        help="retries on 429/5xx/timeouts (default 4)")
    add("--promptopt-concurrency", "string", default=None, type=positive_int, metavar="N",
        help="LM calls in flight at once (default 4)")
    add("--promptopt-min-pass-rate", "string", default=None, type=fraction, metavar="RATE",
        help="fail the session if a prompt's pass rate is below RATE (0..1); on the command line it "
             "overrides min_pass_rate in prompt files, in ini it is the default for prompts without one")
    add("--promptopt-judge-threshold", "string", default=None, type=fraction, metavar="SCORE",
        help="default pass threshold of judge() (default 0.7)")
    add("--promptopt-judge-mode", "string", default=None, choices=JUDGE_MODES,
        help="how judge() asks: score (a 0..1 score in the reply), yesno (one yes/no token, scored by "
             "its probability), auto (default: yesno for the embedded model, else score)")
    add("--promptopt-report", "string", default=None, metavar="PATH",
        help="write a JSON run report to PATH (relative to the current directory, or to the rootdir when set in ini)")
    add("--promptopt-baseline", "string", default=None, metavar="PATH",
        help="compare the run with this baseline file and gate on it (see --promptopt-alpha, --promptopt-max-drop); "
             "relative to the current directory, or to the rootdir when set in ini")
    group.addoption("--promptopt-save-baseline", dest="promptopt_save_baseline", default=None, metavar="PATH",
                    help="write this run's baseline (per prompt and case: verdict, score, output, prompt digest) to PATH")
    add("--promptopt-alpha", "string", default=None, type=fraction, metavar="ALPHA",
        help="significance level of the baseline gate's exact McNemar test (default 0.05)")
    add("--promptopt-max-drop", "string", default=None, type=fraction, metavar="RATE",
        help="also fail a prompt whose pass rate on the cases paired with the baseline fell by more than RATE (0..1)")
    add("--promptopt-html", "string", default=None, metavar="PATH",
        help="write a self-contained HTML report to PATH (relative to the current directory, or to the rootdir when set in ini)")
    parser.addini("promptopt_prices", "per-model prices: 'model = input_usd_per_1M, output_usd_per_1M' per line",
                  type="linelist", default=[])

    group.addoption("--optimize", action="store_true", default=False,
                    help="after the run, optimize prompts whose tests fail and write the winners back")
    group.addoption("--optimize-prompt", action="append", default=[], metavar="PATH",
                    help="optimize only this prompt file (repeatable)")
    group.addoption("--optimize-strategy", default="auto", choices=STRATEGIES,
                    help="auto (default: MIPRO search fed by GRAD-SUM critiques), gradsum or mipro")
    group.addoption("--optimize-budget", default=None, type=positive_int, metavar="CALLS",
                    help="cap on LM calls (cached or not) per optimized prompt (default 3000)")
    group.addoption("--optimize-token-budget", default=None, type=positive_int, metavar="TOKENS",
                    help="cap on tokens per optimized prompt")
    group.addoption("--optimize-dry-run", action="store_true", default=False,
                    help="print the diff of the improved prompt, write nothing")
    group.addoption("--optimize-resume", action="store_true", default=False,
                    help="continue an interrupted optimization from its run log")
    group.addoption("--optimize-seed", default=0, type=int, metavar="N", help="random seed (default 0)")
    group.addoption("--optimize-margin", default=None, type=fraction, metavar="DELTA",
                    help="validation score gain a candidate needs to be written (default 0.02)")
    group.addoption("--optimize-max-regressions", default=None, type=non_negative_int, metavar="N",
                    help="previously passing validation tests a candidate may break (default 0)")


def _setting(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name, None)
    if value is None:
        value = config.getini(name) if name in config._parser._inidict else None
    return value if value not in ("", None) else None


def _ini_typed(config: pytest.Config, name: str, convert: Any) -> Any:
    """Command-line values are converted by argparse; ini values are converted here."""
    cli = config.getoption(name, None)
    return cli if cli is not None else _ini_value(config, name, convert)


def _ini_value(config: pytest.Config, name: str, convert: Any) -> Any:
    raw = config.getini(name)
    if raw in (None, ""):
        return None
    try:
        return convert(str(raw))
    except Exception as exc:  # noqa: BLE001 - argparse.ArgumentTypeError and ValueError alike
        raise pytest.UsageError(f"ini option {name} = {raw!r}: {exc}") from None


def build_settings(config: pytest.Config) -> Settings:
    try:
        roles = resolve_roles(lambda n: config.getoption(n, None), lambda n: config.getini(n) or None)
        prices = parse_prices(config.getini("promptopt_prices"))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    mode = _setting(config, "promptopt_record") or "normal"
    if mode not in {m.value for m in RecordMode}:
        raise pytest.UsageError(f"ini option promptopt_record = {mode!r}: expected one of "
                                f"{', '.join(m.value for m in RecordMode)}")
    judge_mode = _setting(config, "promptopt_judge_mode") or "auto"
    if judge_mode not in JUDGE_MODES:
        raise pytest.UsageError(f"ini option promptopt_judge_mode = {judge_mode!r}: expected one of "
                                f"{', '.join(JUDGE_MODES)}")
    return Settings(
        roles=roles,
        cache_dir=_path_setting(config, "promptopt_cache_dir") or config.rootpath / ".promptopt_cache",
        record_mode=RecordMode(mode),
        timeout=_ini_typed(config, "promptopt_timeout", positive_float) or 120.0,
        retries=_ini_or(_ini_typed(config, "promptopt_retries", non_negative_int), 4),
        concurrency=_ini_typed(config, "promptopt_concurrency", positive_int) or 4,
        prices=prices,
        min_pass_rate=_ini_value(config, "promptopt_min_pass_rate", fraction),
        judge_threshold=_ini_or(_ini_typed(config, "promptopt_judge_threshold", fraction), 0.7),
        report_path=_path_setting(config, "promptopt_report"),
        judge_mode=judge_mode,
    )


def build_baseline_settings(config: pytest.Config) -> BaselineSettings:
    save = config.getoption("promptopt_save_baseline", None)
    return BaselineSettings(
        baseline_path=_path_setting(config, "promptopt_baseline"),
        save_path=resolve_path(save, config.invocation_params.dir) if save else None,
        alpha=_ini_or(_ini_typed(config, "promptopt_alpha", fraction), DEFAULT_ALPHA),
        max_drop=_ini_typed(config, "promptopt_max_drop", fraction),
        html_path=_path_setting(config, "promptopt_html"),
    )


def _path_setting(config: pytest.Config, name: str) -> Path | None:
    """A command-line path is relative to the invocation directory (like --junitxml), an ini path
    to the rootdir (like cache_dir); `~` and `$VARS` are expanded in both."""
    cli = config.getoption(name, None)
    if cli not in (None, ""):
        return resolve_path(str(cli), config.invocation_params.dir)
    ini = config.getini(name)
    return resolve_path(str(ini), config.rootpath) if ini not in (None, "") else None


def _ini_or(value: Any, default: Any) -> Any:
    return default if value is None else value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "promptopt(repeats=1, min_passes=None, threshold=None): run the test `repeats` times and pass "
        "when at least `min_passes` runs pass (default: all); `threshold` is the default for judge()",
    )
    if config.getoption("help", False):
        return  # `pytest --help` must work while the settings are wrong: it is how one finds the fix
    settings = build_settings(config)
    if config.getoption("optimize") and _xdist_active(config):
        raise pytest.UsageError("--optimize runs in one process: drop -n/--numprocesses for the optimization run")
    baseline_settings = build_baseline_settings(config)
    try:  # a baseline that cannot be read stops the run before any LM call
        loaded = load_baseline(baseline_settings) if not hasattr(config, "workerinput") else None
    except BaselineError as exc:
        raise pytest.UsageError(str(exc)) from None
    session = PromptOptSession(config, settings)
    session.baseline_settings, session.loaded_baseline = baseline_settings, loaded
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "promptopt-session")
    config.add_cleanup(session.close)


def _xdist_active(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and getattr(config.option, "dist", "no") != "no"


def _session(config: pytest.Config) -> PromptOptSession:
    return config.stash[SESSION_KEY]


# -- fixtures ------------------------------------------------------------------------------------

def _record(request: pytest.FixtureRequest) -> TestRecord:
    item = request.node
    record = item.stash.get(RECORD_KEY, None)
    if record is None:
        record = item.stash[RECORD_KEY] = TestRecord(item.nodeid)
    return record


@pytest.fixture
def llm(request: pytest.FixtureRequest) -> LLM:
    """Call a prompt: `llm(prompt, **variables) -> str`. Cached, traced, optimizable."""
    return LLM(_session(request.config).runtime, _record(request))


@pytest.fixture
def judge(request: pytest.FixtureRequest) -> JudgeCall:
    """LLM judge: `judge(output, criteria, expected=None, threshold=None) -> Verdict`."""
    marker = request.node.get_closest_marker("promptopt")
    threshold = marker.kwargs.get("threshold") if marker else None
    return JudgeCall(_session(request.config).runtime, _record(request), threshold)


@pytest.fixture
def promptopt_runtime(request: pytest.FixtureRequest) -> Runtime:
    """The session's runtime (clients, cache, settings), for advanced use."""
    return _session(request.config).runtime


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
    if record is not None and op == "==":
        record.note_expected(left, right)
        record.note_expected(right, left)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> object:
    marker = pyfuncitem.get_closest_marker("promptopt")
    try:
        repeats, min_passes = repeat_plan(marker.kwargs if marker else {})
    except ConfigError as exc:
        raise pytest.UsageError(f"{pyfuncitem.nodeid}: {exc}") from None
    if repeats <= 1:
        return None
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        raise pytest.UsageError(f"{pyfuncitem.nodeid}: promptopt(repeats=...) does not support async tests")
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    record = pyfuncitem.stash.get(RECORD_KEY, None)
    passes, failures = 0, []
    for sample in range(repeats):
        for value in args.values():
            if isinstance(value, (LLM, JudgeCall)):
                value.sample = sample  # a distinct cache key per draw
        try:
            pyfuncitem.obj(**args)
            passes += 1
        except (AssertionError, PromptOptError) as exc:
            failures.append(f"run {sample + 1}: {exc}")
    if record is not None:
        record.repeats = (passes, repeats)
    if passes < min_passes:
        raise AssertionError(f"{passes} of {repeats} runs passed, {min_passes} needed\n" + "\n".join(failures))
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when == "call" or (call.when == "setup" and report.failed):
        item.stash[OUTCOME_KEY] = (report.passed, _failure_message(report))
    record = item.stash.get(RECORD_KEY, None)
    if call.when != "call" or record is None or not (record.traces or record.verdicts or record.errors):
        return report
    if report.skipped and not hasattr(report, "wasxfail"):
        return report  # a skipped case is not a failed one; an xfailed case is
    runtime = _session(item.config).runtime
    passed = report.passed
    usage = record.usage_by_prompt()
    if record.judge_traces:
        usage[JUDGE_KEY] = {**usage.get(JUDGE_KEY, {}), "calls": len(record.judge_traces),
                            "tokens": sum(t.tokens for t in record.judge_traces),
                            "cost": sum(t.cost for t in record.judge_traces),
                            "cache_hits": sum(t.cached for t in record.judge_traces)}
    outcome = CaseOutcome(item.nodeid, passed, record.score(passed), usage,
                          {k: runtime.prompts[k].min_pass_rate for k in usage if k in runtime.prompts},
                          call.duration, record.errors[0][1][:500] if record.errors else "",
                          digests={k: runtime.prompts[k].source_digest for k in usage if k in runtime.prompts},
                          **case_details(record, _failure_message(report)))
    if record.errors:
        _session(item.config).note_unscored(item.nodeid, record.errors[0][1])
    report.promptopt = outcome.to_dict()  # plain data: survives xdist serialization
    props = [("promptopt_score", round(outcome.score, 4))]
    props += [("promptopt_prompt", display(k, item.config.rootpath)) for k in record.prompt_keys]
    report.user_properties.extend(props)
    item.user_properties.extend(props)  # junitxml reads them from the teardown report, made from the item
    return report


def _failure_message(report: pytest.TestReport) -> str:
    if report.passed:
        return ""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", None) or report.longreprtext
    return str(message)[:2000]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller -> worker: share the embedded server started by the controller."""
    url = _session(node.config).embedded_url_for_workers()
    if url:
        node.workerinput["promptopt_embedded_url"] = url


__all__ = ["judge", "llm", "promptopt_runtime"]
