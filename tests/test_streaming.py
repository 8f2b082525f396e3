"""Streaming (non-temporal) stores and the transposed short-rows cross-entropy:
same bits as the cached-store path, at any alignment, size and thread count."""

from __future__ import annotations


import numpy as np
import pytest
from numba import njit

import fastmle as fm
from fastmle._cpu import rows as _rows
from fastmle._cpu.numerics import store_fence, stream_copy

from fastmle._cpu import cross_entropy as ce


@njit(cache=False)
def _copy(src, dst):
    stream_copy(src, dst)
    store_fence()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stream_copy_any_alignment_and_length(dtype):
    rng = np.random.default_rng(0)
    base = rng.standard_normal(400).astype(dtype)
    base[[3, 50, 77]] = [np.nan, np.inf, -0.0]
    for offset in range(0, 17):
        for n in (0, 1, 7, 15, 16, 17, 33, 64, 129, 300):
            src = base[5 : 5 + n]
            out = np.full(400, 7, dtype)
            dst = out[offset : offset + n]
            _copy(src, dst)
            np.testing.assert_array_equal(dst.view(np.uint8), src.view(np.uint8))
            assert (out[:offset] == 7).all() and (out[offset + n :] == 7).all()


def _ce_cases():
    rng = np.random.default_rng(1)
    for c in (3, 10, 63, 64, 1000):
        for dtype in (np.float32, np.float64):
            x = (rng.standard_normal((257, c)) * 4).astype(dtype)
            t = rng.integers(0, c, 257)
            t[5] = -100
            x[7, 1] = np.nan
            x[9, :] = -np.inf
            x[11, 0] = np.inf
            x[13, 2] = 40.0  # a confident row
            w = rng.uniform(0.5, 2, c).astype(dtype)
            yield x, t, w, c


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_streaming_same_bits(monkeypatch, smoothing, reduction):
    for x, t, w, _ in _ce_cases():
        kw = dict(weight=w, label_smoothing=smoothing, reduction=reduction)
        monkeypatch.setattr(_rows, "STREAM_BYTES", 1 << 62)
        l0, g0 = fm.cross_entropy_value_and_grad(x, t, **kw)
        monkeypatch.setattr(_rows, "STREAM_BYTES", 0)
        l1, g1 = fm.cross_entropy_value_and_grad(x, t, **kw)
        g2 = np.full_like(x, 3.0)
        l2, _ = fm.cross_entropy_value_and_grad(x, t, out=g2, **kw)
        for a in (l1, l2):
            np.testing.assert_array_equal(
                np.atleast_1d(a).view(np.uint8), np.atleast_1d(l0).view(np.uint8)
            )
        for g in (g1, g2):
            np.testing.assert_array_equal(g.view(np.uint8), g0.view(np.uint8))
        assert np.isnan(g1[7]).all() and np.isnan(g1[9]).all() and np.isnan(g1[11]).all()
        assert (g1[5] == 0).all()


def test_cross_entropy_streaming_in_place(monkeypatch):
    for x, t, w, _ in _ce_cases():
        l0, g0 = fm.cross_entropy_value_and_grad(x, t, weight=w)
        monkeypatch.setattr(_rows, "STREAM_BYTES", 0)
        xi = x.copy()
        l1, g1 = fm.cross_entropy_value_and_grad(xi, t, weight=w, out=xi)
        assert g1 is xi or np.shares_memory(g1, xi)
        assert l1.tobytes() == l0.tobytes()
        np.testing.assert_array_equal(g1.view(np.uint8), g0.view(np.uint8))


def test_short_rows_match_the_long_rows_kernel():
    """The transposed short-rows kernel agrees with the per-row kernel (which sums
    in a different, vectorized order), NaN rows and ignored rows included."""
    for x, t, w, c in _ce_cases():
        if c >= ce.SHORT_ROWS:
            continue
        for eps in (0.0, 0.2):
            out = {}
            for kernel in (ce._SHORT_ROWS[eps > 0], ce._ce_index_kernel):
                g = np.empty_like(x)
                rows = np.empty(x.shape[0])
                per = _rows.rows_per_chunk(c)
                part = np.zeros((x.shape[0] + per - 1) // per)
                kernel(0, part.size, x, t, w, -100, eps, 0.5, g, True, rows, True, per, False, part)
                out[kernel] = (part, rows, g)
            (p0, r0, g0), (p1, r1, g1) = out.values()
            tol = 1e-6 if x.dtype == np.float32 else 1e-13
            np.testing.assert_allclose(r0, r1, rtol=tol, atol=tol)
            np.testing.assert_allclose(g0, g1, rtol=tol, atol=tol)
            np.testing.assert_allclose(p0, p1, rtol=tol)
