"""The seeded Rademacher projection: determinism, chunking, linearity, and its stated error."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from swiftstudy.gradients.projection import project_gradients, rademacher_rows, relative_error_bound


def _signs(rows: torch.Tensor) -> list[list[int]]:
    return torch.sign(rows).to(torch.int64).tolist()


def test_rows_are_a_fixed_function_of_seed_and_position():
    whole = rademacher_rows(7, 40, 0, 10)
    assert whole.shape == (10, 40) and whole.dtype == torch.float32
    assert torch.equal(whole.abs(), torch.full((10, 40), 1 / math.sqrt(40)))
    assert torch.equal(rademacher_rows(7, 40, 0, 10), whole)
    assert torch.equal(rademacher_rows(7, 40, 3, 7), whole[3:7])
    assert rademacher_rows(7, 40, 7, 7).shape == (0, 40)
    assert not torch.equal(rademacher_rows(8, 40, 0, 10), whole)
    assert not torch.equal(rademacher_rows(7, 40, 10, 20), whole)
    # Pinned: cached projections are keyed by the seed, so the matrix of a seed must never change.
    assert _signs(rademacher_rows(0, 8, 0, 2)) == [
        [-1, -1, -1, -1, 1, 1, -1, 1],
        [-1, 1, -1, 1, 1, 1, -1, 1],
    ]
    assert _signs(rademacher_rows(2**40 + 3, 5, 10**9, 10**9 + 1)) == [[1, -1, -1, -1, -1]]


def test_signs_are_balanced_and_rows_nearly_orthonormal():
    rows = rademacher_rows(3, 64, 0, 2000, dtype=torch.float64)
    assert abs(float((rows > 0).double().mean()) - 0.5) < 0.01
    gram = rows @ rows.T
    torch.testing.assert_close(gram.diagonal(), torch.ones(2000, dtype=torch.float64))
    off = gram - torch.diag(gram.diagonal())
    # Off-diagonal entries have mean 0 and standard deviation 1/√k.
    assert abs(float(off.sum()) / (2000 * 1999)) < 1e-3
    assert float(off.square().sum() / (2000 * 1999)) == pytest.approx(1 / 64, rel=0.02)


def test_projection_equals_the_explicit_matrix_product_for_any_chunk_size():
    torch.manual_seed(0)
    grads = torch.randn(5, 1000, dtype=torch.float64)
    reference = grads @ rademacher_rows(11, 48, 0, 1000, dtype=torch.float64)
    for chunk_rows in (1, 7, 256, 5000):
        projected = project_gradients(grads, 48, 11, chunk_rows=chunk_rows)
        assert projected.dtype == torch.float64 and projected.shape == (5, 48)
        torch.testing.assert_close(projected, reference, rtol=1e-12, atol=1e-12)


def test_module_pieces_projected_at_their_offsets_sum_to_the_whole():
    torch.manual_seed(1)
    grads = torch.randn(3, 700, dtype=torch.float64)
    whole = project_gradients(grads, 32, 5)
    bounds = [0, 64, 300, 301, 700]  # like the engine's per-module column spans
    pieces = sum(
        project_gradients(grads[:, a:b], 32, 5, offset=a) for a, b in itertools.pairwise(bounds)
    )
    torch.testing.assert_close(pieces, whole, rtol=1e-12, atol=1e-12)
    # A piece at the wrong offset is projected with other rows of P.
    assert not torch.allclose(project_gradients(grads[:, 64:300], 32, 5), pieces - whole)


def test_exact_identities():
    # A coordinate vector keeps its norm exactly: each row of P has squared norm k · (1/k) = 1.
    eye = torch.eye(50)
    projected = project_gradients(eye, 16, 2)  # 1/√16 is exact in binary
    assert torch.equal(projected.square().sum(1), torch.ones(50))
    torch.manual_seed(2)
    a, b = torch.randn(2, 200, dtype=torch.float64)
    both = project_gradients(torch.stack([a, b, 2 * a - 3 * b]), 24, 9)
    torch.testing.assert_close(both[2], 2 * both[0] - 3 * both[1], rtol=0, atol=1e-12)
    zero = project_gradients(torch.zeros(2, 100), 8, 0)
    assert torch.equal(zero, torch.zeros(2, 8))


def projected_dot_variance(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, M)`` variances ``(|a|²|b|² + ⟨a,b⟩² − 2 Σ_i a_i² b_i²) / k`` of projected dots."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    sq_a, sq_b = (a * a).sum(1), (b * b).sum(1)
    dots = a @ b.T
    return (sq_a[:, None] * sq_b[None, :] + dots * dots - 2 * (a * a) @ (b * b).T) / k


def projected_dot_std_bound(sqnorm_a, sqnorm_b, dot, k: int) -> torch.Tensor:
    """The module's bound ``√((|a|²|b|² + ⟨a,b⟩²) / k)`` on a projected dot's standard error."""
    return torch.sqrt((sqnorm_a * sqnorm_b + dot * dot) / k)


def _projected_dots(a: torch.Tensor, b: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """⟨Pᵀa, Pᵀb⟩ for n independent P: n consecutive row blocks of one seed's matrix."""
    blocks = rademacher_rows(0, k, 0, n * a.numel(), dtype=torch.float64)
    blocks = blocks.reshape(n, a.numel(), k)
    return torch.einsum("d,ndk->nk", a, blocks).mul(torch.einsum("d,ndk->nk", b, blocks)).sum(1)


