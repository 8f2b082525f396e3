"""The ``fastmle`` command: fit from every data format, the demo, errors as exit 2."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastmle as fm
from fastmle import cli
from fastmle._progress import Bar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(7)
    n = 3000
    X = rng.standard_normal((n, 3))
    y01 = (rng.random(n) < 1 / (1 + np.exp(-(0.3 + X @ [1.0, -0.5, 0.0])))).astype(float)
    y3 = np.argmax(X @ rng.standard_normal((3, 3)) + rng.gumbel(size=(n, 3)), axis=1)
    yg = 1.0 + X @ [0.5, 2.0, -1.0] + rng.standard_normal(n) * np.exp(0.3 * X[:, 0])
    w = rng.integers(1, 4, n).astype(float)
    return {"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "y01": y01, "y3": y3, "yg": yg, "w": w}


def write_csv(path, cols: dict, labels=None):
    names = list(cols) + (["label"] if labels is not None else [])
    with open(path, "w") as f:
        f.write(",".join(names) + "\n")
        for i in range(len(next(iter(cols.values())))):
            row = [repr(float(cols[c][i])) for c in cols]
            if labels is not None:
                row.append(labels[i])
            f.write(",".join(row) + "\n")
    return str(path)


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def fit_json(tmp_path, data, capsys, *args):
    out_json = tmp_path / "r.json"
    code, out, err = run(["fit", data, *args, "--output", out_json], capsys)
    assert code == 0, err
    assert err == ""  # not a terminal: no progress bar, no iteration lines
    return json.loads(out_json.read_text()), out


# -- fitting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family,target,model",
    [
        ("bernoulli", "y01", fm.LogisticRegression()),
        ("categorical", "y3", fm.SoftmaxRegression()),
        ("gaussian", "yg", fm.GaussianRegression()),
        ("gaussian-hetero", "yg", fm.GaussianRegression(heteroscedastic=True)),
    ],
)
def test_fit_csv_matches_the_estimator(tmp_path, frame, capsys, family, target, model):
    path = write_csv(tmp_path / "d.csv", frame)
    res, out = fit_json(
        tmp_path, path, capsys, "--target", target, "--family", family, "--features", "a", "b", "c"
    )
    X = np.column_stack([frame["a"], frame["b"], frame["c"]])
    model.fit(X, frame[target])
    np.testing.assert_allclose(
        [p["coef"] for p in res["params"]], model.params_, rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose([p["std_err"] for p in res["params"]], model.bse_, rtol=1e-9)
    assert res["loglik"] == pytest.approx(model.loglik_, rel=1e-12)
    assert res["aic"] == pytest.approx(model.aic_) and res["bic"] == pytest.approx(model.bic_)
    assert res["nobs"] == 3000 and res["converged"] and res["features"] == ["a", "b", "c"]
    names = [p["name"] for p in res["params"]]
    assert names == [
        n.replace("x0", "a").replace("x1", "b").replace("x2", "c") for n in model.param_names_
    ]
    # the printed summary is the estimator's, with the column names
    assert "Log-likelihood:" in out and f"{model.loglik_:.6f}" in out
    assert re.search(r"^(1: )?b\s", out, re.M) and re.search(r"rows/s", out)
    # Wald columns agree with the estimates
    for p in res["params"]:
        assert p["z"] == pytest.approx(p["coef"] / p["std_err"])
        assert p["ci_low"] < p["coef"] < p["ci_high"] and 0 <= p["p_value"] <= 1


def test_fit_defaults_to_every_other_column_and_takes_weights(tmp_path, frame, capsys):
    cols = {k: frame[k] for k in ("a", "b", "w", "yg")}
    res, _ = fit_json(
        tmp_path,
        write_csv(tmp_path / "d.csv", cols),
        capsys,
        "--target",
        "yg",
        "--family",
        "gaussian",
        "--weights",
        "w",
        "--alpha",
        "2.5",
    )
    assert res["features"] == ["a", "b"] and res["weights"] == "w"
    X = np.column_stack([frame["a"], frame["b"]])
    m = fm.GaussianRegression(alpha=2.5).fit(X, frame["yg"], sample_weight=frame["w"])
    np.testing.assert_allclose([p["coef"] for p in res["params"]], m.params_, rtol=1e-9)


def test_text_labels_and_no_intercept(tmp_path, frame, capsys):
    labels = np.array(["cat", "dog", "emu"])[frame["y3"]]
    path = write_csv(tmp_path / "d.csv", {"a": frame["a"], "b": frame["b"]}, labels)
    res, _ = fit_json(
        tmp_path, path, capsys, "--target", "label", "--family", "categorical", "--no-intercept"
    )
    assert res["classes"] == ["cat", "dog", "emu"] and not res["fit_intercept"]
    m = fm.SoftmaxRegression(fit_intercept=False).fit(
        np.column_stack([frame["a"], frame["b"]]), labels
    )
    np.testing.assert_allclose([p["coef"] for p in res["params"]], m.params_, rtol=1e-9)


def test_parquet_npy_npz_give_the_csv_fit(tmp_path, frame, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    args = ["--target", "y01", "--family", "bernoulli"]
    X = np.column_stack([frame[k] for k in ("a", "b", "c")])
    ref = fm.LogisticRegression().fit(X, frame["y01"]).params_

    pq.write_table(
        pa.table({k: frame[k] for k in ("a", "b", "c", "y01")}),
        tmp_path / "d.parquet",
        row_group_size=700,
    )
    res, _ = fit_json(tmp_path, tmp_path / "d.parquet", capsys, *args)
    np.testing.assert_allclose([p["coef"] for p in res["params"]], ref, rtol=1e-9)

    np.save(tmp_path / "d.npy", np.column_stack([X, frame["y01"]]))
    res, _ = fit_json(
        tmp_path, tmp_path / "d.npy", capsys, "--target", "3", "--family", "bernoulli"
    )
    assert res["features"] == ["0", "1", "2"]
    np.testing.assert_allclose([p["coef"] for p in res["params"]], ref, rtol=1e-9)

    rec = np.zeros(len(X), dtype=[("a", "f8"), ("b", "f4"), ("c", "f8"), ("y01", "i8")])
    for k in ("a", "b", "c", "y01"):
        rec[k] = frame[k]
    np.save(tmp_path / "r.npy", rec)
    res, _ = fit_json(tmp_path, tmp_path / "r.npy", capsys, *args)
    ref32 = (
        fm.LogisticRegression()
        .fit(np.column_stack([frame["a"], frame["b"].astype(np.float32), frame["c"]]), frame["y01"])
        .params_
    )
    np.testing.assert_allclose([p["coef"] for p in res["params"]], ref32, rtol=1e-9)

    np.savez(tmp_path / "d.npz", X=X, y=frame["y01"])
    res, _ = fit_json(
        tmp_path,
        tmp_path / "d.npz",
        capsys,
        "--target",
        "y",
        "--features",
        "X",
        "--family",
        "bernoulli",
    )
    assert res["features"] == ["X[0]", "X[1]", "X[2]"]
    np.testing.assert_allclose([p["coef"] for p in res["params"]], ref, rtol=1e-9)
    res, _ = fit_json(
        tmp_path,
        tmp_path / "d.npz",
        capsys,
        "--target",
        "y",
        "--features",
        "X[2]",
        "X[0]",
        "--family",
        "bernoulli",
    )
    ref20 = fm.LogisticRegression().fit(X[:, [2, 0]], frame["y01"]).params_
    np.testing.assert_allclose([p["coef"] for p in res["params"]], ref20, rtol=1e-9)


def test_singular_standard_errors_are_json_null(tmp_path, frame, capsys):
    cols = {"a": frame["a"], "a2": 2 * frame["a"], "yg": frame["yg"]}
    out_json = tmp_path / "r.json"
    code, _, err = run(
        [
            "fit",
            write_csv(tmp_path / "d.csv", cols),
            "--target",
            "yg",
            "--family",
            "gaussian",
            "--output",
            out_json,
        ],
        capsys,
    )
    assert code == 0 and "fastmle: warning:" in err and "singular" in err
    res = json.loads(out_json.read_text())  # strict JSON: no NaN tokens
    assert any(p["std_err"] is None for p in res["params"])


# -- bad input: one line on stderr, exit status 2 -------------------------------------


def _bad_files(tmp_path, frame):
    small = {k: frame[k][:50] for k in ("a", "b", "y01", "y3", "yg")}
    ok = write_csv(tmp_path / "ok.csv", small)
    nan = tmp_path / "nan.csv"
    nan.write_text("a,b,y\n1,2,0\n3,nan,1\n5,6,0\n")
    empty_field = tmp_path / "empty.csv"
    empty_field.write_text("a,b,y\n1,2,0\n3,,1\n5,6,0\n")
    text = tmp_path / "text.csv"
    text.write_text("a,b,y\n1,red,0\n3,blue,1\n5,red,0\n")
    one = tmp_path / "one.csv"
    one.write_text("a,y\n1,1\n2,1\n3,1\n")
    header = tmp_path / "header.csv"
    header.write_text("a,y\n")
    (tmp_path / "one.npy").write_bytes(b"")
    np.save(tmp_path / "vec.npy", np.arange(5.0))
    np.savez(tmp_path / "ragged.npz", a=np.zeros(3), y=np.zeros(4))
    (tmp_path / "d.xlsx").write_text("x")
    return {
        "missing file": (
            ["fit", tmp_path / "nope.csv", "--target", "y", "--family", "gaussian"],
            "no such file",
        ),
        "directory": (["fit", tmp_path, "--target", "y", "--family", "gaussian"], "directory"),
        "format": (
            ["fit", tmp_path / "d.xlsx", "--target", "y", "--family", "gaussian"],
            "unknown format",
        ),
        "unknown target": (["fit", ok, "--target", "yy", "--family", "gaussian"], "no column 'yy'"),
        "unknown feature": (
            ["fit", ok, "--target", "yg", "--features", "a", "bb", "--family", "gaussian"],
            "did you mean 'b'",
        ),
        "target as feature": (
            ["fit", ok, "--target", "yg", "--features", "a", "yg", "--family", "gaussian"],
            "both the target and a feature",
        ),
        "NaN": (
            ["fit", nan, "--target", "y", "--family", "bernoulli"],
            "column 'b' has missing values (first: data row 2, 1-based",
        ),
        "empty field": (
            ["fit", empty_field, "--target", "y", "--family", "bernoulli"],
            "column 'b' has missing values (first: data row 2, 1-based",
        ),
        "text feature": (
            ["fit", text, "--target", "y", "--family", "bernoulli"],
            "column 'b' is not numeric",
        ),
        "3 classes bernoulli": (
            ["fit", ok, "--target", "y3", "--family", "bernoulli", "--features", "a"],
            "has 3 classes (0, 1, 2)",
        ),
        "continuous target": (
            ["fit", ok, "--target", "yg", "--family", "categorical"],
            "non-integer values",
        ),
        "single class": (["fit", one, "--target", "y", "--family", "bernoulli"], "single value"),
        "text target gaussian": (
            ["fit", text, "--target", "b", "--family", "gaussian", "--features", "a"],
            "not numeric",
        ),
        "no rows": (["fit", header, "--target", "y", "--family", "gaussian"], "no data rows"),
        "bad npy": (
            ["fit", tmp_path / "one.npy", "--target", "0", "--family", "gaussian"],
            "not a readable .npy",
        ),
        "1-d npy": (
            ["fit", tmp_path / "vec.npy", "--target", "0", "--family", "gaussian"],
            "1-d array",
        ),
        "ragged npz": (
            ["fit", tmp_path / "ragged.npz", "--target", "y", "--family", "gaussian"],
            "different numbers of rows",
        ),
        "max iter": (
            ["fit", ok, "--target", "yg", "--family", "gaussian", "--max-iter", "0"],
            "--max-iter",
        ),
        "negative alpha": (
            ["fit", ok, "--target", "yg", "--family", "gaussian", "--alpha", "-1"],
            "alpha must be",
        ),
        "demo rows": (["demo", "--rows", "10"], "--rows"),
        "bench repeat": (["bench", "--repeat", "0"], "--repeat"),
    }


def test_bad_input_is_one_line_and_exit_2(tmp_path, frame, capsys):
    for case, (argv, message) in _bad_files(tmp_path, frame).items():
        code, out, err = run(argv, capsys)
        assert code == 2, case
        assert err.startswith("fastmle: error: ") and err.count("\n") == 1, (case, err)
        assert message in err, (case, err)
        assert out == "", case


def test_parquet_nulls_and_text(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"a": [1.0, None, 3.0], "s": ["x", "y", "z"], "y": [0, 1, 0]}),
        tmp_path / "d.parquet",
    )
    code, _, err = run(
        [
            "fit",
            tmp_path / "d.parquet",
            "--target",
            "y",
            "--family",
            "bernoulli",
            "--features",
            "a",
        ],
        capsys,
    )
    assert code == 2 and "column 'a' has 1 null" in err
    code, _, err = run(
        [
            "fit",
            tmp_path / "d.parquet",
            "--target",
            "y",
            "--family",
            "bernoulli",
            "--features",
            "s",
        ],
        capsys,
    )
    assert code == 2 and "column 's' is not numeric" in err


def test_command_line_errors_have_no_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,y\n1,0\n2,1\n3,2\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    for argv in (
        ["fit", str(bad), "--target", "y", "--family", "bernoulli"],
        ["fit", str(bad), "--family", "bernoulli"],
    ):  # argparse: --target missing
        r = subprocess.run(
            [sys.executable, "-m", "fastmle", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
        assert "3 classes" in r.stderr or "--target" in r.stderr


@pytest.mark.skipif(
    shutil.which("fastmle") is None, reason="the console script is installed by pip install ."
)
def test_console_script(tmp_path):
    r = subprocess.run(["fastmle", "--version"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == f"fastmle {fm.__version__}"


# -- progress bar ----------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_draws_only_on_a_terminal():
    tty, pipe = _Terminal(), io.StringIO()
    for stream in (tty, pipe):
        bar = Bar("reading", after=0.0, stream=stream)
        for f in (0.25, 1.0):
            bar(f)
        bar.close()
    assert pipe.getvalue() == ""
    assert "\rreading [#######" in tty.getvalue() and "100.0%\n" in tty.getvalue()


def test_csv_reads_in_chunks_with_progress(tmp_path, frame, monkeypatch):
    from fastmle import _data

    monkeypatch.setattr(_data, "CSV_CHUNK", 4096)  # many chunks
    path = write_csv(tmp_path / "d.csv", frame)
    seen = []
    data = _data.read(path, "yg", ["c", "a"], progress=seen.append)
    assert len(seen) > 10 and seen == sorted(seen) and seen[-1] == 1.0
    np.testing.assert_array_equal(data.X, np.column_stack([frame["c"], frame["a"]]))
    np.testing.assert_array_equal(data.y, frame["yg"])


# -- demo and bench --------------------------------------------------------------------------


def test_demo(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "g.png"
    code, out, err = run(["demo", "--rows", 40000, "--plot", png], capsys)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # section 1: every estimate within 5 standard errors of the truth
    zs = [float(m) for m in re.findall(r"^\s{4}\S.*\s(-?\d+\.\d\d)$", out.split("\n2. ")[0], re.M)]
    assert len(zs) == 5 + 8 + 5 + 6 and max(map(abs, zs)) < 5
    # section 2: CE - KL is the same at every iterate, and the optimum is p_data
    diffs = re.findall(r"^\s+\d+\s+\d\.\d{12}\s+\d\.\d{12}\s+(\d\.\d{12})$", out, re.M)
    assert len(diffs) >= 4 and len(set(diffs)) == 1
    assert float(re.search(r"H\(p_data\) = (\S+)", out)[1]) == float(diffs[0])
    assert float(re.search(r"argmin KL\| = (\S+):", out)[1]) < 1e-9
    # section 3: NLL = MSE / (2 var) + const, and max likelihood = least squares
    assert all(abs(float(d)) < 1e-12 for d in re.findall(r"beta = .*\s(\S+)$", out, re.M))
    assert float(re.search(r"least squares\): max \|difference\| = (\S+)", out)[1]) < 1e-9
    # section 4: the MSE gradient vanishes at a saturated wrong answer, BCE's does not
    rows = re.findall(r"^\s+(-?\d+)\s+\S+\s+(\S+)\s+(\S+)\s+\S+$", out, re.M)
    g = {int(z): (float(a), float(b)) for z, a, b in rows}
    assert g[-12][0] < 1e-5 and g[-12][1] > 0.99
    mse, bce = (
        list(map(float, re.search(rf"on {k}\s+(.*)$", out, re.M)[1].split()))
        for k in ("MSE", "BCE")
    )
    best = float(re.search(r"at w_true: (\S+)\)", out)[1])
    assert bce[-1] == pytest.approx(best, abs=2e-3) and mse[-1] > best + 1
    # section 5: sum Poisson NLL + sum log(y!) = -log L, and the score vanishes at the MLE
    five = out.split("\n5. ")[1]
    pairs = re.findall(r"^\s+b = \w+\s+(\S+)\s+(\S+)\s+\S+$", five, re.M)
    assert len(pairs) == 3 and all(float(a) == pytest.approx(float(b), rel=1e-12) for a, b in pairs)
    ll = re.search(r"loglik_ = (\S+) = .* = (\S+)$", five, re.M)
    assert float(ll[1]) == pytest.approx(float(ll[2]), rel=1e-10)
    assert float(re.search(r"/ n = (\S+)$", five, re.M)[1]) < 1e-8


def test_demo_is_the_default_command(monkeypatch):
    from fastmle import demo

    seen = {}
    monkeypatch.setattr(demo, "run", lambda **kw: seen.update(kw) or 0)
    assert cli.main([]) == 0 and seen == {"rows": 2_000_000, "seed": 0, "plot_path": None}


def test_bench_command_passes_its_options(monkeypatch, capsys):
    from fastmle import bench

    seen = {}
    monkeypatch.setattr(
        bench,
        "run",
        lambda quick, repeat, more, only=None, with_jax=True: (
            seen.update(quick=quick, repeat=repeat, more=more, only=only, with_jax=with_jax) or []
        ),
    )
    monkeypatch.setattr(bench, "table", lambda rows, *a, **k: "table")
    assert cli.main(["bench", "--quick", "--repeat", "2", "--no-jax"]) == 0
    assert seen == {"quick": True, "repeat": 2, "more": False, "only": None, "with_jax": False}
    assert "table" in capsys.readouterr().out


# -- --output safety (issue 17, items 5, 9, 13): through the console command --------------


def _cli(*argv, cwd=None):
    """``python -m fastmle`` in a subprocess: what a user runs (``fastmle`` is the same
    entry point, tested by test_console_script)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-m", "fastmle", *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=cwd,
    )


