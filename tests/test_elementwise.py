"""Tests of the element-wise losses: binary cross-entropy (from logits and from
probabilities), Gaussian NLL, MSE and KL divergence, with their gradients.

Tolerances: results are compared with the float64 references of
``reference_elementwise`` computed on the same (dtype-rounded) inputs, to 1e-12
(float64) or 1e-6 (float32) relative to the size of the quantity. Where a result
is a difference of terms that may cancel (Gaussian log(v) + d**2/v, KL
t log t - t x, the BCE gradient (1-y) sigmoid(x) - y pw sigmoid(-x), a d_var summed
over many elements) the "size" is that of the terms (the sum of their absolute
values), which is what any implementation's rounding error is proportional to.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
from conftest import TOL, same
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import expit, xlogy

import fastmle as fm
from reference_elementwise import (
    bce_ref,
    bce_with_logits_ref,
    gaussian_nll_loss_ref,
    kl_div_ref,
    mse_loss_ref,
    sum_to_shape,
)

ROOT = Path(__file__).resolve().parents[1]
HYPO = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LOG_2PI_HALF = 0.5 * math.log(2 * math.pi)


# --- helpers ------------------------------------------------------------------------


def f64(a):
    return np.asarray(a, dtype=np.float64)


def assert_within(got, ref, atol, what=""):
    """|got - ref| <= atol element-wise (atol broadcasts); NaN must match NaN, and
    equal values (infinities included) always pass."""
    got = f64(got)
    ref = f64(ref)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    atol = np.broadcast_to(f64(atol), ref.shape)
    with np.errstate(invalid="ignore"):
        err = np.abs(got - ref)
        ok = (err <= atol) | (got == ref) | (np.isnan(got) & np.isnan(ref))
    if not np.all(ok):
        i = np.flatnonzero(~ok.reshape(-1))[0]
        raise AssertionError(
            f"{what}: {np.count_nonzero(~ok)} mismatch(es); first at flat index {i}: "
            f"got {got.reshape(-1)[i]!r}, ref {ref.reshape(-1)[i]!r}, "
            f"err {err.reshape(-1)[i]!r} > atol {atol.reshape(-1)[i]!r}"
        )


def reduce_mag(mag_el, reduction, denom):
    """The size of a reduced loss: the reduction of the element magnitudes."""
    if reduction == "none":
        return mag_el
    s = float(np.sum(mag_el))
    if reduction in ("mean", "batchmean") and denom:
        s /= denom
    return s


def check_loss(got, ref, mag_el, reduction, denom, dtype, what="loss"):
    dtype = np.dtype(dtype).type
    tol = TOL[dtype]
    if reduction == "none":
        assert isinstance(got, np.ndarray) and got.dtype == dtype, (what, type(got))
    else:
        assert np.ndim(got) == 0 and np.asarray(got).dtype == dtype, (what, type(got))
    # + tiny: results in the subnormal range have fewer significant bits
    atol = tol * reduce_mag(mag_el, reduction, denom) + np.finfo(dtype).tiny
    assert_within(got, ref, atol, what)


def check_grad(got, ref, scale, dtype, what="grad"):
    """Gradient within tol * scale (scale: the gradient's largest magnitude)."""
    dtype = np.dtype(dtype).type
    assert isinstance(got, np.ndarray) and got.dtype == dtype, (what, type(got))
    assert_within(got, ref, TOL[dtype] * scale + np.finfo(dtype).tiny, what)


def max_abs(a):
    return float(np.max(np.abs(f64(a)), initial=0.0))


def grad_scale(reduction, denom):
    return 1.0 / denom if (reduction in ("mean", "batchmean") and denom) else 1.0


# --- strategies ---------------------------------------------------------------------

OPERAND_MODES = ("none", "full", "last", "lead", "scalar", "middle")


def operand_shape(shape, mode):
    """Shapes that broadcast to ``shape``: full, (C,), (N, 1), (1,), one middle axis 1."""
    if mode == "full":
        return shape
    if mode == "last":
        return shape[-1:]
    if mode == "lead":
        return shape[:-1] + (1,)
    if mode == "scalar":
        return (1,)
    if mode == "middle":
        s = list(shape)
        s[len(s) // 2] = 1
        return tuple(s)
    raise AssertionError(mode)


@st.composite
def shapes(draw):
    ndim = draw(st.integers(1, 3))
    shape = list(draw(st.lists(st.integers(1, 7), min_size=ndim, max_size=ndim)))
    if draw(st.integers(0, 7)) == 0:  # about one in eight is empty
        shape[draw(st.integers(0, ndim - 1))] = 0
    return tuple(shape)


def operand_mode(draw, shape, allow_none=True):
    if math.prod(shape) == 0:
        # known bug (test_empty_input_with_broadcast_operand): only the layouts that
        # work for empty inputs here
        modes = ("full", "scalar")
    else:
        modes = OPERAND_MODES[1:]
    if allow_none:
        modes = ("none",) + modes
    return draw(st.sampled_from(modes))


@st.composite
def common(draw, reductions=("none", "mean", "sum")):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(shapes())
    reduction = draw(st.sampled_from(reductions))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    return dtype, shape, reduction, rng, scale


# --- hypothesis: comparison with the references ----------------------------------------


@st.composite
def bce_logits_cases(draw):
    dtype, shape, reduction, rng, scale = draw(common())
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    if draw(st.booleans()):
        y = rng.integers(0, 2, shape).astype(dtype)
    else:
        y = rng.uniform(0, 1, shape).astype(dtype)
    w_mode = operand_mode(draw, shape)
    pw_mode = operand_mode(draw, shape)
    w = (
        None
        if w_mode == "none"
        else rng.uniform(0.1, 3, operand_shape(shape, w_mode)).astype(dtype)
    )
    pw = (
        None
        if pw_mode == "none"
        else rng.uniform(0.1, 5, operand_shape(shape, pw_mode)).astype(dtype)
    )
    return x, y, w, pw, reduction


@HYPO
@given(bce_logits_cases())
def test_bce_with_logits_matches_reference(case):
    x, y, w, pw, reduction = case
    dt = x.dtype.type
    loss = fm.binary_cross_entropy_with_logits(x, y, w, reduction, pw)
    grad = fm.binary_cross_entropy_with_logits_grad(x, y, w, reduction, pw)
    vg = fm.binary_cross_entropy_with_logits_value_and_grad(x, y, w, reduction, pw)
    ref_l, ref_g = bce_with_logits_ref(x, y, w, reduction, pw)
    ref_el, _ = bce_with_logits_ref(x, y, w, "none", pw)
    check_loss(loss, ref_l, np.abs(ref_el), reduction, x.size, dt)
    # the gradient's terms (1-y) sigmoid(x) and y pw sigmoid(-x) may cancel
    wb = np.broadcast_to(f64(1.0 if w is None else w), x.shape)
    pwb = np.broadcast_to(f64(1.0 if pw is None else pw), x.shape)
    y64 = f64(y)
    terms = wb * ((1 - y64) * expit(f64(x)) + y64 * pwb * expit(-f64(x)))
    check_grad(grad, ref_g, max_abs(terms) * grad_scale(reduction, x.size), dt)
    assert same(vg[0], loss) and same(vg[1], grad)


@st.composite
def bce_probs_cases(draw):
    dtype, shape, reduction, rng, scale = draw(common())
    p = expit(rng.standard_normal(shape) * scale).astype(dtype)
    if draw(st.booleans()):
        y = rng.integers(0, 2, shape).astype(dtype)
    else:
        y = rng.uniform(0, 1, shape).astype(dtype)
    w_mode = operand_mode(draw, shape)
    w = (
        None
        if w_mode == "none"
        else rng.uniform(0.1, 3, operand_shape(shape, w_mode)).astype(dtype)
    )
    return p, y, w, reduction


@HYPO
@given(bce_probs_cases())
def test_bce_matches_reference(case):
    p, y, w, reduction = case
    dt = p.dtype.type
    loss = fm.binary_cross_entropy(p, y, w, reduction)
    grad = fm.binary_cross_entropy_grad(p, y, w, reduction)
    vg = fm.binary_cross_entropy_value_and_grad(p, y, w, reduction)
    ref_l, ref_g = bce_ref(p, y, w, reduction)
    ref_el, _ = bce_ref(p, y, w, "none")
    check_loss(loss, ref_l, np.abs(ref_el), reduction, p.size, dt)
    check_grad(grad, ref_g, max_abs(ref_g), dt)
    assert same(vg[0], loss) and same(vg[1], grad)


def var_shape(shape, mode, axis=0):
    if mode == "full":
        return shape
    if mode == "lead":
        return shape[:-1]
    if mode == "axis":
        s = list(shape)
        s[axis] = 1
        return tuple(s)
    raise AssertionError(mode)


def make_var(rng, shape, mode, dtype, axis=0, low=0.05, high=3.0):
    if mode == "float":
        return float(dtype(rng.uniform(low, high)))
    return rng.uniform(low, high, var_shape(shape, mode, axis)).astype(dtype)


@st.composite
def gaussian_cases(draw):
    dtype, shape, reduction, rng, scale = draw(common())
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    t_mode = operand_mode(draw, shape, allow_none=False)
    t = (rng.standard_normal(operand_shape(shape, t_mode)) * scale).astype(dtype)
    if math.prod(shape) == 0:
        mode = draw(st.sampled_from(["full", "float"]))  # see operand_mode
    else:
        mode = draw(st.sampled_from(["full", "lead", "axis", "float"]))
    axis = draw(st.integers(0, len(shape) - 1))
    var = make_var(rng, shape, mode, dtype, axis, 0.05, 3.0 * max(scale, 1.0))
    full = draw(st.booleans())
    return x, t, var, full, reduction


def gaussian_mags(x, t, var, full, eps, reduction):
    """Element magnitudes of the loss terms and the d_var terms summed like var."""
    x = f64(x)
    v_in = f64(var)
    v = (
        v_in[..., None]
        if (v_in.shape != x.shape and x.ndim and v_in.shape == x.shape[:-1])
        else v_in
    )
    vb = np.broadcast_to(np.maximum(v, eps), x.shape)
    d2 = (x - np.broadcast_to(f64(t), x.shape)) ** 2
    loss_mag = 0.5 * (np.abs(np.log(vb)) + d2 / vb) + (LOG_2PI_HALF if full else 0.0)
    dv_mag = sum_to_shape(0.5 * (1 / vb + d2 / vb**2), v.shape).reshape(v_in.shape)
    return loss_mag, dv_mag


@HYPO
@given(gaussian_cases())
def test_gaussian_nll_matches_reference(case):
    x, t, var, full, reduction = case
    dt = x.dtype.type
    loss = fm.gaussian_nll_loss(x, t, var, full=full, reduction=reduction)
    dx, dv = fm.gaussian_nll_loss_grad(x, t, var, full=full, reduction=reduction)
    vg = fm.gaussian_nll_loss_value_and_grad(x, t, var, full=full, reduction=reduction)
    ref_l, (ref_dx, ref_dv) = gaussian_nll_loss_ref(x, t, var, full, 1e-6, reduction)
    loss_mag, dv_mag = gaussian_mags(x, t, var, full, 1e-6, reduction)
    check_loss(loss, ref_l, loss_mag, reduction, x.size, dt)
    check_grad(dx, ref_dx, max_abs(ref_dx), dt, "d_input")
    if isinstance(var, float):
        assert np.ndim(dv) == 0 and np.asarray(dv).dtype == dt
        assert_within(
            dv,
            ref_dv,
            TOL[dt] * dv_mag * grad_scale(reduction, x.size) + np.finfo(dt).tiny,
            "d_var",
        )
    else:
        assert isinstance(dv, np.ndarray) and dv.dtype == dt and dv.shape == var.shape
        assert_within(
            dv,
            ref_dv,
            TOL[dt] * dv_mag * grad_scale(reduction, x.size) + np.finfo(dt).tiny,
            "d_var",
        )
    assert same(vg[0], loss) and same(vg[1][0], dx) and same(vg[1][1], dv)


@st.composite
def mse_cases(draw):
    dtype, shape, reduction, rng, scale = draw(common())
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    t_mode = operand_mode(draw, shape, allow_none=False)
    t = (rng.standard_normal(operand_shape(shape, t_mode)) * scale).astype(dtype)
    return x, t, reduction


@HYPO
@given(mse_cases())
def test_mse_matches_reference(case):
    x, t, reduction = case
    dt = x.dtype.type
    loss = fm.mse_loss(x, t, reduction)
    grad = fm.mse_loss_grad(x, t, reduction)
    vg = fm.mse_loss_value_and_grad(x, t, reduction)
    ref_l, ref_g = mse_loss_ref(x, t, reduction)
    ref_el, _ = mse_loss_ref(x, t, "none")
    check_loss(loss, ref_l, ref_el, reduction, x.size, dt)
    check_grad(grad, ref_g, max_abs(ref_g), dt)
    assert same(vg[0], loss) and same(vg[1], grad)


@st.composite
def kl_cases(draw):
    dtype, shape, reduction, rng, scale = draw(common(("none", "batchmean", "sum", "mean")))
    x = (rng.standard_normal(shape) * scale - 2.0).astype(dtype)
    log_target = draw(st.booleans())
    t_mode = operand_mode(draw, shape, allow_none=False)
    tshape = operand_shape(shape, t_mode)
    if log_target:
        t = (rng.standard_normal(tshape) - 2.0).astype(dtype)
    else:
        t = rng.uniform(0, 1, tshape)
        t[rng.uniform(size=tshape) < 0.2] = 0.0  # some zero targets
        t = t.astype(dtype)
    return x, t, reduction, log_target


@HYPO
@given(kl_cases())
def test_kl_div_matches_reference(case):
    x, t, reduction, log_target = case
    dt = x.dtype.type
    loss = fm.kl_div(x, t, reduction, log_target)
    grad = fm.kl_div_grad(x, t, reduction, log_target)
    vg = fm.kl_div_value_and_grad(x, t, reduction, log_target)
    ref_l, ref_g = kl_div_ref(x, t, reduction, log_target)
    tb = np.broadcast_to(f64(t), x.shape)
    if log_target:
        mag = np.exp(tb) * (np.abs(tb) + np.abs(f64(x)))
    else:
        mag = np.abs(xlogy(tb, tb)) + np.abs(tb * f64(x))
    denom = (x.shape[0] if x.ndim else 1) if reduction == "batchmean" else x.size
    check_loss(loss, ref_l, mag, reduction, denom, dt)
    check_grad(grad, ref_g, max_abs(ref_g), dt)
    assert same(vg[0], loss) and same(vg[1], grad)


# --- PyTorch (float64 autograd) --------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def torch_run(torch, fn, x, *args, grad_args=(), **kwargs):
    """fn(x, *args, **kwargs) in torch float64; returns (loss, d_x, d_grad_args...)."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    targs = []
    leaves = []
    for i, a in enumerate(args):
        if a is None or isinstance(a, float):
            targs.append(a)
            continue
        at = torch.tensor(f64(a), dtype=torch.float64, requires_grad=i in grad_args)
        if i in grad_args:
            leaves.append(at)
        targs.append(at)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn(xt, *targs, **kwargs)
    out.sum().backward()
    return (out.detach().numpy(), xt.grad.numpy(), *(leaf.grad.numpy() for leaf in leaves))


SHAPES_2_3 = [(6, 4), (3, 4, 5)]


@pytest.mark.parametrize("shape", SHAPES_2_3)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("w_mode", ["none", "last", "lead", "scalar", "full", "middle"])
@pytest.mark.parametrize("pw_mode", ["none", "last", "full"])
def test_bce_with_logits_vs_torch(torch, shape, reduction, w_mode, pw_mode):
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * 3
    y = rng.uniform(0, 1, shape)
    y[rng.uniform(size=shape) < 0.3] = 1.0
    w = None if w_mode == "none" else rng.uniform(0.1, 3, operand_shape(shape, w_mode))
    pw = None if pw_mode == "none" else rng.uniform(0.1, 5, operand_shape(shape, pw_mode))
    tl, tg = torch_run(
        torch,
        F.binary_cross_entropy_with_logits,
        x,
        y,
        w,
        reduction=reduction,
        pos_weight=None if pw is None else torch.tensor(pw),
    )
    loss, grad = fm.binary_cross_entropy_with_logits_value_and_grad(x, y, w, reduction, pw)
    # torch's formula (1-y) x + ... cancels a little: 1e-12 of the terms' size
    np.testing.assert_allclose(loss, tl, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(grad, tg, rtol=0, atol=1e-12 * max_abs(tg) * 10)


@pytest.mark.parametrize("shape", SHAPES_2_3)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("w_mode", ["none", "last", "lead", "scalar", "full"])
def test_bce_vs_torch(torch, shape, reduction, w_mode):
    import torch.nn.functional as F

    rng = np.random.default_rng(2)
    p = expit(rng.standard_normal(shape) * 3)
    p.reshape(-1)[:3] = [0.0, 1.0, 1e-50]
    y = rng.uniform(0, 1, shape)
    y[rng.uniform(size=shape) < 0.3] = 1.0
    w = None if w_mode == "none" else rng.uniform(0.1, 3, operand_shape(shape, w_mode))
    tl, tg = torch_run(torch, F.binary_cross_entropy, p, y, w, reduction=reduction)
    loss, grad = fm.binary_cross_entropy_value_and_grad(p, y, w, reduction)
    np.testing.assert_allclose(loss, tl, rtol=1e-12)
    assert_bce_grad_like_torch(grad, tg, p)


def assert_bce_grad_like_torch(grad, tg, p):
    # where p (1 - p) is floored, both use PyTorch's float32 constant 1e-12f
    np.testing.assert_allclose(grad, tg, rtol=1e-12)


GAUSS_VAR_CASES = [
    # (input shape, var shape or "float")
    ((4, 3, 5), (4, 3, 5)),
    ((4, 3, 5), (4, 3)),  # input.shape[:-1]
    ((4, 3, 5), (4, 3, 1)),
    ((4, 3, 5), (4, 1, 5)),  # middle axis
    ((4, 3, 5), (1, 3, 5)),
    ((6, 4), (6,)),
    ((6, 4), (6, 1)),
    ((6, 4), (1, 4)),
    ((7,), ()),
    ((7,), (1,)),
    ((6, 4), "float"),
]


@pytest.mark.parametrize("shape,vshape", GAUSS_VAR_CASES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("full", [False, True])
def test_gaussian_nll_vs_torch(torch, shape, vshape, reduction, full):
    import torch.nn.functional as F

    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    t = rng.standard_normal(shape)
    if vshape == "float":
        var = 0.7
        var_t = np.full(shape, var)  # torch takes a float but cannot differentiate it
    else:
        var = rng.uniform(0.2, 2, vshape)
        var_t = var
    tl, tdx, tdv = torch_run(
        torch, F.gaussian_nll_loss, x, t, var_t, grad_args=(1,), full=full, reduction=reduction
    )
    loss, (dx, dv) = fm.gaussian_nll_loss_value_and_grad(x, t, var, full=full, reduction=reduction)
    np.testing.assert_allclose(loss, tl, rtol=1e-12)
    np.testing.assert_allclose(dx, tdx, rtol=1e-12, atol=1e-14)
    if vshape == "float":
        tdv = tdv.sum()
        assert np.ndim(dv) == 0
    else:
        assert dv.shape == var.shape
    np.testing.assert_allclose(dv, tdv, rtol=1e-11, atol=1e-12 * max_abs(tdv))


@pytest.mark.parametrize("eps", [1e-6, 1e-3])
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_gaussian_var_below_eps_clamped_like_torch(torch, eps, reduction):
    import torch.nn.functional as F

    x = np.array([0.5, -1.0, 2e-4, 0.0, 1.0, 3.0])
    t = np.array([0.4, 0.0, 0.0, 0.0, 1.5, -1.0])
    var = np.array([0.0, 1e-8, 1e-7, 1e-6, 1e-4, 2.0])
    tl, tdx, tdv = torch_run(
        torch, F.gaussian_nll_loss, x, t, var, grad_args=(1,), eps=eps, reduction=reduction
    )
    loss, (dx, dv) = fm.gaussian_nll_loss_value_and_grad(x, t, var, eps=eps, reduction=reduction)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dx)) and np.all(np.isfinite(dv))
    np.testing.assert_allclose(loss, tl, rtol=1e-12)
    np.testing.assert_allclose(dx, tdx, rtol=1e-12)
    np.testing.assert_allclose(dv, tdv, rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES_2_3)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("t_mode", ["full", "last", "lead", "scalar"])
def test_mse_vs_torch(torch, shape, reduction, t_mode):
    import torch.nn.functional as F

    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    t = rng.standard_normal(operand_shape(shape, t_mode))
    tl, tg = torch_run(torch, F.mse_loss, x, t, reduction=reduction)
    loss, grad = fm.mse_loss_value_and_grad(x, t, reduction)
    np.testing.assert_allclose(loss, tl, rtol=1e-12)
    np.testing.assert_allclose(grad, tg, rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES_2_3)
@pytest.mark.parametrize("reduction", ["none", "batchmean", "mean", "sum"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_vs_torch(torch, shape, reduction, log_target):
    import torch.nn.functional as F

    rng = np.random.default_rng(5)
    x = np.log(rng.dirichlet(np.ones(shape[-1]), shape[:-1]))
    t = rng.dirichlet(np.ones(shape[-1]), shape[:-1])
    t.reshape(-1)[::5] = 0.0  # zero targets (finite input: torch gives 0 too)
    if log_target:
        t = rng.standard_normal(shape) - 1.0
    tl, tg = torch_run(torch, F.kl_div, x, t, reduction=reduction, log_target=log_target)
    loss, grad = fm.kl_div_value_and_grad(x, t, reduction, log_target)
    np.testing.assert_allclose(loss, tl, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, tg, rtol=1e-12)


# --- finite differences (float64) ---------------------------------------------------------


def fd_grad(f, a, h=1e-6):
    """Central differences of scalar f at array a (or a float)."""
    if isinstance(a, float):
        s = h * max(1.0, abs(a))
        return (f(a + s) - f(a - s)) / (2 * s)
    g = np.empty(a.shape)
    for i in np.ndindex(a.shape):
        s = h * max(1.0, abs(a[i]))
        ap = a.copy()
        am = a.copy()
        ap[i] += s
        am[i] -= s
        g[i] = (f(ap) - f(am)) / (2 * s)
    return g


def assert_fd(g, fd, what):
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7 * max(1.0, max_abs(fd)), err_msg=what)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_with_logits_fd(reduction):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4)) * 3
    y = rng.uniform(0, 1, (3, 4))
    w = rng.uniform(0.5, 2, (4,))
    pw = rng.uniform(0.5, 3, (3, 1))
    g = fm.binary_cross_entropy_with_logits_grad(x, y, w, reduction, pw)
    fd = fd_grad(lambda a: float(fm.binary_cross_entropy_with_logits(a, y, w, reduction, pw)), x)
    assert_fd(g, fd, "d_input")


def test_bce_with_logits_fd_none():
    rng = np.random.default_rng(7)
    x = rng.standard_normal(10) * 4
    y = rng.uniform(0, 1, 10)
    g = fm.binary_cross_entropy_with_logits_grad(x, y, reduction="none")
    fd = fd_grad(
        lambda a: float(np.sum(fm.binary_cross_entropy_with_logits(a, y, reduction="none"))), x
    )
    assert_fd(g, fd, "d_input (none: gradient of the sum)")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_fd(reduction):
    rng = np.random.default_rng(8)
    p = rng.uniform(0.05, 0.95, (3, 4))
    y = rng.uniform(0, 1, (3, 4))
    w = rng.uniform(0.5, 2, (3, 1))
    g = fm.binary_cross_entropy_grad(p, y, w, reduction)
    fd = fd_grad(lambda a: float(np.sum(fm.binary_cross_entropy(a, y, w, reduction))), p, 1e-7)
    assert_fd(g, fd, "d_input")


@pytest.mark.parametrize(
    "shape,vshape",
    [((3, 4), (3, 4)), ((3, 4), (3,)), ((2, 3, 4), (2, 1, 4)), ((3, 4), (1, 4)), ((3, 4), "float")],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gaussian_nll_fd(shape, vshape, reduction):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape)
    t = rng.standard_normal(shape)
    var = 0.8 if vshape == "float" else rng.uniform(0.3, 2, vshape)

    def f(a, v):
        return float(np.sum(fm.gaussian_nll_loss(a, t, v, full=True, reduction=reduction)))

    dx, dv = fm.gaussian_nll_loss_grad(x, t, var, full=True, reduction=reduction)
    assert_fd(dx, fd_grad(lambda a: f(a, var), x), "d_input")
    assert_fd(dv, fd_grad(lambda v: f(x, v), var), "d_var")
    assert np.shape(dv) == np.shape(var)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_fd(reduction):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 4))
    t = rng.standard_normal(4)
    g = fm.mse_loss_grad(x, t, reduction)
    fd = fd_grad(lambda a: float(np.sum(fm.mse_loss(a, t, reduction))), x)
    assert_fd(g, fd, "d_input")


@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum", "none"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_fd(reduction, log_target):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 4)) - 1
    t = rng.standard_normal((3, 4)) if log_target else rng.uniform(0, 1, (3, 4))
    g = fm.kl_div_grad(x, t, reduction, log_target)
    fd = fd_grad(lambda a: float(np.sum(fm.kl_div(a, t, reduction, log_target))), x)
    assert_fd(g, fd, "d_input")


# --- value_and_grad, out= ------------------------------------------------------------------


def _cases(dtype, shape=(5, 7), seed=12):
    """name -> (value, grad, value_and_grad, input, other args, kwargs)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    p = rng.uniform(0.01, 0.99, shape).astype(dtype)
    y = rng.uniform(0, 1, shape).astype(dtype)
    w = rng.uniform(0.5, 2, shape[-1:]).astype(dtype)
    var = rng.uniform(0.5, 2, shape[:-1]).astype(dtype)
    return {
        "bce_logits": (
            fm.binary_cross_entropy_with_logits,
            fm.binary_cross_entropy_with_logits_grad,
            fm.binary_cross_entropy_with_logits_value_and_grad,
            x,
            (y, w),
            dict(pos_weight=w[::-1].copy()),
        ),
        "bce": (
            fm.binary_cross_entropy,
            fm.binary_cross_entropy_grad,
            fm.binary_cross_entropy_value_and_grad,
            p,
            (y, w),
            {},
        ),
        "gaussian": (
            fm.gaussian_nll_loss,
            fm.gaussian_nll_loss_grad,
            fm.gaussian_nll_loss_value_and_grad,
            x,
            (y, var),
            dict(full=True),
        ),
        "mse": (fm.mse_loss, fm.mse_loss_grad, fm.mse_loss_value_and_grad, x, (y,), {}),
        "kl": (
            fm.kl_div,
            fm.kl_div_grad,
            fm.kl_div_value_and_grad,
            x,
            (y,),
            dict(log_target=False),
        ),
    }


LOSSES = ["bce_logits", "bce", "gaussian", "mse", "kl"]


def _dx(name, grad):
    return grad[0] if name == "gaussian" else grad


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_value_and_grad_is_value_and_grad(name, dtype, reduction):
    value, grad, vag, x, args, kw = _cases(dtype)[name]
    loss, g = vag(x, *args, reduction=reduction, **kw)
    assert same(loss, value(x, *args, reduction=reduction, **kw))
    g_alone = grad(x, *args, reduction=reduction, **kw)
    if name == "gaussian":
        assert same(g[0], g_alone[0]) and same(g[1], g_alone[1])
    else:
        assert same(g, g_alone)


def _loop_variants(dtype, shape):
    """Every loop of the element-wise kernels: (value, value_and_grad, args, kwargs)."""
    rng = np.random.default_rng(21)
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    y = rng.uniform(0, 1, shape).astype(dtype)
    w = rng.uniform(0.5, 2, shape[-1:]).astype(dtype)
    counts = rng.poisson(2.0, shape).astype(dtype)
    bl = (fm.binary_cross_entropy_with_logits, fm.binary_cross_entropy_with_logits_value_and_grad)
    g = (fm.gaussian_nll_loss, fm.gaussian_nll_loss_value_and_grad)
    kl = (fm.kl_div, fm.kl_div_value_and_grad)
    po = (fm.poisson_nll_loss, fm.poisson_nll_loss_value_and_grad)
    var = rng.uniform(0.5, 2, shape).astype(dtype)
    return [
        (*bl, (x, y), {}),
        (*bl, (x, y), dict(weight=w, pos_weight=w[::-1].copy())),
        (*g, (x, y, var), {}),
        (*g, (x, y, var), dict(full=True)),
        (*kl, (x, y), {}),
        (*kl, (x, y), dict(log_target=True)),
        (*po, (x, counts), {}),
        (*po, (x, counts), dict(full=True)),
        (*po, (np.abs(x), counts), dict(log_input=False)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (2,), (7,), (3, 20001)])  # odd; several chunks
def test_two_lane_loss_loops_are_the_value_and_grad_loops(dtype, shape):
    # the loss-only loops (and Poisson's) run two lanes at once, the value-and-gradient
    # loops of the others one: per element, the same bits
    for value, vag, args, kw in _loop_variants(dtype, shape):
        rows, _ = vag(*args, reduction="none", **kw)
        assert same(value(*args, reduction="none", **kw), rows), (value.__name__, kw)
        assert same(value(*args, reduction="sum", **kw), vag(*args, reduction="sum", **kw)[0])


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 7), (3, 20000)])  # the second spans several chunks
def test_out_buffer_and_in_place(name, dtype, shape):
    value, grad, vag, x, args, kw = _cases(dtype, shape)[name]
    ref_loss, ref_g = vag(x, *args, reduction="mean", **kw)

    out = np.full(x.shape, np.nan, dtype)
    loss, g = vag(x, *args, reduction="mean", out=out, **kw)
    assert _dx(name, g) is out
    assert same(out, _dx(name, ref_g)) and same(loss, ref_loss)
    if name == "gaussian":
        assert same(g[1], ref_g[1])

    xc = x.copy()
    loss, g = vag(xc, *args, reduction="mean", out=xc, **kw)
    assert _dx(name, g) is xc
    assert same(xc, _dx(name, ref_g)) and same(loss, ref_loss)
    if name == "gaussian":
        assert same(g[1], ref_g[1])


