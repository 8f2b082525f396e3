"""The CUDA compile gate: every kernel signature the public API can launch is compiled
for real GPUs (sm_80 and sm_90), without a GPU or a driver, in every CI run.

The simulator (``tests/test_cuda.py``) runs the kernels as Python and type-checks
nothing; this file proves that they compile, and within budget:

1. **Signatures from the API itself.** A subprocess (``python tests/test_cuda_compile.py
   --gate OUT.json``: numba.cuda is either the simulator or the real target per process,
   so the compile never shares a process with the simulator) calls every public function
   (each loss and softmax function of ``fastmle.__all__``, all of which dispatch a
   device input to ``fastmle.cuda._backend``) over a sweep of dtypes, target kinds, weights,
   reductions, broadcast patterns, ``out=``, strict mode and the error paths, on fake
   device arrays (numba ``DeviceNDArray`` objects with no memory behind them), and
   intercepts every kernel launch (``CUDADispatcher.__getitem__``), recording the
   dispatcher's own ``typeof_pyval`` of each argument, the block size and the dynamic
   shared memory. The gate fails if a public GPU function is not swept or a kernel
   factory of ``fastmle.cuda._kernels`` is never launched, so a new launch path cannot
   escape it.
2. **Driver-free compile.** Each distinct signature is compiled once per target with
   ``numba.cuda.compile_ptx(kernel.py_func, argtypes, cc=...)`` (with
   ``numba.cuda.dispatcher.get_current_device`` replaced by a stub of that compute
   capability: numba-cuda asks the driver for it when compiling device functions) and
   assembled with the ``ptxas`` of the ``nvidia-cuda-nvcc-cu12`` wheel (never a system
   one: an older ptxas rejects the wheels' PTX) into a cubin: ``ptxas -arch=sm_XX -v``.
3. **Budgets.** It fails on any typing or compile error, any spill, static plus dynamic
   shared memory beyond the 48 KB a block gets without opting in, or registers above the
   per-kernel budget in ``REG_BUDGET`` (today's sm_80/sm_90 counts plus headroom).

The per-kernel table (registers, spills, shared memory, estimated occupancy on an H100)
is written to the terminal by ``test_compile_table`` whatever pytest's capture setting.
``test_gate_rejects_broken_kernels`` shows that kernels the simulator runs happily (a
shared array sized at run time, a plain Python helper called from a kernel) fail here
with the typing error.

Skipped when the compiler wheels are missing: ``pip install "numba-cuda[cu12]"``
(``pip install ".[test]"`` brings them). Nothing is cached on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ((8, 0), (9, 0))
SMEM_LIMIT = 48 * 1024  # a block's shared memory without the opt-in attribute

# Register budget per kernel (the largest count over its signatures and the two
# targets), measured with numba-cuda 0.30.4 / nvidia-cuda-nvcc-cu12 12.9 and set a
# little above it: today's count rounded up to the next multiple of 8, plus 8 (one
# register-allocation step of 8 per thread). A kernel change that needs more registers
# than this must raise the budget here, with the occupancy it costs in the table
# (every 8 registers above 64 per thread costs up to one 256-thread block per SM).
REG_BUDGET = {
    "ce_labels": 32,
    "ce_params": 48,
    "ce_index[float32]": 72,
    "ce_index[float64]": 88,
    "ce_prob[float32]": 64,
    "ce_prob[float64]": 88,
    "softmax[float32]": 56,
    "softmax[float64]": 72,
    "elementwise:BCE_LOGITS[float32]": 48,
    "elementwise:BCE_LOGITS[float64]": 48,
    "elementwise:BCE_PROBS[float32]": 48,
    "elementwise:BCE_PROBS[float64]": 48,
    "elementwise:GAUSSIAN[float32]": 48,
    "elementwise:GAUSSIAN[float64]": 48,
    "elementwise:MSE[float32]": 56,
    "elementwise:MSE[float64]": 56,
    "elementwise:KL[float32]": 40,
    "elementwise:KL[float64]": 40,
    "elementwise:POISSON[float32]": 48,
    "elementwise:POISSON[float64]": 48,
    "block_sums": 40,
    "finish": 40,
    "cast": 24,
    "row_sums": 40,
    "col_sums": 40,
    "reset_errors": 24,
}

# H100 (sm_90) per-SM limits for the occupancy estimate
SM_REGS, SM_THREADS, SM_SMEM, SM_BLOCKS = 65536, 2048, 228 * 1024, 32
REG_UNIT = 256  # registers are allocated per warp in units of 256
SMEM_RESERVED = 1024  # per block, reserved by the system on sm_80+
SMEM_UNIT = 128


def _wheel_dirs() -> list[Path]:
    spec = importlib.util.find_spec("nvidia")
    if spec is None:
        return []
    return [Path(p) for p in (spec.submodule_search_locations or [])]


def compiler_tools() -> dict | None:
    """Paths of the cu12 compiler wheels' ptxas, libNVVM and NVRTC, or None."""
    found = {}
    for d in _wheel_dirs():
        ptxas = d / "cuda_nvcc" / "bin" / "ptxas"
        nvvm = d / "cuda_nvcc" / "nvvm" / "lib64" / "libnvvm.so"
        nvrtc = sorted((d / "cuda_nvrtc" / "lib").glob("libnvrtc.so*"))
        if ptxas.is_file() and os.access(ptxas, os.X_OK):
            found.setdefault("ptxas", str(ptxas))
        if nvvm.is_file():
            found.setdefault("nvvm", str(nvvm))
        if nvrtc:
            found.setdefault("nvrtc", str(nvrtc[0]))
    if len(found) < 3 or importlib.util.find_spec("numba_cuda") is None:
        return None
    return found


