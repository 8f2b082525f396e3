"""asv benchmarks of start-up: time to the first result in a fresh process.

A child interpreter imports fastmle and computes one float32 cross-entropy
(64 x 1000 logits). Two times are tracked: the whole process, from spawning it to
its exit, and, inside the child, from before ``import numpy`` to the result.

The Numba cache is chosen with ``NUMBA_CACHE_DIR``, which fastmle honours before
its own choices (see ``fastmle/_jit.py``): a new empty directory for the cold
case (so the child compiles), and one that a first child has filled for the warm
case (so the child only loads). The child imports the same fastmle as this
process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

CHILD = """\
import time
t0 = time.perf_counter()
import numpy as np
import fastmle
x = np.random.default_rng(0).standard_normal((64, 1000), dtype=np.float32)
loss = fastmle.cross_entropy(x, np.arange(64) % 1000)
assert np.isfinite(loss)
print(time.perf_counter() - t0)
"""


def _child_env(cache_dir: str) -> dict:
    import fastmle

    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastmle.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def first_result(cache_dir: str) -> tuple[float, float]:
    """Run the child once; (whole process seconds, in-child import + call seconds)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=_child_env(cache_dir),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return time.perf_counter() - t0, float(out.split()[-1])


def _cache_files(cache_dir: str) -> list[str]:
    return [f for _, _, files in os.walk(cache_dir) for f in files if f.endswith(".nbi")]


class StartupCold:
    """First result with an empty Numba cache: import, compile, compute (one run)."""

    timeout = 300

    def setup(self):
        self.dirs = []

    def teardown(self):
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    def _cold(self):
        d = tempfile.mkdtemp(prefix="fastmle-asv-cold-")
        self.dirs.append(d)
        times = first_result(d)
        if not _cache_files(d):  # the child did not compile into d: not a cold start
            raise RuntimeError(f"no Numba cache index written to {d}")
        return times

    def track_process(self):
        return self._cold()[0]

    track_process.unit = "seconds"


class StartupWarm:
    """First result with a warm Numba cache; min of 3 runs.

    ``setup_cache`` fills the cache once with a first child, in the working
    directory that asv gives the benchmarks of this class (and removes after).
    """

    timeout = 300
    runs = 3

    def setup_cache(self):
        cache_dir = os.path.abspath("numba-cache-warm")
        first_result(cache_dir)
        if not _cache_files(cache_dir):
            raise RuntimeError(f"no Numba cache index written to {cache_dir}")
        return cache_dir

    def track_process(self, cache_dir):
        return min(first_result(cache_dir)[0] for _ in range(self.runs))

    track_process.unit = "seconds"

    def track_import_and_call(self, cache_dir):
        return min(first_result(cache_dir)[1] for _ in range(self.runs))

    track_import_and_call.unit = "seconds"


# --- the first call of each public function, cold --------------------------------
# One fresh process per function with an empty cache: what its first call costs a
# new user (mostly compiling the kernels it needs). Small inputs, so the time is
# compilation, not work. Estimators: ``fit`` on 500 rows.

_X = "rng.standard_normal({}, dtype=np.float32)"  # float32: the common training dtype
_LOSS_CALLS = {
    "cross_entropy": ("{x}, np.arange(64) % 100", "(64, 100)"),
    "binary_cross_entropy_with_logits": ("{x}, ({x} > 0).astype(np.float32)", "1000"),
    "binary_cross_entropy": ("1 / (1 + np.exp(-{x})), ({x} > 0).astype(np.float32)", "1000"),
    "gaussian_nll_loss": ("{x}, {x}, np.abs({x}) + 0.1", "1000"),
    "mse_loss": ("{x}, {x}", "1000"),
    "poisson_nll_loss": ("{x}, np.abs({x})", "1000"),
    "kl_div": ("{x}, np.abs({x})", "1000"),
}
FIRST_CALLS = {
    f"{name}{suffix}": f"fm.{name}{suffix}({args.format(x=_X.format(shape))})"
    for name, (args, shape) in _LOSS_CALLS.items()
    for suffix in ("", "_grad", "_value_and_grad")
}
# fewer than 64 classes take the short-rows kernel, a second one (see _cpu/cross_entropy)
FIRST_CALLS["cross_entropy_value_and_grad, 10 classes"] = (
    f"fm.cross_entropy_value_and_grad({_X.format('(64, 10)')}, np.arange(64) % 10)"
)
FIRST_CALLS.update(
    {f: f"fm.{f}({_X.format('(64, 100)')})" for f in ("logsumexp", "softmax", "log_softmax")}
)
_FIT = "X = rng.standard_normal((500, 3)); fm.{est}().fit(X, {y})"
FIRST_CALLS.update(
    {
        "LogisticRegression.fit": _FIT.format(est="LogisticRegression", y="X[:, 0] > 0"),
        "SoftmaxRegression.fit": _FIT.format(est="SoftmaxRegression", y="rng.integers(0, 3, 500)"),
        "GaussianRegression.fit": _FIT.format(est="GaussianRegression", y="X[:, 0]"),
        "PoissonRegression.fit": _FIT.format(est="PoissonRegression", y="rng.poisson(1.0, 500)"),
    }
)

CALL_CHILD = """\
import resource
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
import numpy as np
import fastmle as fm
rng = np.random.default_rng(0)
c0 = cpu()
{call}
print(cpu() - c0)
"""


def first_call_cpu(name: str, cache_dir: str) -> float:
    """CPU seconds of the first call of ``FIRST_CALLS[name]`` in a fresh process
    (after ``import fastmle``) whose Numba cache is ``cache_dir``."""
    out = subprocess.run(
        [sys.executable, "-c", CALL_CHILD.format(call=FIRST_CALLS[name])],
        env=_child_env(cache_dir),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.split()[-1])


class StartupColdCalls:
    """CPU seconds of each public function's first call with an empty cache."""

    timeout = 300
    params = list(FIRST_CALLS)
    param_names = ["function"]

    def setup(self, name):
        self.dir = tempfile.mkdtemp(prefix="fastmle-asv-cold-")

    def teardown(self, name):
        shutil.rmtree(self.dir, ignore_errors=True)

    def track_first_call_cpu(self, name):
        return first_call_cpu(name, self.dir)

    track_first_call_cpu.unit = "seconds"


if __name__ == "__main__":  # the table of the README: python benchmarks/bench_startup.py
    for name in FIRST_CALLS:
        d = tempfile.mkdtemp(prefix="fastmle-cold-")
        try:
            print(f"{name:48s} {first_call_cpu(name, d):5.2f} s CPU", flush=True)
        finally:
            shutil.rmtree(d, ignore_errors=True)
