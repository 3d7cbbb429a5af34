"""The `promptopt` option group: every command-line option and ini key, with help texts that
state the real defaults (read from `defaults.py`). Values are checked by their argparse types
when the command line is parsed; ini values are checked when the settings are built."""

from __future__ import annotations

from typing import Any

import pytest

from .. import defaults
from ..llm.cache import RecordMode
from ..run.card import UNCALIBRATED_POLICIES
from ..run.config import JUDGE_OBJECTIVES
from ..run.config import (ROLES, base_url, env_names, fraction, kappa_bound, non_negative_int, option_name,
                          positive_float, positive_int)
from ..report.exit_rule import EXIT_RULES
from ..run.judge import JUDGE_MODES


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("promptopt", "prompt testing and optimization (pytest-promptopt)")

    def add(flag: str, ini_type: str | None = None, **kwargs: Any) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        group.addoption(flag, dest=dest, **kwargs)
        if ini_type is not None:
            parser.addini(dest, kwargs.get("help", ""), type=ini_type, default=None)  # type: ignore[arg-type]

    _endpoint_options(add)
    _run_options(add)
    parser.addini("promptopt_prices", "per-model prices: 'model = input_usd_per_1M, output_usd_per_1M' per line",
                  type="linelist", default=[])
    parser.addini("promptopt_progress_interval", "--optimize outside a terminal (CI): a progress line at least "
                  f"every this many seconds (default {defaults.PROGRESS_INTERVAL_S:g})", default=None)
    parser.addini("promptopt_optimize_allow_constant", "--optimize writes a winner even if it does not beat always "
                  "giving the most common expected answer (--optimize-allow-constant)", type="bool", default=None)
    _optimize_options(group)


def _endpoint_options(add: Any) -> None:
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


def _run_options(add: Any) -> None:
    add("--promptopt-record", "string", default=None, choices=[m.value for m in RecordMode],
        help="cache mode: normal (read, call on miss), replay (cache only; a miss fails the test), "
             f"refresh (always call, overwrite), off (no cache). Default {defaults.RECORD_MODE}.")
    add("--promptopt-cache-dir", "string", default=None, metavar="DIR",
        help=f"where LM replies are cached (default {defaults.CACHE_DIR_NAME} under the rootdir); relative to "
             "the current directory, or to the rootdir when set in ini")
    add("--promptopt-shared-cache", "string", default=None, metavar="URL",
        help="a shared tier of recorded replies under the local cache, read on a local miss and written once "
             "per reply: a directory (path or file:///path), redis://host:port/db, or an fsspec URL "
             "(s3://bucket/prefix, gs://...); needs the extra pytest-promptopt[shared] for Redis and fsspec")
    add("--promptopt-timeout", "string", default=None, type=positive_float, metavar="SECONDS",
        help=f"timeout of one LM call (default {defaults.TIMEOUT_S:g})")
    add("--promptopt-retries", "string", default=None, type=non_negative_int, metavar="N",
        help=f"retries on 429/5xx/timeouts (default {defaults.RETRIES})")
    add("--promptopt-concurrency", "string", default=None, type=positive_int, metavar="N",
        help=f"LM calls in flight at once, per role; a plain run sends its tests' predictable calls "
             f"ahead at this concurrency (default {defaults.CONCURRENCY} for an endpoint, "
             f"{defaults.EMBEDDED_CONCURRENCY} for the embedded model)")
    add("--promptopt-probe", "string", default=None, choices=defaults.PROBE_MODES,
        help="tests without a call log from an earlier run (a first run, new tests, a fresh cache) are first run "
             "unreported up to their first LM call the cache cannot answer, and those calls are sent ahead together: "
             "their fixtures and the code before that call run twice. auto (when calls can overlap) or off. "
             f"Default {defaults.PROBE}.")
    add("--promptopt-min-pass-rate", "string", default=None, type=fraction, metavar="RATE",
        help="fail the session if a prompt's pass rate is below RATE (0..1); on the command line it "
             "overrides min_pass_rate in prompt files, in ini it is the default for prompts without one")
    add("--promptopt-exit-rule", "string", default=None, choices=EXIT_RULES,
        help="what decides the exit code: gates (a failed case of a prompt whose gate passed does not fail the "
             "session; failures outside a gate, failed LM calls and incomplete runs still do) or tests (pytest's "
             f"rule: any failed test fails the session). Default {defaults.EXIT_RULE}.")
    add("--promptopt-judge-threshold", "string", default=None, type=fraction, metavar="SCORE",
        help=f"default pass threshold of judge() (default {defaults.JUDGE_THRESHOLD})")
    add("--promptopt-judge-mode", "string", default=None, choices=JUDGE_MODES,
        help="how judge() asks: score (a 0..1 score in the reply), yesno (one yes/no token, scored by "
             "its probability), geval (a 0..10 score written first, weighted by its token probabilities where the "
             f"endpoint returns them), auto (yesno for the embedded model, else score). Default {defaults.JUDGE_MODE}.")
    _judge_trust_options(add)
    _judge_draw_options(add)
    add("--promptopt-report", "string", default=None, metavar="PATH",
        help="write a JSON run report to PATH (relative to the current directory, or to the rootdir when set in ini)")
    _baseline_options(add)
    add("--promptopt-embedding-model", "string", default=None, metavar="MODEL",
        help="embedding model of the task endpoint, for prompts that retrieve demos by: embeddings "
             "(ini promptopt_embedding_model; env $PROMPTOPT_EMBEDDING_MODEL)")


