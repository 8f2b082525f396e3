"""Out-of-core fit: an X several times larger than the Dask workers' memory.

    python benchmarks/dask_out_of_core.py [--gb 6] [--worker-memory 1GB] [--workers 2]
        [--features 50] [--chunk-mb 32] [--format npy|zarr] [--dir DIR] [--keep]
        [--in-memory]

Writes a float64 X (and y) of ``--gb`` gigabytes to DIR (an .npy memmap or a zarr
array), fits a LogisticRegression on a Dask array read from it, chunk by chunk, by
a LocalCluster of ``--workers`` single-threaded worker processes limited to
``--worker-memory`` each, and reports the time, the workers' and the client's peak
resident memory and what the workers spilled to disk. ``--in-memory`` also fits the
memmap in this process and compares the coefficients. The files are deleted unless
``--keep``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time

import numpy as np

ROWS_WRITTEN = 250_000  # rows generated and written at a time


def write_data(directory: str, n: int, d: int, fmt: str, chunk_rows: int, seed: int = 0):
    """X ~ N(0, 1) (float32 values held as float64) and y from a logistic model."""
    rng = np.random.default_rng(seed)
    beta = rng.uniform(-0.3, 0.3, d)
    y = np.empty(n)
    if fmt == "npy":
        X = np.lib.format.open_memmap(
            os.path.join(directory, "X.npy"), mode="w+", dtype=np.float64, shape=(n, d)
        )
    else:
        import zarr

        X = zarr.create_array(
            os.path.join(directory, "X.zarr"),
            shape=(n, d),
            chunks=(chunk_rows, d),
            dtype=np.float64,
        )
    for s in range(0, n, ROWS_WRITTEN):
        e = min(n, s + ROWS_WRITTEN)
        block = rng.standard_normal((e - s, d), dtype=np.float32).astype(np.float64)
        X[s:e] = block
        y[s:e] = rng.random(e - s) < 1 / (1 + np.exp(-(block @ beta + 0.2)))
    if fmt == "npy":
        X.flush()
    np.save(os.path.join(directory, "y.npy"), y)


def _npy_rows(path, start, stop):
    return np.load(path, mmap_mode="r")[start:stop]


def npy_dask_array(path: str, rows: int):
    """A Dask array of an .npy file in chunks of ``rows`` rows, each read by its own
    task (a memmap is never put in the graph: pickling one copies its data)."""
    import dask
    import dask.array as da

    m = np.load(path, mmap_mode="r")
    n = m.shape[0]
    return da.concatenate(
        [
            da.from_delayed(
                dask.delayed(_npy_rows)(path, s, min(n, s + rows)),
                (min(n, s + rows) - s,) + m.shape[1:],
                m.dtype,
            )
            for s in range(0, n, rows)
        ]
    )


def dask_data(directory: str, fmt: str, chunk_rows: int):
    import dask.array as da

    X = (
        npy_dask_array(os.path.join(directory, "X.npy"), chunk_rows)
        if fmt == "npy"
        else da.from_zarr(os.path.join(directory, "X.zarr"))
    )
    return X, npy_dask_array(os.path.join(directory, "y.npy"), chunk_rows)


class PeakRSS:
    """This process's peak resident memory while in the block (sampled every 10 ms)."""

    def __enter__(self):
        import psutil

        self._proc, self._stop = psutil.Process(), threading.Event()
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def worker_memory(dask_worker) -> dict:
    """A worker's peak resident memory (its monitor's samples) and spilled keys."""
    return {
        "peak": max(dask_worker.monitor.quantities["memory"]),
        "spilled": len(getattr(dask_worker.data, "slow", ())),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=6.0, help="size of X in GB (1e9 bytes)")
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-memory", default="1GB")
    p.add_argument("--chunk-mb", type=float, default=32.0)
    p.add_argument("--format", choices=("npy", "zarr"), default="npy")
    p.add_argument("--solver", default="auto")
    p.add_argument("--dir", default=None, help="where to write the data (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the data files")
    p.add_argument(
        "--in-memory", action="store_true", help="also fit the memmap in this process and compare"
    )
    a = p.parse_args(argv)

    import distributed

    import fastmle as fm

    d = a.features
    n = int(a.gb * 1e9 / (8 * d))
    chunk_rows = max(1000, int(a.chunk_mb * 1e6 / (8 * d)))
    directory = tempfile.mkdtemp(dir=a.dir, prefix="fastmle-ooc-")
    try:
        t0 = time.perf_counter()
        write_data(directory, n, d, a.format, chunk_rows)
        print(
            f"X: {n} x {d} float64, {n * d * 8 / 1e9:.2f} GB ({a.format}), "
            f"{chunk_rows} rows ({chunk_rows * d * 8 / 1e6:.0f} MB) a chunk; written in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        cluster = distributed.LocalCluster(
            n_workers=a.workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=a.worker_memory,
            dashboard_address=None,
        )
        with distributed.Client(cluster) as client:
            X, y = dask_data(directory, a.format, chunk_rows)
            fm.LogisticRegression().fit(X[:20000], y[:20000])  # warm the workers up
            with PeakRSS() as rss:
                t0 = time.perf_counter()
                model = fm.LogisticRegression(solver=a.solver, verbose=1).fit(X, y)
                seconds = time.perf_counter() - t0
            workers = client.run(worker_memory)
            limit = next(iter(client.scheduler_info()["workers"].values()))["memory_limit"]
        cluster.close()
        print(
            f"Dask fit: {seconds:.1f} s, {model.n_iter_} iterations ({model.solver_}), "
            f"loglik {model.loglik_:.6f}"
        )
        for addr, w in workers.items():
            print(
                f"  worker {addr}: peak RSS {w['peak'] / 1e6:.0f} MB of a "
                f"{limit / 1e6:.0f} MB limit, {w['spilled']} keys spilled to disk"
            )
        print(f"  client: RSS {rss.start / 1e6:.0f} MB -> peak {rss.peak / 1e6:.0f} MB")
        if a.in_memory and a.format == "npy":
            t0 = time.perf_counter()
            ref = fm.LogisticRegression(solver=a.solver).fit(
                np.load(os.path.join(directory, "X.npy"), mmap_mode="r"),
                np.load(os.path.join(directory, "y.npy")),
            )
            diff = np.max(np.abs(ref.params_ - model.params_)) / np.max(np.abs(ref.params_))
            print(
                f"in-memory fit of the memmap: {time.perf_counter() - t0:.1f} s; "
                f"max |params difference| / max |params| = {diff:.1e}"
            )
    finally:
        if a.keep:
            print(f"data kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