def _small_csv(tmp_path, frame, name="d.csv"):
    return write_csv(tmp_path / name, {k: frame[k][:200] for k in ("a", "b", "yg")})


def _fit_args(data, output):
    return ["fit", data, "--target", "yg", "--family", "gaussian", "--output", output]


@pytest.mark.parametrize("how", ["same path", "relative path", "symlink", "hard link"])
def test_output_naming_the_data_file_is_refused(tmp_path, frame, how):
    data = _small_csv(tmp_path, frame)
    before = open(data, "rb").read()
    output = {
        "same path": data,
        "relative path": "./d.csv",
        "symlink": tmp_path / "link.json",
        "hard link": tmp_path / "hard.json",
    }[how]
    if how == "symlink":
        os.symlink(data, output)
    elif how == "hard link":
        os.link(data, output)
    r = _cli(*_fit_args(data, output), cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.startswith("fastmle: error: --output") and r.stderr.count("\n") == 1
    assert "is the data file" in r.stderr and "Traceback" not in r.stderr
    assert open(data, "rb").read() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


@pytest.mark.parametrize("how", ["missing directory", "parent is a file", "a directory"])
def test_unwritable_output_is_refused_before_the_fit(tmp_path, frame, how):
    data = _small_csv(tmp_path, frame)
    output = {
        "missing directory": tmp_path / "nope" / "r.json",
        "parent is a file": tmp_path / "d.csv" / "r.json",
        "a directory": tmp_path,
    }[how]
    r = _cli(*_fit_args(data, output))
    assert r.returncode == 2 and r.stdout == "", r.stderr  # no summary: nothing was fitted
    assert r.stderr.startswith("fastmle: error: --output") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_directory_is_refused_before_the_fit(tmp_path, frame):
    data = _small_csv(tmp_path, frame)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = _cli(*_fit_args(data, ro / "r.json"))
    finally:
        ro.chmod(0o700)
    assert r.returncode == 2 and r.stdout == "" and "cannot be written" in r.stderr


def test_failed_fit_keeps_the_previous_output(tmp_path):
    output = tmp_path / "r.json"
    output.write_text('{"previous": true}\n')
    bad = tmp_path / "bad.csv"
    bad.write_text("a,yg\n1,0\n2,nan\n")
    r = _cli(*_fit_args(bad, output))
    assert r.returncode == 2 and "NaN" in r.stderr
    assert output.read_text() == '{"previous": true}\n'
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_output_replaces_atomically_keeps_mode_and_writes_strict_json(tmp_path, frame):
    data = _small_csv(tmp_path, frame)
    output = tmp_path / "r.json"
    output.write_text("old")
    output.chmod(0o640)
    link = tmp_path / "link.json"  # writing through a symlink updates its target
    os.symlink(output, link)
    r = _cli(*_fit_args(data, link), "--max-iter", "37")
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and (output.stat().st_mode & 0o777) == 0o640
    text = output.read_text()
    res = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert res["max_iter"] == 37 and res["non_finite"] == {}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_non_finite_numbers_are_null_with_the_reason(tmp_path, frame, capsys):
    cols = {"a": frame["a"], "a2": 2 * frame["a"], "yg": frame["yg"]}
    out_json = tmp_path / "r.json"
    code, _, _ = run(
        [
            "fit",
            write_csv(tmp_path / "d.csv", cols),
            "--target",
            "yg",
            "--family",
            "gaussian",
            "--output",
            out_json,
        ],
        capsys,
    )
    assert code == 0
    text = out_json.read_text()
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text.replace(
        '"Infinity"', ""
    )
    res = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    nulls = [
        f"params[{i}].{k}" for i, p in enumerate(res["params"]) for k, v in p.items() if v is None
    ]
    assert nulls and set(nulls) == set(res["non_finite"])
    assert set(res["non_finite"].values()) <= {"NaN", "Infinity", "-Infinity"}


def test_strict_json_helper():
    res = cli.strict_json(
        {"a": float("nan"), "b": [1.0, float("-inf")], "c": {"d": np.inf}, "e": "x", "f": None}
    )
    assert res == {
        "a": None,
        "b": [1.0, None],
        "c": {"d": None},
        "e": "x",
        "f": None,
        "non_finite": {"a": "NaN", "b[1]": "-Infinity", "c.d": "Infinity"},
    }
    json.dumps(res, allow_nan=False)


def test_output_option_is_documented():
    r = _cli("fit", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "strict JSON" in text and "non_finite" in text and "data file" in text


# -- --family poisson (issue 16) -----------------------------------------------------------


def _poisson_csv(tmp_path, frame):
    rng = np.random.default_rng(11)
    n = 2000
    expo = rng.uniform(0.5, 4.0, n)
    counts = rng.poisson(expo * np.exp(0.2 + 0.4 * frame["a"][:n] - 0.3 * frame["b"][:n]))
    cols = {"a": frame["a"][:n], "b": frame["b"][:n], "t": expo, "n": counts.astype(float)}
    return write_csv(tmp_path / "counts.csv", cols), cols


@pytest.mark.skipif(
    shutil.which("fastmle") is None, reason="the console script is installed by pip install ."
)
def test_poisson_with_exposure_through_the_console_script(tmp_path, frame):
    sm = pytest.importorskip("statsmodels.api")
    data, cols = _poisson_csv(tmp_path, frame)
    out_json = tmp_path / "p.json"
    r = subprocess.run(
        [
            "fastmle",
            "fit",
            data,
            "--target",
            "n",
            "--family",
            "poisson",
            "--exposure",
            "t",
            "--output",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "PoissonRegression results" in r.stdout and "LL-Null:" in r.stdout
    got = json.loads(out_json.read_text())
    assert got["features"] == ["a", "b"] and got["exposure"] == "t"
    X = np.column_stack([cols["a"], cols["b"]])
    ref = sm.GLM(
        cols["n"], sm.add_constant(X), family=sm.families.Poisson(), exposure=cols["t"]
    ).fit(tol=1e-13)
    np.testing.assert_allclose([p["coef"] for p in got["params"]], ref.params, rtol=1e-8)
    np.testing.assert_allclose([p["std_err"] for p in got["params"]], ref.bse, rtol=1e-8)
    np.testing.assert_allclose(got["loglik"], ref.llf, rtol=1e-10)
    np.testing.assert_allclose(got["deviance"], ref.deviance, rtol=1e-8)
    # the same fit with explicit features
    r2 = subprocess.run(
        [
            "fastmle",
            "fit",
            data,
            "--target",
            "n",
            "--family",
            "poisson",
            "--exposure",
            "t",
            "--features",
            "a",
            "b",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r2.returncode == 0 and r2.stdout.splitlines()[:20] == r.stdout.splitlines()[:20]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--family", "poisson", "--exposure", "a"], "must be > 0"),
        (["--family", "poisson", "--exposure", "zz"], "zz"),
        (["--family", "gaussian", "--exposure", "t"], "--exposure is for --family poisson"),
        (["--family", "poisson", "--exposure", "t", "--features", "a", "t"], "also a feature"),
    ],
)
def test_poisson_cli_errors(tmp_path, frame, capsys, argv, message):
    data, _ = _poisson_csv(tmp_path, frame)
    code, out, err = run(["fit", data, "--target", "n", *argv], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_poisson_negative_counts_are_refused(tmp_path, frame, capsys):
    data = write_csv(tmp_path / "neg.csv", {"a": frame["a"][:50], "y": frame["a"][:50]})
    code, out, err = run(["fit", data, "--target", "y", "--family", "poisson"], capsys)
    assert code == 2 and "negative values" in err and "counts >= 0" in err


@pytest.mark.parametrize("family,target", [("bernoulli", "y01"), ("gaussian", "yg")])
def test_units_of_the_features_do_not_change_the_fit(tmp_path, frame, capsys, family, target):
    """Issue 17 item 14: features in units of 1e-8 gave zero coefficients marked
    converged. Through the command: the coefficient of a column scaled by 1e-8 is 1e8
    times the unscaled one, with the same standard errors in the same units and the
    same log-likelihood."""
    base = {k: frame[k] for k in ("a", "b", target)}
    tiny = dict(base, a=frame["a"] * 1e-8)
    fits = []
    for name, cols in (("base", base), ("tiny", tiny)):
        path = write_csv(tmp_path / f"{name}.csv", cols)
        res, _ = fit_json(tmp_path, path, capsys, "--target", target, "--family", family)
        fits.append(res)
    (ref, got) = fits
    assert got["converged"] and got["loglik"] == pytest.approx(ref["loglik"], rel=1e-10)
    scale = {"a": 1e8}
    for p, q in zip(ref["params"], got["params"]):
        s = scale.get(p["name"], 1.0)
        assert q["coef"] == pytest.approx(p["coef"] * s, rel=1e-8)
        assert q["std_err"] == pytest.approx(p["std_err"] * s, rel=1e-8)
        assert abs(q["coef"]) > 0


@pytest.mark.parametrize("cov_type", ["HC0", "HC1", "cluster"])
def test_fit_robust_covariance(tmp_path, frame, capsys, cov_type):
    """--cov-type (and --groups for clusters): the estimator's robust standard errors."""
    groups = (np.arange(3000) % 37).astype(float)
    path = write_csv(tmp_path / "d.csv", {**{k: frame[k] for k in ("a", "b", "y01")}, "g": groups})
    args = ["--target", "y01", "--family", "bernoulli", "--cov-type", cov_type]
    if cov_type == "cluster":
        args += ["--groups", "g"]
    res, out = fit_json(tmp_path, path, capsys, *args)
    X = np.column_stack([frame["a"], frame["b"]] + ([] if cov_type == "cluster" else [groups]))
    model = fm.LogisticRegression(cov_type=cov_type)
    model.fit(X, frame["y01"], **({"groups": groups} if cov_type == "cluster" else {}))
    assert res["cov_type"] == cov_type and res["features"] == (
        ["a", "b"] if cov_type == "cluster" else ["a", "b", "g"]
    )
    np.testing.assert_allclose([p["std_err"] for p in res["params"]], model.bse_, rtol=1e-9)
    assert cov_type in out  # the summary names the covariance


@pytest.mark.parametrize(
    "args,message",
    [
        (["--groups", "g"], "--groups COLUMN and --cov-type cluster go together"),
        (["--cov-type", "cluster"], "--groups COLUMN and --cov-type cluster go together"),
        (["--cov-type", "cluster", "--groups", "y01"], "cannot be the groups and also the target"),
        (["--cov-type", "cluster", "--groups", "nope"], "--groups 'nope' is not a column"),
    ],
)
def test_fit_groups_misuse_is_one_line(tmp_path, frame, capsys, args, message):
    path = write_csv(tmp_path / "d.csv", {k: frame[k][:100] for k in ("a", "y01")})
    code, out, err = run(["fit", path, "--target", "y01", "--family", "bernoulli", *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
