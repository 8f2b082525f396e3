"""The last step of every reduced loss: its float64 total to the returned scalar."""

from __future__ import annotations

import math

import numpy as np


def grad_scale(reduction: str, denom: float) -> float:
    """The gradient's factor: 1 / denom for 'mean' (nan when ``denom`` is 0), else 1."""
    if reduction != "mean":
        return 1.0
    return 1.0 / denom if denom != 0 else math.nan


def reduce_total(total: float, denom: float, reduction: str, dtype: np.dtype) -> np.generic:
    """``total`` for 'sum', ``total / denom`` for 'mean' (nan when ``denom`` is 0: an
    empty or fully ignored batch), as a scalar of ``dtype``."""
    if reduction == "sum":
        return dtype.type(total)
    return dtype.type(total / denom) if denom else dtype.type(np.nan)
