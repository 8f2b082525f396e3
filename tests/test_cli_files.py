"""``fastmle fit`` on files as pandas, R and Excel write them, and on hostile files
(issue 17 items 4, 5, 8, 13): through the console script, every failure is one line
on stderr, exit status 2, promptly."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastmle as fm
from fastmle import _data, cli

ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = shutil.which("fastmle")
# the console script when pip installed it, else the same entry point through -m
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "fastmle"]
N = 240


def fastmle(*args, timeout=120, cwd=None):
    env = dict(os.environ)
    if not _SCRIPT:
        env["PYTHONPATH"] = str(ROOT)
    t0 = time.perf_counter()
    r = subprocess.run(
        [*COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    r.seconds = time.perf_counter() - t0
    return r


def fails(r, *fragments):
    """One line on stderr, exit 2, no traceback, no NumPy repr; returns the line."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stdout == ""
    assert r.stderr.startswith("fastmle: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and "np.str_" not in r.stderr
    assert "np.float64" not in r.stderr
    for f in fragments:
        assert f in r.stderr, (f, r.stderr)
    return r.stderr


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(11)
    a = rng.standard_normal(N)
    b = rng.standard_normal(N)
    y = (rng.random(N) < 1 / (1 + np.exp(-(0.4 + a - 0.7 * b)))).astype(int)
    return {
        "a": a,
        "b": b,
        "note": [f'said "hi", then {i}' for i in range(N)],
        "label": np.where(y == 1, "yes", "no"),
        "y": y,
    }


@pytest.fixture(scope="module")
def reference(frame):
    m = fm.LogisticRegression().fit(np.column_stack([frame["a"], frame["b"]]), frame["y"])
    return m.params_


def params(tmp_path, data, *args):
    out = tmp_path / "r.json"
    r = fastmle("fit", data, "--output", out, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text()), r


# -- files as pandas, R and Excel write them --------------------------------------------


@pytest.fixture(scope="module")
def files(frame, tmp_path_factory):
    pd = pytest.importorskip("pandas")
    d = tmp_path_factory.mktemp("files")
    df = pd.DataFrame(frame)
    df.to_csv(d / "pandas_index.csv")  # the default: an unnamed index column first
    df.to_csv(d / "pandas.csv", index=False)
    df.to_csv(d / "pandas.csv.gz", index=False)  # compression from the name
    df.to_csv(d / "pandas.tsv", index=False, sep="\t")
    df.to_csv(d / "semicolon.csv", index=False, sep=";")
    df.to_csv(d / "decimal_comma.csv", index=False, sep=";", decimal=",")
    # Excel: every field quoted, a UTF-8 byte-order mark, CRLF line ends; the target first
    df[["y", "a", "b", "note", "label"]].to_csv(
        d / "excel.csv",
        index=False,
        quoting=csv.QUOTE_ALL,
        encoding="utf-8-sig",
        lineterminator="\r\n",
    )
    # R's write.csv: a quoted, unnamed row-name column; strings quoted, numbers not
    with open(d / "r.csv", "w", newline="") as f:
        f.write('"","a","b","note","label","y"\n')
        for i in range(N):
            note = frame["note"][i].replace('"', '""')
            f.write(
                f'"{i + 1}",{float(frame["a"][i])!r},{float(frame["b"][i])!r},'
                f'"{note}","{frame["label"][i]}",{int(frame["y"][i])}\n'
            )
    return d


@pytest.mark.parametrize(
    "name,extra",
    [
        ("pandas.csv", []),
        ("pandas_index.csv", ["--features", "a", "b"]),
        ("pandas.csv.gz", []),
        ("pandas.tsv", []),
        ("semicolon.csv", []),
        ("excel.csv", []),
        ("r.csv", ["--features", "a", "b"]),
    ],
)
def test_files_as_pandas_r_and_excel_write_them(files, tmp_path, reference, name, extra):
    feats = [] if extra else ["--features", "a", "b"]
    res, r = params(
        tmp_path, files / name, "--target", "y", "--family", "bernoulli", *feats, *extra
    )
    assert res["features"] == ["a", "b"]
    np.testing.assert_allclose([p["coef"] for p in res["params"]], reference, rtol=1e-9)
    assert res["classes"] == [0, 1] and res["modelled_class"] == 1
    assert "modelled: P(y = 1) against y = 0" in r.stdout


def test_text_labels_say_which_class_is_modelled(files, tmp_path, reference):
    res, r = params(
        tmp_path,
        files / "excel.csv",
        "--target",
        "label",
        "--family",
        "bernoulli",
        "--features",
        "a",
        "b",
    )
    assert res["classes"] == ["no", "yes"] and res["modelled_class"] == "yes"
    assert "modelled: P(label = 'yes') against label = 'no'" in r.stdout
    np.testing.assert_allclose([p["coef"] for p in res["params"]], reference, rtol=1e-9)


def test_quoted_line_ends_in_a_text_field(tmp_path, frame, reference):
    """A spreadsheet cell with a line break: quoted, so one row (pyarrow's fast
    row splitting fails on it, and the file is read again with quoted line ends)."""
    path = tmp_path / "multiline.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "note", "b", "y"])
        for i in range(N):
            w.writerow(
                [
                    float(frame["a"][i]),
                    f"line one\nline two {i}" if i % 7 == 0 else "x",
                    float(frame["b"][i]),
                    int(frame["y"][i]),
                ]
            )
    res, _ = params(
        tmp_path, path, "--target", "y", "--family", "bernoulli", "--features", "a", "b"
    )
    np.testing.assert_allclose([p["coef"] for p in res["params"]], reference, rtol=1e-9)


def test_unnamed_index_column_is_refused_by_default(files):
    for name in ("pandas_index.csv", "r.csv"):
        fails(
            fastmle("fit", files / name, "--target", "y", "--family", "bernoulli"),
            "column 1 has no name",
            "index=False",
            "--features",
        )


def test_delimiter_option_and_decimal_comma_hint(files, tmp_path, reference):
    fails(
        fastmle(
            "fit",
            files / "decimal_comma.csv",
            "--target",
            "y",
            "--family",
            "bernoulli",
            "--features",
            "a",
            "b",
        ),
        "decimal comma",
        "data row 1",
    )
    res, _ = params(
        tmp_path,
        files / "semicolon.csv",
        "--target",
        "y",
        "--family",
        "bernoulli",
        "--features",
        "a",
        "b",
        "--delimiter",
        "semicolon",
    )
    np.testing.assert_allclose([p["coef"] for p in res["params"]], reference, rtol=1e-9)
    # the wrong delimiter: the header is one column
    fails(
        fastmle(
            "fit",
            files / "semicolon.csv",
            "--target",
            "y",
            "--family",
            "bernoulli",
            "--delimiter",
            ",",
        ),
        "no column 'y'",
    )


def test_encodings(tmp_path):
    rows = "".join(f"{i},{'café' if i % 3 else 'thé'}\n" for i in range(30))
    (tmp_path / "latin.csv").write_bytes(("a,drink\n" + rows).encode("latin-1"))
    fails(
        fastmle("fit", tmp_path / "latin.csv", "--target", "drink", "--family", "bernoulli"),
        "latin.csv is not UTF-8",
        "--encoding latin-1",
    )
    res, _ = params(
        tmp_path,
        tmp_path / "latin.csv",
        "--target",
        "drink",
        "--family",
        "bernoulli",
        "--encoding",
        "latin-1",
    )
    assert res["classes"] == ["café", "thé"]
    fails(
        fastmle(
            "fit",
            tmp_path / "latin.csv",
            "--target",
            "drink",
            "--family",
            "bernoulli",
            "--encoding",
            "no-such-codec",
        ),
        "--encoding",
    )
    # UTF-16 as Excel's "Unicode text" writes it: tab-separated, with a byte-order mark
    (tmp_path / "u16.txt").write_bytes(("a\tdrink\n" + rows.replace(",", "\t")).encode("utf-16"))
    fails(
        fastmle("fit", tmp_path / "u16.txt", "--target", "drink", "--family", "bernoulli"),
        "is UTF-16 text",
        "--encoding utf-16",
    )
    res, _ = params(
        tmp_path,
        tmp_path / "u16.txt",
        "--target",
        "drink",
        "--family",
        "bernoulli",
        "--encoding",
        "utf-16",
    )
    assert res["classes"] == ["café", "thé"]


# -- silently wrong reads, now refused ---------------------------------------------------


def test_duplicate_and_empty_names(tmp_path):
    (tmp_path / "dup.csv").write_text("a,a,y\n" + "".join(f"{i},{-i},{i % 2}\n" for i in range(20)))
    fails(
        fastmle("fit", tmp_path / "dup.csv", "--target", "y", "--family", "bernoulli"),
        "2 columns are named 'a' (columns 1, 2)",
    )
    (tmp_path / "empty.csv").write_text(
        "a,,y\n" + "".join(f"{i},{-i},{i % 2}\n" for i in range(20))
    )
    fails(
        fastmle("fit", tmp_path / "empty.csv", "--target", "y", "--family", "bernoulli"),
        "column 2 has no name",
    )


def test_one_text_label_in_a_numeric_target_names_its_row(tmp_path):
    (tmp_path / "na.csv").write_text(
        "a,y\n" + "".join(f"{i},{'NA' if i == 6 else i % 2}\n" for i in range(20))
    )
    fails(
        fastmle("fit", tmp_path / "na.csv", "--target", "y", "--family", "bernoulli"),
        "data row 7 (1-based) holds 'NA'",
    )
    # 1 and 1.0 are one class
    (tmp_path / "mixed.csv").write_text(
        "a,y\n" + "".join(f"{i},{['0', '1', '1.0'][i % 3]}\n" for i in range(30))
    )
    res, _ = params(tmp_path, tmp_path / "mixed.csv", "--target", "y", "--family", "bernoulli")
    assert res["classes"] == [0, 1]


def test_extra_fields_and_huge_labels(tmp_path):
    (tmp_path / "extra.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,6,1,9\n7,8,0\n")
    fails(
        fastmle("fit", tmp_path / "extra.csv", "--target", "y", "--family", "bernoulli"),
        "data row 3 (1-based) has 4 fields, more than the header's 3",
    )
    (tmp_path / "big.csv").write_text(
        "a,y\n" + "".join(f"{i},{2**63 if i == 4 else i % 2}\n" for i in range(20))
    )
    fails(
        fastmle("fit", tmp_path / "big.csv", "--target", "y", "--family", "bernoulli"),
        "too large",
        "data row 5",
    )


@pytest.mark.parametrize("value", ["1_000", "\u0661\u0662", "\uff11\uff12", "0x10"])
def test_numbers_only_in_ascii_digits(tmp_path, value):
    (tmp_path / "d.csv").write_text(
        "a,y\n" + "".join(f"{value if i == 2 else i},{i % 2}\n" for i in range(20)),
        encoding="utf-8",
    )
    fails(
        fastmle("fit", tmp_path / "d.csv", "--target", "y", "--family", "bernoulli"),
        f"column 'a' is not numeric: data row 3 (1-based) holds {value!r}",
    )


# -- hostile files: one line, exit 2, promptly -------------------------------------------


def test_not_regular_files_are_refused_without_reading(tmp_path):
    if os.path.exists("/dev/zero"):
        r = fastmle("fit", "/dev/zero", "--target", "y", "--family", "gaussian", timeout=60)
        fails(r, "/dev/zero is a device")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)  # no writer: opening it would block forever
    fails(fastmle("fit", fifo, "--target", "y", "--family", "gaussian", timeout=60), "is a FIFO")


