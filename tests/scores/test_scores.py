"""RelInf and the in-task / cross-task means on hand-computed matrices."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from swiftstudy.scores import (
    aggregate_metric,
    compute_dot_products,
    compute_pair_mask,
    compute_relinf,
)

DOTS = torch.tensor([[1.0, 2.0, 3.0], [4.0, -4.0, 6.0], [0.5, 8.0, 9.0]], dtype=torch.float64)
TASKS = ["a", "b", "c"]


def test_relinf_divides_by_eval_sqnorm():
    relinf, valid = compute_relinf(DOTS, torch.tensor([2.0, 4.0, 5.0], dtype=torch.float64))
    expected = torch.tensor(
        [[0.5, 0.5, 0.6], [2.0, -1.0, 1.2], [0.25, 2.0, 1.8]], dtype=torch.float64
    )
    assert torch.equal(valid, torch.tensor([True, True, True]))
    assert torch.allclose(relinf, expected, rtol=0, atol=1e-15)


def test_paper_formulas_one_example_per_task():
    relinf, valid = compute_relinf(DOTS, torch.tensor([2.0, 4.0, 5.0], dtype=torch.float64))
    s_in = aggregate_metric(relinf, valid, compute_pair_mask(TASKS, TASKS, "in-task"))
    s_cross = aggregate_metric(relinf, valid, compute_pair_mask(TASKS, TASKS, "cross-task"))
    # eq. 4: (0.5 - 1 + 1.8) / 3; eq. 5: (0.5 + 0.6 + 2 + 1.2 + 0.25 + 2) / (3 * 2)
    assert s_in.value == pytest.approx(1.3 / 3, abs=1e-15)
    assert s_in.n_pairs == 3
    assert s_cross.value == pytest.approx(6.55 / 6, abs=1e-15)
    assert s_cross.n_pairs == 6
    s_all = aggregate_metric(relinf, valid, compute_pair_mask(TASKS, TASKS, "all"))
    # every pair: (1.3 + 6.55) / 9
    assert s_all.value == pytest.approx(7.85 / 9, abs=1e-15)
    assert s_all.n_pairs == 9


def test_zero_gradient_eval_is_left_out_and_counted():
    relinf, valid = compute_relinf(DOTS, torch.tensor([2.0, 4.0, 0.0], dtype=torch.float64))
    assert valid.tolist() == [True, True, False]
    assert torch.isfinite(relinf).all()
    s_in = aggregate_metric(relinf, valid, compute_pair_mask(TASKS, TASKS, "in-task"))
    s_cross = aggregate_metric(relinf, valid, compute_pair_mask(TASKS, TASKS, "cross-task"))
    assert s_in.value == pytest.approx(-0.25, abs=1e-15)
    assert (s_in.n_pairs, s_in.n_excluded_evals) == (2, 1)
    assert s_cross.value == pytest.approx(4.75 / 4, abs=1e-15)
    assert (s_cross.n_pairs, s_cross.n_excluded_evals) == (4, 1)


def test_several_examples_per_task_average_over_pairs():
    # Two probes of task "x", one of "y"; evals "x", "y".
    relinf = torch.tensor([[1.0, 10.0], [3.0, 20.0], [100.0, 5.0]], dtype=torch.float64)
    valid = torch.tensor([True, True])
    probes, evals = ["x", "x", "y"], ["x", "y"]
    s_in = aggregate_metric(relinf, valid, compute_pair_mask(probes, evals, "in-task"))
    s_cross = aggregate_metric(relinf, valid, compute_pair_mask(probes, evals, "cross-task"))
    assert s_in.value == pytest.approx((1 + 3 + 5) / 3)
    assert s_cross.value == pytest.approx((10 + 20 + 100) / 3)


def test_metric_without_pairs_is_nan_with_zero_count():
    value = aggregate_metric(
        torch.ones((1, 1), dtype=torch.float64),
        torch.tensor([True]),
        compute_pair_mask(["a"], ["b"], "in-task"),
    )
    assert value.n_pairs == 0 and math.isnan(value.value)


def test_unknown_context_is_refused():
    with pytest.raises(ValueError, match="context"):
        compute_pair_mask(["a"], ["a"], "sideways")


def test_dot_products_accumulate_in_float64_across_chunks():
    gen = torch.Generator().manual_seed(0)
    left = torch.randn(3, 1000, generator=gen, dtype=torch.float32)
    right = torch.randn(2, 1000, generator=gen, dtype=torch.float32)
    expected = left.double() @ right.double().T
    got = compute_dot_products(left, right, chunk=7)
    assert got.dtype == torch.float64
    assert torch.allclose(got, expected, rtol=1e-14, atol=1e-12)
    gram = compute_dot_products(left, chunk=64)
    assert torch.allclose(gram, left.double() @ left.double().T, rtol=1e-14, atol=1e-12)


def test_dot_products_refuse_mismatched_dimensions():
    with pytest.raises(ValueError, match="dimensions"):
        compute_dot_products(torch.zeros(1, 3), torch.zeros(1, 4))


def test_importing_scores_loads_no_transformers_or_peft():
    # swiftstudy/__init__ imports its public names lazily: the math needs no model libraries.
    code = (
        "import swiftstudy.scores, sys; "
        "assert 'transformers' not in sys.modules and 'peft' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
