"""Tests of fastmle.cross_entropy / cross_entropy_grad / cross_entropy_value_and_grad."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from conftest import TOL
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastmle as fm
from fastmle._cpu import cross_entropy as _ce_module
from reference import cross_entropy_ref

REDUCTIONS = ("mean", "sum", "none")


@pytest.fixture(autouse=True, scope="module", params=["short-rows kernel", "row kernel"])
def kernel(request):
    """Run every test with both cross-entropy kernels (index targets use the
    short-rows one below SHORT_ROWS classes and the row one above)."""
    saved = _ce_module.SHORT_ROWS
    _ce_module.SHORT_ROWS = 10**9 if request.param == "short-rows kernel" else 0
    yield request.param
    _ce_module.SHORT_ROWS = saved


# relative tolerance of the loss; the gradient's tolerance is TOL * max|grad|
FUNCS = {
    "value": fm.cross_entropy,
    "grad": fm.cross_entropy_grad,
    "value_and_grad": fm.cross_entropy_value_and_grad,
}


# --- helpers -------------------------------------------------------------------------


def assert_loss_close(got, ref, tol, atol=0.0):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=tol, atol=atol)


def log_rounding_atol(w, n, reduction):
    """Absolute error both the reference and fastmle can make in a loss: each row's
    log(sum exp(x - max)) is the log of a float64 sum >= 1, so it is only accurate to
    ~1 ulp of 1 (2.2e-16) absolute, which is not 1e-12 relative when a row's loss is
    below ~1e-4 (see test_tiny_loss_relative_accuracy)."""
    wmax = 1.0 if w is None or len(w) == 0 else float(np.max(np.abs(w)))
    return 8 * np.finfo(np.float64).eps * wmax * (max(n, 1) if reduction == "sum" else 1)


def assert_grad_close(got, ref, tol, term=0.0):
    """|got - ref| <= tol * max(max|ref|, term).

    The gradient of a row is  scale * (p * W - w * q)  (W = sum_j w_j q_j): a
    difference of two terms of size up to ``term`` = scale * W. When p is close to
    the target, float32 can hold p only to 6e-8 relative, so the error is relative
    to the terms, not to the (small) difference; pass ``term`` there."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    if not ok.any():
        return
    scale = max(np.max(np.abs(ref[ok])), term)
    # with C = 1 the gradient is exactly 0 mathematically: allow rounding of O(1) terms
    floor = scale if scale > 0 else 1.0
    np.testing.assert_allclose(got[ok], ref[ok], rtol=0, atol=tol * floor)


def grad_term_scale(x, t, w, ignore_index, reduction, eps):
    """max over rows of scale * sum_j w_j q_ij: the size of the two terms whose
    difference is the gradient (see assert_grad_close)."""
    x = np.atleast_2d(x)
    c = x.shape[-1]
    w = np.ones(c) if w is None else np.asarray(w, np.float64)
    t = np.asarray(t)
    if t.dtype.kind == "f":
        q = (1 - eps) * np.atleast_2d(t).astype(np.float64) + eps / c
        W = (q * w).sum(axis=1)
        denom = len(x)
    else:
        t = np.atleast_1d(t)
        kept = t[t != ignore_index]
        W = (1 - eps) * w[kept] + eps / c * w.sum()
        denom = w[kept].sum()
    if W.size == 0:
        return 0.0
    scale = 1.0 / denom if reduction == "mean" and denom else 1.0
    return float(np.max(np.abs(W)) * scale)


def expected_loss_type(got, dtype, reduction, one_d=False):
    if reduction == "none":
        assert isinstance(got, np.ndarray)
        assert got.dtype == dtype
    else:
        assert isinstance(got, dtype)


