"""Tests for swiftstudy.scores.variants against hand-computed matrices and the statistics module."""

from __future__ import annotations

import math

import numpy as np
import pytest

from swiftstudy.scores import (
    BootstrapSettings,
    Estimate,
    MetricPairs,
    PairMatrix,
    combine_checkpoints,
    compute_checkpoint_weights,
    compute_control_margin,
    compute_interval_learning_rates,
    compute_study_statistics,
    compute_variant_scores,
    compute_weighted_estimate,
    decide_control_verdict,
    normalize_pair_scores,
)

# Two probes, three evaluation examples; the third has a zero gradient.
DOTS = np.array([[2.0, -1.0, 0.0], [4.0, 3.0, 6.0]])
PROBE_SQNORMS = np.array([4.0, 16.0])  # ‖p‖ = 2, 4
EVAL_SQNORMS = np.array([1.0, 4.0, 0.0])  # ‖e‖ = 1, 2, 0
PROBE_TOKENS = np.array([1, 4])
EVAL_TOKENS = np.array([3, 2, 1])


def _normalize(normalization: str) -> tuple[np.ndarray, np.ndarray]:
    return normalize_pair_scores(
        DOTS, PROBE_SQNORMS, EVAL_SQNORMS, PROBE_TOKENS, EVAL_TOKENS, normalization
    )


def test_relinf_divides_by_the_eval_sqnorm():
    scores, valid = _normalize("relinf")
    np.testing.assert_allclose(scores, [[2.0, -0.25, 0.0], [4.0, 0.75, 0.0]])
    np.testing.assert_array_equal(valid, [True, True, False])


def test_cosine_divides_by_both_norms():
    scores, valid = _normalize("cosine")
    # 2/(2·1), −1/(2·2); 4/(4·1), 3/(4·2)
    np.testing.assert_allclose(scores, [[1.0, -0.25, 0.0], [1.0, 0.375, 0.0]])
    np.testing.assert_array_equal(valid, [True, True, False])


def test_per_token_is_relinf_of_gradients_divided_by_their_token_counts():
    scores, valid = _normalize("per-token")
    # d·n_e/(n_p·‖e‖²): 2·3/(1·1), −1·2/(1·4); 4·3/(4·1), 3·2/(4·4)
    np.testing.assert_allclose(scores, [[6.0, -0.5, 0.0], [3.0, 0.375, 0.0]])
    np.testing.assert_array_equal(valid, [True, True, False])


