"""Threads, forked workers, the on-disk cache, lazy compilation and memory use."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import fastmle as fm

ROOT = Path(__file__).resolve().parents[1]


def _data(seed=0, n=4096, c=37):  # several chunks: the pool takes part
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)).astype(np.float32)
    t = rng.integers(0, c, n)
    return x, t


def _work(seed):
    x, t = _data(seed)
    loss, grad = fm.cross_entropy_value_and_grad(x, t)
    b_loss, b_grad = fm.binary_cross_entropy_with_logits_value_and_grad(x, (x > 0).astype(x.dtype))
    return float(loss), grad.tobytes(), float(b_loss), b_grad.tobytes()


def test_many_threads_at_once_give_the_serial_results():
    expected = [_work(s) for s in range(8)]
    results = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def worker(k):
        barrier.wait()
        for _ in range(16):
            results[k].append(_work(k))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for k in range(8):
        assert len(results[k]) == 16
        assert all(r == expected[k] for r in results[k])


def _child(seed):
    return _work(seed)


def test_forked_workers_after_parent_use():
    expected = [_work(s) for s in range(4)]  # the parent has launched kernels
    with mp.get_context("fork").Pool(2) as pool:
        got = pool.map(_child, range(4), chunksize=1)
    assert got == expected


_SCRIPT = textwrap.dedent("""
    import json, multiprocessing as mp, sys, threading
    import numpy as np
    import fastmle as fm

    def work(seed):  # several chunks each, so that fastmle's pool takes part
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((20000, 50)).astype(np.float32)
        t = rng.integers(0, 50, 20000)
        loss, grad = fm.binary_cross_entropy_with_logits_value_and_grad(x, (x > 0) * 1.0)
        return float(fm.cross_entropy(x, t)), float(loss), grad.tobytes()

    expected = [work(s) for s in range(4)]
    out = {}
    def run(k):
        out[k] = [work(k % 4) for _ in range(10)]
    ths = [threading.Thread(target=run, args=(k,)) for k in range(6)]
    [t.start() for t in ths]
    [t.join() for t in ths]
    ok_threads = all(v == [expected[k % 4]] * 10 for k, v in out.items())
    with mp.get_context("fork").Pool(2) as pool:
        ok_fork = pool.map(work, range(4)) == expected
    from numba.np.ufunc import parallel
    print(json.dumps({"numba_threads_started": parallel._is_initialized,
                      "threads": ok_threads, "fork": ok_fork}))