def _judge_trust_options(add: Any) -> None:
    add("--promptopt-calibrate", None, action="store_true", default=False,
        help="run each judge file over its labelled set (through the cache), write its calibration card next to "
             "it (<judge>.card.json) and run no tests; judge files: those the collected tests load, and "
             "judges/*.yaml under the rootdir")
    add("--promptopt-optimize-judges", None, action="store_true", default=False,
        help="tune each judge file's criteria, template (system prompt) and demos, fixed or retrieved per call, "
             "against its labels (train/validation/holdout split by a digest of each case; how much is tried follows "
             "--optimize-preset, the draws --optimize-seed), write it back only when its holdout figure beats the "
             "original's interval, "
             "refresh its card on the labels it was not tuned on, and run no tests")
    add("--promptopt-judge-objective", "string", default=None, choices=JUDGE_OBJECTIVES,
        help=f"what --promptopt-optimize-judges maximizes: kappa or balanced_accuracy (default {defaults.JUDGE_OBJECTIVE})")
    add("--promptopt-judge-uncalibrated", "string", default=None, choices=UNCALIBRATED_POLICIES,
        help="what a judge without a current calibration card (uncalibrated or stale) may do: gate (fail tests, "
             f"count) or advisory (shown, not counted). Default {defaults.JUDGE_UNCALIBRATED}.")
    add("--promptopt-judge-min-kappa", "string", default=None, type=kappa_bound, metavar="KAPPA",
        help="lowest lower bound of a calibrated judge's 95%% kappa interval that lets it gate; below it the judge "
             f"is advisory (default {defaults.JUDGE_MIN_KAPPA}; -1: every calibrated judge gates)")


def _judge_draw_options(add: Any) -> None:
    add("--promptopt-judge-samples", "string", default=None, type=positive_int, metavar="K",
        help="ask each judge call K times (distinct samples, each cached); the median-low verdict wins and the "
             f"judges' report gives the flip rate (default {defaults.JUDGE_SAMPLES})")
    add("--promptopt-judge-confirm-fails", None, action="store_true", default=False,
        help="draw a judge call again only when its first verdict fails, and take the majority (K draws in all; "
             f"{defaults.JUDGE_CONFIRM_DRAWS} when --promptopt-judge-samples is not given)")


