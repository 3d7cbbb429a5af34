"""Settings resolved once per session from the command line, ini and environment (in that
order; see config.py), into the frozen `Settings` the core reads. Bad values become
`pytest.UsageError` naming the option, what is allowed and what was received."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .. import defaults
from ..llm.cache import RecordMode
from ..llm.redaction import display_url
from ..llm.shared_stores import missing_dependency
from ..run.config import (
    BaselineSettings,
    OptimizeSettings,
    Settings,
    fraction,
    kappa_bound,
    non_negative_int,
    parse_prices,
    positive_float,
    positive_int,
    resolve_path,
    resolve_roles,
)
from ..errors import ConfigError, PromptOptError
from ..prompts.judgefile import load_judge
from ..prompts.prompt import YAML_SUFFIXES
from ..run.card import UNCALIBRATED_POLICIES
from ..report.exit_rule import EXIT_RULES
from ..run.config import JUDGE_OBJECTIVES
from ..run.judge import JUDGE_MODES
from ..report.summary import report_path_problem


def build_settings(config: pytest.Config) -> Settings:
    try:
        roles = resolve_roles(lambda n: config.getoption(n, None), lambda n: config.getini(n) or None)
        prices = parse_prices(config.getini("promptopt_prices"))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    return Settings(
        roles=roles,
        cache_dir=path_setting(config, "promptopt_cache_dir") or config.rootpath / defaults.CACHE_DIR_NAME,
        record_mode=RecordMode(_choice(config, "promptopt_record", [m.value for m in RecordMode], defaults.RECORD_MODE)),
        timeout=_typed(config, "promptopt_timeout", positive_float, defaults.TIMEOUT_S),
        retries=_typed(config, "promptopt_retries", non_negative_int, defaults.RETRIES),
        concurrency=_typed(config, "promptopt_concurrency", positive_int, None),
        probe=_choice(config, "promptopt_probe", defaults.PROBE_MODES, defaults.PROBE),
        prices=prices,
        min_pass_rate=_ini_value(config, "promptopt_min_pass_rate", fraction),
        min_pass_rate_override=config.getoption("promptopt_min_pass_rate", None),
        judge_threshold=_typed(config, "promptopt_judge_threshold", fraction, defaults.JUDGE_THRESHOLD),
        report_path=_report_path(config),
        judge_mode=_choice(config, "promptopt_judge_mode", JUDGE_MODES, defaults.JUDGE_MODE),
        judge_uncalibrated=_choice(config, "promptopt_judge_uncalibrated", UNCALIBRATED_POLICIES,
                                   defaults.JUDGE_UNCALIBRATED),
        judge_min_kappa=_typed(config, "promptopt_judge_min_kappa", kappa_bound, defaults.JUDGE_MIN_KAPPA),
        calibrate=bool(config.getoption("promptopt_calibrate", False)),
        optimize_judges=bool(config.getoption("promptopt_optimize_judges", False)),
        judge_objective=_choice(config, "promptopt_judge_objective", JUDGE_OBJECTIVES, defaults.JUDGE_OBJECTIVE),
        judge_samples=_typed(config, "promptopt_judge_samples", positive_int, defaults.JUDGE_SAMPLES),
        judge_confirm_fails=bool(config.getoption("promptopt_judge_confirm_fails", False)),
        exit_rule=_choice(config, "promptopt_exit_rule", EXIT_RULES, defaults.EXIT_RULE),
        optimize=_optimize_settings(config),
        baseline=_baseline_settings(config),
        embedding_model=config.getoption("promptopt_embedding_model", None)
        or _ini_value(config, "promptopt_embedding_model", str) or os.environ.get("PROMPTOPT_EMBEDDING_MODEL"),
        shared_cache=_shared_cache(config),
    )


def _optimize_settings(config: pytest.Config) -> OptimizeSettings:
    def option(name: str, default: Any) -> Any:
        value = config.getoption(name, None)
        return default if value is None else value

    preset = option("optimize_preset", defaults.OPTIMIZE_PRESET)
    return OptimizeSettings(
        enabled=bool(config.getoption("optimize", False)),
        preset=preset,
        prompts=tuple(resolve_path(p, config.invocation_params.dir).resolve()
                      for p in config.getoption("optimize_prompt", None) or ()),
        strategy=option("optimize_strategy", defaults.OPTIMIZE_STRATEGY),
        budget=option("optimize_budget", defaults.PRESETS[preset].budget),
        token_budget=config.getoption("optimize_token_budget", None),
        dry_run=bool(config.getoption("optimize_dry_run", False)),
        resume=bool(config.getoption("optimize_resume", False)),
        seed=option("optimize_seed", defaults.OPTIMIZE_SEED),
        margin=option("optimize_margin", defaults.OPTIMIZE_MARGIN),
        max_regressions=config.getoption("optimize_max_regressions", None),
        allow_constant=_flag(config, "optimize_allow_constant", "promptopt_optimize_allow_constant",
                             defaults.OPTIMIZE_ALLOW_CONSTANT),
        context_tokens=config.getoption("optimize_context_tokens", None),
        progress_interval=_typed(config, "promptopt_progress_interval", positive_float, defaults.PROGRESS_INTERVAL_S),
    )


def _baseline_settings(config: pytest.Config) -> BaselineSettings:
    save = config.getoption("promptopt_save_baseline", None)
    return BaselineSettings(
        baseline_path=path_setting(config, "promptopt_baseline"),
        save_path=_writable("--promptopt-save-baseline", resolve_path(save, config.invocation_params.dir) if save else None),
        alpha=_typed(config, "promptopt_alpha", fraction, defaults.BASELINE_ALPHA),
        max_drop=_typed(config, "promptopt_max_drop", fraction, None),
        html_path=_writable("--promptopt-html", path_setting(config, "promptopt_html")),
        **_baseline_pairwise(config),
    )


def _baseline_pairwise(config: pytest.Config) -> dict[str, Any]:
    """`--promptopt-baseline-pairwise`: criteria text, or a judge file (.yaml/.yml, resolved like
    a path setting) that must load now, so a typo stops the run before any LM call."""
    raw = config.getoption("promptopt_baseline_pairwise", None) or _ini_value(config, "promptopt_baseline_pairwise", str)
    if raw is None or not str(raw).strip():
        if raw is not None:
            raise pytest.UsageError("--promptopt-baseline-pairwise / ini promptopt_baseline_pairwise is empty; give "
                                    "the criteria the outputs are compared by, or a judge file (.yaml)")
        return {}
    if Path(str(raw)).suffix.lower() not in YAML_SUFFIXES:
        return {"pairwise": str(raw).strip()}
    path = path_setting(config, "promptopt_baseline_pairwise")
    try:
        judge = load_judge(path)  # type: ignore[arg-type]
    except PromptOptError as exc:
        raise pytest.UsageError(f"--promptopt-baseline-pairwise / ini promptopt_baseline_pairwise = {raw!r}: {exc}; "
                                "fix: give an existing judge file, or the criteria as text") from None
    return {"pairwise": judge.criteria, "pairwise_judge": judge.path}


def _writable(option: str, path: Path | None) -> Path | None:
    """An output path checked when options are parsed: a bad one is a usage error before any LM call."""
    problem = report_path_problem(path) if path is not None else None
    if problem is not None:
        raise pytest.UsageError(f"{option}: {problem}")
    return path


def _choice(config: pytest.Config, name: str, allowed: Any, default: str) -> str:
    value = config.getoption(name, None) or _ini_value(config, name, str) or default
    if value not in allowed:
        raise pytest.UsageError(f"ini option {name} = {value!r}: expected one of {', '.join(allowed)}")
    return str(value)


def _flag(config: pytest.Config, option: str, ini: str, default: bool) -> bool:
    """A yes/no setting: the command line's flag, else the ini key (true/false), else `default`."""
    if config.getoption(option, None):
        return True
    value = config.getini(ini)
    return default if value is None or value == "" else bool(value)