""")


@pytest.mark.parametrize("layer", ["workqueue", "omp", None])
def test_threads_and_fork_survive_in_a_fresh_process(layer, tmp_path):
    """Many calling threads and forked workers give the serial results whatever
    Numba's threading layer, which fastmle never starts (its kernels run on its own
    threads): workqueue used to abort with two calling threads, omp to kill forked
    children."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NUMBA_THREADING_LAYER", None)
    if layer:
        env["NUMBA_THREADING_LAYER"] = layer
    script = tmp_path / "s.py"
    script.write_text(_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res == {"numba_threads_started": False, "threads": True, "fork": True}


_CACHE_SCRIPT = textwrap.dedent("""
    import json, numpy as np
    import fastmle as fm
    from fastmle._cpu import cross_entropy as ce
    assert not ce._ce_index_kernel.signatures  # nothing compiled at import
    assert not any(k.signatures for k in ce._SHORT_ROWS.values())
    x = np.ones((4, 100), np.float32); t = np.array([0, 1, 2, 0])  # C >= 64: row kernel
    loss = float(fm.cross_entropy(x, t))
    st = ce._ce_index_kernel.stats
    import numba
    print(json.dumps({"loss": loss, "hits": sum(st.cache_hits.values()),
                      "misses": sum(st.cache_misses.values()),
                      "cache_dir": ce._ce_index_kernel._cache.cache_path,
                      "numba_cache_dir": numba.config.CACHE_DIR}))
""")


def _run_cache_script(pkg_parent, env, tmp_path, prefix=()):
    script = tmp_path / "cache_script.py"
    script.write_text(_CACHE_SCRIPT)
    script.chmod(0o644)
    proc = subprocess.run(
        [*prefix, sys.executable, str(script)],
        env=dict(env, PYTHONPATH=str(pkg_parent)),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _no_cache_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg-cache")
    return env


def _compiled_files(path):
    return [p for p in Path(path).rglob("*") if p.suffix in (".nbi", ".nbc")]


def test_kernel_helpers_raise_when_called_from_python():
    """Helpers built without a Python entry point (``jit.inner``: ~30 ms less
    compilation each) raise TypeError from Python instead of calling into the missing
    wrapper, which would crash the interpreter (hence a child process here)."""
    code = textwrap.dedent(
        """
        import numpy as np
        from fastmle._cpu import linear, rows
        x = np.arange(3.0)
        for helper, args in ((linear._dot, (x, x)), (rows.row_max, (x,))):
            try:
                helper(*args)
            except TypeError as e:
                assert "kernel helper" in str(e), e
            else:
                raise AssertionError(f"{helper} ran from Python")
        assert linear._dot.py_func(x, x) == 5.0
        assert linear._add_parts is not None and rows.sum64(x) == 3.0  # Python callers
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_lazy_compilation_and_warm_disk_cache(tmp_path):
    """Compiled kernels go to the per-user cache (keyed by version and package path),
    never into the package: pip would not know those files (issue 17 item 3)."""
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "fastmle", pkg / "fastmle", ignore=shutil.ignore_patterns("__pycache__"))
    env = _no_cache_env(tmp_path)
    cold = _run_cache_script(pkg, env, tmp_path)
    warm = _run_cache_script(pkg, env, tmp_path)
    assert cold["loss"] == warm["loss"] == pytest.approx(np.log(100.0), rel=1e-6)
    assert cold["misses"] >= 1 and cold["hits"] == 0
    assert warm["hits"] >= 1 and warm["misses"] == 0
    assert _compiled_files(pkg) == []
    version = fm.__version__
    root = tmp_path / "xdg-cache" / "fastmle" / version
    assert Path(cold["cache_dir"]).parent == root
    assert any(Path(cold["cache_dir"]).glob("*.nbi"))
    assert cold["numba_cache_dir"] == ""  # other Numba functions keep Numba's defaults


def test_numba_cache_dir_is_respected(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "fastmle", pkg / "fastmle", ignore=shutil.ignore_patterns("__pycache__"))
    env = _no_cache_env(tmp_path)
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba-dir")
    cold = _run_cache_script(pkg, env, tmp_path)
    warm = _run_cache_script(pkg, env, tmp_path)
    assert warm["hits"] >= 1 and warm["misses"] == 0
    assert Path(cold["cache_dir"]).parent == tmp_path / "numba-dir" / "fastmle" / fm.__version__
    assert _compiled_files(pkg) == [] and not (tmp_path / "xdg-cache" / "fastmle").exists()


def test_unwritable_user_cache_falls_back_to_a_temporary_directory(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "fastmle", pkg / "fastmle", ignore=shutil.ignore_patterns("__pycache__"))
    env = _no_cache_env(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env["XDG_CACHE_HOME"] = str(blocker)  # makedirs below a file fails, even for root
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    cold = _run_cache_script(pkg, env, tmp_path)
    warm = _run_cache_script(pkg, env, tmp_path)
    assert warm["hits"] >= 1 and warm["misses"] == 0
    assert Path(cold["cache_dir"]).is_relative_to(tmp_path / "tmp")
    assert "fastmle-numba-cache" in cold["cache_dir"]
    assert _compiled_files(pkg) == []


_STARTUP_SCRIPT = textwrap.dedent("""
    import json, tempfile, time
    t0 = time.perf_counter()
    from numba.core import caching
    probes, indexes = [], []
    _tf = tempfile.TemporaryFile
    def counting_tf(*a, **k):
        probes.append(k.get("dir"))
        return _tf(*a, **k)
    tempfile.TemporaryFile = counting_tf
    _li = caching.IndexDataCacheFile._load_index
    def counting_li(self):
        indexes.append(self._index_name)
        return _li(self)
    caching.IndexDataCacheFile._load_index = counting_li
    import numpy as np
    import fastmle as fm
    from fastmle._cpu import jit as _jit
    t1 = time.perf_counter()
    fm.cross_entropy(np.ones((4, 100), np.float32), np.array([0, 1, 2, 0]))
    t2 = time.perf_counter()
    s0 = time.perf_counter(); _jit._stamp = None; _jit._package_stamp(); s1 = time.perf_counter()
    print(json.dumps({"probes": len(probes), "indexes": indexes, "import": t1 - t0,
                      "first_call": t2 - t1, "stamp": s1 - s0}))
""")


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners and modes")
def test_a_shared_temporary_cache_directory_others_can_write_is_not_used(tmp_path):
    """Numba loads pickled code from its cache: the temporary-directory fallback is
    used only if it is this user's and not writable by others."""
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "fastmle", pkg / "fastmle", ignore=shutil.ignore_patterns("__pycache__"))
    env = _no_cache_env(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env["XDG_CACHE_HOME"] = str(blocker)  # the user cache cannot be made
    env["TMPDIR"] = str(tmp_path / "tmp")
    shared = tmp_path / "tmp" / f"fastmle-numba-cache-{os.getuid()}"
    shared.mkdir(parents=True)
    shared.chmod(0o777)  # as if another user had prepared it
    res = _run_cache_script(pkg, env, tmp_path)
    assert not Path(res["cache_dir"]).is_relative_to(shared)
    assert not any(shared.rglob("*.nbi"))
    # a directory of this process's own, removed at exit; never the package
    assert Path(res["cache_dir"]).is_relative_to(tmp_path / "tmp")
    assert not Path(res["cache_dir"]).exists()
    assert _compiled_files(pkg) == []


def test_warm_start_touches_only_the_kernels_it_runs(tmp_path):
    """Start-up with a warm cache (issue 12 item 5): importing probes the cache
    directory once (not once per kernel), the first call reads the index of the
    kernels it runs and no other, and the package stamp costs milliseconds."""
    env = dict(_no_cache_env(tmp_path), PYTHONPATH=str(ROOT))
    script = tmp_path / "startup.py"
    script.write_text(_STARTUP_SCRIPT)
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=str(tmp_path),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    warm = runs[1]
    assert warm["probes"] <= 1
    assert 1 <= len(warm["indexes"]) <= 3, warm["indexes"]
    assert all(n.startswith("cross_entropy.") for n in warm["indexes"])
    assert warm["stamp"] < 0.1
    assert warm["first_call"] < 10  # generous: timing is reported, not gated, here


def _setpriv():
    """A command prefix that runs as an unprivileged user, if this machine can."""
    exe = shutil.which("setpriv")
    if os.geteuid() != 0 or exe is None:
        return None
    prefix = [exe, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import numba, numpy"],
        capture_output=True,
        cwd="/",
        timeout=120,
    )
    return prefix if probe.returncode == 0 else None


def test_read_only_package_and_home_fall_back_to_a_temporary_cache(tmp_path):
    prefix = _setpriv()
    if prefix is None:
        pytest.skip("needs root, setpriv, and an interpreter an unprivileged user can run")
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="fastmle-ro-"))  # pytest's tmp_path is private
    tmp_path.chmod(0o755)
    shutil.rmtree(Path(tempfile.gettempdir()) / "fastmle-numba-cache-65534", ignore_errors=True)
    pkg = tmp_path / "ro"
    shutil.copytree(ROOT / "fastmle", pkg / "fastmle", ignore=shutil.ignore_patterns("__pycache__"))
    for p in [pkg, *pkg.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)  # owned by root: read-only for 'nobody'
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    env["HOME"] = "/nonexistent"
    env.pop("TMPDIR", None)
    env.pop("XDG_CACHE_HOME", None)
    first = _run_cache_script(pkg, env, tmp_path, prefix)
    second = _run_cache_script(pkg, env, tmp_path, prefix)
    assert first["loss"] == pytest.approx(np.log(100.0), rel=1e-6)
    assert first["cache_dir"] and "fastmle-numba-cache" in first["cache_dir"]
    assert not (pkg / "fastmle" / "__pycache__").exists()
    assert second["hits"] >= 1 and second["misses"] == 0
    shutil.rmtree(tmp_path, ignore_errors=True)


def _peak_extra(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak, result


@pytest.mark.parametrize("case", ["ce", "bce", "gauss"])
def test_value_and_grad_allocates_only_the_gradient(case):
    rng = np.random.default_rng(0)
    if case == "ce":
        x = rng.standard_normal((4096, 1000)).astype(np.float32)
        t = rng.integers(0, 1000, 4096)

        def call(out=None):
            return fm.cross_entropy_value_and_grad(x, t, out=out)
    else:
        x = rng.standard_normal(4_000_000).astype(np.float32)
        y = (rng.random(x.size) > 0.5).astype(np.float32)
        v = rng.uniform(0.5, 2, 4000).astype(np.float32)  # one variance per row of (4000, 1000)
        if case == "bce":

            def call(out=None):
                return fm.binary_cross_entropy_with_logits_value_and_grad(x, y, out=out)
        else:
            x = x.reshape(4000, 1000)
            y = y.reshape(4000, 1000)

            def call(out=None):
                return fm.gaussian_nll_loss_value_and_grad(x, y, v, out=out)

    call()  # compile outside the measurement
    expected_loss, expected_grad = call()
    # kernels use chunk-sized scratch buffers, a few per thread, independent of N
    import numba

    from fastmle._cpu.elementwise import CHUNK

    slack = 256 * 1024 + numba.get_num_threads() * 8 * CHUNK * x.itemsize
    peak, (loss, grad) = _peak_extra(lambda: call())
    assert peak <= x.nbytes + slack
    assert peak >= x.nbytes  # the gradient itself is traced: the measurement works
    x_copy = x.copy()
    peak, (loss2, grad2) = _peak_extra(lambda: call(out=x))  # in place
    assert peak <= slack
    assert loss2 == expected_loss
    g = grad2[0] if isinstance(grad2, tuple) else grad2
    assert g is x
    e = expected_grad[0] if isinstance(expected_grad, tuple) else expected_grad
    np.testing.assert_array_equal(g, e)
    x[...] = x_copy


def test_c_contiguous_float_input_is_not_copied():
    x = np.random.default_rng(0).standard_normal((256, 1000)).astype(np.float32)
    t = np.zeros(256, np.int64)
    fm.cross_entropy(x, t)
    peak, _ = _peak_extra(lambda: fm.cross_entropy(x, t))
    assert peak < x.nbytes // 10


def test_editing_any_module_invalidates_cached_kernels(tmp_path):
    """Kernels inline helpers from other modules: editing only _cpu/numerics.py, or the
    loss table they compile in (_calls.py), must recompile them, not load stale code;
    editing a module outside the kernels' folder (the CLI) must not."""
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "fastmle", pkg / "fastmle", ignore=shutil.ignore_patterns("__pycache__"))
    env = _no_cache_env(tmp_path)
    _run_cache_script(pkg, env, tmp_path)
    warm = _run_cache_script(pkg, env, tmp_path)
    assert warm["hits"] >= 1 and warm["misses"] == 0
    cli_py = pkg / "fastmle" / "cli.py"
    cli_py.write_text(cli_py.read_text() + "\n# an edit\n")
    assert _run_cache_script(pkg, env, tmp_path)["misses"] == 0
    for edit in ("_cpu/numerics.py", "_calls.py"):
        path = pkg / "fastmle" / edit
        path.write_text(path.read_text() + "\n# an edit\n")
        edited = _run_cache_script(pkg, env, tmp_path)
        assert edited["misses"] >= 1 and edited["hits"] == 0, edit
