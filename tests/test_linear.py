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


@pytest.mark.parametrize("pairs", [False, True])  # distinct entries by one gemm, or a syrk
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_hessian(weighted, dtype, pairs, monkeypatch):
    rng = np.random.default_rng(5)
    n, d, m = 700, 3, 4
    X = rng.standard_normal((n, d)).astype(dtype)
    P = rng.dirichlet(np.ones(m + 1), n)[:, :m]  # m of m + 1 classes' probabilities
    sw = rng.uniform(0, 2, n) if weighted else None
    H = np.full((m * (d + 1), m * (d + 1)), 0.5)  # the sums are added to H
    monkeypatch.setattr(_linear, "_pairs_cheaper", lambda m, d1: pairs)
    monkeypatch.setattr(_linear, "KRON_BYTES", 8 * m * (d + 1) * 64)  # several sub-blocks
    _linear.softmax_hessian(X, P, sw, H)
    Xa = _augmented(X)
    w = np.ones(n) if sw is None else sw
    ref = 0.5 + sum(
        w[i] * np.kron(np.diag(P[i]) - np.outer(P[i], P[i]), np.outer(Xa[i], Xa[i]))
        for i in range(n)
    )
    np.testing.assert_allclose(H, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("m, d1", [(9, 51), (30, 11), (63, 3), (200, 4), (1, 2), (1000, 2)])
def test_softmax_hessian_formulation_choice(m, d1):
    # the measured winners (pairs for the first two, the syrk for the others)
    assert _linear._pairs_cheaper(m, d1) == ((m, d1) in [(9, 51), (30, 11)])


def _fused_reference(family, X, w, y, sw, off):
    """(NLL sum, gradient, Hessian rows sqrt(h) [1, x], column squares) in float64."""
    Xa = _augmented(X)
    z = Xa @ w + (0.0 if off is None else off)
    s = np.ones(X.shape[0]) if sw is None else sw
    if family == "bernoulli":
        nll = np.logaddexp(0.0, z) - y * z
        r = 1.0 / (1.0 + np.exp(-z)) - y
        h = np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))) ** 2
    else:
        nll = np.exp(z) - y * z
        r = np.exp(z) - y
        h = np.exp(z)
    sq = np.concatenate([[s.sum()], s @ (Xa[:, 1:] ** 2)])
    return (s * nll).sum(), (s * r) @ Xa, np.sqrt(s * h)[:, None] * Xa, sq, z


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 2600),
    d=st.integers(1, 9),
    family=st.sampled_from(["bernoulli", "poisson"]),
    weighted=st.booleans(),
    with_offset=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_fused_passes(n, d, family, weighted, with_offset, dtype, seed):
    # n crosses the 1024-row chunks and the 4-row tiles; the optional outputs (Z, the
    # Hessian's rows A, the column squares) against float64 NumPy formulas
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    Wt = rng.standard_normal((1, d + 1)) * 0.5
    sw = rng.uniform(0.0, 2.0, n) if weighted else None
    off = rng.standard_normal(n) * 0.3 if with_offset and family == "poisson" else None
    if family == "bernoulli":
        y = (rng.random(n) < 0.5).astype(np.float64)
    else:
        y = rng.poisson(1.5, n).astype(np.float64)
    nll, grad, rows, sq, z = _fused_reference(family, X, Wt[0], y, sw, off)
    G, Z, A, S = np.ones((1, d + 1)), np.empty(n), np.empty((n, d + 1)), np.ones(d + 1)
    if family == "bernoulli":
        counts = np.zeros(2, np.int64)
        loss = _linear.bernoulli_pass(X, Wt, y, sw, G, counts, 5.0, Z, A, S)
        m = (2 * y - 1) * z
        keep = np.ones(n, bool) if sw is None else sw > 0
        assert counts.tolist() == [np.sum(keep & (m <= 0)), np.sum(keep & (m > 5.0))]
    else:
        loss = _linear.poisson_pass(X, Wt, y, sw, G, off, Z, A, S)
    np.testing.assert_allclose(loss, nll, rtol=1e-11)
    np.testing.assert_allclose(G, 1.0 + grad[None, :], rtol=1e-11, atol=1e-9)
    np.testing.assert_allclose(Z, z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(A, rows, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(S, 1.0 + sq, rtol=1e-12)
    # without the optional outputs: the same loss and gradient, bit for bit
    G2 = np.ones((1, d + 1))
    if family == "bernoulli":
        loss2 = _linear.bernoulli_pass(X, Wt, y, sw, G2, np.zeros(2, np.int64), 5.0)
    else:
        loss2 = _linear.poisson_pass(X, Wt, y, sw, G2, off)
    assert loss2 == loss
    np.testing.assert_array_equal(G2, G)
    # the Hessian A^T A, by slices in parallel, against one product
    H = np.zeros((d + 1, d + 1))
    _linear.gram_rows(A, H)
    np.testing.assert_allclose(H, rows.T @ rows, rtol=1e-11, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 2600),
    d=st.integers(1, 9),
    k=st.sampled_from([2, 3, 7, 10, 33, 63]),
    weighted=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_softmax_pass(n, d, k, weighted, dtype, seed):
    # n crosses the 1024-row chunks and the transposed blocks (4096 // k rows); the
    # NLL, gradient, logits and column squares against float64 NumPy formulas
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    Wt = rng.standard_normal((k, d + 1)) * 2.0
    y = rng.integers(0, k, n)
    sw = rng.uniform(0.0, 2.0, n) if weighted else None
    s = np.ones(n) if sw is None else sw
    Xa = _augmented(X)
    z = Xa @ Wt.T
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    p = np.exp(z - lse[:, None])
    p[np.arange(n), y] -= 1.0
    G, Z, S = np.ones((k, d + 1)), np.empty((n, k)), np.ones(d + 1)
    loss = _linear.softmax_pass(X, Wt, y, sw, G, Z, S)
    np.testing.assert_allclose(loss, s @ (lse - z[np.arange(n), y]), rtol=1e-11)
    np.testing.assert_allclose(G, 1.0 + (s[:, None] * p).T @ Xa, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(Z, z, rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(S, 1.0 + np.concatenate([[s.sum()], s @ Xa[:, 1:] ** 2]), rtol=1e-12)
    # without the optional outputs: the same loss and gradient, bit for bit
    G2 = np.ones((k, d + 1))
    assert _linear.softmax_pass(X, Wt, y, sw, G2) == loss
    np.testing.assert_array_equal(G2, G)


def test_softmax_pass_refuses_labels_outside_the_classes():
    X, Wt, G = np.ones((5, 2)), np.zeros((3, 3)), np.zeros((3, 3))
    for bad in (np.array([0, 1, 2, 3, 0]), np.array([0, -1, 2, 1, 0])):
        with pytest.raises(ValueError, match=r"y: class indices must lie in \[0, 3\)"):
            _linear.softmax_pass(X, Wt, bad, None, G)


def test_column_squares_and_poisson_sums():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3000, 4)).astype(np.float32)
    sw = rng.uniform(0, 2, 3000)
    ref = np.concatenate([[sw.sum()], sw @ X.astype(np.float64) ** 2])
    np.testing.assert_allclose(_linear.column_squares(X, sw), ref, rtol=1e-12)
    # small counts (looked up), large counts and non-integer targets (log Gamma(y + 1)
    # != 0 between 0 and 1)
    y = np.concatenate(
        [rng.poisson(2.0, 1900), rng.poisson(3000.0, 100), rng.uniform(0, 3, 1000)]
    ).astype(float)
    off = rng.standard_normal(3000)
    from scipy.special import gammaln, xlogy

    rows = (np.ones(3000), y, gammaln(y + 1), xlogy(y, y), np.exp(off), y * off)
    ref = [r @ sw for r in rows]
    np.testing.assert_allclose(_linear.poisson_sums(y, sw, off), ref, rtol=1e-12)
    assert _linear.poisson_sums(np.zeros(0), None, None).tolist() == [0.0] * 6