# --- numerics -------------------------------------------------------------------------------


def test_bce_with_logits_no_cancellation_float32():
    x = np.array([-20.0], np.float32)
    y = np.array([0.0], np.float32)
    loss = fm.binary_cross_entropy_with_logits(x, y)
    assert loss.dtype == np.float32
    # log1p(exp(-20)) = 2.0611536900435e-09 (PyTorch's formula gives 0 here)
    np.testing.assert_allclose(loss, 2.0611536900435e-09, rtol=1e-6)
    np.testing.assert_allclose(
        fm.binary_cross_entropy_with_logits_grad(x, y), np.float32(2.0611536900435e-09), rtol=1e-6
    )


def _mp_bce_logits(x, y):
    mp = pytest.importorskip("mpmath")
    with mp.workdps(60):
        x = mp.mpf(float(x))
        y = mp.mpf(float(y))
        loss = y * mp.log1p(mp.exp(-x)) + (1 - y) * mp.log1p(mp.exp(x))
        grad = (1 - y) / (1 + mp.exp(-x)) - y / (1 + mp.exp(x))
        return float(loss), float(grad)


def ulps(got, ref, dtype):
    """Distance of got from ref (rounded to dtype) in units of dtype's spacing at ref."""
    r = dtype(ref)
    return abs(float(got) - float(r)) / float(np.spacing(np.abs(r)))


