"""Inference from the observed information: covariance, standard errors, summary."""

from __future__ import annotations

import math
import warnings

import numpy as np


def covariance(H: np.ndarray) -> np.ndarray:
    """The inverse of the observed information H (the Hessian of the NLL at the
    optimum). Parameters in a direction where H is singular get nan, with a warning."""
    p = H.shape[0]
    if p == 0:
        return np.zeros((0, 0))
    if not np.isfinite(H).all():
        warnings.warn("The information matrix is not finite (the likelihood is unbounded at "
                      "the estimate): standard errors are nan.", RuntimeWarning, stacklevel=3)
        return np.full((p, p), np.nan)
    try:  # the usual case: positive definite
        L = np.linalg.cholesky(H)
        Linv = np.linalg.solve(L, np.eye(p))
        # pivots of rounding size mean a singular H: leave that to the eigen-decomposition
        if np.isfinite(Linv).all() and np.diag(L).min() > np.diag(L).max() * 1e-5:
            return Linv.T @ Linv
    except np.linalg.LinAlgError:
        pass
    vals, vecs = np.linalg.eigh(H)
    cutoff = max(float(np.abs(vals).max()), 1e-300) * p * 1e-12
    null = vals <= cutoff
    inv = np.where(null, 0.0, 1.0 / np.where(null, 1.0, vals))
    cov = (vecs * inv) @ vecs.T
    if null.any():
        hit = np.abs(vecs[:, null]).max(axis=1) > 1e-8
        cov[hit, :] = np.nan
        cov[:, hit] = np.nan
        warnings.warn(
            f"The information matrix is singular ({int(null.sum())} direction(s)): X has "
            "collinear or constant columns. Standard errors of the affected parameters are "
            "nan.", RuntimeWarning, stacklevel=3)
    return cov


def _normal_sf(z: np.ndarray) -> np.ndarray:
    return 0.5 * np.vectorize(math.erfc)(z / math.sqrt(2.0))


def wald(params: np.ndarray, bse: np.ndarray) -> dict[str, np.ndarray]:
    """Wald statistics of each parameter: z, the two-sided P>|z| and the 95% interval."""
    z = params / bse
    half = 1.959963984540054 * bse
    return {"z": z, "p_value": 2.0 * _normal_sf(np.abs(z)), "ci_low": params - half,
            "ci_high": params + half}


def summary_table(title: str, names, params, bse, lines) -> str:
    """A statsmodels-style text table: coef, std err, z, P>|z| and the 95% interval."""
    st = wald(params, bse)
    w = max([12] + [len(n) for n in names])
    head = (f"{'':<{w}} {'coef':>12} {'std err':>11} {'z':>9} {'P>|z|':>8} "
            f"{'[0.025':>12} {'0.975]':>12}")
    rule = "=" * len(head)
    out = [title.center(len(head)).rstrip(), rule]
    out += [f"{k:<22}{v:>{len(head) - 22}}" for k, v in lines]
    out += [rule, head, "-" * len(head)]
    for n, c, s, zz, pv, lo, hi in zip(names, params, bse, *st.values()):
        out.append(f"{n:<{w}} {c:>12.5g} {s:>11.4g} {zz:>9.3f} {pv:>8.3f} "
                   f"{lo:>12.5g} {hi:>12.5g}")
    out.append(rule)
    return "\n".join(out)
