"""0-d (scalar) inputs to every public loss and softmax function (issue 17, items 1-2).

PyTorch accepts 0-d tensors in every element-wise loss (a 0-d result for
reduction='none') and softmax/log_softmax/logsumexp with dim 0 or -1 on a 0-d
tensor (one element along its only "axis"). The values here are compared with
PyTorch in float64; shapes must be 0-d where PyTorch's are.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
from conftest import TOL
import pytest

import fastmle as fm

ROOT = Path(__file__).resolve().parents[1]
DTYPES = [np.float32, np.float64]
REDUCTIONS = ["none", "mean", "sum"]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def t64(torch, v, grad=False):
    return torch.tensor(float(v), dtype=torch.float64, requires_grad=grad)


def close(got, want, dt):
    got = np.asarray(got)
    assert got.dtype == np.dtype(dt), got.dtype
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=TOL[dt], atol=TOL[dt])


# Each case: (fastmle triple prefix, torch function name, 0-d input value, other
# positional 0-d arrays, fastmle keyword arguments, torch keyword arguments with
# the names of those that are 0-d arrays), with values inside each loss' domain.
CASES = {
    "mse": ("mse_loss", "mse_loss", 0.5, [0.25], {}, {}),
    "kl": ("kl_div", "kl_div", -0.7, [0.4], {}, {}),
    "kl_log_target": ("kl_div", "kl_div", -0.7, [-1.2], {"log_target": True}, {"log_target": True}),
    "bce": ("binary_cross_entropy", "binary_cross_entropy", 0.3, [0.8], {}, {}),
    "bce_weight": (
        "binary_cross_entropy",
        "binary_cross_entropy",
        0.3,
        [0.8],
        {"weight": 1.5},
        {"weight": 1.5},
    ),
    "bce_logits": (
        "binary_cross_entropy_with_logits",
        "binary_cross_entropy_with_logits",
        -1.3,
        [0.25],
        {},
        {},
    ),
    "bce_logits_weights": (
        "binary_cross_entropy_with_logits",
        "binary_cross_entropy_with_logits",
        -1.3,
        [0.25],
        {"weight": 2.0, "pos_weight": 3.0},
        {"weight": 2.0, "pos_weight": 3.0},
    ),
    "gaussian": ("gaussian_nll_loss", "gaussian_nll_loss", 0.5, [0.25, 2.0], {}, {}),
    "gaussian_full": (
        "gaussian_nll_loss",
        "gaussian_nll_loss",
        0.5,
        [0.25, 0.7],
        {"full": True},
        {"full": True},
    ),
}


def _fm_args(dt, x, others, kwargs):
    """Everything as 0-d arrays of ``dt``."""
    arr = lambda v: np.array(v, dt)  # noqa: E731
    return (
        arr(x),
        [arr(v) for v in others],
        {k: (arr(v) if isinstance(v, float) else v) for k, v in kwargs.items()},
    )


def _torch_ref(torch, name, x, others, kwargs, reduction):
    """(loss, d input, d var or None) from PyTorch in float64 on 0-d tensors."""
    import torch.nn.functional as F

    xt = t64(torch, x, grad=True)
    ot = [
        t64(torch, v, grad=(name == "gaussian_nll_loss" and i == 1)) for i, v in enumerate(others)
    ]
    kw = {k: (t64(torch, v) if isinstance(v, float) else v) for k, v in kwargs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(F, name)(xt, *ot, reduction=reduction, **kw)
    assert out.ndim == 0
    out.backward()
    dvar = ot[1].grad.numpy() if name == "gaussian_nll_loss" else None
    return out.detach().numpy(), xt.grad.numpy(), dvar


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_elementwise_0d_matches_torch(torch, case, reduction, dt):
    prefix, tname, x, others, kwargs, tkwargs = CASES[case]
    ref_l, ref_g, ref_dv = _torch_ref(torch, tname, x, others, tkwargs, reduction)
    xa, oa, kw = _fm_args(dt, x, others, kwargs)
    f, f_grad, f_vg = (getattr(fm, prefix + s) for s in ("", "_grad", "_value_and_grad"))

    loss = f(xa, *oa, reduction=reduction, **kw)
    grad = f_grad(xa, *oa, reduction=reduction, **kw)
    vg_loss, vg_grad = f_vg(xa, *oa, reduction=reduction, **kw)
    assert np.ndim(loss) == 0 and np.ndim(vg_loss) == 0
    close(loss, ref_l, dt)
    close(vg_loss, ref_l, dt)
    if ref_dv is not None:  # gaussian: (d_input, d_var), d_var shaped like the 0-d var
        for d_x, d_v in (grad, vg_grad):
            assert np.shape(d_x) == () and np.shape(d_v) == ()
            close(d_x, ref_g, dt)
            close(d_v, ref_dv, dt)
    else:
        for g in (grad, vg_grad):
            assert isinstance(g, np.ndarray) and g.shape == ()
            close(g, ref_g, dt)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gaussian_0d_float_var(torch, reduction):
    """A Python-float var with a 0-d input: d_var comes back as a float."""
    ref_l, ref_g, ref_dv = _torch_ref(torch, "gaussian_nll_loss", 0.5, [0.25, 2.0], {}, reduction)
    loss, (dx, dv) = fm.gaussian_nll_loss_value_and_grad(
        np.array(0.5), np.array(0.25), 2.0, reduction=reduction
    )
    close(loss, ref_l, np.float64)
    close(dx, ref_g, np.float64)
    assert np.ndim(dv) == 0
    close(dv, ref_dv, np.float64)


def test_kl_batchmean_0d(torch):
    """PyTorch's batchmean divides by nothing for a 0-d input."""
    import torch.nn.functional as F

    ref = F.kl_div(t64(torch, -0.7), t64(torch, 0.4), reduction="batchmean").item()
    close(fm.kl_div(np.array(-0.7), np.array(0.4), reduction="batchmean"), ref, np.float64)
    close(fm.kl_div_grad(np.array(-0.7), np.array(0.4), reduction="batchmean"), -0.4, np.float64)