def test_normalizations_match_their_definition_on_explicit_gradients():
    rng = np.random.default_rng(0)
    probes, evals = rng.normal(size=(3, 7)), rng.normal(size=(4, 7))
    n_p, n_e = np.array([1, 5, 9]), np.array([2, 3, 4, 8])
    args = (probes @ evals.T, (probes**2).sum(1), (evals**2).sum(1), n_p, n_e)
    cosine, _ = normalize_pair_scores(*args, "cosine")
    expected = (probes / np.linalg.norm(probes, axis=1, keepdims=True)) @ (
        evals / np.linalg.norm(evals, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(cosine, expected, rtol=1e-12)
    per_token, _ = normalize_pair_scores(*args, "per-token")
    p, e = probes / n_p[:, None], evals / n_e[:, None]
    np.testing.assert_allclose(per_token, (p @ e.T) / (e**2).sum(1), rtol=1e-12)


def test_zero_probes_score_zero_and_missing_inputs_are_named():
    scores, _ = normalize_pair_scores(
        np.array([[0.0, 0.0]]), np.array([0.0]), np.array([1.0, 1.0]), normalization="cosine"
    )
    np.testing.assert_array_equal(scores, [[0.0, 0.0]])
    scores, _ = normalize_pair_scores(
        np.array([[0.0]]), None, np.array([1.0]), np.array([0]), np.array([2]), "per-token"
    )
    np.testing.assert_array_equal(scores, [[0.0]])
    with pytest.raises(ValueError, match="probe_sqnorms"):
        normalize_pair_scores(DOTS, None, EVAL_SQNORMS, normalization="cosine")
    with pytest.raises(ValueError, match="probe_tokens"):
        normalize_pair_scores(DOTS, None, EVAL_SQNORMS, normalization="per-token")
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize_pair_scores(DOTS, None, EVAL_SQNORMS, normalization="l2")


def test_interval_learning_rate_is_the_mean_logged_rate_since_the_previous_checkpoint():
    rates = compute_interval_learning_rates([2, 4, 6], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(rates, [1.5, 3.5, 5.5])
    # No log entry in (2, 4]: interpolated at step 4 between (1, 10) and (5, 50).
    rates = compute_interval_learning_rates([2, 4, 6], [5, 1], [50.0, 10.0])
    np.testing.assert_allclose(rates, [10.0, 40.0, 50.0])
    with pytest.raises(ValueError, match="no logged"):
        compute_interval_learning_rates([2], [], [])
    with pytest.raises(ValueError, match="ascending"):
        compute_interval_learning_rates([4, 2], [1], [1.0])


def test_checkpoint_weights():
    values = np.array([1.0, math.nan, 3.0])
    np.testing.assert_allclose(compute_checkpoint_weights(values, "mean"), [0.5, 0, 0.5])
    np.testing.assert_allclose(compute_checkpoint_weights(values, "last"), [0, 0, 1])
    np.testing.assert_allclose(
        compute_checkpoint_weights(np.array([1.0, 2.0, math.nan]), "last"), [0, 1, 0]
    )
    np.testing.assert_allclose(
        compute_checkpoint_weights(values, "lr", [1.0, 2.0, 3.0]), [0.25, 0, 0.75]
    )
    np.testing.assert_allclose(
        compute_checkpoint_weights(np.ones(3), "lr", [1.0, 2.0, 3.0]), [1 / 6, 2 / 6, 3 / 6]
    )
    with pytest.raises(ValueError, match="learning rates"):
        compute_checkpoint_weights(values, "lr")
    with pytest.raises(ValueError, match="no checkpoint"):
        compute_checkpoint_weights(np.array([math.nan]), "mean")
    with pytest.raises(ValueError, match="unknown weighting"):
        compute_checkpoint_weights(values, "first")


def test_combine_checkpoints_weights_values_and_replicates_alike():
    values = np.array([1.0, 2.0, 3.0])
    replicates = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0], [3.0, 3.0, 3.0]] * 10)
    weights = np.array([1 / 6, 2 / 6, 3 / 6])
    estimate = combine_checkpoints(values, replicates, weights, 0.95)
    assert estimate.value == pytest.approx(14 / 6)
    # Replicates combine to 14/6, 3 and 3.
    assert estimate.ci_low == pytest.approx(14 / 6)
    assert estimate.ci_high == pytest.approx(3.0)


def _metric(name: str, probes: str, matrices: list[np.ndarray], context: str = "cross-task"):
    used = ~np.eye(*matrices[0].shape, dtype=bool) if context == "cross-task" else None
    pairs = tuple(
        PairMatrix(step, m, used if used is not None else np.ones(m.shape, bool))
        for step, m in zip((10, 20, 30), matrices, strict=False)
    )
    return MetricPairs(name, probes, "evals", context, pairs)


@pytest.fixture
def strategy_and_control():
    rng = np.random.default_rng(1)
    strategy = _metric("cot", "cot", [rng.normal(0.3, 1, (6, 6)) for _ in range(3)])
    control = _metric("nocot", "nocot", [rng.normal(0.0, 1, (6, 6)) for _ in range(3)])
    return strategy, control


def test_mean_margin_equals_the_comparison_of_the_statistics(strategy_and_control):
    strategy, control = strategy_and_control
    settings = BootstrapSettings(n_resamples=400, seed=5)
    (comparison,) = compute_study_statistics([strategy, control], settings).comparisons
    margin = compute_control_margin(strategy, control, "mean", settings=settings)
    expected = comparison.summary.mean_over_steps
    assert margin.margin.value == pytest.approx(expected.value, abs=1e-12)
    assert margin.margin.ci_low == pytest.approx(expected.ci_low, abs=1e-12)
    assert margin.margin.ci_high == pytest.approx(expected.ci_high, abs=1e-12)
    for (step, estimate), (cstep, cestimate) in zip(margin.steps, comparison.steps, strict=True):
        assert step == cstep
        assert estimate == cestimate
    assert margin.verdict == decide_control_verdict(margin.margin, "nocot")


