"""Tests of fastmle.logsumexp / softmax / log_softmax."""

from __future__ import annotations

import numpy as np
from conftest import TOL
import pytest
import scipy.special as sps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastmle as fm
from reference import log_softmax_ref, logsumexp_ref, softmax_ref

FUNCS = {"logsumexp": fm.logsumexp, "softmax": fm.softmax, "log_softmax": fm.log_softmax}


def check_lse(got, ref, tol, x):
    # lse = max + log(sum exp(x - max)): the two terms may cancel, so the error is
    # relative to their size, max|x| + O(1), not to the result
    np.testing.assert_allclose(
        got, ref, rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(x), initial=0.0)))
    )


def check_softmax(got, ref, tol):
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * float(np.max(ref, initial=0.0)))


def check_log_softmax(got, ref, tol):
    # entries are (x - max) - log(s), no cancellation; the largest is -log(s),
    # whose absolute error is ~1 ulp of 1 in float64 whatever its size
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


@st.composite
def arrays_and_axes(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    ndim = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1)))
    keepdims = draw(st.booleans())
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
    return x, axis, keepdims


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays_and_axes())
def test_matches_scipy(case):
    x, axis, keepdims = case
    dtype = x.dtype.type
    tol = TOL[dtype]
    x64 = x.astype(np.float64)

    lse = fm.logsumexp(x, axis=axis, keepdims=keepdims)
    ref = sps.logsumexp(x64, axis=axis, keepdims=keepdims)
    assert np.shape(lse) == np.shape(ref)
    assert np.asarray(lse).dtype == dtype
    if axis is None and not keepdims:
        assert isinstance(lse, dtype)
    check_lse(lse, ref, tol, x64)
    check_lse(lse, logsumexp_ref(x64, axis=axis, keepdims=keepdims), tol, x64)

    sm = fm.softmax(x, axis=axis)
    ref = sps.softmax(x64, axis=axis)
    assert sm.shape == x.shape and sm.dtype == dtype
    check_softmax(sm, ref, tol)
    check_softmax(sm, softmax_ref(x64, axis=axis), tol)

    lsm = fm.log_softmax(x, axis=axis)
    ref = sps.log_softmax(x64, axis=axis)
    assert lsm.shape == x.shape and lsm.dtype == dtype
    check_log_softmax(lsm, ref, tol)
    check_log_softmax(lsm, log_softmax_ref(x64, axis=axis), tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_default_axis_is_last(dtype):
    x = (np.random.default_rng(1).standard_normal((3, 4, 5)) * 3).astype(dtype)
    np.testing.assert_array_equal(fm.logsumexp(x), fm.logsumexp(x, axis=-1))
    np.testing.assert_array_equal(fm.logsumexp(x), fm.logsumexp(x, axis=2))
    np.testing.assert_array_equal(fm.softmax(x), fm.softmax(x, axis=-1))
    np.testing.assert_array_equal(fm.log_softmax(x), fm.log_softmax(x, axis=-1))
    assert fm.logsumexp(x).shape == (3, 4)
    assert fm.logsumexp(x, keepdims=True).shape == (3, 4, 1)
    assert fm.logsumexp(x, axis=None, keepdims=True).shape == (1, 1, 1)


# --- edge rows -----------------------------------------------------------------------

INF, NAN = np.inf, np.nan


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transpose", [False, True])
def test_edge_rows(dtype, transpose):
    rows = np.array(
        [
            [-INF, -INF, -INF, -INF],  # 0: lse -inf, softmax nan
            [1.0, INF, 2.0, -INF],  # 1: lse +inf, softmax nan
            [1.0, NAN, 2.0, 3.0],  # 2: nan
            [1.0, -NAN, 2.0, 3.0],  # 3: nan with the sign bit set
            [NAN, INF, -INF, 0.0],  # 4: nan
            [0.5, -INF, 2.0, -INF],  # 5: finite, exp(-inf) = 0
            [1.0, 2.0, 3.0, 4.0],  # 6: ordinary
        ],
        dtype,
    )
    lse_expected = [-INF, INF, NAN, NAN, NAN, None, None]
    x, axis = (rows.T, 0) if transpose else (rows, 1)
    lse = fm.logsumexp(x, axis=axis)
    sm = fm.softmax(x, axis=axis)
    lsm = fm.log_softmax(x, axis=axis)
    if transpose:
        sm, lsm = sm.T, lsm.T
    for i, e in enumerate(lse_expected):
        if e is None:
            continue
        if np.isnan(e):
            assert np.isnan(lse[i]), i
        else:
            assert lse[i] == e, i
        assert np.all(np.isnan(sm[i])), i
        assert np.all(np.isnan(lsm[i])), i
    tol = TOL[dtype]
    for i in (5, 6):
        r = rows[i].astype(np.float64)
        check_lse(lse[i], logsumexp_ref(r), tol, r[np.isfinite(r)])
        check_softmax(sm[i], softmax_ref(r), tol)
        check_log_softmax(lsm[i], log_softmax_ref(r), tol)
    assert sm[5, 1] == 0 and sm[5, 3] == 0
    assert lsm[5, 1] == -INF and lsm[5, 3] == -INF


@pytest.mark.parametrize(
    "dtype,mag",
    [
        (np.float32, 1e4),
        (np.float32, 1e30),
        (np.float32, 1e38),
        (np.float64, 1e4),
        (np.float64, 1e300),
    ],
)
def test_large_values_finite(dtype, mag):
    rng = np.random.default_rng(2)
    x = (rng.choice([-1.0, 1.0], size=(7, 9)) * rng.uniform(0.5, 1.0, (7, 9)) * mag).astype(dtype)
    x[0] = dtype(mag)  # ties at the max
    x[1, :] = -dtype(mag)
    x64 = x.astype(np.float64)
    tol = TOL[dtype]
    lse = fm.logsumexp(x)
    assert np.all(np.isfinite(lse))
    check_lse(lse, logsumexp_ref(x64), tol, x64)
    sm = fm.softmax(x)
    assert np.all(np.isfinite(sm))
    check_softmax(sm, softmax_ref(x64), tol)
    np.testing.assert_allclose(sm.sum(axis=1), 1.0, rtol=tol * 10)
    lsm = fm.log_softmax(x)
    ref = log_softmax_ref(x64)
    if mag <= 1e30:  # x - max stays within range
        assert np.all(np.isfinite(lsm))
    check_log_softmax(lsm, ref.astype(dtype), tol)


def test_empty_slices():
    # a zero-size array whose reduced axis is not empty: empty result
    assert fm.logsumexp(np.zeros((0, 3)), axis=1).shape == (0,)
    assert fm.softmax(np.zeros((0, 3)), axis=1).shape == (0, 3)
    # an empty reduced axis: softmax keeps the (empty) shape; a full reduction is -inf
    assert fm.softmax(np.zeros((3, 0)), axis=1).shape == (3, 0)
    assert fm.log_softmax(np.zeros((3, 0)), axis=1).shape == (3, 0)
    assert fm.logsumexp(np.zeros((3, 0)), axis=None) == -np.inf
    assert fm.logsumexp(np.zeros(0), axis=None) == -np.inf


@pytest.mark.parametrize(
    "shape,axis", [((0,), -1), ((3, 0), 1), ((3, 0), -1), ((0, 3), 0), ((2, 0, 4), 1)]
)
def test_logsumexp_over_empty_axis(shape, axis):
    res = fm.logsumexp(np.zeros(shape), axis=axis)
    np.testing.assert_array_equal(res, sps.logsumexp(np.zeros(shape), axis=axis))


# --- 0-d input -----------------------------------------------------------------------


def test_0d_axis_none():
    assert fm.logsumexp(np.float64(3.0), axis=None) == 3.0
    assert fm.logsumexp(np.float32(3.0), axis=None).dtype == np.float32


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_0d_softmax_keeps_shape(name):
    res = FUNCS[name](np.float64(3.0), axis=None)
    assert np.shape(res) == ()


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("axis", [0, -1])
def test_0d_with_axis_0_is_its_one_element(name, axis):
    """As in torch and NumPy, a 0-d array takes axis 0 / -1 (its one element);
    more in tests/test_scalar_inputs.py."""
    np.testing.assert_array_equal(
        FUNCS[name](np.float64(3.0), axis=axis), FUNCS[name](np.float64(3.0), axis=None)
    )


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("axis", [1, -2])
def test_0d_with_other_axis_raises(name, axis):
    with pytest.raises(ValueError, match="0-d"):
        FUNCS[name](np.float64(3.0), axis=axis)


# --- argument checking and input conversion ------------------------------------------

BAD_AXES = [
    (2, ValueError),
    (-3, ValueError),
    (10, ValueError),
    (1.0, TypeError),
    (True, TypeError),
    ("0", TypeError),
    ((0, 1), TypeError),
]


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("axis,exc", BAD_AXES)
def test_bad_axis(name, axis, exc):
    with pytest.raises(exc, match="axis"):
        FUNCS[name](np.zeros((2, 3)), axis=axis)


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize(
    "a", [np.zeros(3, complex), np.array(["a", "b"]), np.array([1.0, None], dtype=object)]
)
def test_bad_dtype(name, a):
    with pytest.raises(TypeError, match="a has"):
        FUNCS[name](a)


@pytest.mark.parametrize(
    "in_dtype,compute",
    [
        (np.float16, np.float32),
        (np.int64, np.float64),
        (np.int8, np.float64),
        (np.bool_, np.float64),
    ],
)
@pytest.mark.parametrize("name", list(FUNCS))
def test_other_dtypes(in_dtype, compute, name):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 5)) * 3).astype(in_dtype)
    res = FUNCS[name](x, axis=0)
    assert np.asarray(res).dtype == compute
    ref = {"logsumexp": logsumexp_ref, "softmax": softmax_ref, "log_softmax": log_softmax_ref}[
        name
    ](x.astype(compute), axis=0)
    np.testing.assert_allclose(res, ref, rtol=TOL[compute], atol=TOL[compute] * 10)


@pytest.mark.parametrize("name", list(FUNCS))
def test_non_contiguous_readonly_and_list_input(name):
    rng = np.random.default_rng(4)
    big = rng.standard_normal((6, 10)) * 4
    x = big[::2, 1::3]
    ref = FUNCS[name](np.ascontiguousarray(x), axis=1)
    np.testing.assert_array_equal(FUNCS[name](x, axis=1), ref)
    xr = np.ascontiguousarray(x)
    xr.setflags(write=False)
    np.testing.assert_array_equal(FUNCS[name](xr, axis=1), ref)
    np.testing.assert_array_equal(FUNCS[name](x.tolist(), axis=1), ref)
    np.testing.assert_array_equal(FUNCS[name](np.asfortranarray(x), axis=1), ref)
    assert np.array_equal(big, big)  # input untouched (no NaNs either)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_result_is_c_contiguous_and_new(name):
    x = np.random.default_rng(5).standard_normal((3, 4, 5))
    before = x.copy()
    for axis in (0, 1, 2, None):
        res = FUNCS[name](x, axis=axis)
        assert res.flags.c_contiguous
        assert not np.shares_memory(res, x)
    np.testing.assert_array_equal(x, before)
