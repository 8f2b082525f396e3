"""Every CUDA kernel against the CPU kernels (run by tests/test_cuda.py).

Under the simulator (``NUMBA_ENABLE_CUDASIM=1``) blocks have 8 threads (fewer
Python threads; rows longer than 8 still take the strided loops, rows of 3
classes put two rows in a block), and the interpreter switches threads more
often: the simulator's barriers are busy-waits.
"""

from __future__ import annotations

import math
import os
import sys

import pytest

if os.environ.get("FASTMLE_CUDA_TESTS") != "1":
    pytest.skip("run by tests/test_cuda.py in a subprocess", allow_module_level=True)

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
if SIM:
    sys.setswitchinterval(1e-4)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402

import fastmle as fm  # noqa: E402
from fastmle.cuda import _kernels as K  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the loss registry
import registry  # noqa: E402
from conftest import TOL  # noqa: E402

if SIM:
    K.THREADS = 8

DTYPES = [np.float32, np.float64]
rng = np.random.default_rng(12345)


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def close(gpu, cpu, dt):
    g, c = host(gpu), np.asarray(cpu)
    assert g.shape == c.shape, (g.shape, c.shape)
    assert g.dtype == np.dtype(dt), g.dtype
    tol = TOL[dt]
    fin = c[np.isfinite(c)]
    scale = float(np.abs(fin).max()) if fin.size else 0.0
    np.testing.assert_allclose(g, c, rtol=tol, atol=tol * scale)


@pytest.fixture(params=["cached", "global"])
def smem(request, monkeypatch):
    """cached: rows in shared memory; global: a zero shared-memory budget forces
    the uncached path (every pass over global memory, exps recomputed)."""
    if request.param == "global":
        monkeypatch.setattr(K, "SMEM_BYTES", 0)
    return request.param


# --- cross-entropy ------------------------------------------------------------

CE_CASES = [  # (weight, ignore_index, label_smoothing, reduction)
    (False, -100, 0.0, "mean"),
    (True, -100, 0.0, "mean"),
    (False, 1, 0.0, "mean"),
    (True, 1, 0.1, "mean"),
    (False, -100, 0.2, "sum"),
    (True, -100, 0.1, "none"),
    (False, -100, 0.0, "none"),
    (True, 1, 0.0, "sum"),
]


