"""The Dask path (``fastmle.dask``): every loss and softmax function on Dask arrays
against the NumPy path (and a few against the float64 references).

The element-wise losses come from ``registry.ELEMENTWISE`` (a new loss is compared
here by its row there, its value rule too); the cross-entropy, softmax and
broadcast-layout cases are written here. Per element or row (gradients,
``reduction='none'`` losses, softmax outputs) the Dask results must be bitwise equal
to the NumPy path's; reduced losses (and a d_var summed over the batch) are sums
grouped differently, compared to 1e-12 (float64) or 1e-6 (float32) relative. Most
graphs run on the synchronous scheduler; one test runs a two-process
``dask.distributed`` cluster.
"""

from __future__ import annotations

import inspect
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from conftest import TOL
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastmle as fm  # noqa: E402
from fastmle._calls import LOSSES  # noqa: E402
from fastmle._cpu import cross_entropy as ce  # noqa: E402
from fastmle._cpu import elementwise as ew  # noqa: E402
from reference import cross_entropy_ref  # noqa: E402
from reference_elementwise import bce_with_logits_ref, gaussian_nll_loss_ref, kl_div_ref  # noqa: E402
from registry import ELEMENTWISE, cases  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RTOL = TOL
SYNC = "synchronous"


# --- cases ------------------------------------------------------------------------
# case(rng, n, dtype) -> (public function's name, input, kwargs, names of the kwargs
# passed as Dask arrays, whether array results other than reduction='none' losses are
# bitwise equal where they have the batch axis). The element-wise losses themselves
# come from the registry (test_registry_matches_numpy_path); the element-wise cases
# here are broadcast layouts: operands along the batch, across it, scalars, 1-D and
# 3-D inputs.


def _probs(rng, shape, dtype):
    p = rng.random(shape) + 0.05
    return (p / p.sum(axis=-1, keepdims=True)).astype(dtype)


def ce_index(rng, n, dt, c=5):
    return (
        "cross_entropy",
        rng.standard_normal((n, c)).astype(dt),
        dict(target=rng.integers(0, c, n)),
        ("target",),
        True,
    )


def ce_ignore_weight(rng, n, dt, c=70):  # 70 classes: the long-row kernel
    t = rng.integers(0, c, n)
    t[::4] = 3
    return (
        "cross_entropy",
        rng.standard_normal((n, c)).astype(dt),
        dict(target=t, weight=rng.random(c) + 0.5, ignore_index=3),
        ("weight",),
        False,
    )


def ce_smoothing(rng, n, dt, c=6):
    t = rng.integers(0, c, n).astype(np.int32)
    t[1::5] = -100
    return (
        "cross_entropy",
        rng.standard_normal((n, c)).astype(dt),
        dict(target=t, label_smoothing=0.2),
        ("target",),
        True,
    )


def ce_probs(rng, n, dt, c=7):
    return (
        "cross_entropy",
        rng.standard_normal((n, c)).astype(dt),
        dict(target=_probs(rng, (n, c), dt), weight=rng.random(c) + 0.5, label_smoothing=0.1),
        ("target",),
        True,
    )


def bce_logits_weights(rng, n, dt, d=4):
    return (
        "binary_cross_entropy_with_logits",
        3 * rng.standard_normal((n, d)).astype(dt),
        dict(
            target=rng.random((n, d)).astype(dt),
            weight=rng.random((n, d)) + 0.5,
            pos_weight=rng.random(d) + 0.5,
        ),
        ("target", "weight"),
        True,
    )


def bce_logits_plain(rng, n, dt):
    return (
        "binary_cross_entropy_with_logits",
        3 * rng.standard_normal(n).astype(dt),
        dict(target=(rng.random(n) > 0.5).astype(dt)),
        ("target",),
        True,
    )


def bce_probs(rng, n, dt, d=3):
    return (
        "binary_cross_entropy",
        rng.uniform(0.01, 0.99, (n, d)).astype(dt),
        dict(target=rng.random((n, d)), weight=rng.random(d) + 0.5),
        ("target",),
        True,
    )