def test_issue_example():
    assert fm.mse_loss(np.array(0.5), np.array(0.25)) == 0.0625


@pytest.mark.parametrize(
    "prefix", ["mse_loss", "kl_div", "binary_cross_entropy", "binary_cross_entropy_with_logits"]
)
def test_0d_out_and_in_place(prefix):
    x = np.array(0.5)
    t = np.array(0.25)
    f_vg = getattr(fm, prefix + "_value_and_grad")
    loss, grad = f_vg(x, t)
    out = np.empty(())
    loss2, grad2 = f_vg(x, t, out=out)
    assert grad2 is out and out == grad and loss2 == loss
    loss3, grad3 = f_vg(x, t, out=x)  # in place, as documented
    assert grad3 is x and x == grad and loss3 == loss


def test_0d_target_with_1d_input_still_broadcasts():
    x = np.array([0.5, 1.0])
    assert fm.mse_loss(x, np.array(0.25), reduction="sum") == 0.0625 + 0.5625


def test_0d_operand_against_nd_input():
    """A filler operand (np.ones(1)) is still treated as a scalar next to n-d input."""
    x = np.full((3, 2), -1.3)
    ref = fm.binary_cross_entropy_with_logits(x, np.full((3, 2), 0.25), reduction="none")
    got = fm.binary_cross_entropy_with_logits(
        x, np.full((3, 2), 0.25), weight=np.array(1.0), reduction="none"
    )
    np.testing.assert_array_equal(got, ref)