@pytest.mark.parametrize("dtype,big", [(np.float32, 88.0), (np.float64, 700.0)])
def test_bce_with_logits_extreme_logits_exact(dtype, big):
    xs = np.array([big, -big, big / 2, -big / 2, big - 0.5, -(big - 0.5)], dtype)
    for target in (0.0, 1.0, 0.25):
        y = np.full_like(xs, target)
        loss, grad = fm.binary_cross_entropy_with_logits_value_and_grad(xs, y, reduction="none")
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        for xi, li, gi in zip(xs, loss, grad):
            rl, rg = _mp_bce_logits(xi, target)
            assert ulps(li, rl, dtype) <= 4, (target, xi, li, rl)
            assert ulps(gi, rg, dtype) <= 4, (target, xi, gi, rg)
        total = fm.binary_cross_entropy_with_logits(xs, y, reduction="sum")
        ref_total = sum(_mp_bce_logits(xi, target)[0] for xi in xs)
        assert ulps(total, ref_total, dtype) <= 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_infinite_logits(dtype):
    inf = np.inf
    x = np.array([inf, inf, -inf, -inf, inf, -inf], dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5], dtype)
    loss, grad = fm.binary_cross_entropy_with_logits_value_and_grad(x, y, reduction="none")
    np.testing.assert_array_equal(loss, np.array([0, inf, 0, inf, inf, inf], dtype))
    np.testing.assert_array_equal(grad, np.array([0, 1, 0, -1, 0.5, -0.5], dtype))
    # with weights and pos_weight, and reduced
    w = np.full(6, 2.0, dtype)
    loss, grad = fm.binary_cross_entropy_with_logits_value_and_grad(
        x[:1], y[:1], w[:1], "sum", pos_weight=w[:1]
    )
    assert loss == 0 and grad[0] == 0
    loss, grad = fm.binary_cross_entropy_with_logits_value_and_grad(
        x[[0, 2]], y[[0, 2]], reduction="mean"
    )
    assert loss == 0 and not np.any(np.isnan(grad))
    assert fm.binary_cross_entropy_with_logits(x, y, reduction="sum") == inf
    assert not np.any(np.isnan(fm.binary_cross_entropy_with_logits_grad(x, y)))


