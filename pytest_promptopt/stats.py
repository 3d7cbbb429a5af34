"""The few statistics the baseline gate and the optimizer need, written out (no scipy).

- `wilson`: the Wilson score interval of a pass rate (good at 0%, 100% and small n, where the
  normal approximation gives intervals outside 0..1 or of width zero).
- `mcnemar_exact`: the exact McNemar test on paired pass/fail outcomes, a two-sided binomial
  test on the discordant pairs (the only pairs that carry information about a change).
- `mean_interval`: a mean with its Student t interval; on paired differences it is the paired
  interval of a mean score change.
- `paired_noise`: how large a mean paired change must be to stand out of noise (the optimizer's
  acceptance and simplification rules).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
Z95_ONE_SIDED = 1.644854


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def clipped(self, low: float, high: float) -> Interval:
        """Limited to the range the quantity can take (a t interval of scores in 0..1 can reach past 1)."""
        return Interval(max(low, self.low), min(high, self.high))


@dataclass(frozen=True)
class MeanEstimate:
    """A mean over `n` values with its two-sided interval (None when n < 2: no spread to use)."""

    n: int
    mean: float
    interval: Interval | None


def wilson(successes: int, n: int, z: float = Z_95) -> Interval:
    """Wilson score interval of successes / n; with no trials, everything is possible."""
    if n <= 0:
        return Interval(0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be from 0 to n={n}, got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # the exact bounds at 0 and n are 0 and 1; float noise would make them 1e-17 off
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high)


def binomial_cdf(k: int, n: int, p: float = 0.5) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed exactly term by term."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return math.fsum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def mcnemar_exact(broken: int, fixed: int) -> float:
    """Two-sided exact McNemar p-value.

    `broken`: pairs that passed before and fail now; `fixed`: the reverse. Under "no change"
    each discordant pair is a fair coin, so the p-value is twice the smaller binomial tail,
    capped at 1. No discordant pairs: no evidence of change, p = 1.
    """
    if broken < 0 or fixed < 0:
        raise ValueError("counts of discordant pairs cannot be negative")
    n = broken + fixed
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf(min(broken, fixed), n))


def t_pdf(x: float, df: int) -> float:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))


def t_cdf(x: float, df: int, steps: int = 2000) -> float:
    """Student t CDF: 1/2 plus the density integrated from 0 to |x| (Simpson's rule; the
    density is smooth, so 2,000 steps are accurate to far below the digits we print)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    a = abs(x)
    if a == 0:
        return 0.5
    h = a / steps
    inner = sum((4 if i % 2 else 2) * t_pdf(i * h, df) for i in range(1, steps))
    area = h / 3 * (t_pdf(0.0, df) + inner + t_pdf(a, df))
    half = min(0.5, area)
    return 0.5 + half if x > 0 else 0.5 - half


@functools.lru_cache(maxsize=256)  # a run asks for the same few (p, df) pairs
def t_quantile(p: float, df: int) -> float:
    """The x with t_cdf(x, df) = p, by bisection (t_cdf is increasing)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be strictly between 0 and 1, got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def mean_interval(values: Sequence[float], confidence: float = 0.95,
                  bounds: tuple[float, float] | None = None) -> MeanEstimate:
    """Mean with the Student t interval, clipped to `bounds` when given (the range the values
    can take); pass paired differences for a paired interval."""
    n = len(values)
    if n == 0:
        return MeanEstimate(0, 0.0, None)
    mean = math.fsum(values) / n
    if n < 2:
        return MeanEstimate(n, mean, None)
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = t_quantile(1 - (1 - confidence) / 2, n - 1) * math.sqrt(variance / n)
    interval = Interval(mean - half, mean + half)
    return MeanEstimate(n, mean, interval if bounds is None else interval.clipped(*bounds))


def paired_noise(differences: Sequence[float], confidence: float = 0.95) -> float:
    """How large a mean paired difference must be to stand out of noise: the one-sided Student t
    bound (95% by default, n - 1 degrees of freedom) times the standard error of the mean; the
    spread is estimated from the same few cases, so t, not z. 0 with fewer than 2 pairs: there
    is no spread to see."""
    n = len(differences)
    if n < 2:
        return 0.0
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1)
    return t_quantile(confidence, n - 1) * math.sqrt(variance / n) if variance > 0 else 0.0


__all__ = ["Z95_ONE_SIDED", "Z_95", "Interval", "MeanEstimate", "binomial_cdf", "mcnemar_exact", "mean_interval",
           "paired_noise", "t_cdf", "t_quantile", "wilson"]
