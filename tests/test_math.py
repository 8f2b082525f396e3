"""The vectorizable scalar math in fastmle._cpu.numerics against NumPy (float64 reference)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from fastmle._cpu import numerics as M


@njit
def _apply(kind, x, out):
    for i in range(x.size):
        if kind == 0:
            out[i] = M.exp(x[i])
        elif kind == 1:
            out[i] = M.log(x[i])
        elif kind == 2:
            out[i] = M.log1p(x[i])
        elif kind == 3:
            out[i] = M.atanh2_third(x[i])
        elif kind == 4:
            out[i] = M.from_sortable(M.sortable(x[i]), x[i])
        else:
            out[i] = M.exp_nonpos(x[i])


def apply(kind, x):
    out = np.empty_like(x)
    _apply(kind, x, out)
    return out


ULP = {np.float32: 4, np.float64: 4}


def ulps(got, ref, dt):
    """|got - ref| in units of the last place of ref (in dtype dt)."""
    spacing = np.spacing(np.abs(ref).astype(dt)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / spacing


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_exp_accuracy_over_the_whole_range(dt):
    lo, hi = (-103.0, 88.7) if dt == np.float32 else (-744.0, 709.7)
    x = np.random.default_rng(0).uniform(lo, hi, 200_000).astype(dt)
    ref = np.exp(x.astype(np.float64)) if dt == np.float32 else np.exp(x)
    got = apply(0, x)
    normal = np.abs(ref) >= np.finfo(dt).tiny
    assert ulps(got[normal], ref[normal], dt).max() <= ULP[dt]
    # subnormal results are rounded once, correctly to within one subnormal step
    sub = ~normal
    assert np.all(np.abs(got[sub] - ref[sub]) <= np.finfo(dt).smallest_subnormal)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_exp_nonpos_accuracy_subnormals_and_specials(dt):
    x = -np.random.default_rng(3).uniform(0, 110 if dt == np.float32 else 750, 200_000)
    x = x.astype(dt)
    ref = np.exp(x.astype(np.float64))
    got = apply(5, x)
    normal = ref >= np.finfo(dt).tiny
    assert ulps(got[normal], ref[normal], dt).max() <= ULP[dt]
    assert np.all(np.abs(got[~normal] - ref[~normal]) <= np.finfo(dt).smallest_subnormal)
    sp = np.array([0.0, -0.0, -np.inf, np.nan, -1e-30], dt)
    np.testing.assert_array_equal(apply(5, sp), np.array([1, 1, 0, np.nan, 1], dt))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_exp_special_values(dt):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e4, -1e4], dt)
    got = apply(0, x)
    np.testing.assert_array_equal(got, np.array([1, 1, np.inf, 0, np.nan, np.inf, 0], dt))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_log_and_log1p_accuracy(dt):
    rng = np.random.default_rng(1)
    tiny = np.finfo(dt).tiny
    x = np.exp(rng.uniform(np.log(tiny) - 10, np.log(np.finfo(dt).max), 200_000)).astype(dt)
    x = x[x > 0]
    ref = np.log(x.astype(np.float64))
    assert ulps(apply(1, x), ref, dt).max() <= ULP[dt] or np.abs(
        apply(1, x) - ref
    ).max() <= 2 * np.spacing(dt(1))  # near x = 1, absolute
    y = np.concatenate(
        [
            rng.uniform(-0.999, 1.0, 100_000),
            np.exp(rng.uniform(-700 if dt == np.float64 else -100, 0, 100_000)),
            np.exp(rng.uniform(0, 80, 1000)),
        ]
    ).astype(dt)
    ref = np.log1p(y.astype(np.float64))
    assert ulps(apply(2, y), ref, dt).max() <= ULP[dt]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_log_special_values(dt):
    x = np.array(
        [0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, 1.0, np.finfo(dt).smallest_subnormal], dt
    )
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(apply(1, x), np.log(x))
        y = np.array([-1.0, -2.0, np.inf, np.nan, 0.0, np.finfo(dt).smallest_subnormal], dt)
        np.testing.assert_array_equal(apply(2, y), np.log1p(y))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_atanh2_third_is_log1p_on_the_unit_interval(dt):
    e = np.concatenate([np.linspace(0, 1, 10001), np.exp(-np.linspace(0, 80, 1000))]).astype(dt)
    s = (e.astype(np.float64) / (2 + e.astype(np.float64))).astype(dt)
    got = apply(3, s)
    ref = 2 * np.arctanh(s.astype(np.float64))
    ok = ref > 0
    assert ulps(got[ok], ref[ok], dt).max() <= ULP[dt]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_sortable_keys_order_like_floats_and_round_trip(dt):
    x = np.concatenate(
        [
            np.random.default_rng(2).standard_normal(1000) * 1e3,
            [0.0, -0.0, np.inf, -np.inf, 1e-40, -1e-40],
        ]
    ).astype(dt)
    back = apply(4, x)
    np.testing.assert_array_equal(back.view(np.uint8), x.view(np.uint8))
    itype = np.int32 if dt == np.float32 else np.int64
    bits = x.view(itype)
    keys = np.where(bits < 0, bits ^ np.iinfo(itype).max, bits)
    by_key = x[np.argsort(keys)]
    assert np.all(by_key[1:] >= by_key[:-1])  # key order is float order (-0 before +0)