NAN_CASES = {
    "bce_logits": lambda x, o: fm.binary_cross_entropy_with_logits_value_and_grad(
        x, o, reduction="none"
    ),
    "bce": lambda x, o: fm.binary_cross_entropy_value_and_grad(
        expit(x).astype(x.dtype), o, reduction="none"
    ),
    "gaussian": lambda x, o: fm.gaussian_nll_loss_value_and_grad(
        x, o, np.ones_like(x), reduction="none"
    ),
    "mse": lambda x, o: fm.mse_loss_value_and_grad(x, o, reduction="none"),
    "kl": lambda x, o: fm.kl_div_value_and_grad(x, o, reduction="none"),
}


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_input_propagates(name, dtype):
    x = np.array([0.3, np.nan, -1.0, 2.0], dtype)
    o = np.array([0.2, 0.7, 0.5, 1.0], dtype)
    loss, grad = NAN_CASES[name](x, o)
    assert np.isnan(loss[1]) and np.all(np.isfinite(loss[[0, 2, 3]]))
    dx = _dx(name, grad)
    if name == "kl":
        np.testing.assert_array_equal(dx, -o)  # the gradient does not depend on input
    else:
        assert np.isnan(dx[1]) and np.all(np.isfinite(dx[[0, 2, 3]]))
    if name == "gaussian":
        assert np.isnan(grad[1][1]) and np.all(np.isfinite(grad[1][[0, 2, 3]]))
    # and the reduced loss
    xs = x if name != "bce" else expit(x).astype(dtype)
    fn = {
        "bce_logits": fm.binary_cross_entropy_with_logits,
        "bce": fm.binary_cross_entropy,
        "mse": fm.mse_loss,
        "kl": fm.kl_div,
    }.get(name)
    if fn is not None:
        assert np.isnan(fn(xs, o)) and np.isnan(fn(xs, o, reduction="sum"))
    else:
        assert np.isnan(fm.gaussian_nll_loss(x, o, 1.0))


