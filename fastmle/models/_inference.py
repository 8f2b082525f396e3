"""Wald statistics and the summary table (the covariance itself: ``_linalg``)."""

from __future__ import annotations

import math

import numpy as np


def _normal_sf(z: np.ndarray) -> np.ndarray:
    return 0.5 * np.vectorize(math.erfc)(z / math.sqrt(2.0))


def chi2_sf(x: float, df: int) -> float:
    """P(chi^2_df > x): the regularised upper incomplete gamma Q(df / 2, x / 2), summed
    in closed form (df a positive integer; its terms are positive, so the sum keeps
    its relative accuracy in the far tail). nan for df < 1."""
    if df < 1 or math.isnan(x):
        return float("nan")
    if x <= 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    h = 0.5 * x
    if df % 2 == 0:  # Q(m, h) = exp(-h) sum_{j<m} h^j / j!
        return float(
            math.fsum(math.exp(j * math.log(h) - h - math.lgamma(j + 1.0)) for j in range(df // 2))
        )
    # Q(m + 1/2, h) = erfc(sqrt h) + exp(-h) sum_{j=1..m} h^(j - 1/2) / Gamma(j + 1/2)
    return float(
        math.fsum(
            [math.erfc(math.sqrt(h))]
            + [
                math.exp((j - 0.5) * math.log(h) - h - math.lgamma(j + 0.5))
                for j in range(1, (df - 1) // 2 + 1)
            ]
        )
    )


def wald(params: np.ndarray, bse: np.ndarray) -> dict[str, np.ndarray]:
    """Wald statistics of each parameter: z, the two-sided P>|z| and the 95% interval."""
    z = params / bse
    half = 1.959963984540054 * bse
    return {
        "z": z,
        "p_value": 2.0 * _normal_sf(np.abs(z)),
        "ci_low": params - half,
        "ci_high": params + half,
    }


def summary_table(title: str, names, params, bse, lines) -> str:
    """A statsmodels-style text table: coef, std err, z, P>|z| and the 95% interval."""
    st = wald(params, bse)
    w = max([12] + [len(n) for n in names])
    head = (
        f"{'':<{w}} {'coef':>12} {'std err':>11} {'z':>9} {'P>|z|':>8} "
        f"{'[0.025':>12} {'0.975]':>12}"
    )
    rule = "=" * len(head)
    out = [title.center(len(head)).rstrip(), rule]
    out += [f"{k:<22}{v:>{len(head) - 22}}" for k, v in lines]
    out += [rule, head, "-" * len(head)]
    for n, c, s, zz, pv, lo, hi in zip(names, params, bse, *st.values()):
        out.append(f"{n:<{w}} {c:>12.5g} {s:>11.4g} {zz:>9.3f} {pv:>8.3f} {lo:>12.5g} {hi:>12.5g}")
    out.append(rule)
    return "\n".join(out)
