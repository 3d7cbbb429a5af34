"""Small statistics for verdicts on few cases: Wilson intervals and the noise of a paired
difference. Plain Python; the numbers are checked against textbook values in the tests."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959964  # two-sided 95%
Z95_ONE_SIDED = 1.644854


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_noise(differences: Sequence[float], z: float = Z95_ONE_SIDED) -> float:
    """How large a mean paired difference must be to stand out of noise: z standard errors of
    the mean (one-sided 95% by default). 0 with fewer than 2 pairs: there is no spread to see."""
    n = len(differences)
    if n < 2:
        return 0.0
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1)
    return z * math.sqrt(variance / n)