# --- occupancy and the table (plain Python, no CUDA) ------------------------------


def occupancy(regs: int, threads: int, smem: int) -> tuple[int, float]:
    """(blocks per SM, fraction of the SM's 64 warps) on an H100 for a block of
    ``threads`` threads using ``regs`` registers each and ``smem`` bytes of shared
    memory (static + dynamic)."""
    warps = -(-threads // 32)
    by_threads = SM_THREADS // (warps * 32)
    per_warp = -(-max(regs, 1) * 32 // REG_UNIT) * REG_UNIT
    by_regs = (SM_REGS // per_warp) // warps
    per_block = -(-smem // SMEM_UNIT) * SMEM_UNIT + SMEM_RESERVED
    by_smem = SM_SMEM // per_block
    blocks = min(SM_BLOCKS, by_threads, by_regs, by_smem)
    return blocks, blocks * warps / (SM_THREADS // 32)


def summarize(report: dict) -> list[dict]:
    """One row per kernel: worst case over its signatures of each target."""
    rows: dict[str, dict] = {}
    for sig in report["signatures"]:
        r = rows.setdefault(
            sig["kernel"],
            {
                "kernel": sig["kernel"],
                "signatures": 0,
                "block": 0,
                "regs": {},
                "spill": 0,
                "static_smem": 0,
                "dynamic_smem": 0,
                "errors": 0,
            },
        )
        r["signatures"] += 1
        r["block"] = max(r["block"], sig["block"])
        r["dynamic_smem"] = max(r["dynamic_smem"], sig["dynamic_smem"])
        for cc, res in sig["targets"].items():
            if res.get("error"):
                r["errors"] += 1
                continue
            r["regs"][cc] = max(r["regs"].get(cc, 0), res["registers"])
            r["spill"] = max(r["spill"], res["spill_stores"] + res["spill_loads"])
            r["static_smem"] = max(r["static_smem"], res["static_smem"])
    for r in rows.values():
        r["budget"] = REG_BUDGET.get(r["kernel"])
        r["smem"] = r["static_smem"] + r["dynamic_smem"]
        regs90 = r["regs"].get("sm_90", 0)
        r["blocks_per_sm"], r["occupancy"] = occupancy(regs90, r["block"], r["smem"])
    return sorted(rows.values(), key=lambda r: r["kernel"])


def format_table(rows: list[dict], report: dict) -> str:
    head = (
        f"{'kernel':<32}{'sigs':>5}{'block':>6}{'regs 80':>8}{'regs 90':>8}{'budget':>7}"
        f"{'spill':>6}{'smem st':>9}{'dyn max':>9}{'total':>8}{'blk/SM':>7}{'occ':>6}"
    )
    lines = [
        "CUDA compile gate: {} launches, {} distinct signatures, targets {}; ptxas {}".format(
            report["launches"],
            len(report["signatures"]),
            ", ".join(report["targets"]),
            report.get("ptxas_version", "?"),
        ),
        "occupancy: H100 estimate at the launch block size and the largest shared "
        "memory (static + dynamic) the kernel can be launched with",
        head,
        "-" * len(head),
    ]
    for r in rows:
        kb = lambda b: f"{b / 1024:.1f}K"  # noqa: E731
        lines.append(
            f"{r['kernel']:<32}{r['signatures']:>5}{r['block']:>6}"
            f"{r['regs'].get('sm_80', '-')!s:>8}{r['regs'].get('sm_90', '-')!s:>8}"
            f"{r['budget'] if r['budget'] is not None else '-'!s:>7}{r['spill']:>6}"
            f"{kb(r['static_smem']):>9}{kb(r['dynamic_smem']):>9}{kb(r['smem']):>8}"
            f"{r['blocks_per_sm']:>7}{r['occupancy'] * 100:>5.0f}%"
        )
    lines.append(f"compile + assemble time: {report['seconds']:.1f} s")
    return "\n".join(lines)


# --- the worker (runs in a subprocess without the simulator) ----------------------


class _FakeMemory:
    """Stands for device memory: nothing is allocated, nothing is read."""

    def view(self, *extent):
        return self


class _FakeStream:
    handle = None

    def synchronize(self):
        pass


def _install_fakes(cuda, record, host_fill):
    """Replace numba.cuda's allocation, transfer and stream entry points with fakes and
    intercept kernel launches; returns an undo function."""
    import numpy as np
    from numba.cuda import dispatcher as cd
    from numba.cuda.cudadrv import dummyarray
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    class FakeDeviceArray(DeviceNDArray):
        def __init__(self, shape, strides, dtype, stream=0, gpu_data=None):
            shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
            dtype = np.dtype(dtype)
            if strides is None:
                strides = tuple(
                    int(np.prod(shape[i + 1 :], dtype=np.int64)) * dtype.itemsize
                    for i in range(len(shape))
                )
            strides = (strides,) if isinstance(strides, int) else tuple(strides)
            self.ndim = len(shape)
            self._dummy = dummyarray.Array.from_desc(0, shape, strides, dtype.itemsize)
            self.shape = self._dummy.shape
            self.strides = self._dummy.strides
            self.dtype = dtype
            self.size = self._dummy.size
            self.alloc_size = self.size * dtype.itemsize
            self.gpu_data = gpu_data if gpu_data is not None else _FakeMemory()
            self.stream = stream

        @property
        def __cuda_array_interface__(self):
            return {
                "shape": tuple(self.shape),
                "strides": None if self.is_c_contiguous() else tuple(self.strides),
                "data": (0, False),
                "typestr": self.dtype.str,
                "stream": None,
                "version": 3,
            }

        def __getitem__(self, item):
            a = self._dummy.__getitem__(item)
            return FakeDeviceArray(a.shape, a.strides, self.dtype, gpu_data=self.gpu_data)

        def copy_to_host(self, ary=None, stream=0):
            return np.full(self.shape, host_fill[0], self.dtype)

    def device_array(shape, dtype=np.float64, strides=None, order="C", stream=0):
        return FakeDeviceArray(shape, strides, dtype)

    def to_device(obj, stream=0, copy=True, to=None):
        a = np.asarray(obj)
        return FakeDeviceArray(a.shape, a.strides if a.ndim else (), a.dtype)

    def from_cuda_array_interface(desc, owner=None, sync=True):
        return FakeDeviceArray(desc["shape"], desc.get("strides"), np.dtype(desc["typestr"]))

    class _Device:
        id = 0
        compute_capability = (9, 0)

    def getitem(self, config):
        if len(config) not in (2, 3, 4):
            raise ValueError("must specify at least the griddim and blockdim")
        griddim, blockdim = config[0], config[1]
        sharedmem = config[3] if len(config) > 3 else 0

        def launch(*args):
            record(self, griddim, blockdim, sharedmem, args)

        return launch

    saved = []

    def patch(obj, name, value):
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    patch(cuda, "device_array", device_array)
    patch(cuda, "to_device", to_device)
    patch(cuda, "from_cuda_array_interface", from_cuda_array_interface)
    patch(cuda, "default_stream", lambda: _FakeStream())
    patch(cuda, "external_stream", lambda ptr: _FakeStream())
    patch(cuda, "get_current_device", lambda: _Device())
    patch(cd.CUDADispatcher, "__getitem__", getitem)
    patch(cd.CUDADispatcher, "configure", lambda self, *a, **k: getitem(self, a))

    def undo():
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)

    return undo, FakeDeviceArray


def _kernel_label(disp) -> str:
    """'factory[variant]' of a kernel built by a fastmle.cuda._kernels factory."""
    func = disp.py_func
    factory = func.__qualname__.split(".")[0]
    name = factory.removesuffix("_kernel") if factory.endswith("_kernel") else func.__name__
    free = dict(zip(func.__code__.co_freevars, (c.cell_contents for c in func.__closure__ or ())))
    if "loss_id" in free:
        from fastmle.cuda import _kernels as K

        ids = {
            getattr(K, n): n
            for n in ("BCE_LOGITS", "BCE_PROBS", "GAUSSIAN", "MSE", "KL", "POISSON")
        }
        name = f"elementwise:{ids.get(free['loss_id'], free['loss_id'])}"
    if "nt" in free:
        name += f"[{free['nt']}]"
    return name


def _sweep(fm, dev, cai, host_fill):
    """Call every public GPU function over the argument space; returns {public name:
    number of calls that returned}."""
    import itertools

    import numpy as np

    from fastmle import cuda as fcuda

    done: dict[str, int] = {}

    def call(name, *args, **kwargs):
        try:
            getattr(fm, name)(*args, **kwargs)
        except (ValueError, TypeError):  # rejected by validation: a path, not a launch
            return
        done[name] = done.get(name, 0) + 1

    def variants(name):
        return [name, name + "_grad", name + "_value_and_grad"]

    for dt in (np.float32, np.float64):
        # cross-entropy: (N, C) and (C,), index and probability targets
        for (n, c), itype, where, weight, ii, red, eps, out in itertools.product(
            [(6, 5), (3, 700), (2, 20000), (0, 4)],
            [np.int64, np.int32, "prob"],
            ["device", "host", "cai"],
            [None, "device", "host"],
            [-100, 1],
            ["mean", "sum", "none"],
            [0.0, 0.1],
            [False, True],
        ):
            shape = (n, c)
            if itype == "prob":
                t = np.full(shape, 1.0 / c, dt)
            else:
                t = np.zeros(n, itype)
            t = dev(t) if where == "device" else cai(t) if where == "cai" else t
            w = None if weight is None else np.ones(c, dt)
            if weight == "device":
                w = dev(w)
            x = dev(np.zeros(shape, dt))
            kw = dict(weight=w, ignore_index=ii, reduction=red, label_smoothing=eps)
            for fn in variants("cross_entropy"):
                if out and fn.endswith("value_and_grad"):
                    call(fn, x, t, out=dev(np.zeros(shape, dt)), **kw)
                elif not out:
                    call(fn, x, t, **kw)
        for fn in variants("cross_entropy"):
            call(fn, dev(np.zeros(7, dt)), dev(np.array(3, np.int64)))
            call(fn, cai(np.zeros((4, 9), dt)), np.arange(4))
        # logsumexp / softmax / log_softmax
        for shape, axis in itertools.product(
            [(), (7,), (5, 9), (3, 300, 2), (2, 0, 3), (4, 20000)], [None, 0, 1, -1, 2]
        ):
            x = dev(np.zeros(shape, dt))
            for kd in (False, True):
                call("logsumexp", x, axis=axis, keepdims=kd)
            call("softmax", x, axis=axis)
            call("log_softmax", x, axis=axis)
        # element-wise losses over the operand kinds (full, column, row, scalar)
        shape = (4, 5, 6)
        op_shapes = [shape, (5, 6), (6,), (1, 5, 6), (4, 1, 1), (4, 5, 1), (1,), ()]
        zero = np.zeros(shape, dt)

        def operand(s, where, dt=dt):
            a = np.full(s, 0.5, dt)
            return dev(a) if where == "device" else cai(a) if where == "cai" else a

        for s, where, red, out in itertools.product(
            op_shapes, ["device", "host", "cai"], ["mean", "sum", "none"], [False, True]
        ):
            x = dev(zero.copy())
            o = dict(out=dev(np.zeros(shape, dt))) if out else {}

            def run(name, *args, _out=out, _o=o, **kw):
                for fn in variants(name):
                    if _out and fn.endswith("value_and_grad"):
                        call(fn, *args, **kw, **_o)
                    elif not _out:
                        call(fn, *args, **kw)

            y = operand(shape, "device")
            run("binary_cross_entropy_with_logits", x, y, weight=operand(s, where), reduction=red)
            run(
                "binary_cross_entropy_with_logits",
                x,
                y,
                pos_weight=operand(s, where),
                reduction=red,
            )
            run("binary_cross_entropy", x, y, weight=operand(s, where), reduction=red)
            run("binary_cross_entropy", x, operand(shape, where), reduction=red)
            for full in (False, True):
                run(
                    "gaussian_nll_loss",
                    x,
                    operand(s, where),
                    operand(s, where),
                    full=full,
                    reduction=red,
                )
                run("gaussian_nll_loss", x, y, 0.5, full=full, reduction=red)
            run("mse_loss", x, operand(s, where), reduction=red)
            for lt, kr in itertools.product([False, True], [red, "batchmean"]):
                run("kl_div", x, operand(s, where), reduction=kr, log_target=lt)
            for li, full in itertools.product([False, True], [False, True]):
                run(
                    "poisson_nll_loss", x, operand(s, where), log_input=li, full=full, reduction=red
                )
        for name in (
            "binary_cross_entropy_with_logits",
            "binary_cross_entropy",
            "mse_loss",
            "kl_div",
            "poisson_nll_loss",
        ):
            for fn in variants(name):
                call(fn, dev(np.zeros((0, 3), dt)), dev(np.zeros((0, 3), dt)))
                call(fn, dev(np.zeros(5, dt)), dev(np.zeros(5, dt)))
        for fn in variants("gaussian_nll_loss"):
            call(fn, dev(np.zeros((0, 3), dt)), dev(np.zeros((0, 3), dt)), 1.0)
            call(fn, dev(np.zeros((0, 3), dt)), dev(np.zeros((0, 3), dt)), dev(np.ones((0, 1), dt)))
    # strict mode and the error record: the host reads back a record that reports
    # errors, so that the reset launches run too
    host_fill[0] = 1
    fcuda.set_strict(True)
    try:
        for dt in (np.float32, np.float64):
            x = dev(np.zeros((3, 4), dt))
            for fn in variants("cross_entropy"):
                call(fn, x, dev(np.zeros(3, np.int64)))
                call(fn, x, dev(np.zeros((3, 4), dt)))
            for fn in variants("binary_cross_entropy") + variants("gaussian_nll_loss"):
                args = (x, x, x) if fn.startswith("gaussian") else (x, x)
                call(fn, *args)
    finally:
        fcuda.set_strict(False)
    try:
        fcuda.check_errors()
    except ValueError:
        pass
    host_fill[0] = 0
    return done


def _record(sweep) -> tuple[dict, int, object]:
    """Run ``sweep(dev, cai, host_fill)`` with fakes installed; returns ({(dispatcher id,
    argtypes): entry}, number of launches, sweep result)."""
    import numpy as np
    from numba import cuda

    launches = [0]
    found: dict = {}

    def record(disp, griddim, blockdim, sharedmem, args):
        launches[0] += 1
        argtypes = tuple(disp.typeof_pyval(a) for a in args)
        threads = math.prod(blockdim) if isinstance(blockdim, tuple) else int(blockdim)
        key = (id(disp), argtypes)
        e = found.setdefault(
            key, {"dispatcher": disp, "argtypes": argtypes, "block": 0, "dynamic_smem": 0}
        )
        e["block"] = max(e["block"], threads)
        e["dynamic_smem"] = max(e["dynamic_smem"], int(sharedmem))

    host_fill = [0]
    undo, fake = _install_fakes(cuda, record, host_fill)
    try:

        def dev(a):
            a = np.asarray(a)
            return fake(a.shape, a.strides if a.ndim else (), a.dtype)

        class CAI:  # a foreign device array (CuPy, torch): only the interface
            def __init__(self, a):
                self.__cuda_array_interface__ = dev(a).__cuda_array_interface__

        result = sweep(dev, CAI, host_fill)
    finally:
        undo()
    return found, launches[0], result


class _DeviceStub:
    def __init__(self, cc):
        self.compute_capability = cc
        self.id = 0


_PTXAS_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
_PTXAS_PROPS = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_PTXAS_USED = re.compile(r"Used (\d+) registers(?:.*?, (\d+) bytes smem)?")


def parse_ptxas(text: str) -> dict:
    """Registers, spills, stack and static shared memory of the entry function from
    ``ptxas -v`` output (spills are summed over every function in the module)."""
    res = {
        "registers": 0,
        "spill_stores": 0,
        "spill_loads": 0,
        "stack": 0,
        "static_smem": 0,
        "entries": 0,
    }
    in_entry = False
    for line in text.splitlines():
        if _PTXAS_ENTRY.search(line):
            in_entry = True
            res["entries"] += 1
            continue
        m = _PTXAS_PROPS.search(line)
        if m:
            res["spill_stores"] += int(m.group(2))
            res["spill_loads"] += int(m.group(3))
            if in_entry:
                res["stack"] = max(res["stack"], int(m.group(1)))
            continue
        m = _PTXAS_USED.search(line)
        if m and in_entry:
            res["registers"] = max(res["registers"], int(m.group(1)))
            res["static_smem"] = max(res["static_smem"], int(m.group(2) or 0))
            in_entry = False
    return res


def _compile_all(found: dict, ptxas: str, targets=TARGETS, keep=None) -> list[dict]:
    """compile_ptx + ptxas for each recorded signature and target; ptxas runs in the
    background while the next signature compiles. ``keep``: a directory to leave the
    PTX and cubins in (``k<n>_<arch>``, named in each target's ``file``), else a
    temporary one."""
    from numba import cuda
    from numba.cuda import dispatcher as cd

    out = []
    pending = []
    place = contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(prefix="fgate-")
    with place as tmp:
        saved = cd.get_current_device
        try:
            for n, e in enumerate(found.values()):
                disp = e["dispatcher"]
                entry = {
                    "kernel": _kernel_label(disp),
                    "argtypes": [str(t) for t in e["argtypes"]],
                    "block": e["block"],
                    "dynamic_smem": e["dynamic_smem"],
                    "targets": {},
                }
                out.append(entry)
                opts = disp.targetoptions
                for cc in targets:
                    arch = f"sm_{cc[0]}{cc[1]}"
                    cd.get_current_device = lambda cc=cc: _DeviceStub(cc)
                    try:
                        ptx, _ = cuda.compile_ptx(
                            disp.py_func,
                            e["argtypes"],
                            cc=cc,
                            debug=opts.get("debug"),
                            lineinfo=bool(opts.get("lineinfo")),
                            fastmath=bool(opts.get("fastmath")),
                            opt=opts.get("opt"),
                            launch_bounds=opts.get("launch_bounds"),
                        )
                    except Exception as exc:  # the gate's whole point: report it
                        entry["targets"][arch] = {"error": _error_text(exc)}
                        continue
                    path = Path(tmp) / f"k{n}_{arch}.ptx"
                    path.write_text(ptx)
                    dyn = ".extern .shared" in ptx
                    proc = subprocess.Popen(
                        [
                            ptxas,
                            f"-arch={arch}",
                            "-v",
                            "-o",
                            str(path.with_suffix(".cubin")),
                            str(path),
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                    pending.append((entry, arch, proc, dyn, path.stem if keep else None))
                while len(pending) > 4:
                    _finish_ptxas(*pending.pop(0))
            while pending:
                _finish_ptxas(*pending.pop(0))
        finally:
            cd.get_current_device = saved
    return out


def _error_text(exc) -> str:
    """The compile error with the kernel source line it is about. numba-cuda 0.30 lets
    some typing errors (numba core's TypingError from an overload that does not match,
    e.g. ``cuda.shared.array(n, ...)`` with a run-time ``n``) through its error context
    without the location, so the innermost type-inference constraint on the traceback
    (a frame whose ``self.loc`` is a numba ``ir.Loc``) supplies it."""
    text = f"{type(exc).__name__}: {exc}"
    loc = getattr(exc, "loc", None)
    tb = exc.__traceback__
    while tb is not None:
        cand = getattr(tb.tb_frame.f_locals.get("self"), "loc", None)
        if hasattr(cand, "filename") and hasattr(cand, "line"):
            loc = cand
        tb = tb.tb_next
    if loc is not None and getattr(loc, "filename", None):
        where = f'File "{loc.filename}", line {loc.line}'
        if where not in text:
            try:
                src = loc.strformat()
            except Exception:
                src = ""
            text += f"\n{src}" if src else f"\nat {where}"
    return text


def _finish_ptxas(entry, arch, proc, dyn, file=None):
    text, _ = proc.communicate()
    if proc.returncode != 0:
        entry["targets"][arch] = {"error": f"ptxas failed ({proc.returncode}): {text[-3000:]}"}
        return
    res = parse_ptxas(text)
    res["uses_dynamic_smem"] = dyn
    if file:
        res["file"] = file
    if res["entries"] != 1:
        res["error"] = f"ptxas reported {res['entries']} entry functions:\n{text[-3000:]}"
    entry["targets"][arch] = res


def _worker_gate(out_path: str, ptxas: str, keep=None) -> None:
    t0 = time.perf_counter()
    import fastmle as fm
    from fastmle.cuda import _kernels as K

    # every loss and softmax function runs on the GPU for a device input (the
    # estimators and warnings of fastmle.__all__ are classes, capitalized)
    public = sorted(n for n in fm.__all__ if n[:1].islower())
    factories = sorted(
        n.removesuffix("_kernel")
        for n in dir(K)
        if n.endswith("_kernel") and callable(getattr(K, n))
    )
    found, launches, done = _record(lambda dev, cai, hf: _sweep(fm, dev, cai, hf))
    t1 = time.perf_counter()
    sigs = _compile_all(found, ptxas, keep=keep)
    # dynamic shared memory: the most a launch of the kernel can ask for (the row
    # kernels cache rows up to K.SMEM_BYTES), not only what the sweep happened to ask
    for s in sigs:
        if any(r.get("uses_dynamic_smem") for r in s["targets"].values()):
            s["dynamic_smem"] = max(s["dynamic_smem"], K.SMEM_BYTES)
    version = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout
    report = {
        "public_gpu_functions": public,
        "swept": done,
        "factories": factories,
        "launched": sorted({s["kernel"].split("[")[0].split(":")[0] for s in sigs}),
        "launches": launches,
        "targets": [f"sm_{a}{b}" for a, b in TARGETS],
        "ptxas_version": (version.strip().splitlines() or ["?"])[-1],
        "record_seconds": t1 - t0,
        "seconds": time.perf_counter() - t1,
        "signatures": sigs,
    }
    Path(out_path).write_text(json.dumps(report, indent=1))


def _worker_broken(src: str, out_path: str, ptxas: str) -> None:
    """Gate the kernels of module file ``src`` (its ``run(cuda)`` launches them)."""
    spec = importlib.util.spec_from_file_location("broken_kernels", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    found, launches, _ = _record(lambda dev, cai, hf: mod.run())
    sigs = _compile_all(found, ptxas, targets=((9, 0),))
    Path(out_path).write_text(json.dumps({"launches": launches, "signatures": sigs}))


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(description="fastmle CUDA compile gate worker")
    p.add_argument("--gate", metavar="OUT_JSON")
    p.add_argument("--broken", nargs=2, metavar=("SRC_PY", "OUT_JSON"))
    p.add_argument("--keep", metavar="DIR", help="leave the PTX and cubins of --gate in DIR")
    a = p.parse_args(argv)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        print("the compile gate cannot run under the CUDA simulator", file=sys.stderr)
        return 2
    tools = compiler_tools()
    if tools is None:
        print(
            "the cu12 compiler wheels are missing: pip install 'numba-cuda[cu12]'", file=sys.stderr
        )
        return 3
    if a.gate:
        _worker_gate(a.gate, tools["ptxas"], a.keep)
    if a.broken:
        _worker_broken(a.broken[0], a.broken[1], tools["ptxas"])
    return 0


# --- the tests ------------------------------------------------------------------

TOOLS = compiler_tools()
needs_compilers = pytest.mark.skipif(
    TOOLS is None,
    reason="the CUDA compiler wheels are missing: pip install 'numba-cuda[cu12]'",
)


def _env(**extra):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.update(extra)
    return env


def _run_worker(args, env=None, timeout=600):
    r = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        env=env or _env(),
        cwd=ROOT,
        timeout=timeout,
    )
    assert r.returncode == 0, (
        f"gate worker failed ({r.returncode}):\n{r.stdout[-5000:]}\n{r.stderr[-20000:]}"
    )
    return r


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    out = tmp_path_factory.mktemp("gate") / "gate.json"
    _run_worker(["--gate", str(out)])
    return json.loads(out.read_text())


def _failures(report, check):
    bad = []
    for s in report["signatures"]:
        for arch, res in s["targets"].items():
            msg = check(s, arch, res)
            if msg:
                bad.append(f"{s['kernel']} {arch} ({', '.join(s['argtypes'])}): {msg}")
    return bad


@needs_compilers
def test_compile_table(gate, capsys):
    """Writes the per-kernel table to the terminal (visible without -s)."""
    table = format_table(summarize(gate), gate)
    with capsys.disabled():
        sys.stdout.write("\n" + table + "\n")
    assert gate["signatures"]


@needs_compilers
def test_every_public_gpu_function_and_kernel_is_swept(gate):
    missing = [n for n in gate["public_gpu_functions"] if not gate["swept"].get(n)]
    assert not missing, f"public GPU functions the gate's sweep never ran: {missing}"
    assert len(gate["public_gpu_functions"]) >= 21
    unlaunched = sorted(set(gate["factories"]) - set(gate["launched"]))
    assert not unlaunched, (
        f"kernel factories of fastmle.cuda._kernels no swept call launched: {unlaunched} "
        "(extend _sweep in tests/test_cuda_compile.py)"
    )
    assert {len(s["targets"]) for s in gate["signatures"]} == {len(TARGETS)}


@needs_compilers
def test_every_signature_compiles(gate):
    bad = _failures(gate, lambda s, a, r: r.get("error"))
    assert not bad, "kernels that do not compile:\n" + "\n\n".join(bad)


@needs_compilers
def test_no_spills(gate):
    bad = _failures(
        gate,
        lambda s, a, r: (
            (r.get("spill_stores") or r.get("spill_loads"))
            and f"{r['spill_stores']} bytes spill stores, {r['spill_loads']} bytes spill loads"
        ),
    )
    assert not bad, "register spills:\n" + "\n".join(bad)


@needs_compilers
def test_shared_memory_within_48kb(gate):
    def check(s, a, r):
        total = r.get("static_smem", 0) + s["dynamic_smem"]
        if total > SMEM_LIMIT:
            return (
                f"{r['static_smem']} B static + {s['dynamic_smem']} B dynamic = {total} B "
                f"> {SMEM_LIMIT} B"
            )

    bad = _failures(gate, check)
    assert not bad, "shared memory beyond 48 KB per block:\n" + "\n".join(bad)


@needs_compilers
def test_registers_within_budget(gate):
    def check(s, a, r):
        budget = REG_BUDGET.get(s["kernel"])
        if budget is None:
            return "no register budget: add this kernel to REG_BUDGET"
        if r.get("registers", 0) > budget:
            return f"{r['registers']} registers > budget {budget}"

    bad = _failures(gate, check)
    assert not bad, "registers above budget (tests/test_cuda_compile.py REG_BUDGET):\n" + "\n".join(
        bad
    )


BROKEN_SRC = '''\
"""Two kernels the CUDA simulator runs, which do not compile for a GPU."""
import numpy as np
from numba import cuda, float32


def twice(v):  # a plain Python function, not a @cuda.jit(device=True) one
    return v * 2.0


def kernels():
    @cuda.jit
    def runtime_shared(x, n, out):
        buf = cuda.shared.array(n, float32)  # LINE_SHARED: size known only at run time
        i = cuda.threadIdx.x
        if i < n:
            buf[i] = x[i]
        cuda.syncthreads()
        if i < n:
            out[i] = buf[n - 1 - i]

    @cuda.jit
    def python_helper(x, out):
        i = cuda.grid(1)
        if i < x.size:
            out[i] = twice(x[i])  # LINE_HELPER

    return runtime_shared, python_helper


def run():
    runtime_shared, python_helper = kernels()
    x = np.arange(8, dtype=np.float32)
    dx = cuda.to_device(x)
    d1 = cuda.to_device(np.zeros(8, np.float32))
    d2 = cuda.to_device(np.zeros(8, np.float32))
    runtime_shared[1, 8](dx, 8, d1)
    python_helper[1, 8](dx, d2)
    return d1.copy_to_host(), d2.copy_to_host()
'''


@needs_compilers
def test_gate_rejects_broken_kernels(tmp_path):
    src = tmp_path / "broken_kernels.py"
    src.write_text(BROKEN_SRC)
    lines = BROKEN_SRC.splitlines()
    line_of = {
        tag: i + 1
        for i, ln in enumerate(lines)
        for tag in ("LINE_SHARED", "LINE_HELPER")
        if tag in ln
    }
    # the simulator runs both and gets the right answers
    code = textwrap.dedent(f"""
        import importlib.util, numpy as np
        spec = importlib.util.spec_from_file_location("broken_kernels", {str(src)!r})
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        a, b = m.run()
        x = np.arange(8, dtype=np.float32)
        assert (a == x[::-1]).all() and (b == 2 * x).all(), (a, b)
        print("simulator ok")
    """)
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(NUMBA_ENABLE_CUDASIM="1"),
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0 and "simulator ok" in r.stdout, r.stdout + r.stderr
    # the gate rejects both, with the typing error, the file and the line
    out = tmp_path / "broken.json"
    _run_worker(["--broken", str(src), str(out)])
    rep = json.loads(out.read_text())
    errors = {s["kernel"]: s["targets"]["sm_90"].get("error", "") for s in rep["signatures"]}
    assert set(errors) == {"runtime_shared", "python_helper"}, errors
    for kernel, tag in (("runtime_shared", "LINE_SHARED"), ("python_helper", "LINE_HELPER")):
        err = errors[kernel]
        assert err.startswith("TypingError"), (kernel, err)
        assert re.search(rf'broken_kernels\.py", line {line_of[tag]}\b', err), (kernel, err)
    assert "shared" in errors["runtime_shared"].lower()
    assert "twice" in errors["python_helper"]


def test_occupancy_estimate():
    """The H100 occupancy model (no CUDA needed)."""
    assert occupancy(32, 256, 0) == (8, 1.0)
    assert occupancy(82, 256, 0)[0] == 2  # 2816 registers per warp: 23 warps
    assert occupancy(68, 256, 0)[0] == 3
    assert occupancy(40, 256, 46 * 1024)[0] == 4  # 47 KB per block with the reserve
    assert occupancy(16, 32, 0) == (32, 0.5)  # the 32-blocks-per-SM limit


def test_parse_ptxas():
    text = textwrap.dedent("""\
        ptxas info    : 40 bytes gmem
        ptxas info    : Function properties for helper
            8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
        ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'
        ptxas info    : Function properties for _Z1kv
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Used 56 registers, used 1 barriers, 9216 bytes smem, 400 bytes cmem[0]
        ptxas info    : Compile time = 185.510 ms
    """)
    r = parse_ptxas(text)
    assert (r["registers"], r["static_smem"], r["entries"]) == (56, 9216, 1)
    assert (r["spill_stores"], r["spill_loads"], r["stack"]) == (4, 4, 0)


if __name__ == "__main__":
    sys.exit(_main())