def _gauss(var_shape):
    """var_shape: a tuple of "n" (the batch), "d" and ints, or None for a float var.
    d_var is bitwise equal where var spans the batch (else it is summed over it)."""

    def case(rng, n, dt, d=4):
        spans = var_shape is not None and var_shape[0] == "n"
        var = (
            0.7
            if var_shape is None
            else (0.2 + rng.random(tuple({"n": n, "d": d}.get(s, s) for s in var_shape))).astype(dt)
        )
        return (
            "gaussian_nll_loss",
            rng.standard_normal((n, d)).astype(dt),
            dict(target=rng.standard_normal((n, d)), var=var, full=True),
            (("target", "var") if spans else ("target",)),
            True,
        )

    case.__name__ = "gauss_var_" + ("float" if var_shape is None else "x".join(map(str, var_shape)))
    return case


def mse_broadcast(rng, n, dt, d=3):
    return (
        "mse_loss",
        rng.standard_normal((n, d, 2)).astype(dt),
        dict(target=rng.standard_normal((d, 2))),
        (),
        True,
    )


def kl_probs(rng, n, dt, c=5):
    return (
        "kl_div",
        np.log(_probs(rng, (n, c), dt)),
        dict(target=_probs(rng, (n, c), dt)),
        ("target",),
        True,
    )


CASES = [
    ce_index,
    ce_ignore_weight,
    ce_smoothing,
    ce_probs,
    bce_logits_weights,
    bce_logits_plain,
    bce_probs,
    _gauss(("n",)),
    _gauss(("n", 1)),
    _gauss((1, "d")),
    _gauss(None),
    mse_broadcast,
]


# --- helpers ------------------------------------------------------------------------


def lazy(a, rows):
    """``a`` as a Dask array chunked by ``rows`` along its first axis."""
    a = np.asarray(a)
    return da.from_array(a, chunks=(rows,) + (-1,) * (a.ndim - 1) if a.ndim else ())


def three(name, x, kw, reduction):
    """The results of fm.<name>, <name>_grad and <name>_value_and_grad."""
    kw = dict(kw, reduction=reduction)
    return tuple(getattr(fm, name + s)(x, **kw) for s in ("", "_grad", "_value_and_grad"))


def flat(results):
    """The arrays of nested tuples/lists, in order."""
    out = []
    for r in results:
        out.extend(flat(r) if isinstance(r, (tuple, list)) else [r])
    return out


def leaves(value, grad, both):
    """(kind, array) of the results of L, L_grad, L_value_and_grad (a Gaussian grad is
    a pair (d_input, d_var))."""

    def grads(g):
        return [("grad", a) for a in (g if isinstance(g, tuple) else (g,))]

    return [("loss", value)] + grads(grad) + [("loss", both[0])] + grads(both[1])


def assert_matches(got, ref, dtype, exact, what):
    assert type(got) is type(ref), (what, type(got), type(ref))  # scalars stay NumPy scalars
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    assert got.dtype == ref.dtype, (what, got.dtype, ref.dtype)
    if exact and got.ndim:
        np.testing.assert_array_equal(got, ref, err_msg=what, strict=True)
    else:
        np.testing.assert_allclose(
            got, ref, rtol=RTOL[dtype], atol=RTOL[dtype] * 1e-3, err_msg=what
        )


def compare(case, n, dtype, reduction, rows, seed=0, op_rows=None, scheduler=SYNC):
    rng = np.random.default_rng(seed)
    compare_results(case.__name__, *case(rng, n, dtype), reduction, rows, op_rows, scheduler)


def compare_results(
    what, name, x, kw, dask_ops, exact, reduction, rows, op_rows=None, scheduler=SYNC
):
    """fm.<name> and its siblings on Dask ``x`` (``rows`` per chunk; the kwargs named in
    ``dask_ops`` as Dask arrays of ``op_rows`` per chunk) against NumPy ``x``."""
    n, dtype = x.shape[0], x.dtype.type
    ref = leaves(*three(name, x, kw, reduction))
    op_rows = rows if op_rows is None else op_rows
    kwd = {k: (lazy(v, op_rows) if k in dask_ops else v) for k, v in kw.items()}
    xd = lazy(x, rows)
    lazy_results = leaves(*three(name, xd, kwd, reduction))
    for (kind, r), (_, want) in zip(lazy_results, ref, strict=True):
        assert isinstance(r, da.Array)
        assert r.shape == np.shape(want)
        if r.ndim and r.shape[0] == n and (kind == "grad" or reduction == "none"):
            assert r.chunks[0] == xd.chunks[0]  # per-row results: the input's row chunks
    got = dask.compute(*[r for _, r in lazy_results], scheduler=scheduler)
    for i, (g, (kind, want)) in enumerate(zip(got, ref)):
        # 'none' losses are always bitwise equal; gradients with the batch axis unless
        # the case says not (a d_var summed over the batch is not)
        per_row = np.ndim(want) > 0 and np.shape(want)[0] == n
        bitwise = reduction == "none" if kind == "loss" else exact and per_row
        assert_matches(g, want, dtype, bitwise, f"{what} {kind} {i}")


