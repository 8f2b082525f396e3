"""The one table of element-wise losses that the tests and benchmarks iterate.

Each row names the public function (``fastmle.<name>``, ``_grad``,
``_value_and_grad``), its float64 reference (``reference_elementwise``), its
``torch.nn.functional`` counterpart, a maker of valid inputs and the grid of keyword
arguments to sweep. A new element-wise loss enrols itself in the generic tests
(``test_registry.py``: reference, finite differences, torch, value_and_grad, out=,
NaN), in the Dask and CUDA-simulator comparisons and in the benchmarks by one row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import fastmle as fm
from reference_elementwise import (
    bce_ref,
    bce_with_logits_ref,
    gaussian_nll_loss_ref,
    kl_div_ref,
    mse_loss_ref,
    poisson_nll_loss_ref,
)

REDUCTIONS = ("none", "mean", "sum")


@dataclass(frozen=True)
class Loss:
    name: str
    ref: Callable
    torch: str | None
    # make(rng, shape, dtype, **grid_kwargs) -> (input, positional operands, keyword operands)
    make: Callable
    grid: tuple[dict, ...] = ({},)
    reductions: tuple[str, ...] = REDUCTIONS
    d_operand: bool = False  # the gradient is (d_input, d_operand)
    fd_step: float = 1e-6  # finite-difference step (relative to 1 + |x|)
    tags: frozenset = field(default_factory=frozenset)

    @property
    def value(self):
        return getattr(fm, self.name)

    @property
    def grad(self):
        return getattr(fm, self.name + "_grad")

    @property
    def value_and_grad(self):
        return getattr(fm, self.name + "_value_and_grad")

    def d_input(self, grad):
        return grad[0] if self.d_operand else grad

    def __repr__(self) -> str:  # pytest ids
        return self.name


def _bce_logits(rng, shape, dt, weighted=False):
    x = (3 * rng.standard_normal(shape)).astype(dt)
    y = rng.random(shape).astype(dt)
    kw = {}
    if weighted:
        kw = dict(
            weight=rng.random(shape[-1:]).astype(dt) + 0.5,
            pos_weight=rng.random(shape[-1:]).astype(dt) + 0.5,
        )
    return x, (y,), kw


def _bce(rng, shape, dt, weighted=False):
    p = rng.uniform(0.02, 0.98, shape).astype(dt)
    y = rng.random(shape).astype(dt)
    kw = dict(weight=rng.random(shape[-1:]).astype(dt) + 0.5) if weighted else {}
    return p, (y,), kw


def _gaussian(rng, shape, dt, full=False):
    x = rng.standard_normal(shape).astype(dt)
    t = rng.standard_normal(shape).astype(dt)
    var = rng.uniform(0.5, 2.0, shape).astype(dt)
    return x, (t, var), dict(full=full)


def _mse(rng, shape, dt):
    return rng.standard_normal(shape).astype(dt), (rng.standard_normal(shape).astype(dt),), {}


def _kl(rng, shape, dt, log_target=False):
    x = np.log(rng.uniform(0.05, 1.0, shape)).astype(dt)
    t = rng.uniform(0.0, 1.0, shape)
    t = np.log(t + 0.05) if log_target else t
    return x, (t.astype(dt),), dict(log_target=log_target)


def _poisson(rng, shape, dt, log_input=True, full=False):
    rate = rng.uniform(0.2, 5.0, shape)
    t = rng.poisson(rate).astype(dt)
    x = np.log(rate) if log_input else rate
    return x.astype(dt), (t,), dict(log_input=log_input, full=full)


ELEMENTWISE = (
    Loss(
        "binary_cross_entropy_with_logits",
        bce_with_logits_ref,
        "binary_cross_entropy_with_logits",
        _bce_logits,
        ({}, {"weighted": True}),
    ),
    Loss(
        "binary_cross_entropy",
        bce_ref,
        "binary_cross_entropy",
        _bce,
        ({}, {"weighted": True}),
        fd_step=1e-7,
    ),
    Loss(
        "gaussian_nll_loss",
        gaussian_nll_loss_ref,
        "gaussian_nll_loss",
        _gaussian,
        ({}, {"full": True}),
        d_operand=True,
    ),
    Loss("mse_loss", mse_loss_ref, "mse_loss", _mse),
    Loss(
        "kl_div",
        kl_div_ref,
        "kl_div",
        _kl,
        ({}, {"log_target": True}),
        reductions=REDUCTIONS + ("batchmean",),
    ),
    Loss(
        "poisson_nll_loss",
        poisson_nll_loss_ref,
        "poisson_nll_loss",
        _poisson,
        ({}, {"full": True}, {"log_input": False}, {"log_input": False, "full": True}),
    ),
)


def cases(shape=(4, 7), dtypes=(np.float32, np.float64), seed=0):
    """(loss, grid kwargs, dtype, (input, args, kwargs)) for every row and grid point."""
    for loss in ELEMENTWISE:
        for g in loss.grid:
            for dt in dtypes:
                rng = np.random.default_rng(seed)
                x, args, kw = loss.make(rng, shape, dt, **g)
                yield loss, g, dt, (x, args, kw)
