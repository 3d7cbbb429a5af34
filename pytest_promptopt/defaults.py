"""Every default of a user-facing setting, in one place.

Option help texts, the settings object and the core all read these names, so a default is
changed here and nowhere else.
"""

from __future__ import annotations

# -- endpoints and calls -----------------------------------------------------------------------
EMBEDDED_MODEL = "smollm2-135m-instruct"  # the name the embedded server is asked for
TIMEOUT_S = 120.0  # one LM call
RETRIES = 4  # on 429, 5xx, timeouts and broken connections
CONCURRENCY = 4  # LM calls in flight at once, per role
RECORD_MODE = "normal"  # normal | replay | refresh | off
CACHE_DIR_NAME = ".promptopt_cache"  # under the rootdir

# -- judging and the gate ----------------------------------------------------------------------
JUDGE_THRESHOLD = 0.7  # judge() passes at or above this score
JUDGE_MODE = "auto"  # auto | score | yesno

# -- --optimize --------------------------------------------------------------------------------
OPTIMIZE_STRATEGY = "auto"
OPTIMIZE_BUDGET = 3000  # LM calls (cached or not) per optimized group of prompts
OPTIMIZE_MARGIN = 0.02  # validation gain a candidate needs to be written
OPTIMIZE_SEED = 0
# Previously passing validation tests a candidate may break, when --optimize-max-regressions is
# not given: this share of them, and at least one.
MAX_REGRESSIONS_SHARE = 0.2
VALIDATION_FRACTION = 0.35  # of a prompt's tests; train needs room for demos and for scoring them


def allowed_regressions(previously_passing: int, explicit: int | None) -> int:
    """The regressions a candidate may cause: the explicit setting, else the default rule."""
    if explicit is not None:
        return explicit
    return max(1, int(previously_passing * MAX_REGRESSIONS_SHARE))
