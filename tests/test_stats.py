"""The statistics behind verdicts on few cases, against textbook values."""

from __future__ import annotations

import pytest

from pytest_promptopt.stats import paired_noise, wilson_interval


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (0, 10, 0.0, 0.2775),  # Wilson 95%: never the degenerate (0, 0) of the normal interval
    (5, 10, 0.2366, 0.7634),
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998), Table I
    (10, 10, 0.7225, 1.0),
])
def test_wilson_interval(k: int, n: int, low: float, high: float) -> None:
    assert wilson_interval(k, n) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_of_nothing_is_everything() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_paired_noise_is_one_sided_95_percent_of_the_standard_error() -> None:
    assert paired_noise([1.0] * 5) == 0.0  # every case moved the same way: no spread
    assert paired_noise([0.5]) == 0.0
    assert paired_noise([1.0, 0.0, 0.0, 0.0]) == pytest.approx(1.644854 * 0.25)  # sd 0.5 / sqrt(4)
