"""The ``fastmle`` command: ``fit`` a model to a data file, the ``demo`` (the default)
and the kernel ``bench``. Bad input is one line on stderr and exit status 2.

``fit --output FILE.json`` is checked before the data are read (not the data file,
also through links; writable), and written atomically (a temporary file in the same
directory, renamed into place) as strict JSON: a non-finite number is null, and the
``non_finite`` object maps its field to 'NaN', 'Infinity' or '-Infinity'."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
import warnings

import numpy as np

from . import __version__, bench
from ._data import FORMATS, DataError, read
from ._progress import Bar

FAMILIES = ("bernoulli", "categorical", "gaussian", "gaussian-hetero", "poisson")


class UsageError(ValueError):
    """The data do not suit the requested model; the message says how to fix it."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastmle",
        description="Maximum-likelihood fits and losses on fused Numba "
        "kernels. Without a command, runs the demo.",
    )
    p.add_argument("--version", action="version", version=f"fastmle {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{fit,demo,bench}")

    f = sub.add_parser(
        "fit",
        help="fit a model to a data file by maximum likelihood",
        description="Fit a linear model by maximum likelihood and print its "
        "summary (estimates, standard errors, log-likelihood, AIC/BIC).",
    )
    f.add_argument(
        "data",
        metavar="DATA",
        help=f"a data file: {', '.join(sorted(FORMATS))}; CSV also compressed "
        "(.csv.gz, .csv.bz2, .csv.xz). Parquet needs pyarrow, which also reads CSV "
        "faster (the standard library's csv module otherwise)",
    )
    f.add_argument("--target", required=True, metavar="COLUMN", help="the response column")
    f.add_argument(
        "--family",
        required=True,
        choices=FAMILIES,
        help="bernoulli: logistic regression (2 classes); categorical: softmax "
        "regression; gaussian: linear regression; gaussian-hetero: linear "
        "regression with a log-linear variance; poisson: Poisson regression of "
        "counts (log link)",
    )
    f.add_argument(
        "--features",
        nargs="+",
        metavar="COLUMN",
        help="feature columns (default: every other column); a 2-d .npz array "
        "stands for all its columns",
    )
    f.add_argument("--weights", metavar="COLUMN", help="a column of sample weights")
    f.add_argument(
        "--exposure",
        metavar="COLUMN",
        help="--family poisson: a column of positive exposures (the mean is "
        "proportional to it: log(exposure) is an offset)",
    )
    f.add_argument(
        "--cov-type",
        choices=("nonrobust", "HC0", "HC1", "cluster"),
        default="nonrobust",
        help="the covariance behind the standard errors: the inverse information "
        "(default), heteroscedasticity-robust sandwiches HC0 / HC1 (x n/(n-k)), or "
        "clustered by --groups",
    )
    f.add_argument(
        "--groups",
        metavar="COLUMN",
        help="--cov-type cluster: a numeric column of cluster labels",
    )
    f.add_argument(
        "--delimiter",
        metavar="CHAR",
        help="CSV field delimiter: one character, or tab, comma, semicolon, pipe "
        "(default: the one of , tab ; | that splits the header into the most "
        "fields; tab for .tsv)",
    )
    f.add_argument(
        "--encoding",
        metavar="NAME",
        help="CSV text encoding, e.g. latin-1, cp1252, utf-16 (default: UTF-8, "
        "with or without a byte-order mark)",
    )
    f.add_argument(
        "--alpha",
        type=float,
        default=0.0,
        help="L2 penalty on the summed NLL, intercepts excluded (default 0: the plain MLE)",
    )
    f.add_argument("--no-intercept", action="store_true", help="fit without an intercept")
    f.add_argument("--max-iter", type=int, default=200, help="solver iterations (default 200)")
    f.add_argument(
        "--output",
        metavar="FILE.json",
        help="also write the results as strict JSON. Refused (before the fit) if "
        "it is the data file or cannot be written; written to a temporary file "
        "and renamed into place, so an existing file is replaced only by a "
        "complete result. Numbers that are not finite are written as null, and "
        "'non_finite' maps each such field (e.g. 'params[1].std_err') to its "
        "value ('NaN', 'Infinity' or '-Infinity')",
    )

    d = sub.add_parser(
        "demo",
        help="the maximum-likelihood story on large synthetic data",
        description="Fits every family on millions of synthetic rows and "
        "checks the identities behind the losses numerically.",
    )
    d.add_argument(
        "--rows", type=int, default=2_000_000, help="rows of the largest fits (default 2000000)"
    )
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument(
        "--plot", metavar="FILE.png", help="also plot the MSE-vs-BCE gradients (needs matplotlib)"
    )

    b = sub.add_parser(
        "bench",
        help="every loss kernel side by side with NumPy, torch and the memory-copy floor",
        description=_first_paragraph(bench.__doc__),
    )
    bench.add_arguments(b)
    return p