def make_case(rng, n, c, dtype, *, probs=False, use_weight=False, ignore=None, scale=5.0):
    """Logits, targets, weight and ignore_index (float32 data already cast)."""
    x = (rng.standard_normal((n, c)) * scale).astype(dtype)
    if probs:
        y = rng.gamma(0.5, size=(n, c))
        y[rng.random((n, c)) < 0.3] = 0.0  # some exactly-zero probabilities
        s = y.sum(axis=1, keepdims=True)
        y = np.where(s > 0, y / np.where(s > 0, s, 1), 1.0 / c)
        t = y.astype(dtype)
        ignore_index = -100
    else:
        t = rng.integers(0, c, size=n)
        ignore_index = -100 if ignore is None else ignore
        if ignore is not None and n:
            t[rng.random(n) < 0.3] = ignore
    w = rng.uniform(0.1, 3.0, size=c).astype(dtype) if use_weight else None
    return x, t, w, ignore_index


# --- against the float64 reference ---------------------------------------------------


@st.composite
def ce_cases(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(0, 40))
    c = draw(st.integers(1, 40))
    probs = draw(st.booleans())
    use_weight = draw(st.booleans())
    ignore = None
    if not probs:
        ignore = draw(st.sampled_from([None, -100, -1, "in_range"]))
        if ignore == "in_range":
            ignore = draw(st.integers(0, c - 1))
    reduction = draw(st.sampled_from(REDUCTIONS))
    eps = draw(st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)))
    seed = draw(st.integers(0, 2**32 - 1))
    return dtype, n, c, probs, use_weight, ignore, reduction, eps, seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ce_cases())
def test_matches_reference(case):
    dtype, n, c, probs, use_weight, ignore, reduction, eps, seed = case
    rng = np.random.default_rng(seed)
    x, t, w, ii = make_case(rng, n, c, dtype, probs=probs, use_weight=use_weight, ignore=ignore)
    ref_loss, ref_grad = cross_entropy_ref(x, t, w, ii, reduction, eps)
    # mean over an empty / fully ignored batch: a known bug, see test_mean_of_nothing_is_nan
    assume(not (reduction == "mean" and np.isnan(ref_loss)))
    kw = dict(weight=w, ignore_index=ii, reduction=reduction, label_smoothing=eps)
    tol = TOL[dtype]

    loss = fm.cross_entropy(x, t, **kw)
    grad = fm.cross_entropy_grad(x, t, **kw)
    loss2, grad2 = fm.cross_entropy_value_and_grad(x, t, **kw)

    expected_loss_type(loss, dtype, reduction)
    assert grad.dtype == dtype and grad.shape == x.shape
    assert_loss_close(loss, ref_loss, tol, log_rounding_atol(w, n, reduction))
    assert_grad_close(grad, ref_grad, tol, grad_term_scale(x, t, w, ii, reduction, eps))
    # the fused call gives exactly what the separate calls give
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(grad2, grad)


# --- against PyTorch -----------------------------------------------------------------


