"""Statistics of a validation study: accuracy intervals and paired tests (Spearman: scores).

Pure functions of counts and numbers (no tensors, no files), checked against scipy in the tests.

* Wilson score interval (Wilson 1927) for a proportion p̂ = k/n at normal quantile z:
  ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``.
* Exact McNemar test (McNemar 1947) of two graders on the same queries: under the null the
  discordant pairs split as Binomial(b + c, 1/2), b = queries only the run gets right, c = only
  the baseline gets right; the two-sided p-value is ``min(1, 2·P[X ≤ min(b, c)])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from statistics import NormalDist

from swiftstudy.constants import DEFAULT_CONFIDENCE_LEVEL


def compute_wilson_interval(
    correct: int, n: int, level: float = DEFAULT_CONFIDENCE_LEVEL
) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion ``correct / n``.

    Args:
        correct: Successes, ``0 ≤ correct ≤ n``.
        n: Trials.
        level: The confidence level, e.g. 0.95.

    Returns:
        ``(low, high)`` within [0, 1], or ``None`` when ``n == 0``.
    """
    if not 0 <= correct <= n:
        raise ValueError(f"need 0 ≤ correct ≤ n, got correct={correct}, n={n}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n == 0:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Rounding must not push the bounds past p̂ (at k = 0 or k = n they touch it exactly).
    return min(max(0.0, centre - half), p), max(min(1.0, centre + half), p)


def count_discordant(baseline: Sequence[bool], other: Sequence[bool]) -> tuple[int, int]:
    """``(b, c)``: queries only ``other`` gets right, and only ``baseline`` gets right."""
    if len(baseline) != len(other):
        raise ValueError(f"paired grades differ in length: {len(baseline)} and {len(other)}")
    b = sum(1 for x, y in zip(baseline, other, strict=True) if y and not x)
    c = sum(1 for x, y in zip(baseline, other, strict=True) if x and not y)
    return b, c


def compute_mcnemar_p_value(b: int, c: int) -> float:
    """The two-sided exact McNemar p-value of ``b`` and ``c`` discordant pairs.

    Computed in exact rational arithmetic, so it is right for any count (1.0 with no discordant
    pair at all: the two graders never disagree).
    """
    if b < 0 or c < 0:
        raise ValueError(f"counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    term = tail = 1  # C(n, 0); each next term from the last: C(n, k+1) = C(n, k)(n-k)/(k+1)
    for k in range(min(b, c)):
        term = term * (n - k) // (k + 1)
        tail += term
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))