# --- against the NumPy path -------------------------------------------------------


def _registry_case(loss, grid, dtype, n=53, seed=0):
    """A registry row's inputs as keyword arguments (positional operands bound to their
    names), with the names of its array operands."""
    x, args, kw = loss.make(np.random.default_rng(seed), (n, 5), dtype, **grid)
    kw = dict(inspect.signature(loss.value).bind(x, *args, **kw).arguments)
    x = kw.pop("input")
    return x, kw, tuple(k for k, v in kw.items() if isinstance(v, np.ndarray) and v.ndim)


def _registry_ids(params):
    loss, grid, dtype = params
    return "-".join([loss.name, *map(str, grid.values()), np.dtype(dtype).name])


REGISTRY = [(loss, g, dt) for loss, g, dt, _ in cases()]


@pytest.mark.parametrize("operands", ["dask", "numpy"])
@pytest.mark.parametrize("params", REGISTRY, ids=map(_registry_ids, REGISTRY))
def test_registry_matches_numpy_path(params, operands):
    """Every element-wise loss of the registry, every grid point and reduction, with its
    array operands as Dask arrays (their own chunks) or as NumPy arrays."""
    loss, grid, dtype = params
    x, kw, arrays = _registry_case(loss, grid, dtype)
    for reduction in loss.reductions:
        compare_results(
            f"{_registry_ids(params)} {reduction}",
            loss.name,
            x,
            kw,
            arrays if operands == "dask" else (),
            True,
            reduction,
            rows=7,
            op_rows=10,
        )


@pytest.mark.parametrize("loss", ELEMENTWISE, ids=repr)
@pytest.mark.parametrize("n, rows", [(23, 1), (0, 5)], ids=["one-row-chunks", "empty"])
def test_registry_chunkings(loss, n, rows):
    x, kw, arrays = _registry_case(loss, loss.grid[-1], np.float64, n)
    compare_results(loss.name, loss.name, x, kw, arrays, True, "mean", rows)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_matches_numpy_path(case, reduction, dtype):
    compare(case, 53, dtype, reduction, rows=7, op_rows=10)  # uneven chunks, rechunked operands


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "n, rows", [(40, 40), (23, 1), (0, 5)], ids=["one-chunk", "one-row-chunks", "empty"]
)
def test_chunkings(case, n, rows):
    compare(case, n, np.float64, "mean", rows)


@pytest.mark.parametrize("reduction", ["batchmean", "sum"])
def test_kl_batchmean(reduction):
    compare(kl_probs, 31, np.float64, reduction, rows=6)


def test_mean_of_all_ignored_rows_is_nan():
    x = da.from_array(np.ones((6, 3)), chunks=4)
    loss, grad = dask.compute(*fm.cross_entropy_value_and_grad(x, np.full(6, -100)), scheduler=SYNC)
    assert np.isnan(loss) and not grad.any()


def test_chunked_class_axis_and_mismatched_operand_chunks():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 8))
    t = rng.integers(0, 8, 30)
    xd = da.from_array(x, chunks=(7, 3))  # class axis in 3 chunks: rechunked to one
    loss, grad = fm.cross_entropy_value_and_grad(xd, da.from_array(t, chunks=11))
    assert grad.chunks == (xd.chunks[0], (8,))
    ref = fm.cross_entropy_value_and_grad(x, t)
    loss, grad = dask.compute(loss, grad, scheduler=SYNC)
    np.testing.assert_allclose(loss, ref[0], rtol=1e-12)
    np.testing.assert_array_equal(grad, ref[1])


