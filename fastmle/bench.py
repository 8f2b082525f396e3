"""``python -m fastmle.bench``: every kernel side by side with NumPy, torch and the
memory floors, in one process.

For each kernel: fastmle (``value_and_grad`` into a preallocated buffer, and the
loss alone), a plain NumPy implementation, ``torch.nn.functional`` forward +
backward (if torch is installed; same thread count as Numba), and two memory
floors measured in the same run:

- copy floor: ``np.copyto`` moving as many bytes as ``value_and_grad`` must read
  and write (cross-entropy reads the logits and the labels and writes the
  gradient);
- read floor: ``np.copyto`` moving as many bytes as the loss alone must read (a
  copy of half that size: it reads half and writes half).

``np.copyto`` runs on one thread while the kernels use all of Numba's threads, so
the table also gives the ratio to a parallel (prange) copy of the same bytes.

``softmax`` and ``log_softmax`` have no gradient function: their call (read the
logits, write the result) is timed in the value+grad column. ``logsumexp`` only
reads: it is timed in the loss column.

Each time is the minimum over ``--repeat`` rounds after a warm-up call (so
compilation is never timed); every round calls each contender once, so that all
of them see the same machine. Before timing, fastmle's result is checked against
the NumPy implementation. Ratios are what to compare: absolute times on a shared
machine drift between runs.

    python -m fastmle.bench [--quick] [--more] [--only K1,K2] [--repeat N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numba
import numpy as np

import fastmle as fm
from fastmle._cpu.threads import n_threads

#: the kernels, by the name of their fastmle function
KERNELS = (
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "gaussian_nll_loss",
    "mse_loss",
    "kl_div",
    "poisson_nll_loss",
    "logsumexp",
    "log_softmax",
    "softmax",
)
#: kernels that take (N, C) rows; the others are element-wise
ROW_KERNELS = ("cross_entropy", "logsumexp", "log_softmax", "softmax")
#: keyword arguments every contender gets (KL: torch's recommended reduction)
KWARGS = {"kl_div": {"reduction": "batchmean"}}


# --- timing ---------------------------------------------------------------------


def race(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Minimum wall time of each callable over ``rounds`` rounds.

    Parameters
    ----------
    fns : dict of str to callable
        The contenders, called without arguments.
    rounds : int
        Rounds; every round calls each contender once, in turn, so that all of
        them see the same machine (neighbours on a shared VM come and go).

    Returns
    -------
    dict of str to float
        The best time of each contender, in seconds. Each is called once before
        the first round (compilation, first-touch page faults), untimed.
    """
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def best_time(fn: Callable[[], object], repeat: int = 5) -> float:
    """Minimum wall time of ``fn()`` over ``repeat`` calls after one untimed call."""
    return race({"fn": fn}, repeat)["fn"]


