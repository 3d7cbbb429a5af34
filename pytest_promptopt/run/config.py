"""Settings: where each LM role points, cache, gate and optimization options, as one frozen
object resolved once per session (by the pytest layer, from its options and ini).

Precedence, stated once: command line, then ini (`[tool.pytest.ini_options]`), then the
environment, then the defaults in `defaults.py`. Judge and optimizer endpoints default to the
task endpoint, field by field. With no base URL anywhere, the embedded local model is used.
The per-prompt gate is the one exception to "command line, then ini": a prompt file's own
`min_pass_rate` sits between them (command line, then the prompt file, then ini).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import defaults
from ..llm.cache import RecordMode
from ..llm.client import Price
from ..errors import ConfigError

ROLES = ("task", "judge", "optimizer")


def option_name(role: str, what: str) -> str:
    """'task','base_url' -> 'promptopt_base_url'; 'judge','model' -> 'promptopt_judge_model'."""
    return f"promptopt_{what}" if role == "task" else f"promptopt_{role}_{what}"


def env_names(role: str, what: str) -> tuple[str, ...]:
    own = f"PROMPTOPT_{what.upper()}" if role == "task" else f"PROMPTOPT_{role.upper()}_{what.upper()}"
    if role == "task" and what in ("base_url", "api_key"):
        return (own, f"OPENAI_{what.upper()}")
    return (own,)


JUDGE_OBJECTIVES = ("kappa", "balanced_accuracy")  # what tuning a judge maximizes; never raw agreement


@dataclass(frozen=True)
class RoleConfig:
    role: str
    base_url: str | None
    model: str | None
    api_key: str = field(default="", repr=False)
    source: str = ""  # where the base URL came from, as the run header says it ("$OPENAI_BASE_URL")

    @property
    def embedded(self) -> bool:
        return self.base_url is None


@dataclass(frozen=True)
class OptimizeSettings:
    """`--optimize` and its options."""

    enabled: bool = False
    prompts: tuple[Path, ...] = ()  # only these prompt files; empty: every prompt with failing tests
    strategy: str = defaults.OPTIMIZE_STRATEGY
    preset: str = defaults.OPTIMIZE_PRESET
    budget: int | None = defaults.OPTIMIZE_BUDGET  # LM calls per group (default: the preset's)
    token_budget: int | None = None
    dry_run: bool = False
    resume: bool = False
    seed: int = defaults.OPTIMIZE_SEED
    margin: float = defaults.OPTIMIZE_MARGIN
    max_regressions: int | None = None  # None: defaults.allowed_regressions decides
    allow_constant: bool = defaults.OPTIMIZE_ALLOW_CONSTANT  # write a candidate no better than the constant answer
    context_tokens: int | None = None  # the optimizer model's context; None: by endpoint (see defaults)
    progress_interval: float = defaults.PROGRESS_INTERVAL_S  # seconds between progress lines in CI, at most


@dataclass(frozen=True)
class BaselineSettings:
    baseline_path: Path | None = None  # compare with this baseline
    save_path: Path | None = None  # write this run's baseline here
    alpha: float = defaults.BASELINE_ALPHA  # significance level of the McNemar test
    max_drop: float | None = None  # largest allowed fall of the paired pass rate (None: not checked)
    html_path: Path | None = None
    pairwise: str | None = defaults.BASELINE_PAIRWISE  # criteria a pairwise judge compares outputs by
    pairwise_judge: Path | None = None  # ... or the judge file whose criteria (and model) it uses

    @property
    def active(self) -> bool:
        return any(p is not None for p in (self.baseline_path, self.save_path, self.html_path))


@dataclass(frozen=True)
class Settings:
    roles: Mapping[str, RoleConfig]
    cache_dir: Path
    record_mode: RecordMode = RecordMode(defaults.RECORD_MODE)
    timeout: float = defaults.TIMEOUT_S
    retries: int = defaults.RETRIES
    concurrency: int | None = None  # None: by endpoint (see concurrency_for)
    probe: str = defaults.PROBE  # auto | off: the probe pass of tests without a call log (llm/probe.py)
    prices: Mapping[str, Price] = field(default_factory=dict)
    min_pass_rate: float | None = None  # ini: the gate of prompts whose file sets none
    min_pass_rate_override: float | None = None  # command line: the gate of every prompt
    judge_threshold: float = defaults.JUDGE_THRESHOLD
    report_path: Path | None = None
    judge_mode: str = defaults.JUDGE_MODE  # auto | score | yesno | geval (see judge.JUDGE_MODES)
    judge_uncalibrated: str = defaults.JUDGE_UNCALIBRATED  # gate | advisory: judges without a current card
    judge_min_kappa: float = defaults.JUDGE_MIN_KAPPA  # a calibrated judge gates from this kappa lower bound
    calibrate: bool = False  # --promptopt-calibrate: calibrate the judge files, run no tests
    optimize_judges: bool = False  # --promptopt-optimize-judges: tune the judge files' criteria, run no tests
    judge_objective: str = defaults.JUDGE_OBJECTIVE  # kappa | balanced_accuracy
    judge_samples: int = 1  # draws of each judge call (distinct samples, each cached)
    judge_confirm_fails: bool = False  # draw again only when the first verdict fails
    exit_rule: str = defaults.EXIT_RULE  # gates | tests (see report/exit_rule.py)

    @property
    def judges_only(self) -> bool:
        """The run calibrates or tunes judge files and runs no tests."""
        return self.calibrate or self.optimize_judges

    @property
    def judge_draws(self) -> int:
        """Draws a judge call may take: the setting, or CONFIRM_DRAWS when confirming fails with 1."""
        if self.judge_confirm_fails and self.judge_samples == 1:
            return defaults.JUDGE_CONFIRM_DRAWS
        return self.judge_samples
    optimize: OptimizeSettings = field(default_factory=OptimizeSettings)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    embedding_model: str | None = None  # for retrieve by: embeddings, through the task endpoint
    shared_cache: str | None = None  # URL or path of the shared reply tier under the local cache

    @property
    def needs_embedded(self) -> bool:
        return any(r.embedded for r in self.roles.values())

    @property
    def effective_judge_mode(self) -> str:
        """'score' or 'yesno': auto is yesno when the judge endpoint is the embedded model."""
        if self.judge_mode != "auto":
            return self.judge_mode
        judge = self.roles.get("judge")
        return "yesno" if judge is not None and judge.embedded else "score"

    def role(self, name: str) -> RoleConfig:
        return self.roles[name]

    def concurrency_for(self, role: str) -> int:
        """LM calls in flight at once for `role`: the setting, else by endpoint (defaults.py)."""
        if self.concurrency is not None:
            return self.concurrency
        return defaults.EMBEDDED_CONCURRENCY if self.roles[role].embedded else defaults.CONCURRENCY

    def price_of(self, role: str) -> Price | None:
        """The configured price of the role's model; None: its cost is unknown (shown as -)."""
        return self.prices.get(self.role(role).model or defaults.EMBEDDED_MODEL)


