"""asv benchmarks of every fastmle kernel: times, throughput and ratios, peak memory.

- ``Time*``: wall time of the value, the gradient, value_and_grad (allocating the
  gradient) and value_and_grad into a preallocated ``out=``, over dtypes and
  sizes (and class counts for cross-entropy). ``setup`` calls every function
  once, so compilation (or loading the Numba cache) is never timed.
- ``TrackKernels``: GB/s, the ratio to the copy floor (``np.copyto`` of as many
  bytes, measured in the same process) and the speed-up over NumPy, on
  :data:`data.TRACK_SIZE` float32 elements; ``TrackVsTorch``: over torch
  (skipped when torch is not installed); ``TrackVsJax``: over
  ``jax.jit(jax.value_and_grad(...))`` of the optax / ``jax.nn`` losses on the
  CPU (skipped when JAX is not installed, or the build's ``fastmle.bench`` has no
  JAX contender). All use ``fastmle.bench`` and are skipped for builds that
  predate it.
- ``PeakMem``: peak resident memory of value_and_grad with and without ``out=``
  (in place).
"""

from __future__ import annotations

import numpy as np

import fastmle

from . import data

REPEAT = 5  # timings per contender inside a track_ (the minimum is kept)


class _Loss:
    """A loss with ``L``, ``L_grad``, ``L_value_and_grad``; subclasses set kernel."""

    kernel = ""
    params = (data.DTYPES, data.SIZES)
    param_names = ("dtype", "size")
    timeout = 120

    def _inputs(self, dtype, size):
        return data.elementwise(self.kernel, size, dtype)

    def setup(self, *params):
        self.args = self._inputs(*params)
        self.value = getattr(fastmle, self.kernel)
        self.grad = getattr(fastmle, self.kernel + "_grad")
        self.both = getattr(fastmle, self.kernel + "_value_and_grad")
        self.out = np.empty_like(self.args[0])
        for fn in (self.value, self.grad, self.both):  # compile / load, first touch
            fn(*self.args)
        self.both(*self.args, out=self.out)

    def time_value(self, *params):
        self.value(*self.args)

    def time_grad(self, *params):
        self.grad(*self.args)

    def time_value_and_grad(self, *params):
        self.both(*self.args)

    def time_value_and_grad_out(self, *params):
        self.both(*self.args, out=self.out)


class TimeCrossEntropy(_Loss):
    kernel = "cross_entropy"
    params = (data.DTYPES, data.SIZES, data.CLASSES)
    param_names = ("dtype", "size", "classes")

    def _inputs(self, dtype, size, n_classes):
        return data.cross_entropy(size, n_classes, dtype)


# One Time class per element-wise loss of the registry (data.ELEMENTWISE); the
# names of the first five are kept so that their asv history continues.
_NAMES = {
    "binary_cross_entropy_with_logits": "TimeBCEWithLogits",
    "binary_cross_entropy": "TimeBCE",
    "gaussian_nll_loss": "TimeGaussianNLL",
    "mse_loss": "TimeMSE",
    "kl_div": "TimeKLDiv",
}
for _kernel in data.ELEMENTWISE:
    _name = _NAMES.get(_kernel) or "Time" + "".join(w.title() for w in _kernel.split("_"))
    globals()[_name] = type(_name, (_Loss,), {"kernel": _kernel, "__module__": __name__})


class TimeSoftmax:
    """logsumexp, log_softmax and softmax along rows of data.SOFTMAX_CLASSES."""

    params = (data.DTYPES, data.SIZES)
    param_names = ("dtype", "size")
    timeout = 120

    def setup(self, dtype, size):
        self.x = data.logits(size, data.SOFTMAX_CLASSES, dtype)
        for fn in (fastmle.logsumexp, fastmle.log_softmax, fastmle.softmax):
            fn(self.x)

    def time_logsumexp(self, dtype, size):
        fastmle.logsumexp(self.x)

    def time_log_softmax(self, dtype, size):
        fastmle.log_softmax(self.x)

    def time_softmax(self, dtype, size):
        fastmle.softmax(self.x)


# --- throughput and ratios (float32, data.TRACK_SIZE elements) -------------------


def _bench_module():
    try:
        from fastmle import bench
    except ImportError:
        raise NotImplementedError("this build has no fastmle.bench") from None
    return bench


