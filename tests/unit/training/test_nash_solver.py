"""The Nash bargaining solver on its own: exact on random Gramians of every conditioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.weighting.nash_mtl import bargaining_weights


def random_gramian(seed: int, n: int, condition: float) -> torch.Tensor:
    """A symmetric positive definite n x n matrix with eigenvalues spread over ``condition``."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.geomspace(1.0, 1.0 / condition, n) * 10 ** rng.uniform(-3, 3)
    return torch.from_numpy(q @ np.diag(eig) @ q.T)


@pytest.mark.parametrize(
    ("condition", "bound"), [(1.0, 1e-9), (20.0, 1e-9), (1e3, 1e-9), (1e6, 1e-7)]
)
@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_residual_is_below_1e9_relative(n, condition, bound):
    """(K alpha)_t = 1 / alpha_t to 1e-9 relative, alpha > 0, for 25 Gramians per case.

    Newton's method converges quadratically near the solution; stopping it on an Armijo test
    there left residuals near 1e-8 on some well-conditioned 3-task problems. At condition 1e6
    the 1e-14 on the normalised diagonal bounds the residual near 1e-8.
    """
    worst = 0.0
    for seed in range(25):
        k = random_gramian(seed, n, condition)
        alpha = bargaining_weights(k)
        assert (alpha > 0).all()
        residual = float((k @ alpha - 1 / alpha).norm() / (1 / alpha).norm())
        worst = max(worst, residual)
    assert worst < bound, worst


def test_warm_start_reaches_the_same_point():
    k = random_gramian(3, 4, 50.0)
    cold = bargaining_weights(k)
    warm = bargaining_weights(k * 1.01, start=cold)
    torch.testing.assert_close(warm, bargaining_weights(k * 1.01), rtol=1e-9, atol=0)


def test_a_singular_gramian_gives_finite_weights_and_the_papers_norm():
    """Three tasks whose gradients span a plane: alpha stays finite and positive, and at the
    solution alpha^T K alpha = sum_t alpha_t (K alpha)_t = n (Navon et al. 2022, Claim 3.1)."""
    g = np.random.default_rng(0).standard_normal((2, 10))
    jac = torch.from_numpy(np.vstack([g, g[0] + g[1]]))
    k = jac @ jac.T
    alpha = bargaining_weights(k)
    assert torch.isfinite(alpha).all() and (alpha > 0).all()
    assert float(alpha @ k @ alpha) == pytest.approx(3.0, rel=1e-6)