@numba.njit(parallel=True, cache=True)
def _parallel_copy(dst, src):
    n = src.size
    step = 1 << 16
    for c in numba.prange((n + step - 1) // step):
        dst[c * step : min(n, (c + 1) * step)] = src[c * step : min(n, (c + 1) * step)]


def copy_floor(nbytes: int, parallel: bool = False) -> Callable[[], None]:
    """A copy that moves ``nbytes`` in all: reads ``nbytes/2``, writes ``nbytes/2``.

    Parameters
    ----------
    nbytes : int
        Bytes read plus bytes written.
    parallel : bool, default False
        False: ``np.copyto`` (one thread). True: a prange copy on Numba's threads.

    Returns
    -------
    callable
        Performs the copy when called (buffers allocated and touched once here).
    """
    n = max(1, int(nbytes // 2 // 4))
    src = np.ones(n, np.float32)
    dst = np.zeros(n, np.float32)
    if parallel:
        return lambda: _parallel_copy(dst, src)
    return lambda: np.copyto(dst, src)


@numba.njit(parallel=True, cache=True)
def _parallel_add(dst, a, b):
    n = a.size
    step = 1 << 16
    for c in numba.prange((n + step - 1) // step):
        for j in range(c * step, min(n, (c + 1) * step)):
            dst[j] = a[j] + b[j]


def add_floor(nbytes: int, parallel: bool = False) -> Callable[[], None]:
    """An add ``c = a + b`` that moves ``nbytes`` in all (reads two thirds, writes
    one third), on one thread (``np.add``) or, with ``parallel``, on Numba's threads."""
    n = max(1, int(nbytes // 3 // 4))
    a = np.ones(n, np.float32)
    b = np.ones(n, np.float32)
    dst = np.zeros(n, np.float32)
    if parallel:
        return lambda: _parallel_add(dst, a, b)
    return lambda: np.add(a, b, out=dst)


def torch_module():
    """``torch`` with Numba's thread count, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(n_threads())
    return torch


def jax_module():
    """``jax`` (float64 enabled, so float64 cases stay float64; float32 stays
    float32), or None when it is not installed. Its contenders run on the CPU."""
    try:
        import jax

        jax.devices("cpu")
    except Exception:  # not installed, or no CPU backend
        return None
    jax.config.update("jax_enable_x64", True)
    return jax


# --- inputs ---------------------------------------------------------------------


def make_inputs(
    kernel: str, size: int, dtype=np.float32, n_classes: int = 1000, seed: int = 0
) -> tuple:
    """Positional arguments of ``kernel`` with about ``size`` elements.

    Parameters
    ----------
    kernel : str
        One of :data:`KERNELS`.
    size : int
        Number of input elements (for row kernels, rounded to whole rows of
        ``n_classes``; at least one row).
    dtype : numpy dtype, default float32
    n_classes : int, default 1000
        Row length of the row kernels.
    seed : int, default 0
        Seed of the generator: the same call gives the same arrays.

    Returns
    -------
    tuple of ndarray
        ``(logits, labels)`` for cross-entropy, ``(logits,)`` for the softmax
        family, ``(input, target[, var])`` for the element-wise losses: logits
        and means standard normal, labels uniform, binary targets 0/1,
        probabilities in [0.01, 0.99], variances in [0.5, 2], KL input the log of
        a probability, Poisson log-rates with rates in [0.1, 10] and counts drawn
        from them.
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if kernel in ROW_KERNELS:
        rows = max(1, size // n_classes)
        x = rng.standard_normal((rows, n_classes), dtype=np.float64).astype(dtype)
        if kernel == "cross_entropy":
            return x, rng.integers(0, n_classes, rows)
        return (x,)
    x = rng.standard_normal(size, dtype=np.float64).astype(dtype)
    if kernel == "binary_cross_entropy_with_logits":
        return x, (rng.random(size) < 0.5).astype(dtype)
    if kernel == "binary_cross_entropy":
        p = rng.uniform(0.01, 0.99, size).astype(dtype)
        return p, (rng.random(size) < p).astype(dtype)
    if kernel == "gaussian_nll_loss":
        return x, rng.standard_normal(size).astype(dtype), rng.uniform(0.5, 2.0, size).astype(dtype)
    if kernel == "mse_loss":
        return x, rng.standard_normal(size).astype(dtype)
    if kernel == "kl_div":
        return (
            np.log(rng.uniform(0.01, 1.0, size)).astype(dtype),
            rng.uniform(0.01, 1.0, size).astype(dtype),
        )
    if kernel == "poisson_nll_loss":
        rate = rng.uniform(0.1, 10.0, size)
        return np.log(rate).astype(dtype), rng.poisson(rate).astype(dtype)
    raise ValueError(f"unknown kernel {kernel!r}")


# --- NumPy references: loss (mean, like fastmle's default) and gradient ---------


def numpy_cross_entropy(x, t):
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(x.shape[0])
    loss = np.mean(np.log(s[:, 0]) + m[:, 0] - x[rows, t])
    g = e / s
    g[rows, t] -= 1
    g /= x.shape[0]
    return loss, g


def numpy_binary_cross_entropy_with_logits(x, y):
    loss = np.mean(np.logaddexp(0, x) - x * y)
    return loss, (1 / (1 + np.exp(-x)) - y) / x.size


def numpy_binary_cross_entropy(p, y):
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    return loss, (p - y) / (p * (1 - p)) / p.size


def numpy_gaussian_nll_loss(x, y, v):
    d = x - y
    loss = np.mean(0.5 * (np.log(v) + d * d / v))
    return loss, (d / v / x.size, 0.5 * (1 / v - d * d / (v * v)) / x.size)


def numpy_mse_loss(x, y):
    d = x - y
    return np.mean(d * d), 2 * d / x.size


def numpy_kl_div(x, t, reduction="batchmean"):
    loss = np.sum(t * (np.log(t) - x)) / x.shape[0]
    return loss, -t / x.shape[0]


def numpy_poisson_nll_loss(x, t):
    ex = np.exp(x)
    return np.mean(ex - t * x), (ex - t) / x.size


def numpy_logsumexp(x):
    m = x.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]


def numpy_log_softmax(x):
    return x - numpy_logsumexp(x)[:, None]


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def numpy_reference(kernel: str) -> Callable:
    """The NumPy implementation of ``kernel`` (same arguments as fastmle's)."""
    return globals()["numpy_" + kernel]


# --- torch: forward + backward (forward only for the softmax family) ------------


def torch_contender(torch, kernel: str, args: tuple) -> Callable[[], None]:
    """A callable running ``kernel`` in torch on tensors sharing ``args``' memory.

    The losses run forward and backward (gradients of every float input that
    fastmle differentiates: ``input``, and ``var`` for the Gaussian NLL); the
    softmax family runs forward only, without autograd.
    """
    F = torch.nn.functional
    kwargs = KWARGS.get(kernel, {})
    tensors = [torch.from_numpy(a) for a in args]
    if kernel in ("logsumexp", "log_softmax", "softmax"):
        fn = {
            "logsumexp": lambda x: torch.logsumexp(x, dim=-1),
            "log_softmax": lambda x: F.log_softmax(x, dim=-1),
            "softmax": lambda x: F.softmax(x, dim=-1),
        }[kernel]

        def forward():
            with torch.no_grad():
                fn(tensors[0])

        return forward
    grads = [0, 2] if kernel == "gaussian_nll_loss" else [0]
    for i in grads:
        tensors[i].requires_grad_(True)
    fn = getattr(F, kernel)

    def forward_backward():
        for i in grads:
            tensors[i].grad = None
        fn(*tensors, **kwargs).backward()

    return forward_backward


# --- JAX: jit(value_and_grad) of the optax / jax.nn losses (forward for softmax) --


def _optax():
    try:
        import optax
    except ImportError:
        return None
    return optax


def jax_loss(jax, kernel: str) -> Callable:
    """The loss of ``kernel`` in JAX (mean reduction; KL: batchmean), a function
    of the same positional arrays as fastmle's; optax's where it has one."""
    jnp = jax.numpy
    optax = _optax()
    if kernel == "cross_entropy":
        if optax is not None:
            return lambda x, t: optax.softmax_cross_entropy_with_integer_labels(x, t).mean()
        return lambda x, t: jnp.mean(
            jax.nn.logsumexp(x, axis=-1) - jnp.take_along_axis(x, t[:, None], axis=-1)[:, 0]
        )
    if kernel == "binary_cross_entropy_with_logits":
        if optax is not None:
            return lambda x, y: optax.sigmoid_binary_cross_entropy(x, y).mean()
        return lambda x, y: jnp.mean(jax.nn.softplus(x) - x * y)
    if kernel == "binary_cross_entropy":
        return lambda p, y: (
            -jnp.mean(
                y * jnp.maximum(jnp.log(p), -100.0) + (1 - y) * jnp.maximum(jnp.log1p(-p), -100.0)
            )
        )
    if kernel == "gaussian_nll_loss":

        def gaussian(x, y, v):
            v = jnp.maximum(v, 1e-6)
            return jnp.mean(0.5 * (jnp.log(v) + (x - y) ** 2 / v))

        return gaussian
    if kernel == "mse_loss":
        if optax is not None:
            return lambda x, y: optax.squared_error(x, y).mean()
        return lambda x, y: jnp.mean((x - y) ** 2)
    if kernel == "kl_div":
        return lambda x, t: jnp.sum(jax.scipy.special.xlogy(t, t) - t * x) / x.shape[0]
    if kernel == "poisson_nll_loss":
        return lambda x, t: jnp.mean(jnp.exp(x) - t * x)
    if kernel == "logsumexp":
        return lambda x: jax.nn.logsumexp(x, axis=-1)
    if kernel == "log_softmax":
        return lambda x: jax.nn.log_softmax(x, axis=-1)
    if kernel == "softmax":
        return lambda x: jax.nn.softmax(x, axis=-1)
    raise ValueError(f"unknown kernel {kernel!r}")


def jax_contender(jax, kernel: str, args: tuple) -> Callable[[], None]:
    """A callable running ``jax.jit(jax.value_and_grad(loss))`` of ``kernel`` on
    copies of ``args`` on the CPU (gradients of ``input``, and ``var`` for the
    Gaussian NLL); the softmax family runs ``jax.jit(fn)``. Each call waits for
    the result (``block_until_ready``)."""
    cpu = jax.devices("cpu")[0]
    arrays = [jax.device_put(a, cpu) for a in args]
    loss = jax_loss(jax, kernel)
    if kernel in ("logsumexp", "log_softmax", "softmax"):
        fn = jax.jit(loss)
    else:
        fn = jax.jit(
            jax.value_and_grad(loss, argnums=(0, 2) if kernel == "gaussian_nll_loss" else 0)
        )

    def call():
        return jax.block_until_ready(fn(*arrays))

    call.jax_kernel = kernel
    call.jax_first = None  # the first result, for check_jax

    def first():
        call.jax_first = call()
        return call.jax_first

    call.first = first
    return call


def check_jax(kernel: str, args: tuple, contender) -> None:
    """Raise AssertionError if the JAX contender's loss disagrees with NumPy's (the
    peer must compute the same thing to be a fair one)."""
    out = contender.first()
    kwargs = KWARGS.get(kernel, {})
    ref = numpy_reference(kernel)(*args, **kwargs)
    if kernel in ("logsumexp", "log_softmax", "softmax"):
        got, want = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    else:
        got, want = float(out[0]), float(ref[0])
    tol = 1e-4 if args[0].dtype == np.float32 else 1e-9
    err = np.max(np.abs(got - want))
    assert err <= tol * (1 + np.max(np.abs(want))), f"{kernel}: JAX differs from NumPy by {err}"


# --- cases ----------------------------------------------------------------------


@dataclass
class Case:
    """One kernel on one set of inputs, with its contenders and byte counts."""

    name: str
    kernel: str
    args: tuple
    contenders: dict[str, Callable[[], object]] = field(default_factory=dict)
    #: bytes the full call (value_and_grad, or softmax's result) reads and writes
    rw_bytes: int | None = None
    #: bytes the loss alone reads
    r_bytes: int | None = None


def _gradient_bytes(kernel: str, args: tuple) -> int:
    if kernel == "gaussian_nll_loss":
        return args[0].nbytes + args[2].nbytes
    if kernel == "logsumexp":
        return args[0].shape[0] * args[0].itemsize
    return args[0].nbytes


def check(kernel: str, args: tuple) -> None:
    """Raise AssertionError if fastmle and NumPy disagree on ``kernel(*args)``."""
    kwargs = KWARGS.get(kernel, {})
    ref = numpy_reference(kernel)(*args, **kwargs)
    if kernel in ("logsumexp", "log_softmax", "softmax"):
        got, want = getattr(fm, kernel)(args[0]), ref
    else:
        got = float(getattr(fm, kernel)(*args, **kwargs))
        want = float(ref[0])
    tol = 1e-4 if args[0].dtype == np.float32 else 1e-9
    err = np.max(np.abs(np.asarray(got, np.float64) - want))
    assert err <= tol * (1 + np.max(np.abs(want))), f"{kernel}: fastmle differs from NumPy by {err}"


def make_case(kernel: str, args: tuple, torch=None, jax=None) -> Case:
    """The contenders for ``kernel`` on ``args``.

    Parameters
    ----------
    kernel : str
        One of :data:`KERNELS`.
    args : tuple of ndarray
        Its positional arguments, as :func:`make_inputs` makes them.
    torch : module or None
        ``torch`` to add a torch contender, None for none.
    jax : module or None
        ``jax`` to add a JAX contender, None for none.

    Returns
    -------
    Case
        Contenders ``fastmle`` (value_and_grad into a preallocated buffer; the
        softmax family: the call), ``fastmle_loss`` (the loss alone; logsumexp),
        ``numpy`` (value and gradient; the softmax family: the call),
        ``torch`` and ``jax``, and the bytes each fastmle call must move at least.
    """
    x = args[0]
    kwargs = KWARGS.get(kernel, {})
    shape = "x".join(map(str, x.shape)) if x.ndim > 1 else f"{x.size:.0e}".replace("+0", "")
    case = Case(name=f"{kernel} {x.dtype.name} {shape}", kernel=kernel, args=args)
    read = sum(a.nbytes for a in args)
    write = _gradient_bytes(kernel, args)
    ref = numpy_reference(kernel)
    if kernel == "logsumexp":
        case.r_bytes = read
        case.contenders["fastmle_loss"] = lambda: fm.logsumexp(x)
    elif kernel in ("log_softmax", "softmax"):
        case.rw_bytes = read + write
        case.contenders["fastmle"] = lambda: getattr(fm, kernel)(x)
    else:
        case.rw_bytes, case.r_bytes = read + write, read
        both = getattr(fm, kernel + "_value_and_grad")
        loss = getattr(fm, kernel)
        g = np.empty_like(x)
        case.contenders["fastmle"] = lambda: both(*args, **kwargs, out=g)
        case.contenders["fastmle_loss"] = lambda: loss(*args, **kwargs)
    case.contenders["numpy"] = lambda: ref(*args, **kwargs)
    if torch is not None:
        case.contenders["torch"] = torch_contender(torch, kernel, args)
    if jax is not None:
        case.contenders["jax"] = jax_contender(jax, kernel, args)
    return case


def cases(
    quick: bool = False,
    more: bool = False,
    torch=None,
    jax=None,
    only: tuple[str, ...] | None = None,
) -> Iterator[Case]:
    """The cases of the table, one at a time (each holds hundreds of MB).

    Every kernel in float32 on 2·10^7 elements (row kernels: 65536 x 1000), ten
    times fewer with ``quick``; ``more`` adds cross-entropy with 10 and 32768
    classes and in float64, on as many logits. ``only``: these kernels alone.
    """
    size = 2 * 10**6 if quick else 2 * 10**7
    rows = (8192 if quick else 65536) * 1000  # cross-entropy's logits, 1000 classes
    for kernel in KERNELS:
        if only and kernel not in only:
            continue
        n = rows if kernel in ROW_KERNELS else size
        yield make_case(kernel, make_inputs(kernel, n), torch, jax)
    if more and (not only or "cross_entropy" in only):
        for n_classes, dtype in ((10, np.float32), (32768, np.float32), (1000, np.float64)):
            args = make_inputs("cross_entropy", rows, dtype, n_classes=n_classes)
            yield make_case("cross_entropy", args, torch, jax)


def _ratio(a, b):
    return a / b if a is not None and b is not None else None


def _min(*values):
    values = [v for v in values if v is not None]
    return min(values) if values else None


def run(
    quick: bool = False,
    repeat: int = 7,
    more: bool = False,
    only: tuple[str, ...] | None = None,
    with_jax: bool = True,
) -> list[dict]:
    """Check and time every case; one dict of times (s) and ratios per case."""
    torch = torch_module()
    jax = jax_module() if with_jax else None
    rows = []
    for case in cases(quick, more, torch, jax, only):
        check(case.kernel, case.args)  # never time a wrong answer
        if "jax" in case.contenders:
            check_jax(case.kernel, case.args, case.contenders["jax"])
        fns = dict(case.contenders)
        elementwise = case.kernel not in ROW_KERNELS
        if case.rw_bytes:
            fns["copy_floor"] = copy_floor(case.rw_bytes)
            fns["parallel_copy_floor"] = copy_floor(case.rw_bytes, parallel=True)
            if elementwise:
                fns["add_floor"] = add_floor(case.rw_bytes)
                fns["parallel_add_floor"] = add_floor(case.rw_bytes, parallel=True)
        if case.r_bytes:
            fns["read_floor"] = copy_floor(case.r_bytes)
        t = race(fns, repeat)
        row = {"kernel": case.name}
        for key in (
            "fastmle",
            "fastmle_loss",
            "numpy",
            "torch",
            "jax",
            "copy_floor",
            "parallel_copy_floor",
            "add_floor",
            "parallel_add_floor",
            "read_floor",
        ):
            row[key + "_s"] = t.get(key)
        main = row["fastmle_s"] if row["fastmle_s"] is not None else row["fastmle_loss_s"]
        # the floor of the targets: the faster of one thread and Numba's threads,
        # of a copy (row kernels) or an add (element-wise losses)
        row["floor"] = "add" if elementwise else "copy"
        row["floor_s"] = _min(
            row[row["floor"] + "_floor_s"], row["parallel_" + row["floor"] + "_floor_s"]
        )
        row["x_floor"] = _ratio(row["fastmle_s"], row["floor_s"])
        row["x_copy_floor"] = _ratio(row["fastmle_s"], row["copy_floor_s"])
        row["x_parallel_copy_floor"] = _ratio(row["fastmle_s"], row["parallel_copy_floor_s"])
        row["loss_x_read_floor"] = _ratio(row["fastmle_loss_s"], row["read_floor_s"])
        row["speedup_vs_numpy"] = _ratio(row["numpy_s"], main)
        row["speedup_vs_torch"] = _ratio(row["torch_s"], main)
        row["speedup_vs_jax"] = _ratio(row["jax_s"], main)
        row["gb_per_s"] = (case.rw_bytes or case.r_bytes) / main / 1e9
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """The rows of :func:`run` as a Markdown table."""

    def fmt(v, spec, suffix="x"):
        return "n/a" if v is None else f"{v:{spec}}{suffix}"

    def speedup(v):
        if v is None:
            return "n/a"
        return f"{v:.1f}x faster" if v >= 1 else f"{1 / v:.1f}x slower"

    lines = [
        (
            "| kernel | value+grad / floor | value+grad / copy floor | loss / read floor | "
            "value+grad / parallel copy | GB/s | vs NumPy | vs torch | vs JAX |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        floor = (
            f"{fmt(r.get('x_floor'), '.2f')} ({r['floor']})"
            if r.get("x_floor") is not None
            else "n/a"
        )
        lines.append(
            f"| {r['kernel']} | {floor} | {fmt(r['x_copy_floor'], '.2f')} | "
            f"{fmt(r['loss_x_read_floor'], '.2f')} | {fmt(r['x_parallel_copy_floor'], '.2f')} | "
            f"{r['gb_per_s']:.1f} | {speedup(r['speedup_vs_numpy'])} | "
            f"{speedup(r['speedup_vs_torch'])} | {speedup(r.get('speedup_vs_jax'))} |"
        )
    return "\n".join(lines)


def _cpu_name() -> str:
    """The CPU Numba compiles for (``NUMBA_CPU_NAME`` when set, else the host's)."""
    import llvmlite.binding as llvm

    return numba.config.CPU_NAME or llvm.get_host_cpu_name()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by ``python -m fastmle.bench`` and ``fastmle bench``)."""
    p.add_argument("--quick", action="store_true", help="10x smaller arrays")
    p.add_argument("--repeat", type=int, default=7, help="rounds (default 7)")
    p.add_argument(
        "--more",
        action="store_true",
        help="also cross-entropy with 10 and 32768 classes, and float64",
    )
    p.add_argument(
        "--only",
        metavar="K1,K2",
        help="only these kernels (fastmle function names, comma-separated)",
    )
    p.add_argument("--no-jax", action="store_true", help="leave JAX out even if installed")
    p.add_argument("--json", metavar="FILE", help="also write the rows (times in s) as JSON")


def checked_only(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The kernels ``--only`` names (None: all), after checking the options; raises
    ValueError naming the option and the fix."""
    if args.repeat < 1:
        raise ValueError(f"--repeat must be at least 1, got {args.repeat}")
    only = tuple(k.strip() for k in args.only.split(",")) if getattr(args, "only", None) else None
    unknown = set(only or ()) - set(KERNELS)
    if unknown:
        raise ValueError(f"--only: unknown kernel(s) {sorted(unknown)}; choose from {KERNELS}")
    return only


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed options, print the table; returns exit status 0."""
    only = checked_only(args)
    with_jax = not getattr(args, "no_jax", False)
    rows = run(args.quick, args.repeat, args.more, only, with_jax)
    torch = torch_module()
    jax = jax_module() if with_jax else None
    print(
        f"fastmle {fm.__version__}, numba {numba.__version__} "
        f"({n_threads()} threads, "
        f"target CPU {_cpu_name()}), numpy {np.__version__}, "
        f"torch {torch.__version__ if torch else 'not installed'}, "
        f"jax {jax.__version__ if jax else 'not installed'}"
    )
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; the command-line entry point.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status, 0 (a bad option exits with status 2 and a one-line message).
    """
    p = argparse.ArgumentParser(
        prog="python -m fastmle.bench",
        description="Every kernel side by side with NumPy, torch and the memory floors, "
        "in one process.",
    )
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        checked_only(args)
    except ValueError as e:
        p.error(str(e))
    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
