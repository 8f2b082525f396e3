"""Reading a model's columns from a data file: CSV, Parquet, NumPy ``.npy`` / ``.npz``.

Used by the ``fastmle fit`` command. Every problem with the file or its columns is a
``DataError`` whose message says what is wrong and how to fix it.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

FORMATS = {".csv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".npy": "npy", ".npz": "npz"}
CSV_CHUNK = 16 << 20  # bytes of CSV text parsed at a time (the progress bar's step)


class DataError(ValueError):
    """The data file cannot give the requested columns; the message says how to fix it."""


@dataclass
class Dataset:
    X: np.ndarray  # (n, d) float, possibly a read-only memmap view
    y: np.ndarray  # (n,) float, or str labels
    features: list[str]
    target: str
    sample_weight: np.ndarray | None = None


Progress = Callable[[float], None]  # called with the fraction of the file read


def read(path: str, target: str, features: list[str] | None = None,
         weights: str | None = None, progress: Progress | None = None) -> Dataset:
    """Read ``target``, ``features`` (default: every other column) and optionally a
    ``weights`` column from ``path``; the format follows the file's extension."""
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory: give a data file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise DataError(f"{path}: unknown format {ext or '(no extension)'!r}: use one of "
                        f"{', '.join(sorted(FORMATS))}")
    reader = _READERS[FORMATS[ext]](path)
    names = reader.names
    if target not in names:
        raise DataError(_unknown(target, names, "--target"))
    if features is None:
        features = [c for c in names if c not in (target, weights)]
    else:  # a 2-D .npz array K named whole stands for its columns K[0], K[1], ...
        features = [n for c in features
                    for n in ([c] if c in names else
                              [m for m in names if m.startswith(c + "[")] or [c])]
    for c in features + ([weights] if weights else []):
        if c not in names:
            raise DataError(_unknown(c, names, "--features" if c != weights else "--weights"))
    if target in features:
        raise DataError(f"column {target!r} is both the target and a feature: drop it from "
                        "--features")
    if not features:
        raise DataError(f"no feature columns: {path} has only {names}; name them with "
                        "--features")
    X, y, w = reader.load(features, target, weights, progress or (lambda f: None))
    _check_finite_columns(X, features)
    if y.dtype.kind == "f":
        _check_finite(y, target)
    if w is not None:
        _check_finite(w, weights)
    return Dataset(X, y, list(features), target, w)


def _unknown(name: str, names: list[str], option: str) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(map(repr, names[:12])) + (", ..." if len(names) > 12 else "")
    return f"{option}: no column {name!r}{hint}; the columns are {shown}"