# NaN where a zero coefficient used to hide it (issue 17, item 12): a zero KL target,
# and BCE with logits at y = 1, pos_weight = 0 (both of its coefficients zero)
NAN_ZERO_COEF = {
    "kl_zero_target": (
        lambda F: F.kl_div,
        lambda: fm.kl_div_value_and_grad,
        [np.nan, -1.0, np.nan],
        [0.0, 0.5, 0.3],
        {},
    ),
    "kl_log_target": (
        lambda F: F.kl_div,
        lambda: fm.kl_div_value_and_grad,
        [np.nan, -1.0],
        [-np.inf, -0.5],
        {"log_target": True},
    ),
    "bce_logits_pw0": (
        lambda F: F.binary_cross_entropy_with_logits,
        lambda: fm.binary_cross_entropy_with_logits_value_and_grad,
        [np.nan, 0.5, np.nan, -2.0],
        [1.0, 1.0, 0.0, 1.0],
        {"pos_weight": [0.0, 0.0, 0.0, 0.0]},
    ),
    "bce_logits_w0": (
        lambda F: F.binary_cross_entropy_with_logits,
        lambda: fm.binary_cross_entropy_with_logits_value_and_grad,
        [np.nan, 0.5],
        [1.0, 1.0],
        {"weight": [0.0, 1.0]},
    ),
}


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(NAN_ZERO_COEF))
def test_nan_behind_a_zero_coefficient_vs_torch(torch, case, dtype, reduction):
    import torch.nn.functional as F

    tfn, fn, x, t, kw = NAN_ZERO_COEF[case]
    x, t = np.array(x, dtype), np.array(t, dtype)
    kw_np = {k: np.array(v, dtype) if isinstance(v, list) else v for k, v in kw.items()}
    kw_t = {
        k: torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else v for k, v in kw.items()
    }
    xt = torch.tensor(f64(x), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = tfn(F)(xt, torch.tensor(f64(t)), reduction=reduction, **kw_t)
    ref.sum().backward()
    loss, grad = fn()(x, t, reduction=reduction, **kw_np)
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(ref.detach().numpy()))
    fin = np.isfinite(ref.detach().numpy())
    np.testing.assert_allclose(
        np.asarray(loss, np.float64)[fin], ref.detach().numpy()[fin], rtol=TOL[dtype]
    )
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(xt.grad.numpy()))


