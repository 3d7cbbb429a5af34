"""Every default of a user-facing setting, in one place.

Option help texts, the settings object and the core all read these names, so a default is
changed here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# -- endpoints and calls -----------------------------------------------------------------------
EMBEDDED_MODEL = "smollm2-135m-instruct"  # the name the embedded server is asked for
TIMEOUT_S = 120.0  # one LM call
RETRIES = 4  # on 429, 5xx, timeouts and broken connections
# LM calls in flight at once, per role: a hosted endpoint serves many at a time (and says 429
# when it wants fewer; the client then backs off); the embedded server answers one at a time,
# so more would only queue there and eat into each call's timeout.
CONCURRENCY = 8
EMBEDDED_CONCURRENCY = 1
RECORD_MODE = "normal"  # normal | replay | refresh | off
# A first run (tests without a call log) runs those tests once up to their first uncached LM call,
# unreported, to send those calls ahead together: "auto" (when calls can overlap) or "off".
PROBE = "auto"
PROBE_MODES = ("auto", "off")
CACHE_DIR_NAME = ".promptopt_cache"  # under the rootdir
SHARED_CACHE_TIMEOUT_S = 5.0  # connect/read timeout of the shared cache tier (Redis); then local-only
SHARED_CACHE_MAX_ENTRY_BYTES = 16 * 1024 * 1024  # a shared entry larger than this is a miss, never read

# -- judging and the gate ----------------------------------------------------------------------
JUDGE_THRESHOLD = 0.7  # judge() passes at or above this score
JUDGE_MODE = "auto"  # auto | score | yesno | geval
# What a judge without a current calibration card (uncalibrated, or stale: its card measured
# another criteria, wording, mode, model, threshold or labels) may do: "gate" (fail tests and
# count, as before cards existed) or "advisory" (shown, not counted). "gate": an upgrade must not
# silently stop a suite's judges from failing it; every report says which judges are uncalibrated.
JUDGE_UNCALIBRATED = "gate"
# The lowest lower bound of a calibrated judge's 95% kappa interval that lets it gate. 0.4 is the
# bottom of "moderate" agreement (Landis & Koch): below it, what the judge says is mostly noise
# around chance, and a judge measured to be that weak is shown, not counted. -1 lets every
# calibrated judge gate (the behaviour before cards).
JUDGE_MIN_KAPPA = 0.4
JUDGE_SAMPLES = 1  # draws of each judge call; more measure the judge's flip rate
JUDGE_CONFIRM_DRAWS = 3  # confirm-on-fail without --promptopt-judge-samples: a failing verdict is asked 2 more times
# What decides the exit code: "gates" (a failed case of a prompt whose gate passed does not fail
# the session; a prompt suite is not a unit-test suite) or "tests" (pytest's rule: any failure).
EXIT_RULE = "gates"

# -- the baseline gate ------------------------------------------------------------------------
BASELINE_ALPHA = 0.05  # significance level of the exact McNemar test on paired cases
# --promptopt-baseline-pairwise: off unless given criteria (or a judge file) to compare each
# case's output now with its output in the baseline (both orders; a report, not a gate).
BASELINE_PAIRWISE = None

# -- --optimize --------------------------------------------------------------------------------
OPTIMIZE_STRATEGY = "auto"
OPTIMIZE_PRESET = "medium"
OPTIMIZE_BUDGET = 3000  # LM calls (cached or not) per optimized group of prompts: the medium preset's
OPTIMIZE_MARGIN = 0.02  # validation gain a candidate needs to be written
# write a candidate that does not beat always giving the most common expected answer
OPTIMIZE_ALLOW_CONSTANT = False
OPTIMIZE_SEED = 0
PROGRESS_INTERVAL_S = 30.0  # outside a terminal (CI logs), a progress line at least this often
# Previously passing validation tests a candidate may break, when --optimize-max-regressions is
# not given: this share of them, and at least one.
MAX_REGRESSIONS_SHARE = 0.2
# The optimizer model's context window in tokens, which sizes the evidence it is shown (half of it):
# an endpoint's model unless --optimize-context-tokens says otherwise, and the embedded server's.
OPTIMIZER_CONTEXT_TOKENS = 16_000
EMBEDDED_CONTEXT_TOKENS = 4096
VALIDATION_FRACTION = 0.35  # of a prompt's tests; train needs room for demos and for scoring them


def allowed_regressions(previously_passing: int, explicit: int | None) -> int:
    """The regressions a candidate may cause: the explicit setting, else the default rule."""
    if explicit is not None:
        return explicit
    return max(1, int(previously_passing * MAX_REGRESSIONS_SHARE))


# -- --optimize-preset: budgets and search sizes, like DSPy's auto=light|medium|heavy ------------------


@dataclass(frozen=True)
class Preset:
    budget: int  # the default of --optimize-budget
    mipro: Mapping[str, object]  # knobs of the mipro and auto strategies (README table)
    gradsum: Mapping[str, object]
    proposer: Mapping[str, int] = field(default_factory=dict)  # ProposerLimits sizes other than the defaults


PRESETS: dict[str, Preset] = {
    "light": Preset(
        budget=500,
        mipro={"n_demo_sets": 2, "keep_demo_sets": 2, "recombined_sets": 1, "recombine_generations": 0,
               "reorder_sets": 0, "orders_per_set": 2, "rounds": 1, "instructions_per_round": 1,
               "max_trials": 2, "minibatch": 10, "full_eval_every": 3, "retrieve_ks": (4,), "critique_cases": 2,
               "summaries": False, "scored_cases": 40},
        gradsum={"beam": 2, "rounds": 2, "gradients_per_round": 3, "edits": 1, "minibatch": 12},
        proposer={"gradient_tokens": 150, "summary_tokens": 200, "cases_per_proposal": 4},
    ),
    "medium": Preset(
        budget=OPTIMIZE_BUDGET,
        mipro={"n_demo_sets": 40, "keep_demo_sets": 5, "recombined_sets": 4, "recombine_generations": 2,
               "reorder_sets": 2, "orders_per_set": 8, "rounds": 2, "instructions_per_round": 3,
               "max_trials": 24, "minibatch": 20, "full_eval_every": 5, "retrieve_ks": (4, 6),
               "critique_cases": 6},
        gradsum={"beam": 3, "rounds": 4, "gradients_per_round": 6, "edits": 3, "minibatch": 24},
    ),
    "heavy": Preset(
        budget=8000,
        mipro={"n_demo_sets": 64, "keep_demo_sets": 8, "recombined_sets": 6, "recombine_generations": 3,
               "reorder_sets": 3, "orders_per_set": 10, "rounds": 3, "instructions_per_round": 4,
               "max_trials": 48, "minibatch": 32, "full_eval_every": 5, "retrieve_ks": (2, 4, 6, 8, 12),
               "critique_cases": 10},
        gradsum={"beam": 4, "rounds": 6, "gradients_per_round": 10, "edits": 4, "minibatch": 32},
    ),
}

# Pairwise judging: ask both orders (a shown first, then b shown first) and call a disagreement
# a tie. One order alone takes the judge's position bias for a verdict.
PAIRWISE_BOTH_ORDERS = True

# A panel's case goes to its review file when the members disagree on pass or fail, or when its
# score is closer than this to the threshold (a verdict a small change of wording could flip).
PANEL_REVIEW_MARGIN = 0.1

# --promptopt-optimize-judges: what a judge's wording is tuned for (kappa, or balanced_accuracy;
# never raw agreement, which a judge that always says the majority label wins on skewed labels),
# and how many criteria rewrites the optimizer model proposes per judge.
JUDGE_OBJECTIVE = "kappa"
# How much of a judge's search space each --optimize-preset tries: criteria rewrites and template
# (system prompt) rewrites from the optimizer model, static demo sets (a few train labels of each
# class, shown as graded exchanges before the case) and retrieval (the k train labels nearest
# each case, for each k). Each candidate costs one judge call per train label.
JUDGE_SEARCH: dict[str, Mapping[str, object]] = {
    "light": {"rewrites": 2, "templates": 1, "demo_sets": 1, "demos_per_class": 2, "retrieve_ks": (4,)},
    "medium": {"rewrites": 4, "templates": 2, "demo_sets": 3, "demos_per_class": 2, "retrieve_ks": (4, 8)},
    "heavy": {"rewrites": 8, "templates": 4, "demo_sets": 6, "demos_per_class": 3, "retrieve_ks": (2, 4, 8, 12)},
}