Lookup = Callable[[str], object]


def resolve_roles(cli: Lookup, ini: Lookup, env: Mapping[str, str] | None = None) -> dict[str, RoleConfig]:
    """Resolve base URL, key and model for every role. `cli`/`ini` return None when unset."""
    env = os.environ if env is None else env

    def found(role: str, what: str) -> tuple[str | None, str]:
        """The value and where it came from."""
        name = option_name(role, what)
        for value, source in ((cli(name), "--" + name.replace("_", "-")), (ini(name), f"ini {name}")):
            if value not in (None, ""):
                return str(value), source
        for var in env_names(role, what):
            if env.get(var):
                return env[var], f"${var}"
        return None, ""

    def pick(role: str, what: str) -> str | None:
        return found(role, what)[0]

    roles: dict[str, RoleConfig] = {}
    task_url, task_source = found("task", "base_url")
    task = RoleConfig("task", task_url, pick("task", "model"), pick("task", "api_key") or "", task_source)
    roles["task"] = task
    for role in ("judge", "optimizer"):
        base_url, source = found(role, "base_url")
        own_endpoint = base_url is not None and base_url != task.base_url
        roles[role] = RoleConfig(
            role,
            base_url or task.base_url,
            pick(role, "model") or (None if own_endpoint else task.model),
            pick(role, "api_key") or ("" if own_endpoint else task.api_key),
            source or task.source,
        )
    for rc in roles.values():
        if rc.base_url is not None and not rc.model:
            raise ConfigError(
                f"the {rc.role} endpoint {rc.base_url} has no model; set --{option_name(rc.role, 'model').replace('_', '-')}"
                f" (or ini {option_name(rc.role, 'model')}, or ${env_names(rc.role, 'model')[0]})"
            )
        if rc.base_url is not None and not rc.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"the {rc.role} base URL must start with http:// or https://, got {rc.base_url!r}; "
                "write e.g. http://127.0.0.1:8000/v1"
            )
    return roles


def resolve_path(text: str, base: Path) -> Path:
    """A path setting: `~` and `$VARS` expanded, a relative path taken from `base`.

    The pytest layer passes the invocation directory for command-line values (like pytest's
    `--junitxml`) and the rootdir for ini values (like pytest's `cache_dir`).
    """
    path = Path(os.path.expanduser(os.path.expandvars(text)))
    return path if path.is_absolute() else base / path


def parse_prices(lines: list[str]) -> dict[str, Price]:
    """ini `promptopt_prices`: one `model = input_per_mtok, output_per_mtok` per line."""
    prices: dict[str, Price] = {}
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        model, sep, rest = line.partition("=")
        parts = [p.strip() for p in rest.split(",")]
        try:
            if not sep or len(parts) != 2:
                raise ValueError
            prices[model.strip()] = Price(float(parts[0]), float(parts[1]))
        except ValueError:
            raise ConfigError(
                f"ini promptopt_prices: cannot read {line!r}; write one 'model = input_usd_per_1M, "
                "output_usd_per_1M' per line, e.g. 'gpt-4o-mini = 0.15, 0.60'"
            ) from None
    return prices


def _argtype(convert: Callable[[str], object], ok: Callable[[object], bool], expected: str) -> Callable[[str], object]:
    """An argparse `type=` that converts, checks and says what was expected and received."""

    def parse(text: str) -> object:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected  # argparse names the type in its error message
    return parse


fraction = _argtype(float, lambda v: 0 <= v <= 1, "a number from 0 to 1")  # type: ignore[operator]
positive_int = _argtype(int, lambda v: v >= 1, "a whole number of at least 1")  # type: ignore[operator]
non_negative_int = _argtype(int, lambda v: v >= 0, "a whole number of at least 0")  # type: ignore[operator]
positive_float = _argtype(float, lambda v: v > 0, "a positive number")  # type: ignore[operator]
kappa_bound = _argtype(float, lambda v: -1 <= v <= 1, "a number from -1 to 1")  # type: ignore[operator]
base_url = _argtype(str, lambda v: str(v).startswith(("http://", "https://")),
                    "a URL starting with http:// or https://")