def test_a_million_columns_and_three_rows_is_refused_promptly(tmp_path):
    n = 10**6
    with open(tmp_path / "wide.csv", "w") as f:
        f.write(",".join(f"c{i}" for i in range(n)) + ",y\n")
        for r in range(3):
            f.write("1," * n + f"{r % 2}\n")
    r = fastmle("fit", tmp_path / "wide.csv", "--target", "y", "--family", "bernoulli", timeout=120)
    fails(r, "cannot identify 1,000,001 parameters")
    assert r.seconds < 60


def test_parquet_from_pandas_with_an_index(tmp_path, frame, reference):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    df = pd.DataFrame({k: frame[k] for k in ("a", "b", "y")}, index=[f"row{i}" for i in range(N)])
    df.to_parquet(tmp_path / "d.parquet")  # the index is stored as __index_level_0__
    res, _ = params(tmp_path, tmp_path / "d.parquet", "--target", "y", "--family", "bernoulli")
    assert res["features"] == ["a", "b"]
    np.testing.assert_allclose([p["coef"] for p in res["params"]], reference, rtol=1e-9)


def test_parquet_duplicate_names_and_struct_target(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    t = pa.Table.from_arrays(
        [pa.array([1.0, 2, 3, 4]), pa.array([5.0, 6, 7, 8]), pa.array([0, 1, 0, 1])],
        names=["a", "a", "y"],
    )
    pq.write_table(t, tmp_path / "dup.parquet")
    fails(
        fastmle("fit", tmp_path / "dup.parquet", "--target", "y", "--family", "bernoulli"),
        "2 columns are named 'a'",
    )
    t = pa.table({"a": [1.0, 2, 3, 4, 5, 6], "y": pa.array([{"p": i % 2} for i in range(6)])})
    pq.write_table(t, tmp_path / "struct.parquet")
    r = fastmle(
        "fit", tmp_path / "struct.parquet", "--target", "y", "--family", "bernoulli", timeout=60
    )
    fails(r, "column 'y' is a struct")


def test_numpy_files(tmp_path):
    a = np.zeros(6, dtype=[("f", "f8", (3,)), ("g", "f8"), ("y", "f8")])
    a["y"] = [0, 1, 0, 1, 0, 1]
    np.save(tmp_path / "sub.npy", a)
    fails(
        fastmle("fit", tmp_path / "sub.npy", "--target", "y", "--family", "bernoulli"),
        "column 'f' holds 1-d values per row",
    )
    np.savez_compressed(tmp_path / "ok.npz", a=np.arange(50.0), y=np.arange(50.0) % 2)
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    fails(
        fastmle("fit", tmp_path / "cut.npz", "--target", "y", "--family", "bernoulli"),
        "not a readable .npz file",
    )
    # pickled objects are never loaded
    np.savez(tmp_path / "obj.npz", a=np.arange(5.0), y=np.array([{"k": 1}] * 5, dtype=object))
    fails(
        fastmle("fit", tmp_path / "obj.npz", "--target", "y", "--family", "bernoulli"),
        "does not unpickle",
    )
    # a header that declares 8 GB in a member of a few bytes: refused before allocating
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)}
    )
    buf.write(b"\0" * 80)
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as z:
        z.writestr("a.npy", buf.getvalue())
        z.writestr("y.npy", buf.getvalue())
    fails(
        fastmle("fit", tmp_path / "lie.npz", "--target", "y", "--family", "gaussian"),
        "declares shape (1000000000,)",
    )


