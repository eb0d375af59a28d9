"""Which probes drive a metric (scores.drivers) on a hand-computed RelInf matrix."""

from __future__ import annotations

import numpy as np
import pytest

from swiftstudy.scores import compute_probe_influence

# Two checkpoints, four probes, three eval examples.
RELINF = np.array(
    [
        [[0.3, 0.1, -0.2], [-0.5, 0.2, 0.0], [0.9, 0.9, 0.9], [7.0, 7.0, 7.0]],
        [[0.5, 0.3, 0.0], [-0.3, -0.4, 0.1], [0.1, 0.1, 0.1], [7.0, 7.0, 7.0]],
    ]
)
USED = np.array(
    [
        [[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]],
        [[1, 1, 0], [1, 1, 1], [0, 0, 0], [0, 0, 0]],
    ],
    dtype=bool,
)


def test_probe_means_rankings_and_moved_evals_by_hand():
    got = compute_probe_influence(RELINF, USED, k=2)

    # p0: step 0 (0.3 + 0.1 - 0.2) / 3, step 1 (0.5 + 0.3) / 2, then their mean.
    # p1: (-0.5 + 0.2) / 2 and (-0.3 - 0.4 + 0.1) / 3. p2: pairs at step 0 only. p3: none.
    expected = [(0.2 / 3 + 0.4) / 2, (-0.15 - 0.2) / 2, 0.9, np.nan]
    np.testing.assert_allclose(got.means, expected, rtol=1e-12)
    assert got.n_pairs.tolist() == [5, 5, 1, 0]
    assert got.helping.tolist() == [2, 0]
    assert got.hurting.tolist() == [1]
    assert (got.n_helping, got.n_hurting) == (2, 1)
    np.testing.assert_allclose(
        got.pair_means,
        [
            [0.4, 0.2, -0.2],
            [-0.4, -0.1, 0.1],
            [0.9, np.nan, np.nan],
            [np.nan, np.nan, np.nan],
        ],
        rtol=1e-12,
    )
    # By |pair mean|; p1's e1 and e2 tie at 0.1 and keep eval order; -1 pads unused evals.
    assert got.top_evals.tolist() == [[0, 1], [0, 1], [0, -1], [-1, -1]]


def test_k_and_n_evals_limit_the_lists():
    got = compute_probe_influence(RELINF, USED, k=1, n_evals=5)
    assert got.helping.tolist() == [2] and got.hurting.tolist() == [1]
    assert got.top_evals.shape == (4, 5)
    assert got.top_evals[0].tolist() == [0, 1, 2, -1, -1]


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="two"):
        compute_probe_influence(RELINF, USED[:, :2], k=1)
