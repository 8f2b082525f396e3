"""The CPU-side parts of benchmarks/gpu_check.py and gpu_check.sh (no GPU needed):
arguments, the case list and its byte model, the table, the JSON writer."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

import fastmle

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gc)


def test_arguments():
    a = gc.parse_args(["out"])
    assert (a.outdir, a.repeat, a.elements, a.dtypes) == ("out", 30, 2**26, ["float32", "float64"])
    assert not a.no_torch_compile
    q = gc.parse_args(["out", "--quick", "--dtypes", "float32", "--no-torch-compile"])
    assert (q.repeat, q.elements, q.dtypes, q.no_torch_compile) == (5, 2**22, ["float32"], True)
    assert gc.parse_args(["o", "--quick", "--repeat", "3", "--elements", "8192"]).repeat == 3


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["o", "--dtypes", "float16"],
        ["o", "--repeat", "0"],
        ["o", "--elements", "10"],
        ["o", "--budget-s", "0"],
        ["o", "--bogus"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        gc.parse_args(argv)
    assert e.value.code == 2


def test_cases_cover_every_kernel_path_and_public_function():
    cs = gc.cases(2**20, ["float32", "float64"])
    for dt in ("float32", "float64"):
        assert {c["path"] for c in cs if c["dtype"] == dt} == set(gc.KERNEL_PATHS)
    assert len({c["name"] for c in cs}) == len(cs)
    fns = {c["function"] for c in cs}
    assert fns <= set(fastmle.__all__)
    # every loss family's fused value-and-grad and the three row functions
    for f in (
        "cross_entropy",
        "binary_cross_entropy_with_logits",
        "binary_cross_entropy",
        "gaussian_nll_loss",
        "mse_loss",
        "kl_div",
        "poisson_nll_loss",
    ):
        assert f + "_value_and_grad" in fns
    assert {"softmax", "log_softmax", "logsumexp"} <= fns


def test_byte_model():
    cs = {(c["path"], c["dtype"]): c for c in gc.cases(2**24, ["float32", "float64"])}
    ce = cs["ce_index/cached", "float32"]
    n, c = ce["shape"]
    assert (n, c) == (2**24 // 4096, 4096)
    assert ce["bytes"] == 2 * n * c * 4 + n * 8  # logits in, gradient out, labels in
    assert cs["ce_index/loss_only", "float64"]["bytes"] == n * c * 8 + n * 8
    assert cs["ce_prob", "float32"]["bytes"] == 3 * n * c * 4
    assert cs["logsumexp", "float64"]["bytes"] == n * c * 8 + n * 8
    assert cs["softmax/uncached", "float32"]["shape"][1] == 32768
    g = cs["elementwise/gaussian", "float64"]
    assert g["bytes"] == 5 * 2**24 * 8
    assert cs["elementwise/mse", "float32"]["bytes"] == 3 * 2**24 * 4


def test_derived_numbers():
    case = {"bytes": 4e9}
    d = gc.derived(case, 0.002, 0.001, 0.004)
    assert d["gbps"] == pytest.approx(2000)
    assert d["copy_gbps"] == pytest.approx(4000)
    assert d["pct_copy"] == pytest.approx(50)
    assert d["vs_torch"] == pytest.approx(2)
    assert gc.derived(case, None, None, None) == {
        "gbps": None,
        "copy_gbps": None,
        "pct_copy": None,
        "vs_torch": None,
    }


def _report():
    cs = gc.cases(2**20, ["float32"])[:3]
    ok = dict(
        cs[0],
        seconds=1e-3,
        copy_seconds=5e-4,
        torch_seconds=2e-3,
        rel_err=1e-7,
        torch_compile_seconds=1.5e-3,
    )
    ok.update(gc.derived(ok, ok["seconds"], ok["copy_seconds"], ok["torch_seconds"]))
    return {
        "schema": gc.SCHEMA,
        "meta": {
            "device": "NVIDIA H200",
            "torch": "2.x",
            "numba_cuda": "0.30.4",
            "elements": 2**20,
        },
        "cases": [
            ok,
            dict(cs[1], error="TypingError: boom\ntraceback"),
            dict(cs[2], skipped="over the time budget"),
        ],
        "fit": {"skipped": "no cupy"},
        "errors": ["torch.compile: RuntimeError: no triton"],
    }


def test_table():
    text = gc.format_table(_report())
    lines = text.splitlines()
    assert "NVIDIA H200" in lines[0]
    assert lines[1].split()[:3] == ["case", "ms", "GB/s"]
    row = next(ln for ln in lines if ln.startswith("ce_index/cached float32"))
    assert row.split()[3:] == [
        "1.000",
        f"{_report()['cases'][0]['gbps']:.0f}",
        "50%",
        "2.000",
        "2.00",
        "1.0e-07",
        "1.500",
    ]
    assert any("ERROR TypingError: boom" in ln for ln in lines)
    assert any("skipped: over the time budget" in ln for ln in lines)
    assert "error: torch.compile" in text and "logistic fit" in text
    assert gc.format_table({"cases": []}).splitlines()[0].split()[0] == "case"


def test_json_writer(tmp_path):
    rep = _report()
    path = gc.write_json(tmp_path / "new" / "dir", rep)
    assert path == tmp_path / "new" / "dir" / gc.JSON_NAME
    back = json.loads(path.read_text())
    assert back["cases"][0]["gbps"] == pytest.approx(rep["cases"][0]["gbps"])
    assert back["schema"] == gc.SCHEMA
    rep["cases"] = []
    gc.write_json(path.parent, rep)  # replaced in place, no temporary left
    assert json.loads(path.read_text())["cases"] == []
    assert [p.name for p in path.parent.iterdir()] == [gc.JSON_NAME]


def test_shell_script_usage_and_syntax():
    sh = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(sh)]).returncode == 0
    r = subprocess.run(["bash", str(sh)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
    r = subprocess.run(["bash", str(sh), "--quick"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's kl_div "mean" notice
@pytest.mark.parametrize("path", sorted(gc.KERNEL_PATHS))
def test_torch_references_agree_with_fastmle_on_cpu(path):
    """The script's data and torch references, on CPU tensors: fastmle's CPU path on the
    same data agrees, so on a device ``rel err`` measures the GPU kernels only."""
    torch = pytest.importorskip("torch")
    case = next(c for c in gc.cases(2**13, ["float64"]) if c["path"] == path)
    if case["shape"][1] > 4096:
        case = dict(case, shape=[2, 4096])
    data = gc._data(torch, case, "cpu")
    _, ref = gc._torch_ref(torch, case, data)
    fn = getattr(fastmle, case["function"])
    args = [d.numpy() for d in data]
    if case["function"].endswith("value_and_grad"):
        got = fn(*args)[1]
        got = got[0] if isinstance(got, tuple) else got
    elif case["function"] in ("softmax", "log_softmax", "logsumexp"):
        got = fn(args[0], -1)
    else:
        got = fn(*args)
    assert gc._rel_err(torch, torch.as_tensor(got), ref()) < 1e-10