# --- softmax family ---------------------------------------------------------------------


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("axis", [0, -1, None])
def test_softmax_family_0d_matches_torch(torch, axis, dt):
    a = np.array(0.3, dt)
    dim = 0 if axis is None else axis
    ta = t64(torch, 0.3)
    for name in ("softmax", "log_softmax"):
        res = getattr(fm, name)(a, axis=axis)
        assert isinstance(res, np.ndarray) and res.shape == ()
        close(res, getattr(torch, name)(ta, dim).numpy(), dt)
    lse = fm.logsumexp(a, axis=axis)
    assert np.ndim(lse) == 0
    close(lse, torch.logsumexp(ta, dim).numpy(), dt)
    kept = fm.logsumexp(a, axis=axis, keepdims=True)
    assert kept.shape == tuple(torch.logsumexp(ta, dim, keepdim=True).shape) == ()
    close(kept, 0.3, dt)


@pytest.mark.parametrize("v", [-np.inf, np.inf, np.nan, 1e300, -1e300])
def test_softmax_family_0d_edge_values(torch, v):
    ta = torch.tensor(v, dtype=torch.float64)
    for name in ("softmax", "log_softmax", "logsumexp"):
        np.testing.assert_array_equal(
            getattr(fm, name)(np.array(v), 0), getattr(torch, name)(ta, 0).numpy()
        )


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("axis", [1, -2, 5])
def test_softmax_family_0d_bad_axis(name, axis):
    with pytest.raises(ValueError, match=f"axis {axis} is out of bounds for a 0-d array"):
        getattr(fm, name)(np.array(0.3), axis=axis)


# --- cross-entropy: 0-d logits have no class axis (PyTorch raises too) --------------------


@pytest.mark.parametrize("suffix", ["", "_grad", "_value_and_grad"])
def test_cross_entropy_0d_raises(suffix):
    with pytest.raises(ValueError, match="input must be logits of shape"):
        getattr(fm, "cross_entropy" + suffix)(np.array(0.3), np.array(0))


# --- the Dask path: a 0-d Dask input has no batch axis to chunk: a clear error ------------

DASK_CALLS = {
    "cross_entropy": lambda x: fm.cross_entropy(x, np.array(0)),
    "mse_loss": lambda x: fm.mse_loss(x, np.array(0.25)),
    "kl_div": lambda x: fm.kl_div(x, np.array(0.25)),
    "binary_cross_entropy": lambda x: fm.binary_cross_entropy(x, np.array(0.25)),
    "binary_cross_entropy_with_logits": lambda x: fm.binary_cross_entropy_with_logits(
        x, np.array(0.25)
    ),
    "gaussian_nll_loss": lambda x: fm.gaussian_nll_loss(x, np.array(0.25), 1.0),
    "mse_loss_value_and_grad": lambda x: fm.mse_loss_value_and_grad(x, np.array(0.25)),
    "softmax": lambda x: fm.softmax(x, 0),
    "log_softmax": lambda x: fm.log_softmax(x, -1),
    "logsumexp": lambda x: fm.logsumexp(x, 0),
}


@pytest.mark.parametrize("name", list(DASK_CALLS))
def test_dask_0d_input_raises(name):
    da = pytest.importorskip("dask.array")
    x = da.from_array(np.array(0.3))
    with pytest.raises(ValueError, match="0-d Dask array.*compute"):
        DASK_CALLS[name](x)


