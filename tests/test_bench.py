"""Tests of fastmle.bench (``python -m fastmle.bench``) on small inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fastmle import bench


@pytest.mark.parametrize("kernel", bench.KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_contender_runs_and_agrees(kernel, dtype):
    args = bench.make_inputs(kernel, 4000, dtype, n_classes=100)
    bench.check(kernel, args)  # fastmle agrees with the NumPy reference
    case = bench.make_case(kernel, args, bench.torch_module())
    assert "numpy" in case.contenders
    assert ("fastmle" in case.contenders) != (kernel == "logsumexp")
    assert case.rw_bytes or case.r_bytes
    times = bench.race(case.contenders, 1)
    assert set(times) == set(case.contenders)
    assert all(0 < t < math.inf for t in times.values())


def test_check_catches_a_wrong_reference(monkeypatch):
    args = bench.make_inputs("mse_loss", 1000)
    monkeypatch.setattr(bench, "numpy_mse_loss", lambda x, y: (np.mean((x - y) ** 2) + 1, None))
    with pytest.raises(AssertionError, match="differs from NumPy"):
        bench.check("mse_loss", args)


def test_inputs_are_reproducible():
    a = bench.make_inputs("gaussian_nll_loss", 100, seed=3)
    b = bench.make_inputs("gaussian_nll_loss", 100, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_copy_floor_moves_the_bytes():
    assert bench.best_time(bench.copy_floor(1 << 20), repeat=2) > 0
    assert bench.best_time(bench.copy_floor(1 << 20, parallel=True), repeat=2) > 0


def test_main_writes_table_and_json(monkeypatch, tmp_path, capsys):
    small = [bench.make_case(k, bench.make_inputs(k, 2000, n_classes=50)) for k in bench.KERNELS]
    monkeypatch.setattr(bench, "cases", lambda quick, more, torch: small)
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--repeat", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [r["kernel"].split()[0] for r in rows] == list(bench.KERNELS)
    for r in rows:
        assert r["kernel"] in printed
        assert r["gb_per_s"] > 0
    assert rows[0]["x_copy_floor"] > 0 and rows[0]["loss_x_read_floor"] > 0
    assert rows[KERNEL_INDEX["logsumexp"]]["x_copy_floor"] is None


KERNEL_INDEX = {k: i for i, k in enumerate(bench.KERNELS)}


def test_table_says_slower_below_one():
    row = {"kernel": "k", "x_copy_floor": 1.5, "loss_x_read_floor": None,
           "x_parallel_copy_floor": 2.0, "gb_per_s": 10.0, "speedup_vs_numpy": 4.0,
           "speedup_vs_torch": 0.5}
    line = bench.table([row]).splitlines()[-1]
    assert line == "| k | 1.50x | n/a | 2.00x | 10.0 | 4.0x faster | 2.0x slower |"
