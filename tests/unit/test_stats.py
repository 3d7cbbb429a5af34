"""The statistics against published values: Wilson intervals from Newcombe (1998), exact
binomial p-values as R's binom.test gives them, Student t quantiles from the printed table."""

from __future__ import annotations

import math

import pytest

from pytest_promptopt.stats import (
    binomial_cdf,
    mcnemar_exact,
    mean_interval,
    paired_noise,
    t_cdf,
    t_quantile,
    wilson,
)


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),  # Newcombe (1998), example (a): 81/263
        (15, 148, 0.0624, 0.1605),  # example (b)
        (0, 20, 0.0, 0.1611),  # example (c): no successes, the lower bound is exactly 0
        (1, 29, 0.0061, 0.1718),  # example (d)
        (8, 10, 0.4902, 0.9433),
    ],
)
def test_wilson_interval_matches_published_values(successes: int, n: int, low: float, high: float) -> None:
    interval = wilson(successes, n)
    assert interval.low == pytest.approx(low, abs=1e-4)
    assert interval.high == pytest.approx(high, abs=1e-4)


def test_wilson_interval_edges() -> None:
    assert wilson(10, 10).high == 1.0 and wilson(10, 10).low == pytest.approx(0.7225, abs=1e-4)
    assert wilson(0, 10).low == 0.0
    assert (wilson(0, 0).low, wilson(0, 0).high) == (0.0, 1.0)  # nothing observed: anything goes
    with pytest.raises(ValueError, match="from 0 to n=3"):
        wilson(4, 3)


def test_binomial_cdf_known_values() -> None:
    assert binomial_cdf(2, 12) == pytest.approx(79 / 4096)  # (1 + 12 + 66) / 2^12
    assert binomial_cdf(5, 10) == pytest.approx(638 / 1024)
    assert binomial_cdf(-1, 5) == 0.0 and binomial_cdf(5, 5) == 1.0


@pytest.mark.parametrize(
    ("broken", "fixed", "p"),
    [
        (10, 2, 0.03857421875),  # R: binom.test(2, 12)$p.value
        (2, 10, 0.03857421875),  # two-sided: symmetric
        (5, 0, 0.0625),  # five regressions alone are not significant at 0.05
        (6, 0, 0.03125),
        (3, 3, 1.0),
        (0, 0, 1.0),  # no discordant pairs: no evidence of change
        (25, 10, 0.0167),  # R: binom.test(10, 35)$p.value = 0.01667
    ],
)
def test_mcnemar_exact_matches_the_binomial_test(broken: int, fixed: int, p: float) -> None:
    assert mcnemar_exact(broken, fixed) == pytest.approx(p, abs=1e-4)


@pytest.mark.parametrize(
    ("df", "quantile"),
    [(1, 12.7062), (2, 4.3027), (5, 2.5706), (10, 2.2281), (30, 2.0423), (100, 1.9840)],
)
def test_t_quantile_matches_the_table(df: int, quantile: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-quantile, abs=1e-4)


def test_t_cdf_known_values() -> None:
    assert t_cdf(0.0, 7) == 0.5
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
    assert t_cdf(-1.0, 1) == pytest.approx(0.25)
    assert t_cdf(2.0, 2) == pytest.approx(0.5 + 2 / (2 * math.sqrt(6)))  # df 2 closed form: 1/2 + x / (2 sqrt(2 + x^2))


def test_mean_interval_is_the_student_t_interval() -> None:
    estimate = mean_interval([1, 2, 3, 4, 5])
    assert estimate.mean == 3.0
    assert estimate.interval is not None
    half = 2.7764451 * math.sqrt(2.5 / 5)  # t(0.975, 4) * s / sqrt(n)
    assert estimate.interval.low == pytest.approx(3 - half, abs=1e-5)
    assert estimate.interval.high == pytest.approx(3 + half, abs=1e-5)
    assert mean_interval([0.4]).interval is None  # one value: no spread to estimate
    assert mean_interval([]).n == 0
    flat = mean_interval([0.2, 0.2, 0.2])
    assert flat.interval is not None and (flat.interval.low, flat.interval.high) == pytest.approx((0.2, 0.2))


def test_mean_interval_is_clipped_to_the_range_of_the_values() -> None:
    free = mean_interval([1.0] * 8 + [0.0])
    assert free.interval is not None and free.interval.high > 1  # 0/1 scores: the t interval overshoots
    clipped = mean_interval([1.0] * 8 + [0.0], bounds=(0.0, 1.0))
    assert clipped.interval is not None and clipped.interval.high == 1.0
    assert clipped.interval.low == pytest.approx(free.interval.low)


# -- the optimizer's noise rule ------------------------------------------------------------------

def test_paired_noise_is_one_sided_95_percent_of_the_standard_error() -> None:
    assert paired_noise([1.0] * 5) == 0.0  # every case moved the same way: no spread
    assert paired_noise([0.5]) == 0.0
    assert paired_noise([1.0, 0.0, 0.0, 0.0]) == pytest.approx(2.353363 * 0.25, abs=1e-5)  # t(0.95, 3), sd 0.5 / sqrt(4)
