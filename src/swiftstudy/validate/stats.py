"""Statistics of a validation study: accuracy and NLL intervals, paired tests, Spearman's interval.

Pure functions of counts and numbers (no tensors, no files), checked against scipy or hand-computed
values in the tests. (Spearman's ρ itself: :func:`swiftstudy.scores.compute_rank_correlation`.)

* Wilson score interval (Wilson 1927) for a proportion p̂ = k/n at normal quantile z:
  ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``.
* Exact McNemar test (McNemar 1947) of two graders on the same queries: under the null the
  discordant pairs split as Binomial(b + c, 1/2), b = queries only the run gets right, c = only
  the baseline gets right; the two-sided p-value is ``min(1, 2·P[X ≤ min(b, c)])``.
* Paired mean difference (Δnll of a run against the baseline on the same queries): the normal
  interval ``d̄ ± z·s/√n`` over the per-query differences d_i, s their sample standard deviation
  (n − 1). With the ≥ 150 queries a validation uses it is within 1% of Student's t interval
  (t₀.₉₇₅,₁₄₉ = 1.976 against z = 1.960), and it needs no t quantile.
* Fisher-z interval of Spearman's ρ over n points (Bonett & Wright 2000, Psychometrika 65(1)):
  ``tanh(atanh ρ ± z·1.03/√(n − 3))``; 1.03 corrects the Pearson standard error 1/√(n − 3) for
  ranks. None for n ≤ 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from statistics import NormalDist

from swiftstudy.constants import DEFAULT_CONFIDENCE_LEVEL

#: Bonett & Wright (2000): the standard error of atanh(Spearman's ρ) is about 1.03 / √(n − 3).
_SPEARMAN_SE_FACTOR = 1.03


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
    _check_level(level)
    if n == 0:
        return None
    z = _normal_quantile(level)
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
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def compute_paired_mean_interval(
    differences: Sequence[float], level: float = DEFAULT_CONFIDENCE_LEVEL
) -> tuple[float, float] | None:
    """The normal interval of the mean of paired differences: ``d̄ ± z·s/√n``.

    Args:
        differences: One difference per query (run minus baseline, same query).
        level: The confidence level, e.g. 0.95.

    Returns:
        ``(low, high)``, or ``None`` for fewer than two differences (no spread to measure).
    """
    _check_level(level)
    n = len(differences)
    if n < 2:
        return None
    mean = math.fsum(differences) / n
    variance = math.fsum((d - mean) ** 2 for d in differences) / (n - 1)
    half = _normal_quantile(level) * math.sqrt(variance / n)
    return mean - half, mean + half


def compute_spearman_interval(
    rho: float | None, n: int, level: float = DEFAULT_CONFIDENCE_LEVEL
) -> tuple[float, float] | None:
    """The Fisher-z interval of Spearman's ρ over ``n`` points (Bonett & Wright 2000).

    Returns:
        ``(low, high)`` within [−1, 1]; ``None`` when ``rho`` is ``None`` or ``n ≤ 3``. A perfect
        ρ = ±1 has no finite z: its interval is the point itself.
    """
    _check_level(level)
    if not -1.0 <= (rho if rho is not None else 0.0) <= 1.0:
        raise ValueError(f"rho must be within [-1, 1], got {rho}")
    if rho is None or n <= 3:
        return None
    if abs(rho) == 1.0:
        return rho, rho
    centre = math.atanh(rho)
    half = _normal_quantile(level) * _SPEARMAN_SE_FACTOR / math.sqrt(n - 3)
    return math.tanh(centre - half), math.tanh(centre + half)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _normal_quantile(level: float) -> float:
    """z such that a standard normal lies within ±z with probability ``level``."""
    return NormalDist().inv_cdf(0.5 + level / 2)
