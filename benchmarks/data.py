"""Inputs of the asv benchmarks: parameter grids and data makers with fixed seeds.

The makers use NumPy only (not ``fastmle.bench``), so that the ``time_`` and
``peakmem_`` benchmarks also run against commits that predate that module; the
same call always gives the same arrays.

``FASTMLE_BENCH_SMOKE=1`` in the environment shrinks every size (to 10^4
elements; track_ and peakmem_ benchmarks to 10^5), so that CI can check in
seconds that every benchmark runs (``asv run --dry-run``): its numbers mean
nothing.
"""

from __future__ import annotations

import os

import numpy as np

SMOKE = os.environ.get("FASTMLE_BENCH_SMOKE", "") not in ("", "0")

DTYPES = ("float32", "float64")
#: numbers of input elements
SIZES = (10**4,) if SMOKE else (10**5, 10**6, 10**7)
#: cross-entropy class counts: the short-rows kernel, a typical head, a vocabulary
CLASSES = (10, 1000, 32768)
#: row length of the softmax family
SOFTMAX_CLASSES = 1000
#: the element-wise losses, by fastmle function name: those of the build's
#: benchmark registry (``fastmle.bench.KERNELS``, so a new loss enrols itself in the
#: asv suite), for older builds the five that predate it
try:
    from fastmle.bench import KERNELS as _KERNELS
    from fastmle.bench import ROW_KERNELS as _ROWS
except ImportError:
    _KERNELS, _ROWS = (
        (
            "binary_cross_entropy_with_logits",
            "binary_cross_entropy",
            "gaussian_nll_loss",
            "mse_loss",
            "kl_div",
        ),
        (),
    )
ELEMENTWISE = tuple(k for k in _KERNELS if k not in _ROWS)
#: size of the track_ and peakmem_ benchmarks (large enough to leave the caches)
TRACK_SIZE = 10**5 if SMOKE else 10**7


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _normal(rng, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    return rng.standard_normal(shape, dtype=dtype if dtype.kind == "f" else np.float64)


def logits(size: int, n_classes: int, dtype="float32", seed: int = 0) -> np.ndarray:
    """Standard normal logits of shape (max(1, size // n_classes), n_classes)."""
    return _normal(_rng(seed), (max(1, size // n_classes), n_classes), dtype)


def labels(n_rows: int, n_classes: int, seed: int = 1) -> np.ndarray:
    """Uniform int64 class indices in [0, n_classes)."""
    return _rng(seed).integers(0, n_classes, n_rows)


def cross_entropy(size: int, n_classes: int, dtype="float32") -> tuple:
    """``(logits, labels)`` with about ``size`` logits."""
    x = logits(size, n_classes, dtype)
    return x, labels(x.shape[0], n_classes)


def elementwise(kernel: str, size: int, dtype="float32", seed: int = 0) -> tuple:
    """Positional arguments of an element-wise loss, each of ``size`` elements.

    Parameters
    ----------
    kernel : str
        One of :data:`ELEMENTWISE`.
    size : int
    dtype : str or numpy dtype
    seed : int, default 0

    Returns
    -------
    tuple of ndarray
        BCE with logits: standard normal logits, 0/1 targets. BCE: probabilities
        in [0.01, 0.99], 0/1 targets drawn from them. Gaussian NLL: standard
        normal means and targets, variances in [0.5, 2]. MSE: two standard
        normal arrays. KL: log-probabilities and probabilities in [0.01, 1]. Losses
        newer than these: ``fastmle.bench.make_inputs`` of the build under test.
    """
    rng = _rng(seed)
    dtype = np.dtype(dtype)
    if kernel == "binary_cross_entropy_with_logits":
        return _normal(rng, size, dtype), (rng.random(size) < 0.5).astype(dtype)
    if kernel == "binary_cross_entropy":
        p = rng.uniform(0.01, 0.99, size).astype(dtype)
        return p, (rng.random(size) < p).astype(dtype)
    if kernel == "gaussian_nll_loss":
        return (
            _normal(rng, size, dtype),
            _normal(rng, size, dtype),
            rng.uniform(0.5, 2.0, size).astype(dtype),
        )
    if kernel == "mse_loss":
        return _normal(rng, size, dtype), _normal(rng, size, dtype)
    if kernel == "kl_div":
        return (
            np.log(rng.uniform(0.01, 1.0, size)).astype(dtype),
            rng.uniform(0.01, 1.0, size).astype(dtype),
        )
    # a loss newer than these makers (poisson_nll_loss and later): the inputs of the
    # build's own benchmark registry
    from fastmle.bench import make_inputs

    return make_inputs(kernel, size, dtype, seed=seed)


def inputs(kernel: str, size: int, dtype="float32", n_classes: int = 1000) -> tuple:
    """Positional arguments of any fastmle kernel (row kernels: ``n_classes``)."""
    if kernel == "cross_entropy":
        return cross_entropy(size, n_classes, dtype)
    if kernel in ("logsumexp", "log_softmax", "softmax"):
        return (logits(size, n_classes, dtype),)
    return elementwise(kernel, size, dtype)