def _torch_ce(x, t, w, ii, reduction, eps):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    if t.dtype.kind == "f":
        tt = torch.tensor(t, dtype=torch.float64)
    else:
        tt = torch.tensor(t, dtype=torch.int64)
    wt = None if w is None else torch.tensor(w, dtype=torch.float64)
    loss = F.cross_entropy(
        xt, tt, weight=wt, ignore_index=ii, reduction=reduction, label_smoothing=eps
    )
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("target", ["index", "index_ignore", "index_ignore_in_range", "probs"])
def test_matches_torch(target, use_weight, eps, reduction):
    pytest.importorskip("torch")
    rng = np.random.default_rng([7, len(target), int(use_weight), int(eps * 10)])
    n, c = 13, 7
    ignore = {"index": None, "index_ignore": -100, "index_ignore_in_range": 2}.get(target)
    x, t, w, ii = make_case(
        rng, n, c, np.float64, probs=target == "probs", use_weight=use_weight, ignore=ignore
    )
    if ignore is not None:
        t[0] = ignore  # at least one ignored row
    kw = dict(weight=w, ignore_index=ii, reduction=reduction, label_smoothing=eps)
    ref_loss, ref_grad = _torch_ce(x, t, w, ii, reduction, eps)
    loss, grad = fm.cross_entropy_value_and_grad(x, t, **kw)
    assert_loss_close(loss, ref_loss, 1e-12)
    assert_grad_close(grad, ref_grad, 1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_torch_1d(reduction):
    pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(9) * 5
    t = np.array(4)
    ref_loss, ref_grad = _torch_ce(x, t, None, -100, reduction, 0.1)
    loss, grad = fm.cross_entropy_value_and_grad(x, t, reduction=reduction, label_smoothing=0.1)
    assert np.shape(loss) == np.shape(ref_loss) == ()
    assert_loss_close(loss, ref_loss, 1e-12)
    assert_grad_close(grad, ref_grad, 1e-12)


# --- finite differences --------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("probs", [False, True])
def test_grad_finite_differences(probs, reduction):
    rng = np.random.default_rng(11)
    x, t, w, ii = make_case(
        rng,
        5,
        6,
        np.float64,
        probs=probs,
        use_weight=True,
        ignore=None if probs else -100,
        scale=2.0,
    )
    kw = dict(weight=w, ignore_index=ii, reduction=reduction, label_smoothing=0.2)
    grad = fm.cross_entropy_grad(x, t, **kw)
    h = 1e-5
    fd = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = (fm.cross_entropy(xp, t, **kw) - fm.cross_entropy(xm, t, **kw)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-8 * max(1.0, np.abs(grad).max()))


def test_grad_none_is_grad_of_sum():
    rng = np.random.default_rng(12)
    x, t, w, ii = make_case(rng, 6, 5, np.float64, use_weight=True, ignore=-100)
    kw = dict(weight=w, ignore_index=ii, label_smoothing=0.1)
    g_none = fm.cross_entropy_grad(x, t, reduction="none", **kw)
    g_sum = fm.cross_entropy_grad(x, t, reduction="sum", **kw)
    np.testing.assert_allclose(g_none, g_sum, rtol=1e-15, atol=0)


# --- value_and_grad and out= ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("probs", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_value_and_grad_out(dtype, probs, reduction):
    rng = np.random.default_rng(5)
    x, t, w, ii = make_case(
        rng, 9, 8, dtype, probs=probs, use_weight=True, ignore=None if probs else -1
    )
    kw = dict(weight=w, ignore_index=ii, reduction=reduction, label_smoothing=0.25)
    loss = fm.cross_entropy(x, t, **kw)
    grad = fm.cross_entropy_grad(x, t, **kw)
    l1, g1 = fm.cross_entropy_value_and_grad(x, t, **kw)
    np.testing.assert_array_equal(l1, loss)
    np.testing.assert_array_equal(g1, grad)

    buf = np.full(x.shape, 123.0, dtype)
    l2, g2 = fm.cross_entropy_value_and_grad(x, t, out=buf, **kw)
    assert g2 is buf
    np.testing.assert_array_equal(l2, loss)
    np.testing.assert_array_equal(buf, grad)

    xin = x.copy()
    l3, g3 = fm.cross_entropy_value_and_grad(xin, t, out=xin, **kw)
    assert g3 is xin
    np.testing.assert_array_equal(l3, loss)
    np.testing.assert_array_equal(xin, grad)


def test_out_in_place_1d():
    rng = np.random.default_rng(6)
    x = rng.standard_normal(7)
    loss, grad = fm.cross_entropy_value_and_grad(x, 3, label_smoothing=0.1)
    xin = x.copy()
    l2, g2 = fm.cross_entropy_value_and_grad(xin, 3, label_smoothing=0.1, out=xin)
    assert g2 is xin
    np.testing.assert_array_equal(l2, loss)
    np.testing.assert_array_equal(xin, grad)


# --- edge cases ----------------------------------------------------------------------


@pytest.mark.parametrize("probs", [False, True])
def test_empty_batch_sum_and_none(probs):
    x = np.zeros((0, 4))
    t = np.zeros((0, 4)) if probs else np.zeros(0, np.int64)
    assert fm.cross_entropy(x, t, reduction="sum") == 0.0
    rows, g = fm.cross_entropy_value_and_grad(x, t, reduction="none")
    assert rows.shape == (0,) and g.shape == (0, 4)
    assert fm.cross_entropy_grad(x, t, reduction="sum").shape == (0, 4)


MEAN_OF_NOTHING = {
    "empty_index": (np.zeros((0, 4)), np.zeros(0, np.int64), None),
    "empty_probs": (np.zeros((0, 4)), np.zeros((0, 4)), None),
    "all_ignored": (np.arange(8.0).reshape(2, 4), np.array([-100, -100]), None),
    "zero_weight_sum": (
        np.arange(8.0).reshape(2, 4),
        np.array([0, 1]),
        np.array([0.0, 0.0, 1.0, 1.0]),
    ),
}


@pytest.mark.parametrize("case", list(MEAN_OF_NOTHING))
@pytest.mark.parametrize("func", ["value", "value_and_grad"])
def test_mean_of_nothing_is_nan(case, func):
    x, t, w = MEAN_OF_NOTHING[case]
    res = FUNCS[func](x, t, weight=w)
    loss = res[0] if func == "value_and_grad" else res
    assert np.isnan(loss)


@pytest.mark.parametrize("case", list(MEAN_OF_NOTHING))
def test_mean_of_nothing_grad_like_torch(case):
    # the gradient alone does not go through the failing division
    torch = pytest.importorskip("torch")
    x, t, w = MEAN_OF_NOTHING[case]
    g = fm.cross_entropy_grad(x, t, weight=w)
    assert g.shape == x.shape
    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(t)
    wt = None if w is None else torch.tensor(w)
    loss = torch.nn.functional.cross_entropy(xt, tt, weight=wt)
    assert torch.isnan(loss)
    if x.size:
        loss.backward()
        # all ignored: zeros; zero total weight: nan
        np.testing.assert_array_equal(g, xt.grad.numpy())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target", [np.array(2), 2, np.int32(2)])
def test_1d_input(target, reduction):
    rng = np.random.default_rng(8)
    x = rng.standard_normal(5) * 3
    loss, grad = fm.cross_entropy_value_and_grad(
        x, target, reduction=reduction, label_smoothing=0.2
    )
    ref_loss, ref_grad = cross_entropy_ref(x, np.asarray(target), None, -100, reduction, 0.2)
    assert grad.shape == (5,)
    assert np.shape(loss) == ()
    assert_loss_close(loss, ref_loss, 1e-12)
    assert_grad_close(grad, ref_grad, 1e-12)
    # same as a batch of one row
    l2, g2 = fm.cross_entropy_value_and_grad(
        x[None], np.atleast_1d(target), reduction=reduction, label_smoothing=0.2
    )
    np.testing.assert_allclose(np.reshape(loss, -1), np.reshape(l2, -1), rtol=1e-15)
    np.testing.assert_allclose(grad, g2[0], rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_minus_inf_logits_in_other_classes(dtype, reduction):
    x = np.array([[0.5, -np.inf, 2.0, -np.inf], [-np.inf, 1.0, -1.0, 3.0]], dtype)
    t = np.array([2, 3])
    loss, grad = fm.cross_entropy_value_and_grad(x, t, reduction=reduction)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    ref_loss, ref_grad = cross_entropy_ref(x, t, None, -100, reduction, 0.0)
    assert_loss_close(loss, ref_loss, TOL[dtype])
    assert_grad_close(grad, ref_grad, TOL[dtype])
    assert np.all(grad[np.isneginf(x)] == 0)
    # probability targets with no mass on the -inf classes: finite too (documented)
    y = np.array([[0.2, 0.0, 0.8, 0.0], [0.0, 0.5, 0.0, 0.5]], dtype)
    loss, grad = fm.cross_entropy_value_and_grad(x, y, reduction=reduction)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    ref_loss, ref_grad = cross_entropy_ref(x, y, None, -100, reduction, 0.0)
    assert_loss_close(loss, ref_loss, TOL[dtype])
    assert_grad_close(grad, ref_grad, TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("probs", [False, True])
@pytest.mark.parametrize("bad", [np.nan, -np.nan, np.inf, "all_-inf"])
def test_non_finite_row_gives_nan(dtype, probs, bad):
    rng = np.random.default_rng(9)
    x, t, w, ii = make_case(rng, 4, 5, dtype, probs=probs)
    if bad == "all_-inf":
        x[1] = -np.inf
    else:
        x[1, 3] = bad
    kw = dict(weight=w, ignore_index=ii, label_smoothing=0.1)
    rows, g = fm.cross_entropy_value_and_grad(x, t, reduction="none", **kw)
    assert np.isnan(rows[1]) and np.all(np.isnan(g[1]))
    good = [0, 2, 3]
    ref_rows, ref_g = cross_entropy_ref(x[good], t[good], w, ii, "none", 0.1)
    assert_loss_close(rows[good], ref_rows, TOL[dtype])
    assert_grad_close(g[good], ref_g, TOL[dtype])
    loss, g = fm.cross_entropy_value_and_grad(x, t, reduction="mean", **kw)
    assert np.isnan(loss)
    assert np.all(np.isnan(g[1])) and np.all(np.isfinite(g[good]))
    assert np.isnan(fm.cross_entropy(x, t, reduction="sum", **kw))


@pytest.mark.parametrize("probs", [False, True])
@pytest.mark.parametrize(
    "dtype,scale",
    [
        (np.float32, 1e4),
        (np.float32, "pm1e30"),
        (np.float64, 1e4),
        (np.float64, 1e150),
        (np.float64, "pm1e300"),
    ],
)
def test_large_logits(dtype, scale, probs):
    rng = np.random.default_rng(10)
    n, c = 16, 9
    if isinstance(scale, str):
        mag = float(scale[2:])
        x = (rng.choice([-mag, mag], size=(n, c)) * rng.uniform(0.5, 1.0, (n, c))).astype(dtype)
    else:
        x = (rng.standard_normal((n, c)) * scale).astype(dtype)
    _, t, w, ii = make_case(rng, n, c, dtype, probs=probs, use_weight=True)
    for reduction in REDUCTIONS:
        for eps in (0.0, 0.1):
            kw = dict(weight=w, ignore_index=ii, reduction=reduction, label_smoothing=eps)
            loss, grad = fm.cross_entropy_value_and_grad(x, t, **kw)
            assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
            ref_loss, ref_grad = cross_entropy_ref(x, t, w, ii, reduction, eps)
            assert_loss_close(loss, ref_loss, TOL[dtype])
            assert_grad_close(grad, ref_grad, TOL[dtype])


def test_ignore_index_in_range_and_weights():
    x = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    t = np.array([0, 1, 2])
    w = np.array([1.0, 2.0, 4.0])
    loss = fm.cross_entropy(x, t, weight=w, ignore_index=0)
    ref, _ = cross_entropy_ref(x, t, w, 0, "mean", 0.0)
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    assert ref == pytest.approx(-(2 * logp[1, 1] + 4 * logp[2, 2]) / 6, rel=1e-14)
    assert loss == pytest.approx(ref, rel=1e-12)


# --- determinism across thread counts ------------------------------------------------

_DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import numba
    import fastmle as fm

    d = sys.argv[1]
    x = np.load(d + "/x.npy"); t = np.load(d + "/t.npy"); y = np.load(d + "/y.npy")
    w = np.load(d + "/w.npy")
    tag = sys.argv[2]
    out = {"threads": np.array(numba.get_num_threads())}
    for red in ("mean", "sum", "none"):
        kw = dict(weight=w, reduction=red, label_smoothing=0.1)
        l, g = fm.cross_entropy_value_and_grad(x, t, **kw)
        out["idx_loss_" + red] = np.asarray(l)
        out["idx_grad_" + red] = g
        out["idx_l_only_" + red] = np.asarray(fm.cross_entropy(x, t, **kw))
        l, g = fm.cross_entropy_value_and_grad(x, y, **kw)
        out["prob_loss_" + red] = np.asarray(l)
        out["prob_grad_" + red] = g
    np.savez(d + "/res_" + tag + ".npz", **out)
    """
)


# row and short-rows kernels; the last two write a gradient beyond _rows.STREAM_BYTES
# (streaming stores)
@pytest.mark.parametrize("n,c", [(3000, 257), (30000, 10), (5000, 1000), (500000, 10)])
def test_deterministic_across_thread_counts(tmp_path, n, c):
    rng = np.random.default_rng(2024)
    x = (rng.standard_normal((n, c)) * 5).astype(np.float32)
    t = rng.integers(0, c, size=n)
    t[::17] = -100
    y = rng.dirichlet(np.ones(c), size=n).astype(np.float32)
    w = rng.uniform(0.5, 2.0, c).astype(np.float32)
    for name, arr in dict(x=x, t=t, y=y, w=w).items():
        np.save(tmp_path / f"{name}.npy", arr)
    script = tmp_path / "run.py"
    script.write_text(_DETERMINISM_SCRIPT)
    root = str(Path(fm.__file__).resolve().parent.parent)
    results = {}
    for threads in ("1", "2"):
        env = dict(
            os.environ,
            NUMBA_NUM_THREADS=threads,
            PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        )
        subprocess.run(
            [sys.executable, str(script), str(tmp_path), threads],
            env=env,
            check=True,
            timeout=300,
            capture_output=True,
        )
        results[threads] = dict(np.load(tmp_path / f"res_{threads}.npz"))
    r1, r2 = results["1"], results["2"]
    assert int(r1["threads"]) == 1 and int(r2["threads"]) == 2
    for key in r1:
        if key == "threads":
            continue
        assert r1[key].dtype == r2[key].dtype == np.float32, key
        assert r1[key].tobytes() == r2[key].tobytes(), key
    # and the result is right
    ref_loss, ref_grad = cross_entropy_ref(x, t, w, -100, "mean", 0.1)
    assert_loss_close(r1["idx_loss_mean"], ref_loss, 1e-6)
    assert_grad_close(r1["idx_grad_mean"], ref_grad, 1e-6)


# --- bad input -----------------------------------------------------------------------

X = np.zeros((3, 4))
T = np.array([0, 1, 2])


def _readonly(a):
    a = a.copy()
    a.setflags(write=False)
    return a


BAD_INPUTS = [
    # (id, args, kwargs, exception, match)
    ("index_ge_C", (X, np.array([0, 4, 1])), {}, ValueError, r"target.*\[0, 4\)"),
    ("negative_index", (X, np.array([0, -1, 1])), {}, ValueError, r"target"),
    (
        "negative_index_not_ignore",
        (X, np.array([0, -100, 1])),
        dict(ignore_index=-1),
        ValueError,
        r"target",
    ),
    ("float_target_shape", (X, np.zeros((3, 5))), {}, ValueError, r"target"),
    ("float_target_1d", (X, np.zeros(3)), {}, ValueError, r"target"),
    ("int_target_shape", (X, np.array([0, 1])), {}, ValueError, r"target"),
    ("int_target_2d", (X, np.zeros((3, 4), np.int64)), {}, ValueError, r"target"),
    ("int_target_1d_input", (np.zeros(4), np.array([1])), {}, ValueError, r"target"),
    ("uint64_target_huge", (X, np.array([0, 1, 2**63], np.uint64)), {}, ValueError, r"target"),
    ("bool_target", (X, np.array([True, False, True])), {}, TypeError, r"target"),
    ("string_target", (X, np.array(["a", "b", "c"])), {}, TypeError, r"target"),
    ("weight_length", (X, T), dict(weight=np.ones(3)), ValueError, r"weight"),
    ("weight_2d", (X, T), dict(weight=np.ones((1, 4))), ValueError, r"weight"),
    ("weight_complex", (X, T), dict(weight=np.ones(4, complex)), TypeError, r"weight"),
    ("reduction", (X, T), dict(reduction="avg"), ValueError, r"reduction"),
    ("reduction_none_object", (X, T), dict(reduction=None), ValueError, r"reduction"),
    ("smoothing_neg", (X, T), dict(label_smoothing=-0.1), ValueError, r"label_smoothing"),
    ("smoothing_gt1", (X, T), dict(label_smoothing=1.5), ValueError, r"label_smoothing"),
    ("smoothing_nan", (X, T), dict(label_smoothing=float("nan")), ValueError, r"label_smoothing"),
    ("smoothing_str", (X, T), dict(label_smoothing="x"), TypeError, r"label_smoothing"),
    ("ignore_index_float", (X, T), dict(ignore_index=1.5), TypeError, r"ignore_index"),
    ("complex_input", (X.astype(complex), T), {}, TypeError, r"input"),
    (
        "object_input",
        (np.array([[1.0, "a"], [2.0, 3.0]], dtype=object), np.array([0, 1])),
        {},
        TypeError,
        r"input",
    ),
    ("string_input", (np.array([["a", "b"]]), np.array([0])), {}, TypeError, r"input"),
    ("3d_input", (np.zeros((2, 3, 4)), np.zeros((2, 3), np.int64)), {}, ValueError, r"input"),
    ("0d_input", (np.float64(1.0), np.array(0)), {}, ValueError, r"input"),
    ("no_classes", (np.zeros((3, 0)), T), {}, ValueError, r"C = 0"),
    ("no_classes_1d", (np.zeros(0), np.array(0)), {}, ValueError, r"C = 0"),
]


@pytest.mark.parametrize("func", list(FUNCS))
@pytest.mark.parametrize(
    "name,args,kwargs,exc,match",
    BAD_INPUTS,
    ids=[b[0] if isinstance(b, tuple) else None for b in BAD_INPUTS],
)
def test_bad_input(name, args, kwargs, exc, match, func):
    with pytest.raises(exc, match=match):
        FUNCS[func](*args, **kwargs)


BAD_OUTS = [
    ("shape", lambda: np.zeros((3, 5)), ValueError),
    ("shape_T", lambda: np.zeros((4, 3)), ValueError),
    ("dtype", lambda: np.zeros((3, 4), np.float32), TypeError),
    ("readonly", lambda: _readonly(np.zeros((3, 4))), ValueError),
    ("non_contiguous", lambda: np.zeros((3, 8))[:, ::2], ValueError),
    ("fortran", lambda: np.asfortranarray(np.zeros((3, 4))), ValueError),
    ("list", lambda: [[0.0] * 4] * 3, TypeError),
]


@pytest.mark.parametrize("case", BAD_OUTS, ids=[b[0] for b in BAD_OUTS])
def test_bad_out(case):
    _, make, exc = case
    out = make()
    before = np.array(out, copy=True)
    with pytest.raises(exc, match=r"out"):
        fm.cross_entropy_value_and_grad(X, T, out=out)
    np.testing.assert_array_equal(np.asarray(out), before)


def test_out_input_that_cannot_be_used_in_place():
    # out=input where input is not the computation dtype / not contiguous
    xi = np.zeros((3, 4), np.int64)
    with pytest.raises(TypeError, match="out"):
        fm.cross_entropy_value_and_grad(xi, T, out=xi)
    xnc = np.zeros((3, 8))[:, ::2]
    with pytest.raises(ValueError, match="out"):
        fm.cross_entropy_value_and_grad(xnc, T, out=xnc)


def test_probability_target_rejects_nonnegative_ignore_index():
    with pytest.raises(ValueError, match="ignore_index"):
        fm.cross_entropy(X, np.full((3, 4), 0.25), ignore_index=0)


# --- accepted input layouts and dtypes -----------------------------------------------


@pytest.mark.parametrize("probs", [False, True])
def test_non_contiguous_and_readonly_input(probs):
    rng = np.random.default_rng(13)
    big = rng.standard_normal((10, 14)) * 4
    x = big[:, ::2]
    assert not x.flags.c_contiguous
    _, t, w, ii = make_case(rng, 10, 7, np.float64, probs=probs, use_weight=True)
    if probs:
        t = np.repeat(t, 2, axis=1)[:, ::2]  # non-contiguous target too
    kw = dict(weight=w, ignore_index=ii, reduction="mean", label_smoothing=0.1)
    ref_loss, ref_grad = cross_entropy_ref(
        np.ascontiguousarray(x), np.ascontiguousarray(t), w, ii, "mean", 0.1
    )
    loss, grad = fm.cross_entropy_value_and_grad(x, t, **kw)
    assert_loss_close(loss, ref_loss, 1e-12)
    assert_grad_close(grad, ref_grad, 1e-12)

    xr = _readonly(np.ascontiguousarray(x))
    tr = _readonly(np.asarray(t))
    before = xr.copy()
    loss, grad = fm.cross_entropy_value_and_grad(
        xr, tr, weight=None if w is None else _readonly(w), ignore_index=ii, label_smoothing=0.1
    )
    np.testing.assert_array_equal(xr, before)
    assert_loss_close(loss, ref_loss, 1e-12)
    assert_grad_close(grad, ref_grad, 1e-12)
    assert fm.cross_entropy(big.T, rng.integers(0, 10, 14)).dtype == np.float64  # transposed


@pytest.mark.parametrize(
    "in_dtype,compute",
    [
        (np.int64, np.float64),
        (np.int32, np.float64),
        (np.uint8, np.float64),
        (np.bool_, np.float64),
        (np.float16, np.float32),
    ],
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_other_input_dtypes(in_dtype, compute, reduction):
    rng = np.random.default_rng(14)
    if in_dtype is np.bool_:
        x = rng.random((6, 5)) < 0.5
    elif in_dtype is np.float16:
        x = (rng.standard_normal((6, 5)) * 3).astype(np.float16)
    else:
        x = rng.integers(0, 9, size=(6, 5)).astype(in_dtype)
    t = rng.integers(0, 5, size=6)
    loss, grad = fm.cross_entropy_value_and_grad(x, t, reduction=reduction, label_smoothing=0.1)
    expected_loss_type(loss, compute, reduction)
    assert grad.dtype == compute
    ref_loss, ref_grad = cross_entropy_ref(x.astype(compute), t, None, -100, reduction, 0.1)
    assert_loss_close(loss, ref_loss, TOL[compute])
    assert_grad_close(grad, ref_grad, TOL[compute])
    # float probability targets of another dtype are converted to the compute dtype
    y = rng.dirichlet(np.ones(5), size=6).astype(np.float16)
    loss = fm.cross_entropy(x, y, reduction=reduction)
    ref_loss, _ = cross_entropy_ref(
        x.astype(compute), y.astype(compute), None, -100, reduction, 0.0
    )
    assert_loss_close(loss, ref_loss, TOL[compute])


@pytest.mark.parametrize(
    "t_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
)
def test_target_integer_dtypes(t_dtype):
    rng = np.random.default_rng(15)
    x = rng.standard_normal((6, 5))
    t = rng.integers(0, 5, size=6)
    ref = fm.cross_entropy(x, t)
    assert fm.cross_entropy(x, t.astype(t_dtype)) == ref
    assert fm.cross_entropy(x, list(t)) == ref
    assert fm.cross_entropy(x.tolist(), list(t)) == ref


def test_weight_as_list_and_other_dtype():
    rng = np.random.default_rng(16)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    t = rng.integers(0, 5, size=6)
    w = [1, 2, 3, 4, 5]
    loss = fm.cross_entropy(x, t, weight=w)
    assert isinstance(loss, np.float32)
    ref, _ = cross_entropy_ref(x, t, np.array(w, float), -100, "mean", 0.0)
    assert_loss_close(loss, ref, 1e-6)


# --- relative accuracy of tiny losses -------------------------------------------------------


@pytest.mark.parametrize("gap", [20.0, 30.0, 40.0])
def test_tiny_loss_relative_accuracy(gap):
    x = np.array([[0.0, -gap]])
    loss = fm.cross_entropy(x, np.array([0]))
    exact = np.log1p(np.exp(-gap))
    assert loss == pytest.approx(exact, rel=1e-12, abs=0)