def _baseline_options(add: Any) -> None:
    add("--promptopt-baseline", "string", default=None, metavar="PATH",
        help="compare the run with this baseline file and gate on it (see --promptopt-alpha, --promptopt-max-drop); "
             "relative to the current directory, or to the rootdir when set in ini")
    add("--promptopt-save-baseline", None, default=None, metavar="PATH",
        help="write this run's baseline (per prompt and case: verdict, score, output, prompt digest) to PATH")
    add("--promptopt-alpha", "string", default=None, type=fraction, metavar="ALPHA",
        help=f"significance level of the baseline gate's exact McNemar test (default {defaults.BASELINE_ALPHA})")
    add("--promptopt-max-drop", "string", default=None, type=fraction, metavar="RATE",
        help="also fail a prompt whose pass rate on the cases paired with the baseline fell by more than RATE "
             "(0..1; default: not checked)")
    add("--promptopt-baseline-pairwise", "string", default=None, metavar="CRITERIA",
        help="with --promptopt-baseline: ask the pairwise judge (both orders) whether each case's output now is "
             "better, worse or a tie than its output in the baseline, by CRITERIA (text, or a judge file "
             ".yaml whose criteria are used); reports counts and the flip rate per prompt, does not gate "
             "(default: off)")
    add("--promptopt-html", "string", default=None, metavar="PATH",
        help="write a self-contained HTML report to PATH (relative to the current directory, or to the rootdir "
             "when set in ini)")


def _optimize_options(group: pytest.OptionGroup) -> None:
    share = f"{defaults.MAX_REGRESSIONS_SHARE:.0%}%"  # argparse formats help with %: "%%" prints "%"
    group.addoption("--optimize", action="store_true", default=False,
                    help="after the run, optimize prompts whose tests fail and write the winners back")
    group.addoption("--optimize-prompt", action="append", default=[], metavar="PATH",
                    help="optimize only this prompt file (repeatable; relative to the current directory)")
    group.addoption("--optimize-strategy", default=None, metavar="NAME",
                    help=f"auto (MIPRO search fed by GRAD-SUM critiques), gradsum, mipro, or a name a plugin "
                         f"registers (default {defaults.OPTIMIZE_STRATEGY})")
    group.addoption("--optimize-preset", default=None, choices=sorted(defaults.PRESETS),
                    help="budget and search sizes: light (minutes), medium, heavy "
                         f"(default {defaults.OPTIMIZE_PRESET}; README lists what each sets)")
    budgets = ", ".join(f"{name} {p.budget}" for name, p in defaults.PRESETS.items())
    group.addoption("--optimize-budget", default=None, type=positive_int, metavar="CALLS",
                    help=f"cap on LM calls (cached or not) per optimized prompt (default: the preset's: {budgets})")
    group.addoption("--optimize-token-budget", default=None, type=positive_int, metavar="TOKENS",
                    help="cap on tokens per optimized prompt (default: none)")
    group.addoption("--optimize-dry-run", action="store_true", default=False,
                    help="print the diff of the improved prompt, write nothing")
    group.addoption("--optimize-resume", action="store_true", default=False,
                    help="continue an interrupted optimization from its run log")
    group.addoption("--optimize-seed", default=None, type=int, metavar="N",
                    help=f"random seed (default {defaults.OPTIMIZE_SEED})")
    group.addoption("--optimize-margin", default=None, type=fraction, metavar="DELTA",
                    help=f"validation score gain a candidate needs to be written (default {defaults.OPTIMIZE_MARGIN})")
    group.addoption("--optimize-allow-constant", action="store_true", default=None,
                    help="write a winner even if it does not beat always giving the most common expected answer "
                         "(e.g. when only the format of the original's answers was wrong; ini "
                         f"promptopt_optimize_allow_constant; default {str(defaults.OPTIMIZE_ALLOW_CONSTANT).lower()})")
    group.addoption("--optimize-max-regressions", default=None, type=non_negative_int, metavar="N",
                    help="previously passing validation tests a candidate may break (default: "
                         f"{share} of them, at least 1)")
    group.addoption("--optimize-context-tokens", default=None, type=positive_int, metavar="TOKENS",
                    help="context window of the optimizer model; half of it holds the evidence it is shown "
                         f"(default {defaults.OPTIMIZER_CONTEXT_TOKENS}, {defaults.EMBEDDED_CONTEXT_TOKENS} for "
                         "the embedded model)")