def _first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph as plain text (whole sentences, no RST markup)."""
    para = (doc or "").strip().split("\n\n")[0]
    return re.sub(r"``([^`]*)``", r"\1", " ".join(para.split()))


def main(argv: list[str] | None = None) -> int:
    """Run the ``fastmle`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "fit":
            return fit(args)
        if args.command == "bench":
            return bench.run_from_args(args)
        from .demo import run

        return run(
            rows=getattr(args, "rows", 2_000_000),
            seed=getattr(args, "seed", 0),
            plot_path=getattr(args, "plot", None),
        )
    except (DataError, UsageError, ValueError, TypeError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"fastmle: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastmle: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "fastmle: error: out of memory: use fewer rows or features, or a .npy file "
            "(read as a memory map)",
            file=sys.stderr,
        )
        return 2
    except Exception as e:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("FASTMLE_TRACEBACK"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(
            f"fastmle: error: internal error ({type(e).__name__}: {msg}); please report "
            "it, with FASTMLE_TRACEBACK=1 set for the traceback",
            file=sys.stderr,
        )
        return 2


def fit(args: argparse.Namespace) -> int:
    """``fastmle fit``: read, check the target against the family, fit, report."""
    if args.max_iter < 1:
        raise UsageError(f"--max-iter must be at least 1, got {args.max_iter}")
    tmp = _reserve_output(args.output, args.data) if args.output else None
    try:
        return _fit(args, tmp)
    finally:
        if tmp is not None and os.path.exists(tmp):  # the fit or the write failed
            os.unlink(tmp)


def _extra_columns(args) -> dict[str, str]:
    """The columns read with X but not features of it: ``{"exposure": COLUMN, "groups":
    COLUMN}`` as given, checked against the other roles."""
    exposure, groups = getattr(args, "exposure", None), getattr(args, "groups", None)
    if exposure is not None and args.family != "poisson":
        raise UsageError(f"--exposure is for --family poisson, not {args.family}")
    if (groups is not None) != (getattr(args, "cov_type", "nonrobust") == "cluster"):
        raise UsageError("--groups COLUMN and --cov-type cluster go together")
    extra = {k: v for k, v in (("exposure", exposure), ("groups", groups)) if v is not None}
    if exposure is not None and exposure == groups:
        raise UsageError(f"column {exposure!r} cannot be the exposure and also the groups")
    for role, col in extra.items():
        if col in (args.target, args.weights):
            other = "target" if col == args.target else "weights"
            raise UsageError(f"column {col!r} cannot be the {role} and also the {other}")
        if args.features and col in args.features:
            raise UsageError(f"column {col!r} cannot be the {role} and also a feature")
    return extra


def _take_columns(data, columns: dict[str, str], source: str) -> dict[str, np.ndarray]:
    """The ``{role: column}`` read as more columns of X, taken out of it (one copy of X)."""
    for role, col in columns.items():
        if col not in data.features:
            raise UsageError(f"--{role} {col!r} is not a column of {source}")
    if not columns:
        return {}
    idx = {role: data.features.index(col) for role, col in columns.items()}
    taken = {role: np.array(data.X[:, j], dtype=np.float64) for role, j in idx.items()}
    data.X = np.delete(data.X, list(idx.values()), axis=1)
    data.features = [c for c in data.features if c not in columns.values()]
    return taken


def _fit(args: argparse.Namespace, tmp: str | None) -> int:
    t0 = time.perf_counter()
    extra_cols = _extra_columns(args)
    features = args.features + list(extra_cols.values()) if args.features else args.features
    extra = len(extra_cols)
    bar = Bar(f"reading {args.data}")
    try:
        data = read(
            args.data,
            args.target,
            features,
            args.weights,
            progress=bar,
            delimiter=args.delimiter,
            encoding=args.encoding,
            before_load=lambda d, n: _check_size(n, d - extra, 1, args, bound=True),
        )
    finally:
        bar.close()
    read_time = time.perf_counter() - t0
    taken = _take_columns(data, extra_cols, args.data)
    exposure, groups = taken.get("exposure"), taken.get("groups")
    if exposure is not None and not (exposure > 0).all():
        i = int(np.flatnonzero(~(exposure > 0))[0])
        raise UsageError(
            f"exposure {extra_cols['exposure']!r} must be > 0 (got {exposure[i]:g} in "
            f"data row {i + 1}, 1-based)"
        )
    y = _check_target(data.y, data.target, args.family)
    _check_size(
        data.X.shape[0],
        data.X.shape[1],
        max(1, np.unique(y).size - 1) if args.family == "categorical" else 1,
        args,
    )
    model = _estimator(args, verbose=int(sys.stderr.isatty()))
    X = _named(data.X, data.features)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kw = {} if groups is None else {"groups": groups}
        if args.family == "poisson":
            kw["exposure"] = exposure
        model.fit(X, y, sample_weight=data.sample_weight, **kw)
    for w in caught:
        print(f"fastmle: warning: {str(w.message).splitlines()[0]}", file=sys.stderr)
    n = data.X.shape[0]
    print(model.summary())
    if args.family == "bernoulli":
        neg, pos = (_show(c) for c in model.classes_)
        print(
            f"modelled: P({data.target} = {pos}) against {data.target} = {neg} (classes in "
            "sorted order: the coefficients raise the log-odds of the second)"
        )
    print(
        f"read {n:,} rows x {len(data.features)} features in {read_time:.3g} s; "
        f"fit in {model.fit_time_:.3g} s ({n / model.fit_time_:,.0f} rows/s)"
    )
    if tmp is not None:
        text = json.dumps(
            strict_json(results(model, args, data, read_time)), indent=2, allow_nan=False
        )
        with open(tmp, "w") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.realpath(args.output))  # atomic: old file or new, never half
    return 0


def _reserve_output(path: str, data: str) -> str:
    """Check ``--output`` before anything is read or fitted, and create the temporary
    file the JSON will be written to (which proves the directory is writable);
    returns its path."""
    real = os.path.realpath(path)
    same = real == os.path.realpath(data)
    try:  # a hard link has another path but the same inode
        so, sd = os.stat(path), os.stat(data)
        same = same or (so.st_dev, so.st_ino) == (sd.st_dev, sd.st_ino)
    except OSError:
        pass
    if same:
        raise UsageError(
            f"--output {path} is the data file {data}: writing the results "
            "there would destroy the data; name another file"
        )
    if os.path.isdir(real):
        raise UsageError(
            f"--output {path} is a directory: name a file, e.g. {os.path.join(path, 'result.json')}"
        )
    if os.path.exists(real) and not os.access(real, os.W_OK):
        raise UsageError(
            f"--output {path} exists and is read-only: name another file or make it writable"
        )
    folder = os.path.dirname(real)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(real)}.", suffix=".tmp")
    except OSError as e:
        raise UsageError(
            f"--output {path} cannot be written: {e.strerror} in {folder}; "
            "name a file in a writable directory"
        ) from None
    os.close(fd)
    # mkstemp makes the file private (0600); give the result the usual permissions
    if os.path.exists(real):
        mode = os.stat(real).st_mode & 0o777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    return tmp


def _show(v) -> str:
    """A value for a message: text quoted, numbers plain, never a NumPy repr."""
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v)


LABEL_LIMIT = 2**53  # whole numbers beyond it are not exact in float64: labels would merge


def _check_target(y: np.ndarray, name: str, family: str) -> np.ndarray:
    if family == "poisson":
        if y.dtype.kind not in "biuf":
            raise UsageError(
                f"target {name!r} is not numeric (e.g. {_show(y[0])}): --family "
                "poisson needs counts"
            )
        if (y < 0).any():
            i = int(np.flatnonzero(y < 0)[0])
            raise UsageError(
                f"target {name!r} has negative values (e.g. {_show(y[i])} in data "
                f"row {i + 1}, 1-based): --family poisson needs counts >= 0"
            )
        return y
    if family.startswith("gaussian"):
        if y.dtype.kind not in "biuf":
            raise UsageError(
                f"target {name!r} is not numeric (e.g. {_show(y[0])}): --family "
                f"{family} needs numbers; use bernoulli or categorical for labels"
            )
        return y
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        i = int(np.flatnonzero(y != np.round(y))[0])
        raise UsageError(
            f"target {name!r} has non-integer values (e.g. {y[i]:g} in data row "
            f"{i + 1}, 1-based): --family {family} needs class labels; use "
            "--family gaussian for a continuous response"
        )
    if y.dtype.kind == "f":
        big = np.flatnonzero(np.abs(y) >= LABEL_LIMIT)
        if big.size:
            i = int(big[0])
            raise UsageError(
                f"target {name!r} has a label too large to read exactly "
                f"({y[i]:.17g} in data row {i + 1}, 1-based; class labels must "
                "be below 2^53 in magnitude): recode the classes, e.g. as 0, 1, "
                "... or as text"
            )
        y = y.astype(np.int64)  # whole numbers read as floats: labels 0, 1, not 0.0, 1.0
    classes = np.unique(y)
    shown = ", ".join(_show(c) if not isinstance(c, str) else c for c in classes[:5])
    shown += ", ..." if classes.size > 5 else ""
    if classes.size < 2:
        raise UsageError(
            f"target {name!r} has a single value ({shown}): a classifier needs at least 2 classes"
        )
    if family == "bernoulli" and classes.size > 2:
        raise UsageError(
            f"target {name!r} has {classes.size} classes ({shown}): --family "
            "bernoulli needs exactly 2; use --family categorical"
        )
    return y


def _check_size(n: int | None, d: int, k: int, args, bound: bool = False) -> None:
    """Refuse a model with at least as many parameters as rows and no penalty: the MLE
    is not identified. Called before the rows are read, with an upper bound on their
    number (10^6 columns x 3 rows is refused at once, not after reading), and after."""
    if n is None or n == 0:  # no rows at all: the reader says so
        return
    params = k * (d + (not args.no_intercept)) + (d + 1 if args.family == "gaussian-hetero" else 0)
    if args.alpha == 0 and params >= n:
        rows = f"{'at most ' if bound else ''}{n:,} data rows"
        raise UsageError(
            f"{rows} cannot identify {params:,} parameters ({d:,} features): "
            "use fewer features (--features) or a penalty (--alpha)"
        )


def _estimator(args, verbose: int):
    from . import models

    common = dict(
        alpha=args.alpha,
        fit_intercept=not args.no_intercept,
        max_iter=args.max_iter,
        cov_type=getattr(args, "cov_type", "nonrobust"),
        verbose=verbose,
    )
    if args.family == "bernoulli":
        return models.LogisticRegression(**common)
    if args.family == "categorical":
        return models.SoftmaxRegression(**common)
    if args.family == "poisson":
        return models.PoissonRegression(**common)
    return models.GaussianRegression(heteroscedastic=args.family == "gaussian-hetero", **common)


class _Named(np.ndarray):
    """An ndarray view with a ``columns`` attribute, which the estimators read feature
    names from (as from a pandas DataFrame): the summary names the parameters."""


def _named(X: np.ndarray, names: list[str]) -> _Named:
    view = X.view(_Named)
    view.columns = np.asarray(names, dtype=object)
    return view


def results(model, args, data, read_time: float) -> dict:
    """The fit as JSON-ready data: every parameter with its Wald statistics, the fit's
    log-likelihood, AIC/BIC and timings."""
    from .models._inference import wald

    st = wald(model.params_, model.bse_)
    params = [
        {
            "name": nm,
            "coef": float(c),
            "std_err": float(s),
            **{k: float(v[i]) for k, v in st.items()},
        }
        for i, (nm, c, s) in enumerate(zip(model.param_names_, model.params_, model.bse_))
    ]
    out = {
        "fastmle": __version__,
        "data": args.data,
        "family": args.family,
        "target": data.target,
        "features": data.features,
        "weights": args.weights,
        "alpha": args.alpha,
        "fit_intercept": not args.no_intercept,
        "max_iter": args.max_iter,
        "nobs": int(model.nobs_),
        "n_params": int(model.n_params_),
        "params": params,
        "loglik": float(model.loglik_),
        "aic": float(model.aic_),
        "bic": float(model.bic_),
        "converged": bool(model.converged_),
        "n_iter": int(model.n_iter_),
        "solver": model.solver_,
        "read_time_s": read_time,
        "fit_time_s": model.fit_time_,
        "rows_per_s": data.X.shape[0] / model.fit_time_,
    }
    if hasattr(model, "classes_"):
        out["classes"] = [c.item() if hasattr(c, "item") else c for c in model.classes_]
        if args.family == "bernoulli":
            out["modelled_class"] = out["classes"][1]  # P(target = classes[1]) is modelled
    if args.family == "poisson":
        out["exposure"] = getattr(args, "exposure", None)
    out["cov_type"] = model.cov_type
    if getattr(args, "groups", None) is not None:
        out["groups"] = args.groups
    for name in ("llnull", "llr", "llr_pvalue", "pseudo_r2", "r2", "deviance"):
        if hasattr(model, name + "_"):
            out[name] = float(getattr(model, name + "_"))
    if hasattr(model, "sigma2_"):
        out["sigma2"] = float(model.sigma2_)
    return out


def strict_json(obj, where: str = "", notes: dict | None = None):
    """``obj`` with every non-finite float (a singular direction's standard error, an
    infinite log-likelihood) replaced by None, which JSON writes as null; the top
    level gets ``non_finite``: {field path: 'NaN' / 'Infinity' / '-Infinity'}."""
    top = notes is None
    notes = {} if top else notes
    if isinstance(obj, dict):
        res = {k: strict_json(v, f"{where}.{k}" if where else k, notes) for k, v in obj.items()}
    elif isinstance(obj, (list, tuple)):
        res = [strict_json(v, f"{where}[{i}]", notes) for i, v in enumerate(obj)]
    elif isinstance(obj, float) and not math.isfinite(obj):
        notes[where] = "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
        res = None
    else:
        res = obj
    if top and isinstance(res, dict):
        res["non_finite"] = notes
    return res


if __name__ == "__main__":
    sys.exit(main())