def test_zip_bomb_npz_is_checked_against_memory_first(tmp_path, monkeypatch, capsys):
    big = np.zeros(4_000_000)  # 32 MB each, a few hundred KB compressed
    np.savez_compressed(tmp_path / "bomb.npz", a=big, y=big)
    assert (tmp_path / "bomb.npz").stat().st_size < 2_000_000
    monkeypatch.setattr(_data, "available_memory", lambda: 40 << 20)
    loaded = []
    monkeypatch.setattr(
        np.lib.format, "read_array", lambda *a, **k: loaded.append(1) or np.zeros(0)
    )
    code = cli.main(["fit", str(tmp_path / "bomb.npz"), "--target", "y", "--family", "gaussian"])
    err = capsys.readouterr().err
    assert code == 2 and "expands to 0.1 GiB" in err and "memory" in err
    assert loaded == []  # nothing was decompressed


# -- messages --------------------------------------------------------------------------


def test_messages(tmp_path):
    (tmp_path / "g.csv").write_text(
        "a,GRADE,s\n" + "".join(f"{i},{i % 2},{'n/a' if i == 0 else 'x'}\n" for i in range(20))
    )
    fails(
        fastmle("fit", tmp_path / "g.csv", "--target", "grade", "--family", "bernoulli"),
        "no column 'grade' (did you mean 'GRADE'?)",
    )
    fails(
        fastmle(
            "fit",
            tmp_path / "g.csv",
            "--target",
            "GRADE",
            "--features",
            "A",
            "--family",
            "bernoulli",
        ),
        "did you mean 'a'?",
    )
    fails(
        fastmle(
            "fit", tmp_path / "g.csv", "--target", "s", "--features", "a", "--family", "gaussian"
        ),
        "(e.g. 'n/a')",
    )
    (tmp_path / "nan.csv").write_text("a,y\n1,2\n2,3\nnan,4\n4,2\n")
    fails(
        fastmle("fit", tmp_path / "nan.csv", "--target", "y", "--family", "gaussian"),
        "first: data row 3, 1-based",
    )