def _check_finite_columns(X: np.ndarray, names: list[str]) -> None:
    """Name the first column of X holding NaN or inf; X is read once, by row blocks."""
    step = max(1, (8 << 20) // max(1, X.shape[1] * X.itemsize))
    for start in range(0, X.shape[0], step):
        ok = np.isfinite(X[start:start + step]).all(axis=0)
        if not ok.all():
            j = int(np.argmin(ok))
            _check_finite(X[:, j], names[j])


def _check_finite(col: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(col)
    if bad.any():
        rows = np.flatnonzero(bad)
        kind = "NaN/missing" if np.isnan(col[rows[0]]) else "infinite"
        raise DataError(f"column {name!r} has {kind} values in {rows.size} row(s) (first: "
                        f"row {rows[0]}): drop or impute them before fitting")


def _numeric(col: np.ndarray, name: str) -> np.ndarray:
    if col.dtype.kind in "biuf":
        return col
    raise DataError(f"column {name!r} is not numeric (dtype {col.dtype}): features and "
                    "weights must be numbers; encode it or leave it out with --features")


def _target(col: np.ndarray) -> np.ndarray:
    if col.dtype.kind in "biu":
        return col.astype(np.float64)
    if col.dtype.kind in "US":
        return col.astype(str)
    if col.dtype.kind == "O":
        return np.asarray([str(v) for v in col])
    return col


# -- CSV -----------------------------------------------------------------------------


class _CSV:
    def __init__(self, path: str):
        self.path = path
        with open(path, encoding="utf-8") as f:
            header = f.readline()
        if not header.strip():
            raise DataError(f"{path} is empty: a CSV file needs a header line of column "
                            "names")
        self.names = [c.strip().strip('"') for c in header.rstrip("\r\n").split(",")]

    def load(self, features, target, weights, progress):
        idx = {c: i for i, c in enumerate(self.names)}
        fcols = [idx[c] for c in features]
        size = max(1, os.path.getsize(self.path))
        Xs, ys, ws = [], [], []
        with open(self.path, encoding="utf-8") as f:
            f.readline()
            while True:
                text = f.read(CSV_CHUNK)
                if not text:
                    break
                text += f.readline()  # end the chunk at a line end
                lines = [ln for ln in text.splitlines() if ln.strip()]
                Xs.append(self._floats(lines, fcols, features))
                ys.append(self._column(lines, idx[target], target))
                if weights:
                    ws.append(self._floats(lines, [idx[weights]], [weights])[:, 0])
                progress(min(1.0, f.tell() / size))
        if not Xs:
            raise DataError(f"{self.path} has a header but no rows")
        if len({part.dtype.kind for part in ys}) > 1:
            raise DataError(f"column {target!r} mixes numbers and text: make its labels "
                            "all numbers or all text")
        y = np.concatenate(ys)
        return (np.concatenate(Xs), y if y.dtype.kind == "U" else y.astype(np.float64),
                np.concatenate(ws) if weights else None)

    def _floats(self, lines, cols, names):
        try:
            return np.loadtxt(lines, delimiter=",", usecols=cols, ndmin=2, dtype=np.float64,
                              comments=None)
        except ValueError:
            for c, name in zip(cols, names):  # find the column at fault
                self._column(lines, c, name, numeric=True)
            raise

    def _column(self, lines, col, name, numeric=False):
        try:
            return np.loadtxt(lines, delimiter=",", usecols=[col], dtype=np.float64,
                              comments=None)
        except ValueError as e:
            values = np.loadtxt(lines, delimiter=",", usecols=[col], dtype=str, comments=None,
                                quotechar='"')
            empty = np.flatnonzero(np.char.strip(values) == "")
            if empty.size:
                raise DataError(f"column {name!r} has empty (missing) values: drop or impute "
                                "them before fitting") from None
            if numeric:
                bad = next(v for v in values if not _is_float(v))
                raise DataError(f"column {name!r} is not numeric (e.g. {bad!r}): features "
                                "and weights must be numbers; encode it or leave it out with "
                                "--features") from e
            return values


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


# -- Parquet -------------------------------------------------------------------------


class _Parquet:
    def __init__(self, path: str):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError("reading Parquet needs pyarrow: pip install 'fastmle[parquet]'") \
                from None
        try:
            self.file = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises its own error types for corrupt files
            raise DataError(f"{path} is not a readable Parquet file ({e})") from None
        self.names = list(self.file.schema_arrow.names)

    def load(self, features, target, weights, progress):
        cols = list(dict.fromkeys(features + [target] + ([weights] if weights else [])))
        n = self.file.metadata.num_rows
        X = np.empty((n, len(features)))
        y, w, start = [], [], 0
        for batch in self.file.iter_batches(columns=cols, batch_size=1 << 18):
            stop = start + batch.num_rows
            for j, c in enumerate(features):
                X[start:stop, j] = _numeric(_arrow_numpy(batch.column(c), c), c)
            y.append(_target(_arrow_numpy(batch.column(target), target)))
            if weights:
                w.append(_numeric(_arrow_numpy(batch.column(weights), weights), weights))
            start = stop
            progress(stop / max(n, 1))
        y = np.concatenate(y) if y else np.empty(0)
        return X, y, np.concatenate(w).astype(np.float64) if weights else None


def _arrow_numpy(arr, name: str) -> np.ndarray:
    if arr.null_count:
        raise DataError(f"column {name!r} has {arr.null_count} null (missing) value(s): drop "
                        "or impute them before fitting")
    return arr.to_numpy(zero_copy_only=False)


# -- NumPy ---------------------------------------------------------------------------


class _Npy:
    """A 2-D array (columns named "0", "1", ...) or a 1-D structured array (its fields)."""

    def __init__(self, path: str):
        try:
            self.a = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError) as e:
            raise DataError(f"{path} is not a readable .npy file ({e})") from None
        a = self.a
        if a.dtype.names:
            self.names = list(a.dtype.names)
        elif a.ndim == 2:
            self.names = [str(j) for j in range(a.shape[1])]
        else:
            raise DataError(f"{path} holds a {a.ndim}-d array: fastmle fit reads a 2-d array "
                            "(columns named 0, 1, ...) or a structured array")

    def load(self, features, target, weights, progress):
        a = self.a
        if a.dtype.names:
            cols = {c: a[c] for c in features + [target] + ([weights] if weights else [])}
            X = np.column_stack([_numeric(cols[c], c) for c in features])
            w = cols[weights] if weights else None
            return X, _target(cols[target]), w
        _numeric(a, "the array")
        j = [int(c) for c in features]
        if j == list(range(j[0], j[-1] + 1)):
            X = a[:, j[0]:j[-1] + 1]  # a view: the fit reads the memmap block by block
        else:
            X = a[:, j]
        w = np.asarray(a[:, int(weights)], dtype=np.float64) if weights else None
        return X, np.asarray(a[:, int(target)], dtype=np.float64), w


class _Npz:
    """1-D arrays are columns named by their keys; a 2-D array ``K`` gives columns
    ``K[0]``, ``K[1]``, ... and is read whole when every feature comes from it."""

    def __init__(self, path: str):
        try:
            self.z = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            raise DataError(f"{path} is not a readable .npz file ({e})") from None
        self.names, self.where = [], {}
        for key in self.z.files:
            a = self.z[key]
            if a.ndim == 1:
                self.names.append(key)
                self.where[key] = (key, None)
            elif a.ndim == 2:
                for j in range(a.shape[1]):
                    self.names.append(f"{key}[{j}]")
                    self.where[f"{key}[{j}]"] = (key, j)
            else:
                raise DataError(f"{path}: array {key!r} is {a.ndim}-d; store 1-d columns or "
                                "2-d (rows x columns) arrays")
        lengths = {self.z[k].shape[0] for k in self.z.files}
        if len(lengths) > 1:
            raise DataError(f"{path}: the arrays have different numbers of rows "
                            f"{sorted(lengths)}: every array needs one row per sample")

    def _col(self, name):
        key, j = self.where[name]
        a = self.z[key]
        return a if j is None else a[:, j]

    def load(self, features, target, weights, progress):
        key = self.where[features[0]][0]
        if features == [n for n in self.names if self.where[n][0] == key] and \
                self.where[features[0]][1] is not None:
            X = _numeric(self.z[key], key)  # the whole 2-D array, in its order
        else:
            X = np.column_stack([_numeric(self._col(c), c) for c in features])
        w = _numeric(self._col(weights), weights).astype(np.float64) if weights else None
        return X, _target(self._col(target)), w


_READERS = {"csv": _CSV, "parquet": _Parquet, "npy": _Npy, "npz": _Npz}