def _ce_data(n, c, dt, ignore_index):
    x = (rng.standard_normal((n, c)) * 3).astype(dt)
    t = rng.integers(0, c, n)
    t[1] = ignore_index  # one ignored row
    t[2] = 1  # ignored too when ignore_index == 1
    w = rng.uniform(0.5, 2.0, c).astype(dt)
    return x, t, w


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("c", [3, 40])
@pytest.mark.parametrize("case", CE_CASES)
def test_cross_entropy_index(case, c, dt, smem):
    if smem == "global" and c == 3:
        pytest.skip("one uncached class count is enough")
    weighted, ii, eps, red = case
    x, t, w = _ce_data(5, c, dt, ii)
    kw = dict(
        weight=w if weighted else None,
        ignore_index=ii,
        reduction=red,
        label_smoothing=eps,
    )
    lg, gg = fm.cross_entropy_value_and_grad(
        dev(x), dev(t), **{**kw, "weight": dev(w) if weighted else None}
    )
    lc, gc = fm.cross_entropy_value_and_grad(x, t, **kw)
    close(lg, lc, dt)
    close(gg, gc, dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("eps,red", [(0.0, "mean"), (0.1, "sum"), (0.2, "none")])
def test_cross_entropy_probs(eps, red, dt, smem):
    n, c = 4, 11
    x = (rng.standard_normal((n, c)) * 2).astype(dt)
    y = rng.dirichlet(np.ones(c), n).astype(dt)
    y[0, 3] = 0
    w = rng.uniform(0.5, 2.0, c).astype(dt)
    lg, gg = fm.cross_entropy_value_and_grad(
        dev(x), dev(y), weight=dev(w), reduction=red, label_smoothing=eps
    )
    lc, gc = fm.cross_entropy_value_and_grad(x, y, weight=w, reduction=red, label_smoothing=eps)
    close(lg, lc, dt)
    close(gg, gc, dt)


def test_cross_entropy_value_grad_and_both_agree_bitwise_and_are_deterministic():
    x, t, w = _ce_data(5, 40, np.float32, -100)
    xd, td, wd = dev(x), dev(t), dev(w)
    kw = dict(weight=wd, label_smoothing=0.1)
    l1, g1 = fm.cross_entropy_value_and_grad(xd, td, **kw)
    l2, g2 = fm.cross_entropy_value_and_grad(xd, td, **kw)
    assert host(l1).tobytes() == host(l2).tobytes()
    assert host(g1).tobytes() == host(g2).tobytes()
    assert host(fm.cross_entropy(xd, td, **kw)).tobytes() == host(l1).tobytes()
    assert host(fm.cross_entropy_grad(xd, td, **kw)).tobytes() == host(g1).tobytes()
    assert host(l1).shape == ()
    assert isinstance(float(l1.copy_to_host()), float)


@pytest.mark.parametrize("dt", DTYPES)
def test_cross_entropy_in_place(dt):
    x, t, w = _ce_data(5, 40, dt, -100)
    xd = dev(x)
    loss, g = fm.cross_entropy_value_and_grad(
        xd, dev(t), weight=dev(w), out=xd, label_smoothing=0.1
    )
    assert g is xd
    lc, gc = fm.cross_entropy_value_and_grad(x, t, weight=w, label_smoothing=0.1)
    close(loss, lc, dt)
    close(xd, gc, dt)


def test_cross_entropy_1d_empty_and_nonfinite_rows():
    x = rng.standard_normal(7)
    close(fm.cross_entropy(dev(x), np.int64(3)), fm.cross_entropy(x, 3), np.float64)
    close(
        fm.cross_entropy_grad(dev(x), np.int64(3)),
        fm.cross_entropy_grad(x, 3),
        np.float64,
    )
    e = np.zeros((0, 4))
    t0 = np.zeros(0, np.int64)
    assert math.isnan(float(host(fm.cross_entropy(dev(e), dev(t0)))))
    assert float(host(fm.cross_entropy(dev(e), dev(t0), reduction="sum"))) == 0.0
    x = rng.standard_normal((4, 5))
    x[0, 1] = np.nan
    x[1, 2] = np.inf
    x[2, :] = -np.inf
    t = np.array([0, 1, 2, 3])
    lg, gg = fm.cross_entropy_value_and_grad(dev(x), dev(t), reduction="none")
    lc, gc = fm.cross_entropy_value_and_grad(x, t, reduction="none")
    close(lg, lc, np.float64)
    close(gg, gc, np.float64)


def test_cross_entropy_bad_labels():
    x = rng.standard_normal((4, 5))
    t = np.array([0, 7, 2, -3])
    with pytest.raises(ValueError) as cpu:
        fm.cross_entropy(x, t)
    # lazily: the bad rows give NaN, the error record says so
    loss = fm.cross_entropy(dev(x), dev(t), reduction="none")
    assert np.isnan(host(loss)[[1, 3]]).all() and np.isfinite(host(loss)[[0, 2]]).all()
    with pytest.raises(ValueError, match="2 target class index"):
        fm.cuda.check_errors()
    fm.cuda.check_errors()  # reset
    # strict: the CPU's message
    fm.cuda.set_strict(True)
    try:
        with pytest.raises(ValueError) as gpu:
            fm.cross_entropy(dev(x), dev(t))
    finally:
        fm.cuda.set_strict(False)
    assert str(gpu.value) == str(cpu.value)


def test_cross_entropy_validation_messages():
    x = rng.standard_normal((4, 5))
    for kw in [
        dict(reduction="avg"),
        dict(label_smoothing=2.0),
        dict(weight=np.ones(3)),
    ]:
        with pytest.raises(ValueError) as cpu:
            fm.cross_entropy(x, np.zeros(4, np.int64), **kw)
        with pytest.raises(ValueError) as gpu:
            fm.cross_entropy(dev(x), dev(np.zeros(4, np.int64)), **kw)
        assert str(gpu.value) == str(cpu.value)
    with pytest.raises(TypeError, match="float32 or float64"):
        fm.cross_entropy(dev(x.astype(np.float16)), dev(np.zeros(4, np.int64)))
    with pytest.raises(ValueError, match="C-contiguous"):
        fm.cross_entropy(dev(np.zeros((5, 4))).T, dev(np.zeros(4, np.int64)))


# --- softmax family -----------------------------------------------------------


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("axis", [-1, 0, 1, None])
def test_softmax_family(axis, dt, smem):
    if smem == "global" and axis in (0, None):
        pytest.skip("one uncached layout is enough")
    a = (rng.standard_normal((3, 4, 5)) * 4).astype(dt)
    a[0, 0, 0] = -np.inf
    d = dev(a)
    close(fm.softmax(d, axis=axis), fm.softmax(a, axis=axis), dt)
    close(fm.log_softmax(d, axis=axis), fm.log_softmax(a, axis=axis), dt)
    close(fm.logsumexp(d, axis=axis), fm.logsumexp(a, axis=axis), dt)
    close(
        fm.logsumexp(d, axis=axis, keepdims=True),
        fm.logsumexp(a, axis=axis, keepdims=True),
        dt,
    )


def test_softmax_nonfinite_rows():
    a = rng.standard_normal((4, 6))
    a[0, 2] = np.nan
    a[1, 3] = np.inf
    a[2, :] = -np.inf
    for f in (fm.softmax, fm.log_softmax, fm.logsumexp):
        close(f(dev(a)), f(a), np.float64)


# --- element-wise losses ------------------------------------------------------

REDS = ["mean", "sum", "none"]


def _ids(case):
    loss, g, dt, _ = case
    return (
        f"{loss.name}-{'-'.join(f'{k}={v}' for k, v in g.items()) or 'default'}-{np.dtype(dt).name}"
    )


@pytest.mark.parametrize("case", list(registry.cases()), ids=_ids)
def test_elementwise_registry(case):
    """Every row and grid point of tests/registry.py (a new element-wise loss enrols
    itself): value, gradient and (Gaussian) d/d var on the device against the CPU, for
    every reduction the loss takes."""
    loss, _, dt, (x, args, kw) = case
    on_dev = lambda v: dev(v) if isinstance(v, np.ndarray) else v  # noqa: E731
    for red in loss.reductions:
        lc, gc = loss.value_and_grad(x, *args, **kw, reduction=red)
        lg, gg = loss.value_and_grad(
            dev(x), *map(on_dev, args), **{k: on_dev(v) for k, v in kw.items()}, reduction=red
        )
        close(lg, lc, dt)
        for g, c in zip(gg, gc) if loss.d_operand else [(gg, gc)]:
            close(g, c, dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize(
    "weight,pos_weight,red",
    [
        (None, None, "mean"),
        ("col", None, "sum"),
        ("full", "col", "none"),
        (None, "col", "mean"),
        ("row", "full", "mean"),
    ],
)
def test_bce_with_logits(weight, pos_weight, red, dt):
    x = (rng.standard_normal((4, 6)) * 5).astype(dt)
    x[0, 0], x[0, 1] = 30, -30
    y = rng.uniform(0, 1, (4, 6)).astype(dt)
    y[1, :3] = 0
    y[1, 3:] = 1
    shapes = {"col": (6,), "full": (4, 6), "row": (4, 1)}
    w = None if weight is None else rng.uniform(0.5, 2, shapes[weight]).astype(dt)
    pw = None if pos_weight is None else rng.uniform(0.5, 3, shapes[pos_weight]).astype(dt)
    lg, gg = fm.binary_cross_entropy_with_logits_value_and_grad(
        dev(x),
        dev(y),
        None if w is None else dev(w),
        red,
        None if pw is None else dev(pw),
    )
    lc, gc = fm.binary_cross_entropy_with_logits_value_and_grad(x, y, w, red, pw)
    close(lg, lc, dt)
    close(gg, gc, dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("weighted,red", [(False, "mean"), (True, "sum"), (True, "none")])
def test_bce_probs(weighted, red, dt):
    p = rng.uniform(0, 1, (3, 5)).astype(dt)
    p[0, 0], p[0, 1] = 0, 1
    y = rng.uniform(0, 1, (3, 5)).astype(dt)
    w = rng.uniform(0.5, 2, 5).astype(dt) if weighted else None
    lg, gg = fm.binary_cross_entropy_value_and_grad(
        dev(p), dev(y), None if w is None else dev(w), red
    )
    lc, gc = fm.binary_cross_entropy_value_and_grad(p, y, w, red)
    close(lg, lc, dt)
    close(gg, gc, dt)


def test_bce_probs_outside_raises_in_strict_mode():
    p = np.array([0.5, 1.5, -0.1])
    with pytest.raises(ValueError) as cpu:
        fm.binary_cross_entropy(p, p)
    fm.cuda.set_strict(True)
    try:
        with pytest.raises(ValueError) as gpu:
            fm.binary_cross_entropy(dev(p), dev(p))
    finally:
        fm.cuda.set_strict(False)
    assert str(gpu.value) == str(cpu.value)


VARS = {  # var shape for input (4, 6), or "float"
    "full": (4, 6),
    "per-row": (4,),
    "row-1": (4, 1),
    "col-1": (1, 6),
    "float": None,
}


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize(
    "var,full,red",
    [
        ("full", False, "mean"),
        ("per-row", True, "sum"),
        ("row-1", False, "none"),
        ("col-1", True, "mean"),
        ("float", False, "mean"),
        ("float", True, "none"),
    ],
)
def test_gaussian_nll(var, full, red, dt):
    x = rng.standard_normal((4, 6)).astype(dt)
    t = rng.standard_normal((4, 6)).astype(dt)
    if var == "float":
        v = 0.7
        vd = v
    else:
        v = rng.uniform(0.1, 2, VARS[var]).astype(dt)
        v.reshape(-1)[0] = 1e-9  # below eps: clamped
        vd = dev(v)
    lg, (gg, dvg) = fm.gaussian_nll_loss_value_and_grad(dev(x), dev(t), vd, full, 1e-6, red)
    lc, (gc, dvc) = fm.gaussian_nll_loss_value_and_grad(x, t, v, full, 1e-6, red)
    close(lg, lc, dt)
    close(gg, gc, dt)
    close(dvg, dvc, dt)


def test_gaussian_negative_var_strict():
    x = np.zeros(3)
    v = np.array([1.0, -1.0, 1.0])
    with pytest.raises(ValueError) as cpu:
        fm.gaussian_nll_loss(x, x, v)
    fm.cuda.set_strict(True)
    try:
        with pytest.raises(ValueError) as gpu:
            fm.gaussian_nll_loss(dev(x), dev(x), dev(v))
    finally:
        fm.cuda.set_strict(False)
    assert str(gpu.value) == str(cpu.value)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("red", REDS)
def test_mse(red, dt):
    x = rng.standard_normal((3, 5)).astype(dt)
    t = rng.standard_normal(5).astype(dt)  # broadcast along rows
    lg, gg = fm.mse_loss_value_and_grad(dev(x), dev(t), red)
    lc, gc = fm.mse_loss_value_and_grad(x, t, red)
    close(lg, lc, dt)
    close(gg, gc, dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize(
    "log_target,red",
    [
        (False, "batchmean"),
        (True, "mean"),
        (False, "sum"),
        (True, "none"),
    ],
)
def test_kl_div(log_target, red, dt):
    x = np.log(rng.dirichlet(np.ones(5), 3)).astype(dt)
    p = rng.dirichlet(np.ones(5), 3)
    p[0, 0] = 0
    t = (np.log(p + 1e-3) if log_target else p).astype(dt)
    lg, gg = fm.kl_div_value_and_grad(dev(x), dev(t), red, log_target)
    lc, gc = fm.kl_div_value_and_grad(x, t, red, log_target)
    close(lg, lc, dt)
    close(gg, gc, dt)


def test_elementwise_in_place_deterministic_and_host_operands():
    x = rng.standard_normal((4, 6)).astype(np.float32)
    y = (rng.uniform(0, 1, (4, 6)) > 0.5).astype(np.float32)
    pw = rng.uniform(0.5, 3, 6).astype(np.float32)
    lc, gc = fm.binary_cross_entropy_with_logits_value_and_grad(x, y, pos_weight=pw)
    xd = dev(x)
    l1 = fm.binary_cross_entropy_with_logits(xd, dev(y), pos_weight=pw)  # host pos_weight
    l2 = fm.binary_cross_entropy_with_logits(xd, dev(y), pos_weight=dev(pw))
    assert host(l1).tobytes() == host(l2).tobytes()
    loss, g = fm.binary_cross_entropy_with_logits_value_and_grad(
        xd, dev(y), pos_weight=dev(pw), out=xd
    )
    assert g is xd
    close(loss, lc, np.float32)
    close(xd, gc, np.float32)
    with pytest.raises(TypeError, match="input's dtype"):
        fm.mse_loss(dev(x), dev(y.astype(np.float64)))