def test_numpy_input_with_float16_and_int_dask_operands():
    x = np.random.default_rng(2).standard_normal((9, 2)).astype(np.float16)
    y = (x > 0).astype(np.int64)
    got = fm.binary_cross_entropy_with_logits_grad(
        da.from_array(x, chunks=4), da.from_array(y, chunks=3)
    )
    assert got.dtype == np.float32
    np.testing.assert_array_equal(
        got.compute(scheduler=SYNC), fm.binary_cross_entropy_with_logits_grad(x, y)
    )


# --- against float64 formulas -------------------------------------------------------


def _close(got, ref):
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=1e-10, atol=1e-13)


def test_cross_entropy_against_reference():
    _, x, kw, _, _ = ce_ignore_weight(np.random.default_rng(3), 45, np.float64)
    loss, grad = fm.cross_entropy_value_and_grad(lazy(x, 8), **kw)
    ref = cross_entropy_ref(x, kw["target"], kw["weight"], kw["ignore_index"], "mean")
    loss, grad = dask.compute(loss, grad, scheduler=SYNC)
    _close(loss, ref[0])
    _close(grad, ref[1])


def test_bce_with_logits_against_reference():
    _, x, kw, _, _ = bce_logits_weights(np.random.default_rng(4), 37, np.float64)
    got = dask.compute(
        *fm.binary_cross_entropy_with_logits_value_and_grad(
            lazy(x, 5), lazy(kw["target"], 9), kw["weight"], "sum", kw["pos_weight"]
        ),
        scheduler=SYNC,
    )
    ref = bce_with_logits_ref(x, kw["target"], kw["weight"], "sum", kw["pos_weight"])
    _close(got[0], ref[0])
    _close(got[1], ref[1])


def test_gaussian_against_reference():
    rng = np.random.default_rng(5)
    x, t, var = rng.standard_normal((41, 3)), rng.standard_normal((41, 3)), rng.random((1, 3))
    loss, (dx, dvar) = fm.gaussian_nll_loss_value_and_grad(lazy(x, 6), t, var, eps=0.05)
    assert dvar.shape == (1, 3)
    got = dask.compute(loss, dx, dvar, scheduler=SYNC)
    ref_loss, (ref_dx, ref_dvar) = gaussian_nll_loss_ref(x, t, var, eps=0.05)
    for g, r in zip(got, (ref_loss, ref_dx, ref_dvar)):
        _close(g, r)


def test_kl_against_reference():
    _, x, kw, _, _ = kl_probs(np.random.default_rng(6), 29, np.float64)
    got = dask.compute(
        *fm.kl_div_value_and_grad(lazy(x, 4), kw["target"], "batchmean"), scheduler=SYNC
    )
    ref = kl_div_ref(x, kw["target"], "batchmean")
    _close(got[0], ref[0])
    _close(got[1], ref[1])


# --- softmax ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_functions(axis, dtype):
    x = np.random.default_rng(7).standard_normal((11, 6, 5)).astype(dtype) * 4
    x[3, 2, :] = -np.inf
    xd = da.from_array(x, chunks=(4, 4, 2))
    for f in (fm.softmax, fm.log_softmax):
        np.testing.assert_array_equal(
            f(xd, axis=axis).compute(scheduler=SYNC), f(x, axis=axis), strict=True
        )
    for keepdims in (False, True):
        lse = fm.logsumexp(xd, axis=axis, keepdims=keepdims)
        assert isinstance(lse, da.Array)
        np.testing.assert_array_equal(
            lse.compute(scheduler=SYNC), fm.logsumexp(x, axis=axis, keepdims=keepdims), strict=True
        )


# --- one graph, determinism -----------------------------------------------------------


def _counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("scheduler", [SYNC, "threads"])
def test_value_and_grad_run_the_kernel_once_per_chunk(monkeypatch, scheduler):
    rng = np.random.default_rng(8)
    x = lazy(rng.standard_normal((50, 4)), 9)
    calls = _counting(monkeypatch, ce, "compute")
    loss, grad = fm.cross_entropy_value_and_grad(x, rng.integers(0, 4, 50), weight=np.ones(4))
    dask.compute(loss, grad, scheduler=scheduler)
    assert len(calls) == x.numblocks[0] == 6
    calls = _counting(monkeypatch, ew, "run")
    loss, (dx, dvar) = fm.gaussian_nll_loss_value_and_grad(x, 0.0, np.ones((1, 4)))
    dask.compute(loss, dx, dvar, scheduler=scheduler)
    assert len(calls) == 6


