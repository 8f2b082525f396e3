"""``out=`` that overlaps an argument (issue 17, item 7).

The rule (``fastmle._rules.check_no_overlap``, on every device): ``out`` may
be exactly the input (same data pointer, shape, strides and dtype: the documented
in-place gradient), and may share no memory with the input in any other way or
with any other argument. Anything else raises ValueError naming ``out``: a float
view of the int64 class indices used to crash the interpreter (the gradient
overwrote the labels, which then indexed out of bounds), and an ``out`` shifted
against the input by a row or a few elements gave gradients that changed from run
to run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastmle as fm

ROOT = Path(__file__).resolve().parents[1]
N = 300
rng = np.random.default_rng(17)


def _ce(x, out=None, **kw):
    t = kw.pop("target", np.arange(x.shape[0]) % x.shape[1])
    return fm.cross_entropy_value_and_grad(x, t, out=out, **kw)


def _probs(x):
    return 1 / (1 + np.exp(-x))


# name -> (call(x, out, **operands), default operands given x, how x must look)
FUNCS = {
    "cross_entropy": lambda x, out=None, **kw: _ce(x, out, **kw),
    "binary_cross_entropy_with_logits": lambda x, out=None, **kw: (
        fm.binary_cross_entropy_with_logits_value_and_grad(
            x, kw.pop("target", np.full(x.shape, 0.3)), out=out, **kw
        )
    ),
    "binary_cross_entropy": lambda x, out=None, **kw: fm.binary_cross_entropy_value_and_grad(
        x, kw.pop("target", np.full(x.shape, 0.3)), out=out, **kw
    ),
    "gaussian_nll_loss": lambda x, out=None, **kw: fm.gaussian_nll_loss_value_and_grad(
        x, kw.pop("target", np.full(x.shape, 0.3)), kw.pop("var", 2.0), out=out, **kw
    ),
    "mse_loss": lambda x, out=None, **kw: fm.mse_loss_value_and_grad(
        x, kw.pop("target", np.full(x.shape, 0.3)), out=out, **kw
    ),
    "kl_div": lambda x, out=None, **kw: fm.kl_div_value_and_grad(
        x, kw.pop("target", np.full(x.shape, 0.3)), out=out, **kw
    ),
    "poisson_nll_loss": lambda x, out=None, **kw: fm.poisson_nll_loss_value_and_grad(
        x, kw.pop("target", np.full(x.shape, 2.0)), out=out, **kw
    ),
}
SHAPES = {"short rows": (N, 5), "long rows": (N, 100)}


def _values(name, shape):
    x = rng.standard_normal(shape)
    return _probs(x) if name == "binary_cross_entropy" else x


def _grad(res):
    g = res[1]
    return g[0] if isinstance(g, tuple) else g  # gaussian: (d_input, d_var)


# --- out=input: the documented in-place use still works --------------------------------


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_is_input_still_works(name, shape, dtype):
    x = _values(name, SHAPES[shape]).astype(dtype)
    ref = FUNCS[name](x.copy())
    res = FUNCS[name](x, out=x)
    assert _grad(res) is x
    np.testing.assert_array_equal(x, _grad(ref))
    np.testing.assert_array_equal(res[0], ref[0])


@pytest.mark.parametrize(
    "name, kw",
    [
        ("binary_cross_entropy_with_logits", {}),
        ("binary_cross_entropy_with_logits", {"weight": "w", "pos_weight": "w"}),
        ("binary_cross_entropy", {"weight": "w"}),
        ("gaussian_nll_loss", {"var": "v", "full": True}),
        ("mse_loss", {}),
        ("kl_div", {"log_target": True}),
        ("poisson_nll_loss", {"full": True}),
        ("poisson_nll_loss", {"log_input": False}),
    ],
)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_out_is_input_over_many_chunks(name, kw, reduction):
    # 2e5 elements: many of the element-wise kernel's chunks, each made in a scratch and
    # copied over the input (the in-place loop failed LLVM's overlap check and ran
    # scalar); the results are the out-of-place ones, bit for bit
    x = _values(name, (400, 500)).astype(np.float32)
    if name == "poisson_nll_loss" and kw.get("log_input") is False:
        x = np.abs(x)
    sizes = {"w": 500, "v": (400, 500)}  # a weight per column; a variance per element
    kw = {
        k: rng.uniform(0.5, 2.0, sizes[v]).astype(np.float32) if v in sizes else v
        for k, v in kw.items()
    }
    ref = FUNCS[name](x.copy(), reduction=reduction, **kw)
    res = FUNCS[name](x, out=x, reduction=reduction, **kw)
    assert _grad(res) is x
    np.testing.assert_array_equal(x, _grad(ref))
    np.testing.assert_array_equal(res[0], ref[0])


@pytest.mark.parametrize("name", list(FUNCS))
def test_separate_out_in_the_same_buffer_is_accepted(name):
    """Disjoint parts of one allocation do not overlap."""
    shape = SHAPES["short rows"]
    buf = np.empty(2 * shape[0] * shape[1])
    x = buf[: buf.size // 2].reshape(shape)
    x[...] = _values(name, shape)
    out = buf[buf.size // 2 :].reshape(shape)
    ref = FUNCS[name](x.copy())
    assert _grad(FUNCS[name](x, out=out)) is out
    np.testing.assert_array_equal(out, _grad(ref))


# --- out shifted against the input ----------------------------------------------------------


@pytest.mark.parametrize("shift", ["one row", "three elements", "one element back"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", list(FUNCS))
def test_out_shifted_against_input_raises(name, shape, shift):
    n, c = SHAPES[shape]
    k = {"one row": c, "three elements": 3, "one element back": -1}[shift]
    buf = np.empty(n * c + abs(k))
    x = buf[max(-k, 0) :][: n * c].reshape(n, c)
    x[...] = _values(name, (n, c))
    out = buf[max(k, 0) :][: n * c].reshape(n, c)
    before = x.copy()
    with pytest.raises(ValueError, match=r"out overlaps the memory of input.*out=input"):
        FUNCS[name](x, out=out)
    np.testing.assert_array_equal(x, before)  # nothing was written


# --- out overlapping another argument -------------------------------------------------------

OPERANDS = {
    "cross_entropy": ["target", "weight"],
    "binary_cross_entropy_with_logits": ["target", "weight", "pos_weight"],
    "binary_cross_entropy": ["target", "weight"],
    "gaussian_nll_loss": ["target", "var"],
    "mse_loss": ["target"],
    "kl_div": ["target"],
}


@pytest.mark.parametrize("name,arg", [(f, a) for f, args in OPERANDS.items() for a in args])
@pytest.mark.parametrize("how", ["same buffer", "one row", "a scalar inside"])
def test_out_overlapping_an_operand_raises(name, arg, how):
    n, c = SHAPES["short rows"]
    x = _values(name, (n, c))
    buf = np.empty(n * c + c)
    out = buf[: n * c].reshape(n, c)
    # these targets must have the input's shape (cross-entropy's: probabilities here;
    # class indices are in the label-view tests below)
    full_only = arg == "target" and name in (
        "cross_entropy",
        "binary_cross_entropy",
        "binary_cross_entropy_with_logits",
    )
    if name == "cross_entropy" and arg == "weight":  # one per class
        op = buf[:c] if how == "same buffer" else buf[c + 2 : 2 * c + 2]
    elif how == "same buffer":
        op = out
    elif how == "one row":
        op = buf[c:].reshape(n, c)
    elif full_only:
        op = buf[3 : 3 + n * c].reshape(n, c)
    else:  # a per-column operand inside out's memory
        op = buf[5 : 5 + c].reshape(1, c)
    op[...] = {"target": 1.0 / c if name == "cross_entropy" else 0.25, "var": 2.0}.get(arg, 1.0)
    with pytest.raises(ValueError, match=rf"out shares memory with {arg}.*separate buffer"):
        FUNCS[name](x, out=out, **{arg: op})


def test_out_same_as_target_is_not_in_place():
    """``out=target`` is not ``out=input`` even for the same values."""
    x = rng.standard_normal((10, 3))
    t = x.copy()
    with pytest.raises(ValueError, match="out shares memory with target"):
        fm.mse_loss_value_and_grad(x, t, out=t)


def test_out_is_input_when_input_is_also_the_target_raises():
    x = rng.standard_normal((10, 3))
    with pytest.raises(ValueError, match="out shares memory with target"):
        fm.mse_loss_value_and_grad(x, x, out=x)


# --- the class indices under out: was a segmentation fault ----------------------------------


def _run_isolated(code):
    """A regression may crash the interpreter: run it where that cannot end pytest."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )


@pytest.mark.parametrize("c", [5, 100], ids=["short rows", "long rows"])
@pytest.mark.parametrize("label_dtype", ["int64", "int32"])
def test_out_as_a_view_of_the_labels_raises_not_crashes(c, label_dtype):
    r = _run_isolated(f"""
        import numpy as np
        import fastmle as fm

        n, c = 2000, {c}
        dt = np.float64 if "{label_dtype}" == "int64" else np.float32
        x = np.random.default_rng(0).standard_normal((n, c)).astype(dt)
        for first in (0, n * c - n, 7):  # labels at the start, end, inside out's memory
            buf = np.zeros(n * c, np.{label_dtype})
            labels = buf[first:first + n]
            labels[:] = np.arange(n) % c
            out = buf.view(dt).reshape(n, c)
            try:
                fm.cross_entropy_value_and_grad(x, labels, out=out)
            except ValueError as e:
                assert "out shares memory with target" in str(e), e
                assert np.array_equal(labels, np.arange(n) % c)  # untouched
            else:
                raise SystemExit("no error")
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (
        r.returncode,
        r.stdout,
        r.stderr[-3000:],
    )


# --- the GPU path: the same rule on device memory (the CUDA simulator without a GPU) ---------


@pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda is not installed"
)
def test_cuda_out_overlap():
    env_sim = "NUMBA_ENABLE_CUDASIM" not in os.environ
    code = """
        import numpy as np
        from numba import cuda
        import fastmle as fm

        n, c = 40, 5
        x = cuda.to_device(np.random.default_rng(0).standard_normal(n * c + c))
        xin = x[:n * c].reshape(n, c)
        shifted = x[c:].reshape(n, c)
        t = cuda.to_device(np.full(n * c, 0.3))
        for f in (fm.mse_loss_value_and_grad, fm.kl_div_value_and_grad,
                  fm.binary_cross_entropy_with_logits_value_and_grad):
            try:
                f(xin, t.reshape(n, c), out=shifted)
            except ValueError as e:
                assert "out overlaps the memory of input" in str(e), e
            else:
                raise SystemExit("shifted out accepted")
            try:
                f(xin, t.reshape(n, c), out=t.reshape(n, c))
            except ValueError as e:
                assert "out shares memory with target" in str(e), e
            else:
                raise SystemExit("out=target accepted")
            ref = f(cuda.to_device(xin.copy_to_host()), t.reshape(n, c))[1].copy_to_host()
            f(xin, t.reshape(n, c), out=xin)
            assert np.array_equal(xin.copy_to_host(), ref)
            xin.copy_to_device(np.random.default_rng(0).standard_normal((n, c)))
        labels = cuda.to_device(np.arange(n * c, dtype=np.int64) % c)
        try:
            fm.cross_entropy_value_and_grad(xin, labels[:n],
                                            out=labels.view(np.float64).reshape(n, c))
        except ValueError as e:
            assert "out shares memory with target" in str(e), e
        else:
            raise SystemExit("label view accepted")
        print("ok")
    """
    env = dict(os.environ)
    if env_sim:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [env.get("PYTHONPATH", "")])
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr[-3000:]