def _typed(config: pytest.Config, name: str, convert: Any, default: Any) -> Any:
    """Command-line values were converted by argparse; ini values are converted here."""
    cli = config.getoption(name, None)
    if cli is not None:
        return cli
    value = _ini_value(config, name, convert)
    return default if value is None else value


def _ini_value(config: pytest.Config, name: str, convert: Any) -> Any:
    raw = config.getini(name)
    if raw in (None, ""):
        return None
    try:
        return convert(str(raw))
    except Exception as exc:  # noqa: BLE001 - argparse.ArgumentTypeError and ValueError alike
        raise pytest.UsageError(f"ini option {name} = {raw!r}: {exc}") from None


def _report_path(config: pytest.Config) -> Path | None:
    return _writable("--promptopt-report", path_setting(config, "promptopt_report"))


def _shared_cache(config: pytest.Config) -> str | None:
    """A URL as given; a plain path resolved like --promptopt-cache-dir. A backend whose package
    is not installed is a usage error (an unreachable one only warns, at the first use)."""
    raw = config.getoption("promptopt_shared_cache", None) or _ini_value(config, "promptopt_shared_cache", str)
    if not raw:
        return None
    problem = missing_dependency(raw)
    if problem is not None:
        raise pytest.UsageError(f"--promptopt-shared-cache / ini promptopt_shared_cache = {display_url(raw)!r}: {problem}")
    return raw if "://" in raw else str(path_setting(config, "promptopt_shared_cache"))


def path_setting(config: pytest.Config, name: str) -> Path | None:
    """A command-line path is relative to the invocation directory (like --junitxml), an ini path
    to the rootdir (like cache_dir); `~` and `$VARS` are expanded in both."""
    cli = config.getoption(name, None)
    if cli not in (None, ""):
        return resolve_path(str(cli), config.invocation_params.dir)
    ini = config.getini(name)
    return resolve_path(str(ini), config.rootpath) if ini not in (None, "") else None