@pytest.mark.parametrize("case", ["dense", "sparse"])
def test_projected_dots_are_unbiased_with_the_stated_variance(case):
    """Over 2000 draws: the mean is ⟨a,b⟩ and the variance the formula's, not just under the bound.

    In the sparse case a = b = e₁ + e₂, so Var = (4 + 4 − 4)/k is half the bound (4 + 4)/k.
    """
    k, n = 32, 2000
    if case == "dense":
        torch.manual_seed(3)
        a = torch.randn(256, dtype=torch.float64)
        b = 0.5 * a + torch.randn(256, dtype=torch.float64)
    else:
        a = torch.zeros(256, dtype=torch.float64)
        a[[10, 200]] = 1.0
        b = a.clone()
    values = _projected_dots(a, b, k, n)
    variance = float(projected_dot_variance(a[None], b[None], k))
    bound = float(projected_dot_std_bound(a @ a, b @ b, a @ b, k)) ** 2
    assert abs(float(values.mean()) - float(a @ b)) < 4 * math.sqrt(variance / n)
    # The sample variance of 2000 draws is within ±12 % (about 3.5 standard errors).
    assert float(values.var()) == pytest.approx(variance, rel=0.12)
    assert variance <= bound * (1 + 1e-12)
    if case == "sparse":
        assert variance == pytest.approx(bound / 2)
        assert float(values.var()) < 0.6 * bound
    # Across seeds too: 50 seeds' projections of the same pair average to ⟨a,b⟩.
    seeds = [project_gradients(torch.stack([a, b]), k, seed) for seed in range(50)]
    across = torch.tensor([float(pa @ pb) for pa, pb in seeds])
    assert abs(float(across.mean()) - float(a @ b)) < 4 * math.sqrt(variance / 50)


def test_error_bounds():
    assert relative_error_bound(8192) == pytest.approx(0.015625)
    torch.manual_seed(4)
    a, b = torch.randn(3, 100), torch.randn(4, 100)
    variance = projected_dot_variance(a, b, 64)
    assert variance.shape == (3, 4) and variance.dtype == torch.float64
    sq_a, sq_b = a.double().square().sum(1), b.double().square().sum(1)
    bound = projected_dot_std_bound(sq_a[:, None], sq_b[None, :], a.double() @ b.double().T, 64)
    assert bool((variance.sqrt() <= bound).all())
    assert bool((bound <= relative_error_bound(64) * (sq_a[:, None] * sq_b[None, :]).sqrt()).all())
    with pytest.raises(ValueError):
        relative_error_bound(0)


def test_dtypes():
    torch.manual_seed(5)
    grads = torch.randn(4, 300)
    reference = project_gradients(grads.double(), 16, 1)
    single = project_gradients(grads, 16, 1)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), reference, rtol=1e-5, atol=1e-5)
    accumulated = project_gradients(grads, 16, 1, accumulate_dtype=torch.float64)
    assert accumulated.dtype == torch.float64
    torch.testing.assert_close(accumulated, reference, rtol=1e-12, atol=1e-12)
    half = project_gradients(grads.bfloat16(), 16, 1)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.double(), reference, rtol=0.02, atol=0.05)
    rows = rademacher_rows(1, 16, 0, 4, dtype=torch.bfloat16)
    assert rows.dtype == torch.bfloat16
    assert torch.equal(rows.float(), rademacher_rows(1, 16, 0, 4))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="k must be"):
        rademacher_rows(0, 0, 0, 1)
    with pytest.raises(ValueError, match="seed"):
        rademacher_rows(-1, 4, 0, 1)
    with pytest.raises(ValueError, match="start"):
        rademacher_rows(0, 4, 5, 1)
    with pytest.raises(ValueError, match="expected"):
        project_gradients(torch.zeros(3), 4, 0)
