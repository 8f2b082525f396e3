"""NIST StRD linear regression: fastmle's correct digits (LRE) next to NumPy's QR.

    python benchmarks/nist_lre.py

Prints a Markdown table: per data set, n, p, fastmle's coefficient LRE (the minimum
over the parameters), what NumPy's Householder QR reaches on the same float64 data,
fastmle's residual-SD LRE and standard-error LRE (minimum), and NIST's level of
difficulty where the data file gives it. fastmle is ``GaussianRegression(variance=
"ols")`` (sigma^2 = RSS / (n - p), the convention of the certified values). The data,
the LRE rule and the thresholds are those of ``tests/test_certified.py``
(``tests/nist.py``). Below the table: the warnings each fit raised, and the sets that
miss the test's thresholds.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import nist  # noqa: E402


def _fit(ds):
    """(model, warnings, note): variance="ols"; an estimator without that option is
    fitted with its default (sigma^2 = RSS / n) and converted, and the note says so."""
    try:
        model, caught = nist.fit_fastmle(ds, strict=False, variance="ols")
        return model, caught, None
    except TypeError as exc:
        if "variance" not in str(exc):
            raise
    model, caught = nist.fit_fastmle(ds, strict=False)
    return model, caught, "ml"


def measure(ds):
    row = {
        "name": ds.name,
        "n": ds.n,
        "p": ds.p,
        "qr": nist.qr_lre(ds),
        "difficulty": ds.difficulty or "",
        "notes": [],
        "fails": [],
    }
    try:
        model, caught, convention = _fit(ds)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        row.update(coef=float("nan"), rsd=float("nan"), se=float("nan"))
        row["notes"].append(f"fit failed: {type(exc).__name__}: {exc}")
        row["fails"].append("fit")
        return row
    sigma2 = float(model.sigma2_)
    bse = np.asarray(model.bse_, dtype=np.float64)[: ds.p]
    if convention == "ml":  # RSS / n -> RSS / (n - p)
        c = ds.n / (ds.n - ds.p)
        sigma2, bse = sigma2 * c, bse * math.sqrt(c)
        row["notes"].append("no variance='ols': the default (RSS/n) fit, converted")
    coef = nist.lres(nist.mean_params(model, ds), ds.beta)
    row["coef"] = float(coef.min())
    row["rsd"] = nist.lre(math.sqrt(sigma2) if sigma2 >= 0 else math.nan, ds.rsd)
    row["se"] = float(nist.lres(bse, ds.sd).min())
    for w in caught:
        text = str(w.message).splitlines()[0]
        row["notes"].append(f"{w.category.__name__}: {text[:160]}")
    if not model.converged_:
        row["notes"].append(f"converged_ False ({model.n_iter_} iterations)")
    if not row["coef"] >= nist.coef_threshold(ds):
        row["fails"].append(f"coef < {nist.coef_threshold(ds):.2f}")
    if ds.exact:
        if not (model.sigma2_ == 0 and np.all(bse == 0) and model.loglik_ == math.inf):
            row["fails"].append(
                f"exact fit: sigma2_ {model.sigma2_!r}, loglik_ "
                f"{model.loglik_!r}, max bse {float(np.max(np.abs(bse)))!r}"
            )
    else:
        need_rsd, need_se = nist.sd_threshold(ds)
        if not row["rsd"] >= need_rsd:
            row["fails"].append(f"residual SD < {need_rsd:.2f}")
        if not row["se"] >= need_se:
            row["fails"].append(f"SE < {need_se:.2f}")
    if any(issubclass(w.category, RuntimeWarning) for w in caught):
        row["fails"].append("RuntimeWarning")
    return row


def main():
    import fastmle

    rows = [measure(ds) for ds in nist.load().values()]
    print(
        f"NIST StRD linear regression, fastmle {getattr(fastmle, '__version__', '?')}, "
        f"NumPy {np.__version__}: correct digits (LRE, at most {nist.MAX_LRE:g})\n"
    )
    print(
        "| data set | n | p | fastmle coef LRE (min) | QR coef LRE | fastmle residual SD LRE "
        "| fastmle SE LRE (min) | NIST difficulty |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['n']} | {r['p']} | {r['coef']:.1f} | {r['qr']:.1f} | "
            f"{r['rsd']:.1f} | {r['se']:.1f} | {r['difficulty'] or '–'} |"
        )
    print(
        "\nWampler1/2 are exact fits (certified residual SD and SEs 0): LRE there is "
        "-log10 of the absolute error, 15 when exactly 0."
    )
    notes = [(r["name"], n) for r in rows for n in r["notes"]]
    if notes:
        print("\nNotes:")
        for name, n in notes:
            print(f"- {name}: {n}")
    fails = [(r["name"], f) for r in rows for f in r["fails"]]
    print(
        "\nAgainst the thresholds of tests/test_certified.py: "
        + ("all met." if not fails else "missed:")
    )
    for name, f in fails:
        print(f"- {name}: {f}")


if __name__ == "__main__":
    main()