def test_deterministic_across_schedulers():
    rng = np.random.default_rng(9)
    x = lazy(rng.standard_normal((3000, 12)).astype(np.float32), 97)
    t = rng.integers(0, 12, 3000)
    w = rng.random(12).astype(np.float32)
    results = [
        fm.cross_entropy_value_and_grad(x, t, weight=w),
        fm.gaussian_nll_loss_value_and_grad(x, 0.5, rng.random((1, 12)) + 0.1),
    ]
    runs = [dask.compute(results, scheduler=s) for s in (SYNC, "threads", "threads", SYNC)]
    first = [np.asarray(a).tobytes() for a in flat(runs[0][0])]
    for run in runs[1:]:
        assert [np.asarray(a).tobytes() for a in flat(run[0])] == first


# --- argument checks ------------------------------------------------------------------


X = np.random.default_rng(10).standard_normal((20, 4))
XD = da.from_array(X, chunks=6)
T = np.arange(20) % 4


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: fm.cross_entropy(X, da.from_array(T, chunks=5)), TypeError, "input is not a Dask"),
        (lambda: fm.mse_loss(X, XD), TypeError, "input is not a Dask"),
        (lambda: fm.cross_entropy_value_and_grad(XD, T, out=np.empty_like(X)), TypeError, "out="),
        (lambda: fm.cross_entropy(XD[0], T[0]), ValueError, "must be 2-D logits"),
        (lambda: fm.cross_entropy(XD, T[:10]), ValueError, r"must have shape \(20,\)"),
        (lambda: fm.cross_entropy(XD, T.astype(float)), ValueError, "class probabilities"),
        (lambda: fm.cross_entropy(XD, T, weight=np.ones(3)), ValueError, "one entry per class"),
        (lambda: fm.cross_entropy(XD, T, reduction="avg"), ValueError, "reduction='avg'"),
        (lambda: fm.cross_entropy(XD.astype(complex), T), TypeError, "complex"),
        (lambda: fm.mse_loss(XD[XD[:, 0] > 0], 0.0), ValueError, "unknown chunk sizes"),
        (lambda: fm.mse_loss(XD, np.ones(5)), ValueError, "does not broadcast"),
        (lambda: fm.mse_loss(da.ones(3)[0], 1.0), ValueError, "0-d"),
        (lambda: fm.gaussian_nll_loss(XD, X, -np.ones((1, 4))), ValueError, "var has .*negative"),
        (lambda: fm.gaussian_nll_loss(XD, X, np.ones((20, 3))), ValueError, "var has shape"),
        (lambda: fm.softmax(XD, axis=None), ValueError, "axis=None"),
        (lambda: fm.logsumexp(XD, axis=2), ValueError, "out of bounds"),
        (lambda: fm.kl_div(XD, X, reduction="avg"), ValueError, "batchmean"),
    ],
)
def test_bad_arguments_raise_when_called(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _message(call):
    try:
        call()
    except ValueError as e:
        return str(e)
    raise AssertionError("no ValueError")


@pytest.mark.parametrize("scheduler", [SYNC, "threads"])
def test_bad_class_indices_raise_at_compute_with_the_numpy_message(scheduler):
    t = T.copy()
    t[13] = 7  # row 13: the third chunk
    for numpy_call, dask_call in [
        (lambda: fm.cross_entropy(X, t), lambda: fm.cross_entropy(XD, t)),
        (
            lambda: fm.cross_entropy_grad(X, t),
            lambda: fm.cross_entropy_grad(XD, da.from_array(t, chunks=7)),
        ),
    ]:
        lazy_loss = dask_call()  # builds the graph without reading values
        msg = _message(lambda lazy_loss=lazy_loss: dask.compute(lazy_loss, scheduler=scheduler))
        assert msg == _message(numpy_call)


def _spec(loss):
    """The ``_calls.LOSSES`` entry of a registry row."""
    return next(v for v in LOSSES.values() if v.name == loss.name)


@pytest.mark.parametrize("operand", ["dask", "numpy"])
@pytest.mark.parametrize("loss", [r for r in ELEMENTWISE if _spec(r).rule], ids=repr)
def test_value_rules_with_the_numpy_message(loss, operand):
    """Each ``_calls.ValueRule``: values outside its bounds, in the third chunk of a
    Dask argument, raise the NumPy path's ValueError at compute time; in a NumPy
    operand, when the function is called."""
    spec = _spec(loss)
    rule = spec.rule
    x, kw, _ = _registry_case(loss, loss.grid[0], np.float64, n=20)
    name = "input" if rule.position == 0 else spec.operands[rule.position - 1]
    bad = dict(kw, input=x)
    bad[name] = bad[name].copy()
    bad[name][13] = rule.lo - 1 if math.isfinite(rule.lo) else rule.hi + 1
    want = _message(lambda: loss.value(**bad))
    if operand == "numpy" and name != "input":
        lazy_args = dict(bad, input=lazy(x, 6))
        assert _message(lambda: loss.value(**lazy_args)) == want  # raised when called
        return
    lazy_args = {k: lazy(v, 6) if k == "input" or k == name else v for k, v in bad.items()}
    lazy_loss = loss.value(**lazy_args)  # builds the graph without reading values
    assert _message(lambda: dask.compute(lazy_loss, scheduler=SYNC)) == want


# --- hypothesis ------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 30),
    c=st.integers(1, 9),
    rows=st.integers(1, 31),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_and_chunks(n, c, rows, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal((n, c))).astype(dtype)
    t = rng.integers(-1, c, n)
    w = (rng.random(c) + 0.5).astype(dtype)
    got = dask.compute(
        *fm.cross_entropy_value_and_grad(lazy(x, rows), t, weight=w, ignore_index=-1),
        scheduler=SYNC,
    )
    ref = fm.cross_entropy_value_and_grad(x, t, weight=w, ignore_index=-1)
    assert_matches(got[0], ref[0], dtype, False, "ce loss")
    assert_matches(got[1], ref[1], dtype, False, "ce grad")
    y = rng.random((n, c)).astype(dtype)
    got = dask.compute(
        *fm.binary_cross_entropy_with_logits_value_and_grad(
            lazy(x, rows), lazy(y, max(1, rows // 2)), reduction="sum"
        ),
        scheduler=SYNC,
    )
    ref = fm.binary_cross_entropy_with_logits_value_and_grad(x, y, reduction="sum")
    assert_matches(got[0], ref[0], dtype, False, "bce loss")
    assert_matches(got[1], ref[1], dtype, True, "bce grad")


# --- import, distributed -----------------------------------------------------------------


def test_import_leaves_dask_alone():
    """``import fastmle`` and NumPy calls import neither dask nor the Dask path."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import fastmle
        x = np.zeros((2, 3))
        fastmle.cross_entropy(x, np.array([0, 2]))
        fastmle.mse_loss(x, x)
        fastmle.softmax(x)
        bad = [m for m in ("dask", "dask.array", "fastmle.dask._backend") if m in sys.modules]
        print("imported:", bad)
        sys.exit(1 if bad else 0)
    """)
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    ) as cluster:  # any free port
        with distributed.Client(cluster) as c:
            yield c


def test_distributed_cluster(client):
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes
    rng = np.random.default_rng(11)
    _, x, kw, _, _ = ce_ignore_weight(rng, 400, np.float32)
    xd = lazy(x, 45)
    lazy_results = [
        fm.cross_entropy_value_and_grad(xd, **kw),
        fm.gaussian_nll_loss_value_and_grad(xd, 0.0, rng.random((1, 70)) + 0.5),
    ]
    got = flat(client.gather(client.compute(lazy_results)))
    local = flat(dask.compute(lazy_results, scheduler=SYNC)[0])
    for g, want in zip(got, local):  # same chunks: the same bits in other processes
        np.testing.assert_array_equal(g, want, strict=True)
    ref = flat([fm.cross_entropy_value_and_grad(x, **kw)])
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-6, atol=1e-9)
