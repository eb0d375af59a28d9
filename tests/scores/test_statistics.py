"""Tests for swiftstudy.scores.statistics against hand-computed values and scipy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from swiftstudy.constants import (
    VERDICT_NEGATIVE,
    VERDICT_NO_INTERVAL,
    VERDICT_POSITIVE,
    VERDICT_UNCLEAR,
)
from swiftstudy.scores import (
    BootstrapSettings,
    MetricPairs,
    PairMatrix,
    compute_concentration,
    compute_mean,
    compute_percentile_interval,
    compute_rank_correlation,
    compute_resampled_means,
    compute_slope,
    compute_study_statistics,
    decide_verdict,
    draw_resample_counts,
    find_comparisons,
    find_lasting_step,
)


def _counts_from_indices(indices: list[int], n: int) -> np.ndarray:
    return np.bincount(indices, minlength=n)


def test_resample_counts_are_draws_with_replacement_and_reproducible():
    settings = BootstrapSettings(n_resamples=500, seed=3)
    counts = draw_resample_counts(7, settings, "cot")
    assert counts.shape == (500, 7)
    assert (counts.sum(axis=1) == 7).all()
    assert (counts >= 0).all()
    # Each example is drawn once per resample on average, and some are drawn twice or more.
    assert counts.mean() == pytest.approx(1.0, abs=0.05)
    assert (counts >= 2).any()
    np.testing.assert_array_equal(counts, draw_resample_counts(7, settings, "cot"))
    assert not np.array_equal(counts, draw_resample_counts(7, settings, "nocot"))
    other_seed = BootstrapSettings(n_resamples=500, seed=4)
    assert not np.array_equal(counts, draw_resample_counts(7, other_seed, "cot"))


def test_resampled_mean_equals_the_mean_over_literally_resampled_pairs():
    rng = np.random.default_rng(0)
    relinf = rng.normal(size=(4, 5))
    used = ~np.eye(4, 5, dtype=bool)  # cross-task
    used[:, 3] = False  # an eval with a zero gradient
    probe_draws = [[0, 0, 2, 3], [1, 1, 1, 1], [3, 2, 1, 0]]
    eval_draws = [[0, 1, 1, 4, 2], [0, 0, 0, 0, 0], [4, 4, 3, 2, 2]]
    pc = np.stack([_counts_from_indices(d, 4) for d in probe_draws])
    ec = np.stack([_counts_from_indices(d, 5) for d in eval_draws])
    got = compute_resampled_means(relinf, used, pc, ec)
    for b in range(3):
        pairs = [
            relinf[i, j] for i in probe_draws[b] for j in eval_draws[b] if used[i, j]
        ]  # every drawn probe with every drawn eval, as the pairs of a new data set
        expected = np.mean(pairs) if pairs else np.nan
        np.testing.assert_allclose(got[b], expected, rtol=1e-12, equal_nan=True)
    # In-task pairs, probe 1 drawn 4 times and eval 0 drawn 5 times: no pair, so NaN.
    none = compute_resampled_means(
        relinf, np.eye(4, 5, dtype=bool), pc[1:2], _counts_from_indices([0] * 5, 5)[None]
    )
    assert np.isnan(none).all()


def test_unresampled_counts_give_the_plain_mean():
    relinf = np.arange(12.0).reshape(3, 4)
    used = np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1]], dtype=bool)
    ones = np.ones((1, 3)), np.ones((1, 4))
    (value,) = compute_resampled_means(relinf, used, *ones)
    assert value == pytest.approx(compute_mean(relinf, used))
    assert compute_mean(relinf, used) == pytest.approx(relinf[used].mean())
    assert compute_mean(relinf, np.zeros_like(used)) is None


def test_too_few_probes_or_evals_give_no_interval():
    relinf = np.ones((3, 3))
    one_probe = np.zeros((3, 3), dtype=bool)
    one_probe[1, :] = True
    counts = draw_resample_counts(3, BootstrapSettings(n_resamples=50), "x")
    assert np.isnan(compute_resampled_means(relinf, one_probe, counts, counts)).all()
    assert np.isnan(compute_resampled_means(relinf, one_probe.T, counts, counts)).all()


def test_row_effects_alone_reduce_to_the_one_way_bootstrap():
    """R_ij = a_i on a full mask: m* = Σ c_i a_i / P whatever the evals drawn."""
    rng = np.random.default_rng(1)
    a = rng.normal(0.3, 1.0, size=20)
    relinf = np.repeat(a[:, None], 6, axis=1)
    settings = BootstrapSettings(n_resamples=20000, seed=0)
    pc = draw_resample_counts(20, settings, "probes")
    ec = draw_resample_counts(6, settings, "evals")
    replicates = compute_resampled_means(relinf, np.ones((20, 6), dtype=bool), pc, ec)
    np.testing.assert_allclose(replicates, pc @ a / 20, rtol=1e-12)
    low, high = compute_percentile_interval(replicates, 0.95)
    ref = scipy.stats.bootstrap(
        (a,), np.mean, n_resamples=20000, method="percentile", random_state=0
    ).confidence_interval
    width = ref.high - ref.low
    assert low == pytest.approx(ref.low, abs=0.03 * width)
    assert high == pytest.approx(ref.high, abs=0.03 * width)


def test_replicates_follow_the_exact_two_way_bootstrap_distribution():
    """2 probes × 2 evals: enumerate all 4 × 4 equally likely resamples."""
    relinf = np.array([[1.0, -2.0], [4.0, 0.5]])
    used = np.array([[True, True], [False, True]])
    exact = []
    for probes in itertools.product(range(2), repeat=2):
        for evals in itertools.product(range(2), repeat=2):
            pairs = [relinf[i, j] for i in probes for j in evals if used[i, j]]
            exact.append(np.mean(pairs) if pairs else np.nan)
    exact = np.array(exact)
    settings = BootstrapSettings(n_resamples=40000, seed=0)
    replicates = compute_resampled_means(
        relinf, used, draw_resample_counts(2, settings, "p"), draw_resample_counts(2, settings, "e")
    )
    # P(no pair) = P(evals all 0) × P(probes all 1) = 1/16.
    assert np.isnan(replicates).mean() == pytest.approx(np.isnan(exact).mean(), abs=0.005)
    finite = replicates[np.isfinite(replicates)]
    expected = np.nanmean(exact)
    assert finite.mean() == pytest.approx(expected, abs=4 * finite.std() / math.sqrt(finite.size))
    for value in np.unique(exact[np.isfinite(exact)]):
        share = np.isclose(finite, value).mean()
        assert share == pytest.approx(np.isclose(exact, value).sum() / 15, abs=0.01)


def test_two_way_interval_is_wider_than_treating_pairs_as_independent():
    """With strong probe effects, the pairs of one probe are not independent."""
    rng = np.random.default_rng(2)
    relinf = rng.normal(0, 1, size=(10, 1)) + rng.normal(0, 0.1, size=(10, 30))
    used = np.ones_like(relinf, dtype=bool)
    settings = BootstrapSettings(n_resamples=4000)
    two_way = compute_resampled_means(
        relinf,
        used,
        draw_resample_counts(10, settings, "p"),
        draw_resample_counts(30, settings, "e"),
    )
    low, high = compute_percentile_interval(two_way)
    naive = scipy.stats.bootstrap(
        (relinf.ravel(),), np.mean, n_resamples=4000, method="percentile", random_state=0
    ).confidence_interval
    assert high - low > 3 * (naive.high - naive.low)


def test_percentile_interval_by_hand():
    replicates = np.arange(1.0, 101.0)
    # numpy's linear quantile: position 0.05 × 99 = 4.95, between 5 and 6.
    assert compute_percentile_interval(replicates, 0.90) == pytest.approx((5.95, 95.05))
    assert compute_percentile_interval(replicates, 0.95) == pytest.approx(
        tuple(np.percentile(replicates, [2.5, 97.5]))
    )
    half = np.concatenate([replicates, np.full(100, np.nan)])
    assert compute_percentile_interval(half, 0.90) == pytest.approx((5.95, 95.05))
    mostly_nan = np.concatenate([replicates, np.full(101, np.nan)])
    assert compute_percentile_interval(mostly_nan) == (None, None)


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [
        (0.01, 0.5, VERDICT_POSITIVE),
        (-0.5, -0.01, VERDICT_NEGATIVE),
        (-0.1, 0.2, VERDICT_UNCLEAR),
        (0.0, 0.2, VERDICT_UNCLEAR),
        (None, None, VERDICT_NO_INTERVAL),
    ],
)
def test_verdict_rule(low, high, verdict):
    assert decide_verdict(low, high) == verdict


def test_slope_matches_scipy_linregress():
    steps = np.array([10, 20, 50, 80])
    rng = np.random.default_rng(3)
    values = rng.normal(size=(5, 4))
    slopes = compute_slope(steps, values)
    for row, slope in zip(values, slopes, strict=True):
        assert slope == pytest.approx(scipy.stats.linregress(steps, row).slope, rel=1e-12)
    assert float(compute_slope(steps, values[0])) == pytest.approx(slopes[0])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0.1, 0.3, 0.2, 0.5, 0.6], [0.2, 0.2, 0.3, 0.1, 0.1], 150),  # the last crossing counts
        ([0.5, 0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1, 0.1], 0),  # above throughout
        ([0.5, 0.5, 0.5, 0.5, 0.1], [0.1, 0.1, 0.1, 0.1, 0.2], None),  # below at the end
        ([0.5, 0.5, 0.5, 0.5, 0.1], [0.1, 0.1, 0.1, 0.1, 0.1], None),  # equal is not above
        ([0.5, 0.5, None, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1, 0.1], 150),  # a gap breaks the run
    ],
)
def test_overtake_step(a, b, expected):
    holds = [x is not None and y is not None and x > y for x, y in zip(a, b, strict=True)]
    assert find_lasting_step([0, 50, 100, 150, 200], holds) == expected


def test_lasting_step():
    assert find_lasting_step([1, 2, 3], [True, False, True]) == 3
    assert find_lasting_step([], []) is None


def test_concentration_rule_by_hand():
    few = compute_concentration(np.array([10.0] + [1.0] * 9))
    assert (few.n_pairs, few.n_top) == (10, 1)
    assert few.top_share == pytest.approx(10 / 19)
    assert few.concentrated
    assert few.value_without_top == pytest.approx(1.0)
    spread = compute_concentration(np.array([-3.0, 1, 1, 1, 1]))
    assert spread.top_share == pytest.approx(3 / 7) and not spread.concentrated
    assert spread.value_without_top == pytest.approx(1.0)
    eleven = compute_concentration(np.array([5.0, -5.0] + [0.5] * 9))  # ⌈1.1⌉ = 2 top pairs
    assert eleven.n_top == 2 and eleven.top_share == pytest.approx(10 / 14.5)
    assert eleven.concentrated
    thirty = compute_concentration(np.arange(30.0))
    assert thirty.n_top == 3 and thirty.top_share == pytest.approx((29 + 28 + 27) / 435)
    too_few = compute_concentration(np.array([9.0, 1, 1, 1]))
    assert too_few.top_share == pytest.approx(0.75) and not too_few.concentrated
    zeros = compute_concentration(np.zeros(6))
    assert zeros.top_share == 0.0 and not zeros.concentrated


def test_rank_correlation_matches_scipy_with_ties():
    x = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    y = [2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0, 2.0, 8.0]
    expected = scipy.stats.spearmanr(x, y).statistic
    assert compute_rank_correlation(x, y) == pytest.approx(expected, rel=1e-12)
    assert compute_rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert compute_rank_correlation([1, 2], [1, 2]) is None
    assert compute_rank_correlation([1, 2, 3], [4, 4, 4]) is None


# -- a study ---------------------------------------------------------------------------------


def _metric(name, probes, context, values_by_step, evals="similar") -> MetricPairs:
    matrices = []
    for step, relinf in values_by_step.items():
        n = relinf.shape[0]
        used = np.eye(n, dtype=bool) if context == "in-task" else ~np.eye(n, dtype=bool)
        matrices.append(PairMatrix(step, relinf, used))
    return MetricPairs(name, probes, evals, context, tuple(matrices))


@pytest.fixture()
def study():
    """Strategy probes help more and more; baseline probes do nothing on average."""
    rng = np.random.default_rng(4)
    n = 12
    strategy = {s: 0.02 * s + rng.normal(0, 0.1, size=(n, n)) for s in (0, 10, 20, 30)}
    baseline = {s: rng.normal(0, 0.5, size=(n, n)) for s in (0, 10, 20, 30)}
    return [
        _metric("S → In-task", "cot", "in-task", strategy),
        _metric("S → Cross-task", "cot", "cross-task", strategy),
        _metric("B → In-task", "nocot", "in-task", baseline),
        _metric("B → Cross-task", "nocot", "cross-task", baseline),
    ]


def test_study_statistics_verdicts_trends_and_comparisons(study):
    settings = BootstrapSettings(n_resamples=1000)
    result = compute_study_statistics(study, settings)
    strategy_in, strategy_cross, base_in, _ = result.metrics
    # Point values are plain means; intervals contain them.
    for metric, stats in zip(study, result.metrics, strict=True):
        for matrix, step in zip(metric.matrices, stats.steps, strict=True):
            assert step.estimate.value == pytest.approx(matrix.relinf[matrix.used].mean())
            assert step.estimate.ci_low <= step.estimate.value <= step.estimate.ci_high
            assert step.n_pairs == int(matrix.used.sum())
    assert strategy_cross.steps[0].estimate.verdict == VERDICT_UNCLEAR  # 0 at step 0
    assert strategy_cross.steps[-1].estimate.verdict == VERDICT_POSITIVE
    assert strategy_cross.summary.mean_over_steps.verdict == VERDICT_POSITIVE
    assert strategy_cross.summary.fraction_positive == pytest.approx(3 / 4)
    values = [s.estimate.value for s in strategy_in.steps]
    trend = strategy_in.summary.trend
    assert trend.slope == pytest.approx(scipy.stats.linregress([0, 10, 20, 30], values).slope)
    assert trend.ci_low < 0.02 < trend.ci_high and trend.verdict == VERDICT_POSITIVE
    assert base_in.summary.mean_over_steps.verdict == VERDICT_UNCLEAR

    assert find_comparisons(study) == [(0, 2), (1, 3)]
    assert [(c.metric, c.baseline) for c in result.comparisons] == [
        ("S → In-task", "B → In-task"),
        ("S → Cross-task", "B → Cross-task"),
    ]
    cross = result.comparisons[1]
    for (step, diff), a, b in zip(
        cross.steps, strategy_cross.steps, result.metrics[3].steps, strict=True
    ):
        assert step == a.step == b.step
        assert diff.value == pytest.approx(a.estimate.value - b.estimate.value)
    assert cross.metric_above_from in (0, 10, 20)
    assert cross.baseline_above_from is None
    assert cross.metric_significantly_above_from in (10, 20, 30)
    assert cross.baseline_significantly_above_from is None


def test_study_statistics_are_deterministic_and_seeded(study):
    first = compute_study_statistics(study, BootstrapSettings(n_resamples=300))
    assert first == compute_study_statistics(study, BootstrapSettings(n_resamples=300))
    other = compute_study_statistics(study, BootstrapSettings(n_resamples=300, seed=1))
    assert other.metrics[0].steps[0].estimate.ci_low != first.metrics[0].steps[0].estimate.ci_low
    assert other.metrics[0].steps[0].estimate.value == first.metrics[0].steps[0].estimate.value


def test_default_settings_and_validation():
    settings = BootstrapSettings()
    assert (settings.n_resamples, settings.seed, settings.level) == (2000, 0, 0.95)
    with pytest.raises(ValueError, match="n_resamples"):
        BootstrapSettings(n_resamples=0)
    with pytest.raises(ValueError, match="level"):
        BootstrapSettings(level=1.0)


def test_one_checkpoint_has_no_trend_and_sets_must_agree_on_size():
    metric = _metric("m", "p", "cross-task", {5: np.ones((3, 3))})
    (stats,) = compute_study_statistics([metric], BootstrapSettings(n_resamples=50)).metrics
    assert stats.summary.trend is None
    assert stats.steps[0].estimate.value == pytest.approx(1.0)
    assert stats.summary.mean_over_steps.ci_low == pytest.approx(1.0)
    other = _metric("n", "p", "cross-task", {5: np.ones((4, 4))})
    with pytest.raises(ValueError, match="set 'p'"):
        compute_study_statistics([metric, other])


def test_steps_without_pairs_are_left_out_of_the_summary():
    relinf = np.full((3, 3), 0.5)
    matrices = (
        PairMatrix(0, relinf, ~np.eye(3, dtype=bool)),
        PairMatrix(10, relinf, np.zeros((3, 3), dtype=bool)),
    )
    metric = MetricPairs("m", "p", "e", "cross-task", matrices)
    (stats,) = compute_study_statistics([metric], BootstrapSettings(n_resamples=50)).metrics
    assert stats.steps[1].estimate.value is None
    assert stats.steps[1].estimate.verdict == VERDICT_NO_INTERVAL
    assert stats.summary.mean_over_steps.value == pytest.approx(0.5)
    assert stats.summary.fraction_positive == 1.0
    assert stats.summary.trend is None