def test_last_and_lr_margins(strategy_and_control):
    strategy, control = strategy_and_control
    settings = BootstrapSettings(n_resamples=400, seed=5)
    (comparison,) = compute_study_statistics([strategy, control], settings).comparisons
    last = compute_control_margin(strategy, control, "last", settings=settings)
    assert last.margin == comparison.steps[-1][1]
    diffs = [
        float(a.relinf[a.used].mean() - b.relinf[b.used].mean())
        for a, b in zip(strategy.matrices, control.matrices, strict=True)
    ]
    rates = {10: 1.0, 20: 3.0, 30: 0.0}
    lr = compute_control_margin(strategy, control, "lr", rates, settings)
    assert lr.margin.value == pytest.approx(0.25 * diffs[0] + 0.75 * diffs[1])
    with pytest.raises(ValueError, match="no learning rate"):
        compute_control_margin(strategy, control, "lr", {10: 1.0}, settings)


def test_weighted_estimate_with_mean_is_the_mean_over_steps(strategy_and_control):
    strategy, control = strategy_and_control
    settings = BootstrapSettings(n_resamples=300, seed=2)
    stats = compute_study_statistics([strategy, control], settings)
    estimate = compute_weighted_estimate(strategy, "mean", settings=settings)
    expected = stats.metrics[0].summary.mean_over_steps
    assert estimate.value == pytest.approx(expected.value, abs=1e-12)
    assert estimate.ci_low == pytest.approx(expected.ci_low, abs=1e-12)
    assert estimate.ci_high == pytest.approx(expected.ci_high, abs=1e-12)
    last = compute_weighted_estimate(strategy, "last", settings=settings)
    assert last == stats.metrics[0].steps[-1].estimate


def test_control_must_share_evals_and_context_but_not_probes(strategy_and_control):
    strategy, control = strategy_and_control
    with pytest.raises(ValueError, match="has the probes"):
        compute_control_margin(strategy, strategy)
    in_task = _metric("nocot-in", "nocot", list(m.relinf for m in control.matrices), "in-task")
    with pytest.raises(ValueError, match="evaluation set and context"):
        compute_control_margin(strategy, in_task)


@pytest.mark.parametrize(
    ("estimate", "verdict"),
    [
        (Estimate(0.1, 0.05, 0.2, ""), "helps more than nocot"),
        (Estimate(0.1, -0.05, 0.2, ""), "no better than nocot"),
        (Estimate(-0.1, -0.2, -0.05, ""), "worse than nocot"),
        (Estimate(0.1, None, None, ""), "no better than nocot"),
        (Estimate(0.1, 0.0, 0.2, ""), "no better than nocot"),
    ],
)
def test_control_verdict_follows_the_margin_interval(estimate, verdict):
    assert decide_control_verdict(estimate, "nocot") == verdict


def test_variant_scores_equal_the_metric_by_metric_functions(strategy_and_control):
    strategy, control = strategy_and_control
    settings = BootstrapSettings(n_resamples=300, seed=7)
    rates = {10: 2.0, 20: 1.0, 30: 1.0}
    scores = compute_variant_scores(
        [strategy, control], {"cot": "nocot"}, ("mean", "last", "lr"), rates, settings
    )
    assert [s.weighting for s in scores] == ["mean", "last", "lr"]
    for variant in scores:
        for metric, (name, estimate) in zip((strategy, control), variant.values, strict=True):
            assert name == metric.name
            assert estimate == compute_weighted_estimate(metric, variant.weighting, rates, settings)
        (margin,) = variant.margins
        assert margin == compute_control_margin(
            strategy, control, variant.weighting, rates, settings
        )
        assert margin.verdict.endswith("than nocot")


def test_a_margin_without_values_is_no_better():
    empty = np.zeros((3, 3), dtype=bool)
    strategy = MetricPairs("a", "a", "e", "in-task", (PairMatrix(1, np.ones((3, 3)), empty),))
    control = MetricPairs("b", "b", "e", "in-task", (PairMatrix(1, np.ones((3, 3)), empty),))
    margin = compute_control_margin(strategy, control)
    assert margin.margin.value is None
    assert margin.verdict == "no better than b"
