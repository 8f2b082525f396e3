"""The row-block kernels of the linear models against NumPy in float64."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastmle._cpu import linear as _linear


def _augmented(X):
    return np.hstack([np.ones((X.shape[0], 1)), X.astype(np.float64)])


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 2100),
    d=st.integers(1, 12),
    k=st.integers(1, 4),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_predictor_backprop_gram(n, d, k, dtype, seed):
    # n crosses the 1024-row chunks and the 4-row tiles; d the 2 x 4 Gram tiles
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    Wt = rng.standard_normal((k, d + 1))
    Xa = _augmented(X)

    Z = _linear.predictor(X, Wt)
    np.testing.assert_allclose(Z, Xa @ Wt.T, rtol=1e-12, atol=1e-12)

    R = rng.standard_normal((n, k))
    G = np.ones((k, d + 1))  # accumulates into what is there
    _linear.backprop(X, R, G)
    np.testing.assert_allclose(G, 1.0 + R.T @ Xa, rtol=1e-12, atol=1e-10)

    Wts = rng.standard_normal((n, k))
    H = np.zeros((k, d + 1, d + 1))
    _linear.gram(X, Wts, H)
    H = _linear.symmetrize(H)
    ref = np.stack([Xa.T @ (Xa * Wts[:, [q]]) for q in range(k)])
    np.testing.assert_allclose(H, ref, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_rows_are_summed_in_float64(dtype):
    # 10^5 copies of 0.1f: a float32 running sum would drift far from 10^4
    X = np.full((100_000, 1), 0.1, dtype)
    G = np.zeros((1, 2))
    _linear.backprop(X, np.ones((100_000, 1)), G)
    assert G[0, 1] == pytest.approx(100_000 * float(dtype(0.1)), rel=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_hessian(weighted, dtype):
    rng = np.random.default_rng(5)
    n, d, m = 700, 3, 4
    X = rng.standard_normal((n, d)).astype(dtype)
    P = rng.dirichlet(np.ones(m + 1), n)[:, :m]  # m of m + 1 classes' probabilities
    sw = rng.uniform(0, 2, n) if weighted else None
    H = np.zeros((m * (d + 1), m * (d + 1)))
    _linear.KRON_BYTES, saved = 8 * m * (d + 1) * 64, _linear.KRON_BYTES  # several sub-blocks
    try:
        _linear.softmax_hessian(X, P, sw, H)
    finally:
        _linear.KRON_BYTES = saved
    Xa = _augmented(X)
    w = np.ones(n) if sw is None else sw
    ref = sum(
        w[i] * np.kron(np.diag(P[i]) - np.outer(P[i], P[i]), np.outer(Xa[i], Xa[i]))
        for i in range(n)
    )
    np.testing.assert_allclose(H, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
