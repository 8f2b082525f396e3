"""Generic tests of every element-wise loss in ``tests/registry.py``: a new row is
tested here (and on Dask and the CUDA simulator) without a new test.

Against the float64 reference (float64 to 1e-12, float32 to 1e-6 relative to the
sum of |element losses|), central finite differences of the float64 value, torch
autograd, value_and_grad == value and grad bitwise, ``out=`` and ``out=input``,
NaN propagation, empty inputs and the hypothesis sweep of shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TOL, same
from registry import ELEMENTWISE, cases

CASES = list(cases())


def _id(case):
    loss, g, dt, _ = case
    kw = ",".join(f"{k}={v}" for k, v in g.items())
    return f"{loss.name}[{kw}]-{np.dtype(dt).name}"


def _f64(a):
    return np.asarray(a, np.float64)


def _magnitude(loss, x, args, kw):
    """Sum of |element losses| (float64), the size any rounding error scales with."""
    el, _ = loss.ref(
        _f64(x),
        *[_f64(a) for a in args],
        reduction="none",
        **{k: (_f64(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()},
    )
    return float(np.sum(np.abs(el)))


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_matches_reference(case):
    loss, _, dt, (x, args, kw) = case
    dt = np.dtype(dt)
    for reduction in loss.reductions:
        got, g = loss.value_and_grad(x, *args, reduction=reduction, **kw)
        ref, rg = loss.ref(x, *args, reduction=reduction, **kw)
        denom = {"batchmean": x.shape[0], "mean": x.size}.get(reduction, 1)
        mag = _magnitude(loss, x, args, kw) / denom
        if reduction == "none":
            assert got.dtype == dt and got.shape == x.shape
            np.testing.assert_allclose(
                got, ref, rtol=TOL[dt.type], atol=TOL[dt.type] * np.max(np.abs(ref))
            )
        else:
            assert np.ndim(got) == 0 and np.asarray(got).dtype == dt
            assert abs(float(got) - ref) <= TOL[dt.type] * mag * 4, (reduction, got, ref)
        gx, rgx = loss.d_input(g), loss.d_input(rg)
        assert gx.dtype == dt and gx.shape == x.shape
        scale = float(np.max(np.abs(rgx), initial=0.0))
        tol = TOL[dt.type]
        np.testing.assert_allclose(gx, rgx, rtol=0, atol=tol * max(scale, 1e-300) * 4)
        if loss.d_operand:
            np.testing.assert_allclose(
                g[1],
                rg[1],
                rtol=TOL[dt.type] * 8,
                atol=TOL[dt.type] * float(np.max(np.abs(rg[1]))) * 8,
            )


@pytest.mark.parametrize("loss", ELEMENTWISE, ids=repr)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradient_is_the_finite_difference_of_the_value(loss, reduction):
    for g in loss.grid:
        rng = np.random.default_rng(1)
        x, args, kw = loss.make(rng, (3, 4), np.float64, **g)

        def total(xx, args=args, kw=kw):
            v = loss.value(xx, *args, reduction=reduction, **kw)
            return float(np.sum(v))

        fd = np.empty(x.shape)
        for i in np.ndindex(x.shape):
            h = loss.fd_step * max(1.0, abs(x[i]))
            xp, xm = x.copy(), x.copy()
            xp[i] += h
            xm[i] -= h
            fd[i] = (total(xp) - total(xm)) / (2 * h)
        gx = loss.d_input(loss.grad(x, *args, reduction=reduction, **kw))
        np.testing.assert_allclose(
            gx, fd, rtol=1e-6, atol=1e-7 * max(1.0, np.abs(fd).max()), err_msg=f"{loss.name} {g}"
        )


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")  # torch kl_div
@pytest.mark.parametrize("case", [c for c in CASES if c[0].torch], ids=_id)
def test_matches_torch_autograd(case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    loss, _, dt, (x, args, kw) = case
    for reduction in loss.reductions:
        xt = torch.tensor(x, requires_grad=True)
        targs = [torch.tensor(a) for a in args]
        tkw = {k: (torch.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        lt = getattr(F, loss.torch)(xt, *targs, reduction=reduction, **tkw)
        lt.sum().backward()
        got, g = loss.value_and_grad(x, *args, reduction=reduction, **kw)
        tol = 1e-5 if np.dtype(dt) == np.float32 else 1e-10
        np.testing.assert_allclose(got, lt.detach().numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(loss.d_input(g), xt.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_value_and_grad_is_value_and_grad_and_out(case):
    loss, _, dt, (x, args, kw) = case
    for reduction in ("none", "mean"):
        v, g = loss.value_and_grad(x, *args, reduction=reduction, **kw)
        assert same(v, loss.value(x, *args, reduction=reduction, **kw))
        g_alone = loss.grad(x, *args, reduction=reduction, **kw)
        assert same(loss.d_input(g), loss.d_input(g_alone))
        out = np.full(x.shape, np.nan, dt)
        v2, g2 = loss.value_and_grad(x, *args, reduction=reduction, out=out, **kw)
        assert loss.d_input(g2) is out and same(out, loss.d_input(g)) and same(v2, v)
        xc = x.copy()
        v3, g3 = loss.value_and_grad(xc, *args, reduction=reduction, out=xc, **kw)
        assert loss.d_input(g3) is xc and same(xc, loss.d_input(g)) and same(v3, v)
        with pytest.raises(ValueError, match="shares memory"):
            loss.value_and_grad(x, *args, reduction=reduction, out=args[0], **kw)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_nan_input_propagates(case):
    loss, _, dt, (x, args, kw) = case
    x = x.copy()
    x[1, 2] = np.nan
    v, g = loss.value_and_grad(x, *args, reduction="none", **kw)
    with np.errstate(invalid="ignore"):
        _, rg = loss.ref(x, *args, reduction="none", **kw)
    assert np.isnan(v[1, 2]) and np.isnan(v).sum() == 1
    # NaN where the reference's gradient is NaN (KL's gradient, -target, does not read x)
    np.testing.assert_array_equal(np.isnan(loss.d_input(g)), np.isnan(loss.d_input(rg)))
    assert np.isnan(loss.value(x, *args, reduction="sum", **kw))


@pytest.mark.parametrize("loss", ELEMENTWISE, ids=repr)
@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 4)])
def test_empty_input(loss, shape):
    x, args, kw = loss.make(np.random.default_rng(0), shape, np.float64)
    assert np.isnan(loss.value(x, *args, reduction="mean", **kw))
    assert loss.value(x, *args, reduction="sum", **kw) == 0.0
    v, g = loss.value_and_grad(x, *args, reduction="none", **kw)
    assert v.shape == shape and loss.d_input(g).shape == shape


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(ELEMENTWISE),
    st.lists(st.integers(1, 40), min_size=1, max_size=3),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**31 - 1),
    st.sampled_from(["none", "mean", "sum"]),
)
def test_any_shape_matches_reference(loss, shape, dt, seed, reduction):
    g = loss.grid[seed % len(loss.grid)]
    x, args, kw = loss.make(np.random.default_rng(seed), tuple(shape), dt, **g)
    got, grad = loss.value_and_grad(x, *args, reduction=reduction, **kw)
    ref, rg = loss.ref(x, *args, reduction=reduction, **kw)
    tol = TOL[np.dtype(dt).type]
    mag = _magnitude(loss, x, args, kw) / (x.size if reduction == "mean" else 1)
    if reduction == "none":
        np.testing.assert_allclose(got, ref, rtol=tol * 4, atol=tol * np.abs(ref).max() * 4)
    else:
        assert abs(float(got) - ref) <= tol * mag * 4
    rgx = loss.d_input(rg)
    np.testing.assert_allclose(
        loss.d_input(grad), rgx, rtol=0, atol=tol * max(float(np.abs(rgx).max()), 1e-300) * 4
    )
