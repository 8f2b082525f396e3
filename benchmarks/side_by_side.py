"""Side-by-side throughput of the fused kernels, in one process.

For each kernel: fastmle (value_and_grad into a preallocated buffer, and the loss
alone), a plain NumPy implementation, torch.nn.functional forward + backward (if
torch is installed; same thread count as Numba), and two memory floors measured
in the same run:

- copy floor: ``np.copyto`` moving as many bytes as value_and_grad must read and
  write (e.g. cross-entropy reads the logits and writes the gradient);
- read floor: ``np.copyto`` moving as many bytes as the loss alone must read
  (a copy of half that size: it reads half and writes half).

``np.copyto`` runs on one thread while the kernels use all of Numba's threads, so
the table also gives the ratio to a 2-thread (prange) copy of the same bytes.

Each time is the minimum over ``--repeat`` rounds after a warm-up call (so
compilation is never timed); every round calls each contender once, so that all
of them see the same machine. Ratios are what to compare: absolute times on a
shared 2-core machine drift between runs.

    python benchmarks/side_by_side.py [--quick] [--more] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numba
import numpy as np

import fastmle as fm


def race(fns, rounds):
    """Minimum time of each callable, calling them in turn every round so that all
    of them see the same machine (neighbours on a shared VM come and go)."""
    for fn in fns.values():
        fn()  # warm-up: compilation, first-touch page faults
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


@numba.njit(parallel=True, cache=True)
def _parallel_copy(dst, src):
    n = src.size
    step = 1 << 16
    for c in numba.prange((n + step - 1) // step):
        dst[c * step:min(n, (c + 1) * step)] = src[c * step:min(n, (c + 1) * step)]


def copy_floors(nbytes):
    """np.copyto (and a 2-thread copy) reading nbytes/2 and writing nbytes/2 bytes."""
    n = max(1, int(nbytes // 2 // 4))
    src = np.ones(n, np.float32)
    dst = np.zeros(n, np.float32)
    return (lambda: np.copyto(dst, src)), (lambda: _parallel_copy(dst, src))


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(numba.get_num_threads())
    return torch


# --- NumPy baselines (float32 in, float32 out; sums as NumPy does them) -----------


def numpy_ce(x, t):
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(x.shape[0])
    loss = np.mean(np.log(s[:, 0]) + m[:, 0] - x[rows, t])
    g = e / s
    g[rows, t] -= 1
    g /= x.shape[0]
    return loss, g


def numpy_bce(x, y):
    loss = np.mean(np.logaddexp(0, x) - x * y)
    g = (1 / (1 + np.exp(-x)) - y) / x.size
    return loss, g


def numpy_gauss(x, y, v):
    d = x - y
    loss = np.mean(0.5 * (np.log(v) + d * d / v))
    return loss, (d / v / x.size, 0.5 * (1 / v - d * d / (v * v)) / x.size)


# --- cases ------------------------------------------------------------------------


def ce_case(rng, torch, n_rows, n_cls, dtype=np.float32):
    x = rng.standard_normal((n_rows, n_cls)).astype(dtype)
    t = rng.integers(0, n_cls, n_rows)
    g = np.empty_like(x)
    ce = dict(
        name=f"cross_entropy {np.dtype(dtype).name} {n_rows}x{n_cls}",
        rw_bytes=2 * x.nbytes, r_bytes=x.nbytes,
        fastmle=lambda: fm.cross_entropy_value_and_grad(x, t, out=g),
        fastmle_loss=lambda: fm.cross_entropy(x, t),
        numpy=lambda: numpy_ce(x, t),
        check=lambda: (fm.cross_entropy_value_and_grad(x, t), numpy_ce(x, t)),
    )
    if torch is not None:
        xt = torch.from_numpy(x).requires_grad_(True)
        tt = torch.from_numpy(t)

        def torch_ce():
            xt.grad = None
            torch.nn.functional.cross_entropy(xt, tt).backward()

        ce["torch"] = torch_ce
    return ce


def cases(quick, more=False):
    rng = np.random.default_rng(0)
    n_rows, n_cls = (8192, 1000) if quick else (65536, 1000)
    n = 2 * 10**6 if quick else 2 * 10**7
    torch = _torch()
    ce = ce_case(rng, torch, n_rows, n_cls)

    xb = rng.standard_normal(n, dtype=np.float32)
    yb = (rng.random(n) > 0.5).astype(np.float32)
    gb = np.empty_like(xb)
    bce = dict(
        name=f"bce_with_logits float32 {n:.0e}",
        rw_bytes=3 * xb.nbytes, r_bytes=2 * xb.nbytes,
        fastmle=lambda: fm.binary_cross_entropy_with_logits_value_and_grad(xb, yb, out=gb),
        fastmle_loss=lambda: fm.binary_cross_entropy_with_logits(xb, yb),
        numpy=lambda: numpy_bce(xb, yb),
        check=lambda: (fm.binary_cross_entropy_with_logits_value_and_grad(xb, yb),
                       numpy_bce(xb, yb)),
    )
    vb = rng.uniform(0.5, 2.0, n).astype(np.float32)
    gauss = dict(
        name=f"gaussian_nll float32 {n:.0e}",
        rw_bytes=5 * xb.nbytes, r_bytes=3 * xb.nbytes,
        fastmle=lambda: fm.gaussian_nll_loss_value_and_grad(xb, yb, vb, out=gb),
        fastmle_loss=lambda: fm.gaussian_nll_loss(xb, yb, vb),
        numpy=lambda: numpy_gauss(xb, yb, vb),
        check=lambda: (fm.gaussian_nll_loss_value_and_grad(xb, yb, vb),
                       numpy_gauss(xb, yb, vb)),
    )
    if torch is not None:
        xbt = torch.from_numpy(xb).requires_grad_(True)
        ybt = torch.from_numpy(yb)
        vbt = torch.from_numpy(vb).requires_grad_(True)

        def torch_bce():
            xbt.grad = None
            torch.nn.functional.binary_cross_entropy_with_logits(xbt, ybt).backward()

        def torch_gauss():
            xbt.grad = None
            vbt.grad = None
            torch.nn.functional.gaussian_nll_loss(xbt, ybt, vbt).backward()

        bce["torch"] = torch_bce
        gauss["torch"] = torch_gauss
    extra = []
    if more:  # other class counts and float64, same number of logits
        size = n_rows * n_cls
        extra = [ce_case(rng, torch, size // 10, 10), ce_case(rng, torch, size // 32768, 32768),
                 ce_case(rng, torch, n_rows, n_cls, np.float64)]
    return [ce, bce, gauss] + extra


def run(quick=False, repeat=7, more=False):
    rows = []
    for case in cases(quick, more):
        (loss, _), (ref_loss, _) = case["check"]()  # never time a wrong answer
        loss, ref_loss = float(loss), float(ref_loss)
        assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss) + 1e-6, case["name"]
        copy, pcopy = copy_floors(case["rw_bytes"])
        read, _ = copy_floors(case["r_bytes"])
        fns = dict(fastmle=case["fastmle"], fastmle_loss=case["fastmle_loss"],
                   numpy=case["numpy"], copy_floor=copy, read_floor=read,
                   parallel_copy_floor=pcopy)
        if "torch" in case:
            fns["torch"] = case["torch"]
        t = race(fns, repeat)
        row = dict(kernel=case["name"], **{f"{k}_s": v for k, v in t.items()})
        row.setdefault("torch_s", None)
        row["x_copy_floor"] = row["fastmle_s"] / row["copy_floor_s"]
        row["x_parallel_copy_floor"] = row["fastmle_s"] / row["parallel_copy_floor_s"]
        row["loss_x_read_floor"] = row["fastmle_loss_s"] / row["read_floor_s"]
        row["speedup_vs_numpy"] = row["numpy_s"] / row["fastmle_s"]
        row["speedup_vs_torch"] = row["torch_s"] / row["fastmle_s"] if row["torch_s"] else None
        rows.append(row)
    return rows


def table(rows):
    head = ("| kernel | value+grad / copy floor | loss / read floor | value+grad / 2-thread "
            "copy | vs NumPy | vs torch |\n|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        torch_col = f"{r['speedup_vs_torch']:.1f}x faster" if r["speedup_vs_torch"] else "n/a"
        lines.append(
            f"| {r['kernel']} | {r['x_copy_floor']:.2f}x | {r['loss_x_read_floor']:.2f}x | "
            f"{r['x_parallel_copy_floor']:.2f}x | "
            f"{r['speedup_vs_numpy']:.1f}x faster | {torch_col} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10x smaller arrays")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--more", action="store_true",
                   help="also cross-entropy with 10 and 32768 classes, and float64")
    p.add_argument("--json", help="also write the raw timings to this file")
    args = p.parse_args(argv)
    rows = run(args.quick, args.repeat, args.more)
    print(f"numba threads: {numba.get_num_threads()}, threading layer: "
          f"{fm._threading.threading_layer()}")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
