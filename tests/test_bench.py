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
    monkeypatch.setattr(bench, "cases", lambda *a, **k: small)
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
    row = {
        "kernel": "k",
        "x_floor": 1.25,
        "floor": "copy",
        "x_copy_floor": 1.5,
        "loss_x_read_floor": None,
        "x_parallel_copy_floor": 2.0,
        "gb_per_s": 10.0,
        "speedup_vs_numpy": 4.0,
        "speedup_vs_torch": 0.5,
        "speedup_vs_jax": None,
    }
    line = bench.table([row]).splitlines()[-1]
    assert line == (
        "| k | 1.25x (copy) | 1.50x | n/a | 2.00x | 10.0 | 4.0x faster | 2.0x slower | n/a |"
    )


def test_add_floor_moves_the_bytes():
    assert bench.best_time(bench.add_floor(3 << 20), repeat=2) > 0
    assert bench.best_time(bench.add_floor(3 << 20, parallel=True), repeat=2) > 0


def test_floor_is_the_faster_of_one_and_all_threads(monkeypatch, capsys):
    small = [
        bench.make_case(k, bench.make_inputs(k, 2000, n_classes=50))
        for k in ("cross_entropy", "gaussian_nll_loss")
    ]
    monkeypatch.setattr(bench, "cases", lambda *a, **k: small)
    rows = bench.run(repeat=1, with_jax=False)
    assert [r["floor"] for r in rows] == ["copy", "add"]
    for r in rows:
        one, par = r[r["floor"] + "_floor_s"], r["parallel_" + r["floor"] + "_floor_s"]
        assert r["floor_s"] == min(one, par)
        assert r["x_floor"] == r["fastmle_s"] / r["floor_s"]


@pytest.mark.parametrize("kernel", bench.KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jax_contender_agrees(kernel, dtype):
    jax = bench.jax_module()
    if jax is None:
        pytest.skip("JAX is not installed")
    args = bench.make_inputs(kernel, 4000, dtype, n_classes=100)
    case = bench.make_case(kernel, args, jax=jax)
    bench.check_jax(kernel, args, case.contenders["jax"])
    assert 0 < bench.race({"jax": case.contenders["jax"]}, 1)["jax"] < math.inf


def test_bench_runs_without_jax(monkeypatch):
    monkeypatch.setattr(bench, "jax_module", lambda: None)
    case = bench.make_case("mse_loss", bench.make_inputs("mse_loss", 1000), jax=bench.jax_module())
    assert "jax" not in case.contenders


@pytest.mark.parametrize("argv", [["--only", "foo"], ["--repeat", "0"]])
def test_bad_options_exit_2_with_one_line(argv, capsys):
    # a usage error, not a traceback, before anything is timed
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m fastmle.bench: error: --")
    assert "Traceback" not in "\n".join(err)