class _Tracked:
    """Set-up shared by the track_ classes: the case of ``fastmle.bench``.

    The main call is value_and_grad into a preallocated buffer for the losses,
    the call itself for the softmax family (logsumexp: read only). Each ratio
    times both sides in the same process, alternating, and keeps the minimum of
    ``REPEAT`` calls of each.
    """

    params = (list(data.ELEMENTWISE) + ["cross_entropy", "logsumexp", "log_softmax", "softmax"],)
    param_names = ("kernel",)
    timeout = 180

    def setup(self, kernel):
        self.bench = _bench_module()
        peers = {"torch": self._torch()}
        jax = self._jax()
        if jax is not None:
            peers["jax"] = jax
        self.case = self.bench.make_case(kernel, data.inputs(kernel, data.TRACK_SIZE), **peers)
        contenders = self.case.contenders
        self.main = contenders["fastmle"] if "fastmle" in contenders else contenders["fastmle_loss"]
        self.nbytes = self.case.rw_bytes or self.case.r_bytes
        self.main()  # compile / load before anything is timed

    def _torch(self):
        return None

    def _jax(self):
        return None

    def _speedup(self, name, other):
        t = self.bench.race({"fastmle": self.main, name: other}, REPEAT)
        return t[name] / t["fastmle"]


class TrackKernels(_Tracked):
    """Throughput, copy-floor ratio and speed-up over NumPy of each kernel."""

    def track_gb_per_s(self, kernel):
        return self.nbytes / self.bench.best_time(self.main, REPEAT) / 1e9

    track_gb_per_s.unit = "GB/s"

    def track_x_copy_floor(self, kernel):
        return 1 / self._speedup("copy", self.bench.copy_floor(self.nbytes))

    track_x_copy_floor.unit = "x copy floor (np.copyto of the same bytes)"

    def track_speedup_vs_numpy(self, kernel):
        return self._speedup("numpy", self.case.contenders["numpy"])

    track_speedup_vs_numpy.unit = "x faster than NumPy"


class TrackVsTorch(_Tracked):
    """Speed-up over torch.nn.functional forward + backward (softmax family: forward)."""

    def _torch(self):
        torch = self.bench.torch_module()
        if torch is None:
            raise NotImplementedError("torch is not installed")
        return torch

    def track_speedup_vs_torch(self, kernel):
        return self._speedup("torch", self.case.contenders["torch"])

    track_speedup_vs_torch.unit = "x faster than torch"


class TrackVsJax(_Tracked):
    """Speed-up over JAX on the CPU: ``jax.jit(jax.value_and_grad(loss))`` of the
    optax / ``jax.nn`` losses (softmax family: ``jax.jit`` of the function)."""

    def _jax(self):
        bench = _bench_module()
        if not hasattr(bench, "jax_module"):
            raise NotImplementedError("this build's fastmle.bench has no JAX contender")
        jax = bench.jax_module()
        if jax is None:
            raise NotImplementedError("JAX is not installed")
        return jax

    def track_speedup_vs_jax(self, kernel):
        return self._speedup("jax", self.case.contenders["jax"])

    track_speedup_vs_jax.unit = "x faster than JAX (CPU)"


# --- peak memory -----------------------------------------------------------------


class PeakMem:
    """Peak resident memory of value_and_grad on data.TRACK_SIZE float32 elements.

    ``setup`` warms the kernels up on a small slice (same dtype, same class
    count, so the same compiled code), so that the peak is the one of the timed
    call: the inputs plus what the call allocates (the gradient, or with
    ``out=input`` only per-thread scratch; the Gaussian NLL always allocates
    ``d_var``). asv reports the whole process's peak.
    """

    params = (list(data.ELEMENTWISE) + ["cross_entropy"],)
    param_names = ("kernel",)
    timeout = 120

    def setup(self, kernel):
        self.args = data.inputs(kernel, data.TRACK_SIZE)
        self.both = getattr(fastmle, kernel + "_value_and_grad")
        small = tuple(np.array(a[:2]) for a in self.args)
        self.both(*small)
        self.both(*small, out=small[0])

    def peakmem_value_and_grad(self, kernel):
        self.both(*self.args)

    def peakmem_value_and_grad_out(self, kernel):
        self.both(*self.args, out=self.args[0])
