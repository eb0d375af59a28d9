"""Validation statistics against scipy and by hand: Wilson, McNemar, paired mean, Spearman's ρ."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats

from swiftstudy.scores import compute_rank_correlation
from swiftstudy.validate.stats import (
    compute_mcnemar_p_value,
    compute_paired_mean_interval,
    compute_spearman_interval,
    compute_wilson_interval,
    count_discordant,
)


@pytest.mark.parametrize(
    ("correct", "n"), [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (41, 80), (1, 1000)]
)
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_wilson_interval_equals_scipy(correct, n, level):
    ours = compute_wilson_interval(correct, n, level)
    ref = stats.binomtest(correct, n).proportion_ci(confidence_level=level, method="wilson")
    assert ours == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_wilson_interval_contains_the_proportion_and_narrows_with_n():
    low, high = compute_wilson_interval(30, 60)
    assert low < 0.5 < high
    wide, narrow = compute_wilson_interval(5, 10), compute_wilson_interval(500, 1000)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert compute_wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        compute_wilson_interval(3, 2)


@pytest.mark.parametrize(
    ("b", "c"), [(0, 0), (0, 1), (1, 0), (3, 3), (0, 9), (2, 11), (25, 40), (200, 260), (7, 0)]
)
def test_mcnemar_p_value_is_the_exact_binomial_test(b, c):
    ours = compute_mcnemar_p_value(b, c)
    if b + c == 0:
        assert ours == 1.0
        return
    ref = stats.binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue
    assert ours == pytest.approx(ref, rel=1e-12, abs=1e-300)


def test_mcnemar_counts_only_discordant_queries():
    baseline = [True, True, False, False, True, False]
    other = [True, False, True, True, True, False]
    assert count_discordant(baseline, other) == (2, 1)
    with pytest.raises(ValueError):
        count_discordant([True], [True, False])


def test_mcnemar_large_counts_stay_finite():
    p = compute_mcnemar_p_value(4000, 4300)
    assert 0 < p < 0.05
    assert math.isfinite(p)


@pytest.mark.parametrize("seed", range(6))
def test_spearman_equals_scipy_with_ties(seed):
    rng = random.Random(seed)
    n = rng.randint(3, 30)
    x = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in range(n)]
    y = [rng.choice([-1.0, 0.0, rng.gauss(0, 1)]) for _ in range(n)]
    ours = compute_rank_correlation(x, y)
    ref = stats.spearmanr(x, y).statistic
    if math.isnan(ref):
        assert ours is None
    else:
        assert ours == pytest.approx(ref, abs=1e-12)


def test_spearman_edge_cases():
    assert compute_rank_correlation([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert compute_rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert compute_rank_correlation([1, 2], [2, 1]) is None  # two points say nothing
    assert compute_rank_correlation([1, 1, 1], [1, 2, 3]) is None  # constant
    with pytest.raises(ValueError):
        compute_rank_correlation([1, 2, 3], [1, 2])


def test_paired_mean_interval_by_hand_and_against_scipy():
    # d = 0.5, -0.1, 0.3, 0.2, 0.1: mean 0.2, Σ(d - 0.2)² = 0.09 + 0.09 + 0.01 + 0 + 0.01 = 0.2,
    # s² = 0.2 / 4 = 0.05, se = √(0.05 / 5) = 0.1, z = 1.959964: 0.2 ± 0.1959964.
    differences = [0.5, -0.1, 0.3, 0.2, 0.1]
    assert compute_paired_mean_interval(differences) == pytest.approx(
        (0.2 - 0.1959963984540054, 0.2 + 0.1959963984540054), rel=1e-12
    )
    rng = random.Random(0)
    sample = [rng.gauss(0.3, 2.0) for _ in range(200)]
    mean = sum(sample) / len(sample)
    ref = stats.norm.interval(0.9, loc=mean, scale=stats.sem(sample))
    assert compute_paired_mean_interval(sample, 0.9) == pytest.approx(ref, rel=1e-12)
    assert compute_paired_mean_interval([1.0]) is None
    assert compute_paired_mean_interval([2.0, 2.0]) == (2.0, 2.0)


def test_spearman_interval_is_bonett_wright_fisher_z():
    # ρ = 0.5, n = 7: atanh 0.5 = 0.549306, half-width 1.959964 · 1.03 / √4 = 1.009381,
    # tanh(−0.460075) = −0.430146, tanh(1.558688) = 0.915208.
    assert compute_spearman_interval(0.5, 7) == pytest.approx(
        (-0.4301455872691177, 0.9152075842342456), rel=1e-12
    )
    low, high = compute_spearman_interval(-0.9, 50)
    assert -1 < low < -0.9 < high < 0 and (low + high) / 2 > -0.9  # skewed towards 0
    assert compute_spearman_interval(0.8, 3) is None  # n ≤ 3: no standard error
    assert compute_spearman_interval(None, 10) is None
    assert compute_spearman_interval(1.0, 10) == (1.0, 1.0)
    with pytest.raises(ValueError):
        compute_spearman_interval(1.5, 10)
