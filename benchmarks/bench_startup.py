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