def test_issue_17_nan_examples():
    assert np.isnan(fm.kl_div(np.array([np.nan, -1]), np.array([0, 0.5]), reduction="sum"))
    assert np.isnan(
        fm.binary_cross_entropy_with_logits(
            np.array([np.nan]), np.array([1.0]), pos_weight=np.array([0.0])
        )
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_probs_saturated_clamp(dtype):
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.3, 0.3], dtype)
    loss, grad = fm.binary_cross_entropy_value_and_grad(p, y, reduction="none")
    np.testing.assert_allclose(loss, [100, 100, 0, 0, 30, 70], rtol=1e-6)
    np.testing.assert_allclose(grad, [-1e12, 1e12, 0, 0, -0.3e12, 0.7e12], rtol=1e-6)
    assert fm.binary_cross_entropy(p, y, reduction="sum") == pytest.approx(300, rel=1e-6)


def test_bce_probs_saturated_clamp_vs_torch(torch):
    import torch.nn.functional as F

    p = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1e-50, 1 - 1e-16])
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.3, 0.3, 1.0, 0.0])
    tl, tg = torch_run(torch, F.binary_cross_entropy, p, y, reduction="none")
    loss, grad = fm.binary_cross_entropy_value_and_grad(p, y, reduction="none")
    np.testing.assert_allclose(loss, tl, rtol=1e-12)
    assert_bce_grad_like_torch(grad, tg, p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_zero_target_minus_inf_input(dtype):
    x = np.array([-np.inf, -1.0, -np.inf], dtype)
    t = np.array([0.0, 0.5, 0.0], dtype)
    loss, grad = fm.kl_div_value_and_grad(x, t, reduction="none")
    # documented deviation from PyTorch (which gives NaN): 0 * (log 0 - (-inf)) = 0
    assert loss[0] == 0 and loss[2] == 0
    np.testing.assert_allclose(loss[1], 0.5 * (math.log(0.5) + 1.0), rtol=1e-6)
    np.testing.assert_array_equal(grad, -t)
    np.testing.assert_allclose(
        fm.kl_div(x, t, reduction="sum"), 0.5 * (math.log(0.5) + 1.0), rtol=1e-6
    )


# --- empty inputs ---------------------------------------------------------------------------


EMPTY_CALLS = {
    "bce_logits": lambda x, red: fm.binary_cross_entropy_with_logits_value_and_grad(
        x, x, reduction=red
    ),
    "bce": lambda x, red: fm.binary_cross_entropy_value_and_grad(x, x, reduction=red),
    "gaussian": lambda x, red: fm.gaussian_nll_loss_value_and_grad(
        x, x, np.ones_like(x), reduction=red
    ),
    "gaussian_float": lambda x, red: fm.gaussian_nll_loss_value_and_grad(x, x, 1.0, reduction=red),
    "mse": lambda x, red: fm.mse_loss_value_and_grad(x, x, reduction=red),
    "kl": lambda x, red: fm.kl_div_value_and_grad(x, x, reduction=red),
}


@pytest.mark.parametrize("name", sorted(EMPTY_CALLS))
@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_inputs(name, shape, dtype):
    x = np.zeros(shape, dtype)
    call = EMPTY_CALLS[name]
    loss, grad = call(x, "mean")
    assert np.isnan(loss) and loss.dtype == dtype
    loss, grad = call(x, "sum")
    assert loss == 0 and loss.dtype == dtype
    loss, grad = call(x, "none")
    assert loss.shape == shape and loss.dtype == dtype
    dx = grad[0] if name.startswith("gaussian") else grad
    assert dx.shape == shape and dx.dtype == dtype
    if name == "gaussian":
        assert grad[1].shape == shape
    if name == "gaussian_float":
        assert grad[1] == 0


def test_kl_batchmean_empty():
    loss, grad = fm.kl_div_value_and_grad(np.zeros((0, 3)), np.zeros((0, 3)), "batchmean")
    assert np.isnan(loss) and grad.shape == (0, 3)
    loss, grad = fm.kl_div_value_and_grad(np.zeros((3, 0)), np.zeros((3, 0)), "batchmean")
    assert loss == 0 and grad.shape == (3, 0)


EMPTY_BROADCAST = {
    "bce_logits weight (C,) on (0, 3)": lambda: fm.binary_cross_entropy_with_logits_value_and_grad(
        np.zeros((0, 3)), np.zeros((0, 3)), np.ones(3), "sum"
    ),
    "bce_logits weight (N, 1) on (2, 0)": lambda: (
        fm.binary_cross_entropy_with_logits_value_and_grad(
            np.zeros((2, 0)), np.zeros((2, 0)), np.ones((2, 1)), "sum"
        )
    ),
    "bce pos_weight (C,) on (2, 0, 3)": lambda: fm.binary_cross_entropy_with_logits_value_and_grad(
        np.zeros((2, 0, 3)), np.zeros((2, 0, 3)), None, "sum", np.ones(3)
    ),
    "mse target (C,) on (0, 3)": lambda: fm.mse_loss_value_and_grad(
        np.zeros((0, 3)), np.zeros(3), "sum"
    ),
    "kl target (C,) on (0, 3)": lambda: fm.kl_div_value_and_grad(
        np.zeros((0, 3)), np.full(3, 0.5), "sum"
    ),
    "gaussian var (N,) on (4, 0)": lambda: fm.gaussian_nll_loss_value_and_grad(
        np.zeros((4, 0)), np.zeros((4, 0)), np.ones(4), reduction="sum"
    ),
    "gaussian var (1, C) on (0, 3)": lambda: fm.gaussian_nll_loss_value_and_grad(
        np.zeros((0, 3)), np.zeros((0, 3)), np.ones((1, 3)), reduction="sum"
    ),
}


@pytest.mark.parametrize("case", sorted(EMPTY_BROADCAST))
def test_empty_input_with_broadcast_operand(case):
    loss, grad = EMPTY_BROADCAST[case]()
    assert loss == 0
    d_input = grad[0] if isinstance(grad, tuple) else grad
    assert d_input.size == 0
    if isinstance(grad, tuple):  # gaussian: d_var is zeros, shaped like var
        var_shape = (4,) if "(N,)" in case else (1, 3)
        assert grad[1].shape == var_shape and np.all(grad[1] == 0)


def test_gaussian_var_that_passes_the_shape_rule_but_does_not_broadcast():
    with pytest.raises(ValueError, match="var"):
        fm.gaussian_nll_loss(np.zeros((4, 3, 5)), 0.0, np.ones((1, 0, 5)))


def test_gaussian_eps_must_be_a_number():
    with pytest.raises(TypeError, match="eps"):
        fm.gaussian_nll_loss(np.zeros(3), np.zeros(3), np.ones(3), eps="1e-6")


# --- determinism across thread counts ------------------------------------------------------


_DETERMINISM_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import fastmle as fm
    import numba
    d = np.load(sys.argv[1] + "/data.npz")
    assert numba.get_num_threads() == int(sys.argv[2]), numba.get_num_threads()
    bl, bg = fm.binary_cross_entropy_with_logits_value_and_grad(
        d["x"], d["y"], d["w"], "mean", d["pw"])
    gl, (gdx, gdv) = fm.gaussian_nll_loss_value_and_grad(d["x"], d["t"], d["var"])
    np.savez(sys.argv[1] + "/out" + sys.argv[2] + ".npz", bl=bl, bg=bg, gl=gl, gdx=gdx, gdv=gdv)
""")


def test_results_do_not_depend_on_thread_count(tmp_path):
    rng = np.random.default_rng(13)
    n, c = 600, 500  # 300_000 elements, many chunks
    np.savez(
        tmp_path / "data.npz",
        x=rng.standard_normal((n, c)).astype(np.float32) * 3,
        y=rng.uniform(0, 1, (n, c)).astype(np.float32),
        w=rng.uniform(0.5, 2, c).astype(np.float32),
        pw=rng.uniform(0.5, 2, (n, 1)).astype(np.float32),
        t=rng.standard_normal((n, c)).astype(np.float32),
        var=rng.uniform(0.5, 2, n).astype(np.float32),
    )
    script = tmp_path / "run.py"
    script.write_text(_DETERMINISM_SCRIPT)
    results = []
    for threads in ("1", "2"):
        env = dict(
            os.environ,
            NUMBA_NUM_THREADS=threads,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        proc = subprocess.run(
            [sys.executable, str(script), str(tmp_path), threads],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        results.append(np.load(tmp_path / f"out{threads}.npz"))
    for key in ("bl", "bg", "gl", "gdx", "gdv"):
        assert results[0][key].dtype == np.float32
        assert results[0][key].tobytes() == results[1][key].tobytes(), key


# --- bad input ------------------------------------------------------------------------------


X = np.zeros((4, 3))
Y = np.full((4, 3), 0.5)

BAD_INPUTS = [
    # (callable, exception, match)
    (lambda: fm.binary_cross_entropy_with_logits(X, np.zeros((3, 4))), ValueError, "target"),
    (lambda: fm.binary_cross_entropy_with_logits(X, np.zeros(3)), ValueError, "target"),
    (lambda: fm.binary_cross_entropy(X, np.zeros((4, 1))), ValueError, "target"),
    (lambda: fm.binary_cross_entropy_with_logits(X, Y, weight=np.ones(4)), ValueError, "weight"),
    (
        lambda: fm.binary_cross_entropy_with_logits(X, Y, weight=np.ones((2, 4, 3))),
        ValueError,
        "weight",
    ),
    (
        lambda: fm.binary_cross_entropy_with_logits(X, Y, pos_weight=np.ones(4)),
        ValueError,
        "pos_weight",
    ),
    (
        lambda: fm.binary_cross_entropy_with_logits_grad(X, Y, pos_weight=np.ones((4, 2))),
        ValueError,
        "pos_weight",
    ),
    (lambda: fm.binary_cross_entropy(X, Y, weight=np.ones(2)), ValueError, "weight"),
    (lambda: fm.binary_cross_entropy(X + 1.5, Y), ValueError, r"outside \[0, 1\]"),
    (lambda: fm.binary_cross_entropy_grad(X - 1e-9, Y), ValueError, r"outside \[0, 1\]"),
    (
        lambda: fm.binary_cross_entropy_value_and_grad(np.array([0.5, np.inf]), Y[0, :2]),
        ValueError,
        r"outside \[0, 1\]",
    ),
    (lambda: fm.gaussian_nll_loss(X, Y, -np.ones((4, 3))), ValueError, "var.*negative"),
    (
        lambda: fm.gaussian_nll_loss_grad(X, Y, np.array([1.0, -1e-30, 1.0, 1.0])),
        ValueError,
        "var.*negative",
    ),
    (lambda: fm.gaussian_nll_loss(X, Y, -1.0), ValueError, "var.*negative"),
    (lambda: fm.gaussian_nll_loss(X, Y, np.ones(3)), ValueError, "var"),
    (lambda: fm.gaussian_nll_loss(X, Y, np.ones((2, 3))), ValueError, "var"),
    (lambda: fm.gaussian_nll_loss(X, Y, np.ones((1, 1))), ValueError, "var"),
    (lambda: fm.gaussian_nll_loss(X, Y, np.ones((4, 3, 1))), ValueError, "var"),
    (lambda: fm.gaussian_nll_loss(np.zeros((4, 3, 5)), 0.0, np.ones((4, 1, 1))), ValueError, "var"),
    (lambda: fm.gaussian_nll_loss(X, np.ones((5, 3)), np.ones((4, 3))), ValueError, "target"),
    (lambda: fm.gaussian_nll_loss(X, Y, 1.0, eps=0.0), ValueError, "eps"),
    (lambda: fm.gaussian_nll_loss(X, Y, 1.0, eps=-1e-6), ValueError, "eps"),
    (lambda: fm.gaussian_nll_loss(X, Y, 1.0, eps=np.nan), ValueError, "eps"),
    (lambda: fm.gaussian_nll_loss(X, Y, 1.0, reduction="batchmean"), ValueError, "reduction"),
    (lambda: fm.mse_loss(X, Y, reduction="batchmean"), ValueError, "reduction"),
    (lambda: fm.mse_loss_grad(X, Y, reduction="avg"), ValueError, "reduction"),
    (lambda: fm.mse_loss(X, np.ones((2, 3))), ValueError, "target"),
    (
        lambda: fm.binary_cross_entropy_with_logits(X, Y, reduction="batchmean"),
        ValueError,
        "reduction",
    ),
    (lambda: fm.binary_cross_entropy(X, Y, reduction=None), ValueError, "reduction"),
    (lambda: fm.kl_div(X, Y, reduction="average"), ValueError, "reduction"),
    (lambda: fm.kl_div(X, np.ones(4)), ValueError, "target"),
    # dtypes
    (lambda: fm.binary_cross_entropy_with_logits(X.astype(complex), Y), TypeError, "input"),
    (lambda: fm.binary_cross_entropy_with_logits(X, Y.astype(complex)), TypeError, "target"),
    (
        lambda: fm.binary_cross_entropy_with_logits(X, Y, weight=np.ones(3, complex)),
        TypeError,
        "weight",
    ),
    (
        lambda: fm.binary_cross_entropy_with_logits(X, Y, pos_weight=np.array(["a", "b", "c"])),
        TypeError,
        "pos_weight",
    ),
    (lambda: fm.binary_cross_entropy(X.astype(object), Y), TypeError, "input"),
    (lambda: fm.gaussian_nll_loss(X, Y, np.ones((4, 3), complex)), TypeError, "var"),
    (lambda: fm.gaussian_nll_loss(X, Y, 1 + 2j), TypeError, "var"),
    (lambda: fm.gaussian_nll_loss(X.astype(str), Y, 1.0), TypeError, "input"),
    (lambda: fm.gaussian_nll_loss(X, Y, 1.0, eps=[1e-6]), TypeError, "eps"),
    (lambda: fm.mse_loss(np.array(["a", "b"]), np.zeros(2)), TypeError, "input"),
    (lambda: fm.mse_loss(X, Y.astype(object)), TypeError, "target"),
    (lambda: fm.kl_div(X.astype(np.complex64), Y), TypeError, "input"),
    (lambda: fm.kl_div(X, np.array([None] * 3)), TypeError, "target"),
    # out=
    (
        lambda: fm.binary_cross_entropy_with_logits_value_and_grad(X, Y, out=np.empty((3, 4))),
        ValueError,
        "out",
    ),
    (
        lambda: fm.binary_cross_entropy_with_logits_value_and_grad(
            X, Y, out=np.empty((4, 3), np.float32)
        ),
        TypeError,
        "out",
    ),
    (lambda: fm.binary_cross_entropy_value_and_grad(Y, Y, out=[0.0] * 12), TypeError, "out"),
    (lambda: fm.gaussian_nll_loss_value_and_grad(X, Y, 1.0, out=np.empty(12)), ValueError, "out"),
    (
        lambda: fm.gaussian_nll_loss_value_and_grad(
            X.astype(np.float32), Y, 1.0, out=np.empty((4, 3))
        ),
        TypeError,
        "out",
    ),
    (lambda: fm.mse_loss_value_and_grad(X, Y, out=np.empty((3, 4)).T), ValueError, "out"),
    (lambda: fm.kl_div_value_and_grad(X, Y, out=np.empty((4, 3), np.float16)), TypeError, "out"),
]


@pytest.mark.parametrize("i", range(len(BAD_INPUTS)))
def test_bad_input(i):
    fn, exc, match = BAD_INPUTS[i]
    with pytest.raises(exc, match=match):
        fn()


def test_read_only_out_rejected():
    out = np.empty((4, 3))
    out.setflags(write=False)
    with pytest.raises(ValueError, match="out"):
        fm.mse_loss_value_and_grad(X, Y, out=out)


# --- layouts and dtypes -----------------------------------------------------------------------


ALL_FNS = {
    "bce_logits": lambda x, o, r: fm.binary_cross_entropy_with_logits_value_and_grad(
        x, o["y"], o["w"], r, o["pw"]
    ),
    "bce": lambda x, o, r: fm.binary_cross_entropy_value_and_grad(o["p"], o["y"], o["w"], r),
    "gaussian": lambda x, o, r: fm.gaussian_nll_loss_value_and_grad(
        x, o["t"], o["var"], reduction=r
    ),
    "mse": lambda x, o, r: fm.mse_loss_value_and_grad(x, o["t"], r),
    "kl": lambda x, o, r: fm.kl_div_value_and_grad(x, o["y"], r),
}


def _flat_results(res):
    loss, grad = res
    if isinstance(grad, tuple):
        return [loss, *grad]
    return [loss, grad]


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_contiguous_and_read_only_inputs(name, dtype):
    rng = np.random.default_rng(14)
    big = {
        "x": rng.standard_normal((6, 10)).astype(dtype),
        "y": rng.uniform(0, 1, (6, 10)).astype(dtype),
        "p": rng.uniform(0.01, 0.99, (6, 10)).astype(dtype),
        "t": rng.standard_normal((6, 10)).astype(dtype),
        "w": rng.uniform(0.5, 2, (6, 10)).astype(dtype),
        "pw": rng.uniform(0.5, 2, (6, 10)).astype(dtype),
        "var": rng.uniform(0.5, 2, (6, 10)).astype(dtype),
    }
    # strided views (every other column); var Fortran-ordered
    views = {k: v[:, ::2] for k, v in big.items()}
    views["var"] = np.asfortranarray(big["var"][:, :5])
    assert all(v.shape == (6, 5) and not v.flags.c_contiguous for v in views.values())
    contiguous = {k: np.ascontiguousarray(v) for k, v in views.items()}
    expected = _flat_results(ALL_FNS[name](contiguous["x"], contiguous, "none"))
    got = _flat_results(ALL_FNS[name](views["x"], views, "none"))
    assert all(same(a, b) for a, b in zip(got, expected))

    readonly = {k: v.copy() for k, v in contiguous.items()}
    before = {k: v.copy() for k, v in readonly.items()}
    for v in readonly.values():
        v.setflags(write=False)
    for red in ("none", "sum"):
        got = _flat_results(ALL_FNS[name](readonly["x"], readonly, red))
        want = _flat_results(ALL_FNS[name](contiguous["x"], contiguous, red))
        assert all(same(a, b) for a, b in zip(got, want))
    assert all(same(readonly[k], before[k]) for k in readonly)


def test_int_and_bool_inputs_computed_in_float64():
    x = np.array([[-3, 0, 2], [5, -1, 1]])
    y = np.array([[True, False, True], [False, False, True]])
    loss, grad = fm.binary_cross_entropy_with_logits_value_and_grad(x, y, reduction="sum")
    assert loss.dtype == np.float64 and grad.dtype == np.float64
    ref_l, ref_g = bce_with_logits_ref(x, y, reduction="sum")
    np.testing.assert_allclose(loss, ref_l, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_g, rtol=1e-12, atol=1e-15)

    t = np.array([[1, 1, 1], [0, 0, 0]])
    loss, (dx, dv) = fm.gaussian_nll_loss_value_and_grad(x, t, np.array([2, 3]))
    ref_l, (ref_dx, ref_dv) = gaussian_nll_loss_ref(x, t, np.array([2, 3]))
    assert loss.dtype == dx.dtype == dv.dtype == np.float64
    np.testing.assert_allclose(loss, ref_l, rtol=1e-12)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12)
    np.testing.assert_allclose(dv, ref_dv, rtol=1e-12)
    loss, (dx, dv) = fm.gaussian_nll_loss_value_and_grad(x, t, 2)  # an int var is a float
    assert np.ndim(dv) == 0
    np.testing.assert_allclose(dv, gaussian_nll_loss_ref(x, t, 2.0)[1][1], rtol=1e-12)

    loss, grad = fm.mse_loss_value_and_grad(x, t)
    assert loss.dtype == np.float64
    np.testing.assert_allclose(loss, mse_loss_ref(x, t)[0], rtol=1e-15)
    np.testing.assert_allclose(grad, mse_loss_ref(x, t)[1], rtol=1e-15)

    loss, grad = fm.kl_div_value_and_grad(x, np.array([1, 0, 1]), "sum")
    np.testing.assert_allclose(loss, kl_div_ref(x, np.array([1, 0, 1]), "sum")[0], rtol=1e-15)
    assert grad.dtype == np.float64


def test_float16_inputs_computed_in_float32():
    rng = np.random.default_rng(15)
    x = (rng.standard_normal((5, 4)) * 3).astype(np.float16)
    y = rng.uniform(0, 1, (5, 4)).astype(np.float16)
    p = rng.uniform(0.01, 0.99, (5, 4)).astype(np.float16)
    var = rng.uniform(0.5, 2, 5).astype(np.float16)
    for reduction in ("none", "mean"):
        cases = [
            (
                fm.binary_cross_entropy_with_logits_value_and_grad(x, y, reduction=reduction),
                bce_with_logits_ref(x, y, reduction=reduction),
            ),
            (
                fm.binary_cross_entropy_value_and_grad(p, y, reduction=reduction),
                bce_ref(p, y, reduction=reduction),
            ),
            (fm.mse_loss_value_and_grad(x, y, reduction), mse_loss_ref(x, y, reduction)),
            (fm.kl_div_value_and_grad(x, y, reduction), kl_div_ref(x, y, reduction)),
        ]
        gl, (gdx, gdv) = fm.gaussian_nll_loss_value_and_grad(x, y, var, reduction=reduction)
        rl, (rdx, rdv) = gaussian_nll_loss_ref(x, y, var, reduction=reduction)
        cases.append(((gl, gdx), (rl, rdx)))
        assert gdv.dtype == np.float32
        np.testing.assert_allclose(gdv, rdv, rtol=1e-5, atol=1e-6 * max_abs(rdv))
        for (loss, grad), (ref_l, ref_g) in cases:
            assert np.asarray(loss).dtype == np.float32 and grad.dtype == np.float32
            np.testing.assert_allclose(loss, ref_l, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(grad, ref_g, rtol=1e-5, atol=1e-6 * max_abs(ref_g))