# --- the GPU path (under the CUDA simulator without a GPU) --------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda is not installed"
)
def test_cuda_0d_inputs():
    code = textwrap.dedent("""
        import numpy as np
        from numba import cuda
        import fastmle as fm

        d = lambda v: cuda.to_device(np.array(v))
        h = lambda a: a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)
        for ax in (0, -1, None):
            assert h(fm.softmax(d(0.3), ax)).shape == ()
            assert h(fm.softmax(d(0.3), ax)) == 1.0
            assert h(fm.log_softmax(d(0.3), ax)) == 0.0
            assert abs(h(fm.logsumexp(d(0.3), ax)) - 0.3) < 1e-15
        try:
            fm.softmax(d(0.3), 1)
            raise SystemExit("axis 1 on 0-d accepted")
        except ValueError as e:
            assert "0-d" in str(e), e
        for r in ("none", "mean", "sum"):
            loss, grad = fm.mse_loss_value_and_grad(d(0.5), d(0.25), r)
            assert h(loss).shape == () and h(grad).shape == ()
            assert h(loss) == 0.0625 and h(grad) == 0.5
            cpu = fm.binary_cross_entropy_with_logits_value_and_grad(
                np.array(-1.3), np.array(0.25), reduction=r, pos_weight=np.array(3.0))
            gpu = fm.binary_cross_entropy_with_logits_value_and_grad(
                d(-1.3), d(0.25), reduction=r, pos_weight=d(3.0))
            assert abs(h(gpu[0]) - cpu[0]) < 1e-12 and abs(h(gpu[1]) - cpu[1]) < 1e-12
            loss, (dx, dv) = fm.gaussian_nll_loss_value_and_grad(d(0.5), d(0.25), d(2.0),
                                                                 reduction=r)
            assert h(dv).shape == () and abs(h(dv) - 0.2421875) < 1e-15
        print("ok")
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [env.get("PYTHONPATH", "")])
    env.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr[-3000:]


# --- internal errors that used to leak (issue 17 item 14) ------------------------------


@pytest.mark.parametrize("bad", [np.matrix, np.ma.zeros, np.ma.array])
def test_out_of_a_numpy_subclass_is_refused(bad):
    x = np.random.default_rng(0).standard_normal((4, 3))
    out = bad(np.zeros((4, 3))) if bad is not np.ma.zeros else bad((4, 3))
    for call in (
        lambda: fm.mse_loss_value_and_grad(x, x, out=out),
        lambda: fm.cross_entropy_value_and_grad(x, np.array([0, 1, 2, 0]), out=out),
    ):
        with pytest.raises(TypeError, match="out must be a NumPy array"):
            call()


def test_memmap_out_is_accepted(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 3))
    mm = np.memmap(tmp_path / "g", dtype=np.float64, mode="w+", shape=(4, 3))
    loss, g = fm.mse_loss_value_and_grad(x, 0 * x, out=mm)
    assert g is mm and np.array_equal(np.asarray(mm), 2 * x / x.size)


def test_masked_arrays_are_refused():
    x = np.random.default_rng(0).standard_normal((4, 3))
    m = np.ma.masked_array(x, x > 0)
    with pytest.raises(TypeError, match="input is a masked array"):
        fm.mse_loss(m, x)
    with pytest.raises(TypeError, match="target is a masked array"):
        fm.binary_cross_entropy_with_logits(x, m)
    with pytest.raises(TypeError, match="target is a masked array"):
        fm.cross_entropy(x, np.ma.masked_array([0, 1, 2, 0], [0, 1, 0, 0]))


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda x, t: fm.cross_entropy(x, t, label_smoothing=10**400), "label_smoothing"),
        (lambda x, t: fm.gaussian_nll_loss(x, x, 1.0, eps=10**400), "eps"),
        (lambda x, t: fm.gaussian_nll_loss(x, x, 10**400), "var"),
        (lambda x, t: fm.poisson_nll_loss(x, x, eps=10**400), "eps"),
    ],
)
def test_ints_beyond_the_float_range_name_the_argument(call, name):
    x = np.random.default_rng(0).standard_normal((4, 3))
    with pytest.raises(ValueError, match=f"{name} is beyond the float64 range"):
        call(x, np.array([0, 1, 2, 0]))


def test_ignore_index_beyond_int64_is_refused():
    x = np.random.default_rng(0).standard_normal((4, 3))
    with pytest.raises(ValueError, match="ignore_index .* int64"):
        fm.cross_entropy(x, np.array([0, 1, 2, 0]), ignore_index=2**70)
    assert np.isfinite(
        fm.cross_entropy(x, np.array([0, 1, 2, 0]), ignore_index=np.iinfo(np.int64).min)
    )
