"""Every GPU kernel path of fastmle on a real device: effective bandwidth, the share
of a device-to-device copy of the same bytes, and torch.nn.functional on the same data.

    python3 benchmarks/gpu_check.py OUTDIR [--quick] [--repeat N] [--dtypes float32,float64]
                                          [--elements N] [--budget-s S] [--no-torch-compile]

Run by ``benchmarks/gpu_check.sh`` (which first runs ``tests/test_cuda.py`` on the
device); needs a CUDA GPU, PyTorch with CUDA and numba-cuda, no network. Inputs are
torch CUDA tensors passed straight to fastmle (its GPU path reads them through
``__cuda_array_interface__`` and launches on torch's current stream).

For each case (one per kernel path: cross-entropy with class indices in the
shared-memory-cached and uncached regimes, short rows, loss only, probability
targets; softmax / log_softmax / logsumexp cached and uncached; the five
element-wise losses), in float32 and float64:

- ``GB/s``: the compulsory bytes of the call (each input read once, each output
  written once: ``bytes`` in the JSON) over the median time of one call (CUDA
  events on the launch stream, fastmle's host-side work included). Value-and-grad
  functions write into a preallocated ``out=``; softmax and log_softmax allocate
  their result (through numba's allocator) on every call, as a user's call does.
- ``%copy``: that GB/s as a share of a device-to-device copy (``torch.Tensor.copy_``)
  moving the same number of bytes (half read, half written).
- ``torch``: the same computation with ``torch.nn.functional`` (forward and backward
  through ``torch.autograd.grad`` for the losses, forward for softmax and friends),
  ``vs torch`` = torch's time / fastmle's time (above 1: fastmle is faster), and
  ``rel err`` = max |fastmle - torch| / max |torch| over the gradient (or output).
- ``compile ms``: the torch.compile'd torch function for the cached float32
  cross-entropy case, if it compiles there within the time budget.

Raw numbers go to ``OUTDIR/gpu_check.json`` (written atomically). The
CPU-side parts (arguments, the case list, the byte model, the table, the JSON writer)
are tested without a GPU by ``tests/test_gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing fastmle
    sys.path.insert(0, str(ROOT))

JSON_NAME = "gpu_check.json"
SCHEMA = 1

# the fastmle kernel paths (fastmle/cuda/_kernels.py) and the cases that take them
KERNEL_PATHS = {
    "ce_index/cached": "cross-entropy, class indices, rows cached in shared memory",
    "ce_index/uncached": "cross-entropy, class indices, rows re-read from global memory",
    "ce_index/short_rows": "cross-entropy, class indices, several rows per block",
    "ce_index/loss_only": "cross-entropy value only (no gradient written)",
    "ce_prob": "cross-entropy with class-probability targets",
    "softmax/cached": "softmax, rows cached",
    "softmax/uncached": "softmax, rows re-read",
    "log_softmax": "log_softmax",
    "logsumexp": "logsumexp",
    "elementwise/bce_with_logits": "binary cross-entropy with logits",
    "elementwise/bce": "binary cross-entropy on probabilities",
    "elementwise/gaussian": "Gaussian negative log-likelihood (heteroscedastic)",
    "elementwise/mse": "mean squared error",
    "elementwise/kl": "KL divergence",
    "elementwise/poisson": "Poisson negative log-likelihood (log rate)",
}


# --- arguments and the case list (no GPU) ------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="gpu_check.py",
        description="Time every fastmle GPU kernel path against a device copy and torch.",
    )
    p.add_argument("outdir", help="directory for gpu_check.json (created if missing)")
    p.add_argument(
        "--quick", action="store_true", help="small inputs (2**22 elements), 5 repeats: a smoke run"
    )
    p.add_argument(
        "--repeat", type=int, default=None, help="timed calls per case (default 30, 5 with --quick)"
    )
    p.add_argument(
        "--dtypes",
        default="float32,float64",
        help="comma-separated, from float32,float64 (default both)",
    )
    p.add_argument(
        "--elements",
        type=int,
        default=None,
        help="elements of the large operand per case (default 2**26, a "
        "256 MB float32 array; 2**22 with --quick)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=240.0,
        help="wall-clock budget: cases after it are skipped (default 240)",
    )
    p.add_argument(
        "--no-torch-compile", action="store_true", help="skip the torch.compile comparisons"
    )
    a = p.parse_args(argv)
    dts = [d.strip() for d in a.dtypes.split(",") if d.strip()]
    bad = [d for d in dts if d not in ("float32", "float64")]
    if bad or not dts:
        p.error(f"--dtypes takes float32 and/or float64, got {a.dtypes!r}")
    a.dtypes = dts
    if a.repeat is None:
        a.repeat = 5 if a.quick else 30
    if a.repeat < 1:
        p.error("--repeat must be at least 1")
    if a.elements is None:
        a.elements = 2**22 if a.quick else 2**26
    if a.elements < 2**12:
        p.error("--elements must be at least 4096")
    if a.budget_s <= 0:
        p.error("--budget-s must be positive")
    return a


ITEMSIZE = {"float32": 4, "float64": 8}


def cases(elements: int, dtypes) -> list[dict]:
    """The cases: name, kernel path, fastmle function, shape, dtype and the compulsory
    bytes (inputs read once + outputs written once; a scalar loss counts nothing)."""
    out = []

    def add(path, fn, shape, dt, read, write, **extra):
        s = ITEMSIZE[dt]
        n = math.prod(shape)
        out.append(
            {
                "name": f"{path} {dt} {'x'.join(map(str, shape))}",
                "path": path,
                "function": fn,
                "shape": list(shape),
                "dtype": dt,
                "bytes": int(read(n, s) + write(n, s)),
                **extra,
            }
        )

    for dt in dtypes:
        for c, path in (
            (4096, "ce_index/cached"),
            (32768, "ce_index/uncached"),
            (128, "ce_index/short_rows"),
        ):
            rows = max(1, elements // c)
            # logits read, gradient written, int64 labels read
            add(
                path,
                "cross_entropy_value_and_grad",
                (rows, c),
                dt,
                lambda n, s, r=rows: n * s + r * 8,
                lambda n, s: n * s,
                target="labels",
            )
        rows = max(1, elements // 4096)
        add(
            "ce_index/loss_only",
            "cross_entropy",
            (rows, 4096),
            dt,
            lambda n, s, r=rows: n * s + r * 8,
            lambda n, s: 0,
            target="labels",
        )
        add(
            "ce_prob",
            "cross_entropy_value_and_grad",
            (rows, 4096),
            dt,
            lambda n, s: 2 * n * s,
            lambda n, s: n * s,
            target="probs",
        )
        add("softmax/cached", "softmax", (rows, 4096), dt, lambda n, s: n * s, lambda n, s: n * s)
        r2 = max(1, elements // 32768)
        add("softmax/uncached", "softmax", (r2, 32768), dt, lambda n, s: n * s, lambda n, s: n * s)
        add("log_softmax", "log_softmax", (rows, 4096), dt, lambda n, s: n * s, lambda n, s: n * s)
        add(
            "logsumexp",
            "logsumexp",
            (rows, 4096),
            dt,
            lambda n, s, r=rows: n * s,
            lambda n, s, r=rows: r * s,
        )
        shape = (max(1, elements // 1024), 1024)
        for path, fn, n_in, n_out in (
            (
                "elementwise/bce_with_logits",
                "binary_cross_entropy_with_logits_value_and_grad",
                2,
                1,
            ),
            ("elementwise/bce", "binary_cross_entropy_value_and_grad", 2, 1),
            # input, target, var read; gradient and d/dvar written
            ("elementwise/gaussian", "gaussian_nll_loss_value_and_grad", 3, 2),
            ("elementwise/mse", "mse_loss_value_and_grad", 2, 1),
            ("elementwise/kl", "kl_div_value_and_grad", 2, 1),
            ("elementwise/poisson", "poisson_nll_loss_value_and_grad", 2, 1),
        ):
            add(
                path, fn, shape, dt, lambda n, s, k=n_in: k * n * s, lambda n, s, k=n_out: k * n * s
            )
    return out


# --- the report (no GPU) ---------------------------------------------------------


def _fmt(v, spec, missing="-"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return missing
    return format(v, spec)


def format_table(report: dict) -> str:
    """The per-case table of a report (as written to the JSON)."""
    head = (
        f"{'case':<50}{'ms':>9}{'GB/s':>8}{'%copy':>7}{'torch ms':>10}"
        f"{'vs torch':>9}{'rel err':>9}{'compile ms':>11}"
    )
    lines = []
    meta = report.get("meta", {})
    if meta:
        lines.append(
            f"device: {meta.get('device', '?')}  torch {meta.get('torch', '?')}  "
            f"numba-cuda {meta.get('numba_cuda', '?')}  elements/case {meta.get('elements')}"
        )
    lines += [head, "-" * len(head)]
    for c in report.get("cases", []):
        if c.get("error"):
            lines.append(f"{c['name']:<50}  ERROR {c['error'].splitlines()[0][:60]}")
            continue
        if c.get("skipped"):
            lines.append(f"{c['name']:<50}  skipped: {c['skipped']}")
            continue
        t, tt = c.get("seconds"), c.get("torch_seconds")
        tc = c.get("torch_compile_seconds")
        lines.append(
            f"{c['name']:<50}{_fmt(t and t * 1e3, '.3f'):>9}{_fmt(c.get('gbps'), '.0f'):>8}"
            f"{_fmt(c.get('pct_copy'), '.0f'):>6}%{_fmt(tt and tt * 1e3, '.3f'):>10}"
            f"{_fmt(c.get('vs_torch'), '.2f'):>9}{_fmt(c.get('rel_err'), '.1e'):>9}"
            f"{_fmt(tc and tc * 1e3, '.3f'):>11}"
        )
    fit = report.get("fit")
    if fit:
        lines.append(f"logistic fit: {json.dumps(fit, sort_keys=True)}")
    for e in report.get("errors", []):
        lines.append(f"error: {e.splitlines()[0][:100]}")
    return "\n".join(lines)


def write_json(outdir, report: dict) -> Path:
    """Write ``report`` to OUTDIR/gpu_check.json atomically (creating OUTDIR)."""
    d = Path(outdir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / JSON_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def derived(
    case: dict, seconds: float | None, copy_seconds: float | None, torch_seconds: float | None
) -> dict:
    """GB/s, % of the copy of the same bytes and the speed ratio to torch."""
    out = {"gbps": None, "copy_gbps": None, "pct_copy": None, "vs_torch": None}
    if seconds and seconds > 0:
        out["gbps"] = case["bytes"] / seconds / 1e9
    if copy_seconds and copy_seconds > 0:
        out["copy_gbps"] = case["bytes"] / copy_seconds / 1e9
        if out["gbps"] is not None:
            out["pct_copy"] = 100.0 * out["gbps"] / out["copy_gbps"]
    if seconds and torch_seconds:
        out["vs_torch"] = torch_seconds / seconds
    return out


# --- on the device ------------------------------------------------------------------


def _timer(torch, repeat):
    def run(fn):
        for _ in range(2):  # warm-up (the first call compiles)
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeat):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        return statistics.median(times)

    return run


def _data(torch, case, dev="cuda"):
    dt = getattr(torch, case["dtype"])
    g = torch.Generator(device=dev).manual_seed(0)
    shape = tuple(case["shape"])
    x = torch.randn(shape, dtype=dt, device=dev, generator=g) * 3
    fn = case["function"]
    if fn.startswith("cross_entropy"):
        if case.get("target") == "probs":
            t = torch.softmax(torch.randn(shape, dtype=dt, device=dev, generator=g), -1)
        else:
            t = torch.randint(0, shape[-1], shape[:-1], device=dev, generator=g)
        return x, t
    if fn.startswith("binary_cross_entropy_with_logits"):
        return x, torch.rand(shape, dtype=dt, device=dev, generator=g)
    if fn.startswith("binary_cross_entropy"):
        return torch.rand(shape, dtype=dt, device=dev, generator=g).clamp_(
            1e-3, 1 - 1e-3
        ), torch.rand(shape, dtype=dt, device=dev, generator=g)
    if fn.startswith("gaussian"):
        return (
            x,
            torch.randn(shape, dtype=dt, device=dev, generator=g),
            torch.rand(shape, dtype=dt, device=dev, generator=g) + 0.1,
        )
    if fn.startswith("kl_div"):
        return torch.log_softmax(x, -1), torch.softmax(
            torch.randn(shape, dtype=dt, device=dev, generator=g), -1
        )
    if fn.startswith("poisson"):  # log rates, counts
        return x / 3, torch.poisson(torch.exp(x / 3), generator=g)
    return (
        (x,)
        if fn in ("softmax", "log_softmax", "logsumexp")
        else (x, torch.randn(shape, dtype=dt, device=dev, generator=g))
    )


def _torch_ref(torch, case, args):
    """(callable timed, callable giving the comparable output)."""
    F = torch.nn.functional
    fn = case["function"]
    if fn in ("softmax", "log_softmax"):
        f = getattr(torch, fn)
        return (lambda: f(args[0], -1)), (lambda: f(args[0], -1))
    if fn == "logsumexp":
        return (lambda: torch.logsumexp(args[0], -1)), (lambda: torch.logsumexp(args[0], -1))
    if fn == "cross_entropy":
        return (lambda: F.cross_entropy(*args)), (lambda: F.cross_entropy(*args))
    loss = {
        "cross_entropy_value_and_grad": lambda x, *r: F.cross_entropy(x, *r),
        "binary_cross_entropy_with_logits_value_and_grad": lambda x, y: (
            F.binary_cross_entropy_with_logits(x, y)
        ),
        "binary_cross_entropy_value_and_grad": lambda x, y: F.binary_cross_entropy(x, y),
        "gaussian_nll_loss_value_and_grad": lambda x, y, v: F.gaussian_nll_loss(x, y, v),
        "mse_loss_value_and_grad": lambda x, y: F.mse_loss(x, y),
        "kl_div_value_and_grad": lambda x, y: F.kl_div(x, y, reduction="mean"),
        "poisson_nll_loss_value_and_grad": lambda x, y: F.poisson_nll_loss(x, y),
    }[fn]
    xr = args[0].detach().requires_grad_(True)
    rest = list(args[1:])
    wrt = [xr]
    if fn.startswith("gaussian"):
        rest[1] = rest[1].detach().requires_grad_(True)
        wrt.append(rest[1])

    def fwd_bwd():
        val = loss(xr, *rest)
        return torch.autograd.grad(val, wrt)

    return fwd_bwd, (lambda: fwd_bwd()[0])


def _fastmle_call(fm, case, args):
    """(callable timed, callable giving the output comparable with torch's)."""
    fn = getattr(fm, case["function"])
    if case["function"].endswith("value_and_grad"):
        import torch

        out = torch.empty_like(args[0])
        return (lambda: fn(*args, out=out)), (lambda: (fn(*args, out=out), out)[1])
    if case["function"] in ("softmax", "log_softmax", "logsumexp"):
        return (lambda: fn(args[0], -1)), (lambda: fn(args[0], -1))
    return (lambda: fn(*args)), (lambda: fn(*args))


def _rel_err(torch, got, ref) -> float:
    got = torch.as_tensor(got, device=ref.device).to(ref.dtype).reshape(ref.shape)
    scale = ref.abs().max().item()
    return (got - ref).abs().max().item() / (scale or 1.0)


def run_device(args) -> dict:
    import warnings

    import numba
    import torch

    warnings.filterwarnings("ignore", category=UserWarning)  # kl_div's "mean" notice
    try:
        from numba.core.errors import NumbaPerformanceWarning

        warnings.filterwarnings("ignore", category=NumbaPerformanceWarning)
    except ImportError:
        pass

    import fastmle as fm

    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch")
    try:
        from importlib.metadata import version

        ncv = version("numba-cuda")
    except Exception:
        ncv = "?"
    report = {
        "schema": SCHEMA,
        "meta": {
            "device": torch.cuda.get_device_name(0),
            "capability": list(torch.cuda.get_device_capability(0)),
            "torch": torch.__version__,
            "numba": numba.__version__,
            "numba_cuda": ncv,
            "python": platform.python_version(),
            "elements": args.elements,
            "repeat": args.repeat,
            "dtypes": args.dtypes,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "cases": [],
        "errors": [],
    }
    timeit = _timer(torch, args.repeat)
    copy_cache: dict[int, float] = {}

    def copy_seconds(nbytes):
        half = max(1, nbytes // 2)
        if half not in copy_cache:
            src = torch.empty(half, dtype=torch.uint8, device="cuda")
            dst = torch.empty_like(src)
            copy_cache[half] = timeit(lambda: dst.copy_(src))
            del src, dst
        return copy_cache[half]

    compile_left = not args.no_torch_compile
    for case in cases(args.elements, args.dtypes):
        rec = dict(case)
        report["cases"].append(rec)
        if time.perf_counter() > deadline:
            rec["skipped"] = "over the time budget"
            continue
        try:
            data = _data(torch, case)
            call, result = _fastmle_call(fm, case, data)
            rec["seconds"] = timeit(call)
            rec["copy_seconds"] = copy_seconds(case["bytes"])
            ref_call, ref_result = _torch_ref(torch, case, data)
            rec["torch_seconds"] = timeit(ref_call)
            rec["rel_err"] = _rel_err(torch, result(), ref_result())
            rec.update(derived(case, rec["seconds"], rec["copy_seconds"], rec["torch_seconds"]))
            if (
                compile_left
                and case["path"] == "ce_index/cached"
                and case["dtype"] == "float32"
                and time.perf_counter() < deadline - 60
            ):
                try:
                    cfn = torch.compile(ref_call)
                    rec["torch_compile_seconds"] = timeit(cfn)
                except Exception as e:  # torch.compile unusable here: say so once
                    compile_left = False
                    report["errors"].append(f"torch.compile: {type(e).__name__}: {e}")
            del data
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}"
        torch.cuda.empty_cache()
        write_json(args.outdir, report)  # partial results survive a timeout
    report["fit"] = _fit_check(deadline)
    report["meta"]["seconds"] = time.perf_counter() - t_start
    return report


def _fit_check(deadline) -> dict:
    """A CuPy logistic fit vs the CPU fit, where fastmle fits on device arrays."""
    if time.perf_counter() > deadline:
        return {"skipped": "over the time budget"}
    try:
        import cupy as cp
        import numpy as np

        from fastmle import LogisticRegression
    except Exception as e:
        return {"skipped": f"{type(e).__name__}: {e}"}
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200_000, 32))
    y = (X @ rng.standard_normal(32) + rng.standard_normal(200_000) > 0).astype(np.int64)
    res = {}
    try:
        t = time.perf_counter()
        cpu = LogisticRegression().fit(X, y)
        res["cpu_seconds"] = time.perf_counter() - t
        Xd, yd = cp.asarray(X), cp.asarray(y)
        t = time.perf_counter()
        gpu = LogisticRegression().fit(Xd, yd)
        cp.cuda.Device().synchronize()
        res["cupy_seconds"] = time.perf_counter() - t
        res["max_coef_diff"] = float(
            np.max(np.abs(np.asarray(getattr(gpu.coef_, "get", lambda: gpu.coef_)()) - cpu.coef_))
        )
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run_device(args)
    path = write_json(args.outdir, report)
    print(format_table(report))
    print(f"raw numbers: {path}")
    return 1 if any(c.get("error") for c in report["cases"]) else 0


if __name__ == "__main__":
    sys.exit(main())