def test_bench_help_is_whole_sentences():
    r = fastmle("bench", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    desc = text.split("options:")[0]
    assert "``" not in r.stdout
    assert "in one process." in desc


def test_data_conversion_warning_is_exported():
    assert issubclass(fm.DataConversionWarning, Warning)
    assert "DataConversionWarning" in fm.__all__


def test_tiny_feature_scales_are_fitted_through_the_cli(tmp_path, frame, reference):
    """Features scaled by 1e-8 give the coefficients scaled by 1e8 (issue 17 item 14)."""
    path = tmp_path / "tiny.csv"
    with open(path, "w") as f:
        f.write("a,b,y\n")
        for i in range(N):
            a, b = float(frame["a"][i]) * 1e-8, float(frame["b"][i]) * 1e-8
            f.write(f"{a!r},{b!r},{frame['y'][i]}\n")
    res, _ = params(tmp_path, path, "--target", "y", "--family", "bernoulli")
    coef = np.array([p["coef"] for p in res["params"]])
    np.testing.assert_allclose(coef * [1, 1e-8, 1e-8], reference, rtol=1e-6)
    assert res["converged"]


# -- the standard library's csv module, when pyarrow is absent ---------------------------


@pytest.mark.parametrize(
    "name,extra",
    [
        ("pandas.csv", []),
        ("pandas.csv.gz", []),
        ("pandas.tsv", []),
        ("semicolon.csv", []),
        ("excel.csv", []),
        ("r.csv", ["--features", "a", "b"]),
    ],
)
def test_fallback_reader_gives_the_same_fit(
    files, tmp_path, reference, monkeypatch, capsys, name, extra
):
    monkeypatch.setattr(_data, "_pyarrow_csv", lambda: None)
    feats = [] if extra else ["--features", "a", "b"]
    out = tmp_path / "r.json"
    code = cli.main(
        [
            "fit",
            str(files / name),
            "--target",
            "y",
            "--family",
            "bernoulli",
            "--output",
            str(out),
            *feats,
            *extra,
        ]
    )
    assert code == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    np.testing.assert_allclose([p["coef"] for p in res["params"]], reference, rtol=1e-9)


def test_fallback_reader_gives_the_same_errors(tmp_path, monkeypatch, capsys):
    cases = {
        "na.csv": (
            "a,y\n" + "".join(f"{i},{'NA' if i == 6 else i % 2}\n" for i in range(20)),
            "data row 7 (1-based) holds 'NA'",
        ),
        "extra.csv": ("a,b,y\n1,2,0\n3,4,1\n5,6,1,9\n7,8,0\n", "data row 3 (1-based) has 4 fields"),
        "under.csv": (
            "a,y\n" + "".join(f"{'1_000' if i == 2 else i},{i % 2}\n" for i in range(20)),
            "data row 3 (1-based) holds '1_000'",
        ),
        "dup.csv": ("a,a,y\n1,2,0\n3,4,1\n", "2 columns are named 'a'"),
        "nan.csv": (
            "a,b,y\n1,2,0\n3,nan,1\n5,6,0\n7,8,1\n9,1,0\n",
            "column 'b' has missing values (first: data row 2, 1-based",
        ),
        "empty.csv": (
            "a,b,y\n1,2,0\n3,4,1\n5,,0\n7,8,1\n9,1,0\n",
            "column 'b' has missing values (first: data row 3, 1-based",
        ),
    }
    for with_arrow in (True, False):
        if not with_arrow:
            monkeypatch.setattr(_data, "_pyarrow_csv", lambda: None)
        for name, (text, message) in cases.items():
            (tmp_path / name).write_text(text)
            code = cli.main(["fit", str(tmp_path / name), "--target", "y", "--family", "bernoulli"])
            err = capsys.readouterr().err
            assert code == 2 and message in err, (with_arrow, name, err)


def test_gzip_progress_reaches_the_end(tmp_path, frame):
    path = tmp_path / "d.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("a,b,y\n")
        for i in range(N):
            a, b = float(frame["a"][i]), float(frame["b"][i])
            f.write(f"{a!r},{b!r},{frame['y'][i]}\n")
    seen = []
    data = _data.read(str(path), "y", progress=seen.append)
    assert seen and seen[-1] == 1.0 and data.X.shape == (N, 2)


def test_unexpected_errors_are_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "d.csv").write_text("a,y\n1,0\n2,1\n3,0\n4,1\n")
    argv = ["fit", str(tmp_path / "d.csv"), "--target", "y", "--family", "bernoulli"]
    for exc in (KeyError("x"), IndexError("list index out of range"), MemoryError()):

        def boom(*a, exc=exc, **k):
            raise exc

        monkeypatch.setattr(cli, "read", boom)
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("fastmle: error: ") and err.count("\n") == 1, err
    monkeypatch.setenv("FASTMLE_TRACEBACK", "1")
    monkeypatch.setattr(cli, "read", lambda *a, **k: {}["x"])
    with pytest.raises(KeyError):
        cli.main(argv)


def test_random_csv_bytes_give_data_errors_only(tmp_path, monkeypatch):
    """Short random texts from CSV's special characters: a DataError or a result from
    both readers, never another exception."""
    import random

    rng = random.Random(17)
    alphabet = list('ab,;\t"\n\r y01.5e-+_NA\ufeff\u0661\u00e9|')
    path = tmp_path / "f.csv"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        if rng.random() < 0.6:
            text = "a,y\n" + text
        path.write_bytes(text.encode(rng.choice(["utf-8", "latin-1"]), errors="replace"))
        for arrow in (True, False):
            with monkeypatch.context() as m:
                if not arrow:
                    m.setattr(_data, "_pyarrow_csv", lambda: None)
                try:
                    _data.read(str(path), "y")
                except _data.DataError:
                    pass
