"""Reading a model's columns from a data file: CSV (also TSV and ``.gz``/``.bz2``/``.xz``
compressed), Parquet, NumPy ``.npy`` / ``.npz``.

Used by the ``fastmle fit`` command. Every problem with the file or its columns is a
``DataError`` whose message says what is wrong and how to fix it; row numbers in
messages are 1-based data rows (the header line is not counted).

CSV is parsed by pyarrow's CSV reader when pyarrow is installed (multi-threaded;
quoting, a UTF-8 byte-order mark, compression and encodings), else by the standard
library's ``csv`` module. The header is read first, with a bound, by ``csv``: it
gives the column names (checked before any row is read) and the delimiter, if not
given (the one of ``,`` tab ``;`` ``|`` that splits the header into the most
fields). Feature and weight columns must be numbers written with ASCII digits
(``1_000``, other scripts' digits and decimal commas are refused); a target is
numbers or text labels, never a mix of the two.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import difflib
import gc
import gzip
import io
import lzma
import operator
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

FORMATS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".tab": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npy": "npy",
    ".npz": "npz",
}
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}  # CSV only
CSV_CHUNK = 16 << 20  # bytes of CSV text parsed at a time (the progress bar's step)
HEADER_LIMIT = 64 << 20  # characters read at most to find the end of the header
DELIMITERS = (",", "\t", ";", "|")
# spellings of a missing value (pyarrow's defaults): refused in features and weights
MISSING = frozenset(
    [
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "n/a",
        "nan",
        "null",
        "None",
    ]
)
_CORE = (
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])"
)
_NUMBER = rf"^\s*{_CORE}\s*$"
_IS_NUMBER = re.compile(_NUMBER, re.ASCII).match


def _fast_floats(values) -> np.ndarray | None:
    """float64 values if every one is an ASCII number, else None. On ASCII text
    without underscores Python's float() accepts what _NUMBER does (digits, sign,
    point, exponent, inf, nan, surrounding blanks), so the whole column is checked in
    two C passes and converted by NumPy."""
    if not len(values):
        return None
    joined = "".join(values)
    if not joined.isascii() or "_" in joined:
        return None
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        return None


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


def file_format(path: str) -> tuple[str, str | None]:
    """(format, compression suffix or None) from the file name."""
    base, ext = os.path.splitext(path)
    ext = ext.lower()
    if ext in COMPRESSED:
        inner = os.path.splitext(base)[1].lower()
        if FORMATS.get(inner) == "csv":
            return "csv", ext
        raise DataError(
            f"{path}: a compressed file must be CSV (e.g. data.csv{ext}); "
            f"got {inner or '(no extension)'!r} inside"
        )
    if ext not in FORMATS:
        raise DataError(
            f"{path}: unknown format {ext or '(no extension)'!r}: use one of "
            f"{', '.join(sorted(FORMATS))} (CSV also compressed: "
            f"{', '.join(sorted(COMPRESSED))})"
        )
    return FORMATS[ext], None


def _check_file(path: str) -> None:
    """Refuse what is not a regular file before opening it: a FIFO with no writer
    would block the open forever, a device like /dev/zero never ends."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path} is a directory: give a data file")
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )
        raise DataError(
            f"{path} is {kind}: fastmle fit reads regular files; save the data to a file first"
        )
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: permission denied")


def read(
    path: str,
    target: str,
    features: list[str] | None = None,
    weights: str | None = None,
    progress: Progress | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    before_load: Callable[[int, int | None], None] | None = None,
) -> Dataset:
    """Read ``target``, ``features`` (default: every other column) and optionally a
    ``weights`` column from ``path``; the format follows the file's extension.
    ``delimiter`` and ``encoding`` apply to CSV (default: detected, UTF-8).
    ``before_load(n_features, max_rows)`` is called once the columns are known and
    before any row is read (``max_rows``: an upper bound on the data rows, or None)."""
    _check_file(path)
    fmt, compression = file_format(path)
    if fmt == "csv":
        reader = _CSV(path, compression, delimiter, encoding)
    else:
        if delimiter is not None or encoding is not None:
            raise DataError(f"--delimiter and --encoding apply to CSV files, not {path}")
        reader = _READERS[fmt](path)
    names = reader.names
    known = set(names)
    if target not in known:
        raise DataError(_unknown(target, names, "--target"))
    if features is None:  # every other column, except an index pandas stored (Parquet)
        index = set(getattr(reader, "index_columns", ()))
        features = [c for c in names if c not in (target, weights) and c not in index]
    else:  # a 2-D .npz array K named whole stands for its columns K[0], K[1], ...
        features = [
            n
            for c in features
            for n in ([c] if c in known else [m for m in names if m.startswith(c + "[")] or [c])
        ]
    for c in features + ([weights] if weights else []):
        if c not in known:
            raise DataError(_unknown(c, names, "--features" if c != weights else "--weights"))
    _check_names(path, names, features + [target] + ([weights] if weights else []))
    if len(set(features)) < len(features):
        twice = next(c for c in features if features.count(c) > 1)
        raise DataError(f"--features names {twice!r} twice: name each column once")
    if target in features:
        raise DataError(
            f"column {target!r} is both the target and a feature: drop it from --features"
        )
    if weights is not None and (weights == target or weights in features):
        raise DataError(
            f"column {weights!r} cannot be the weights and also the "
            f"{'target' if weights == target else 'a feature'}"
        )
    if not features:
        raise DataError(
            f"no feature columns: {path} has only {_shown(names)}; name them with --features"
        )
    if before_load is not None:
        before_load(len(features), reader.max_rows())
    X, y, w = reader.load(features, target, weights, progress or (lambda f: None))
    if X.shape[0] == 0:
        raise DataError(f"{path} has no data rows")
    _check_finite_columns(X, features)
    if y.dtype.kind == "f":
        _check_finite(y, target)
    if w is not None:
        _check_finite(w, weights)
    return Dataset(X, y, list(features), target, w)


def _check_names(path: str, names: list[str], used: list[str]) -> None:
    """Every column that is read needs a name of its own: an unnamed one (pandas' and
    R's row index) or a name given twice would be read by guesswork."""
    used_set = set(used)
    for j, name in enumerate(names):
        if name.strip() == "" and name in used_set:
            raise DataError(
                f"{path}: column {j + 1} has no name (pandas' to_csv and R's write.csv "
                "write their row index that way): name the columns to fit with --features, "
                "or save the file without the index (pandas: index=False; R: "
                "row.names=FALSE)"
            )
    seen: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        seen.setdefault(name, []).append(j + 1)
    for name in used:
        where = seen.get(name, [])
        if len(where) > 1:
            cols = ", ".join(map(str, where[:5]))
            raise DataError(
                f"{path}: {len(where)} columns are named {name!r} (columns "
                f"{cols}): rename them so that each name is used once"
            )


def _shown(names: list[str], limit: int = 12) -> str:
    return ", ".join(map(repr, names[:limit])) + (", ..." if len(names) > limit else "")


def _unknown(name: str, names: list[str], option: str) -> str:
    folded = [n for n in names if n.casefold() == name.casefold()]
    if folded:
        close = folded
    else:
        lower = {n.casefold(): n for n in names[:100_000]}
        close = [lower[c] for c in difflib.get_close_matches(name.casefold(), list(lower), n=1)]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{option}: no column {name!r}{hint}; the columns are {_shown(names)}"


def _check_finite_columns(X: np.ndarray, names: list[str]) -> None:
    """Name the first column of X holding NaN or inf; X is read once, by row blocks."""
    step = max(1, (8 << 20) // max(1, X.shape[1] * X.itemsize))
    for start in range(0, X.shape[0], step):
        ok = np.isfinite(X[start : start + step]).all(axis=0)
        if not ok.all():
            j = int(np.argmin(ok))
            _check_finite(X[:, j], names[j])


def _check_finite(col: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(col)
    if bad.any():
        rows = np.flatnonzero(bad)
        kind = "NaN/missing" if np.isnan(col[rows[0]]) else "infinite"
        raise DataError(
            f"column {name!r} has {kind} values in {rows.size} row(s) (first: "
            f"data row {rows[0] + 1}, 1-based): drop or impute them before "
            "fitting"
        )


def _numeric(col: np.ndarray, name: str) -> np.ndarray:
    if col.dtype.kind in "biuf" and col.ndim == 1:
        return col
    if col.ndim != 1:
        raise DataError(
            f"column {name!r} holds {col.ndim - 1}-d values per row (shape "
            f"{col.shape[1:]}): each column must hold one number per row"
        )
    raise DataError(
        f"column {name!r} is not numeric (dtype {col.dtype}): features and "
        "weights must be numbers; encode it or leave it out with --features"
    )


def _target(col: np.ndarray, name: str = "the target") -> np.ndarray:
    if col.ndim != 1:
        raise DataError(
            f"column {name!r} holds {col.ndim - 1}-d values per row: the target "
            "must be one number or label per row"
        )
    if col.dtype.kind in "biu":
        return col.astype(np.float64)
    if col.dtype.kind in "US":
        return col.astype(str)
    if col.dtype.kind == "O":
        bad = next((v for v in col if not isinstance(v, (str, bytes, int, float, bool))), None)
        if bad is not None:
            raise DataError(
                f"column {name!r} holds {type(bad).__name__} values: the target "
                "must be numbers or text labels"
            )
        return np.asarray([str(v) for v in col])
    if col.dtype.kind not in "f":
        raise DataError(
            f"column {name!r} has dtype {col.dtype}: the target must be numbers or text labels"
        )
    return col


def _labels(values: np.ndarray, name: str) -> np.ndarray:
    """A target read as text: numbers (float64) when every value is one, text labels
    when none is, an error naming the first odd value out otherwise."""
    fast = _fast_floats(values)
    if fast is not None:
        return fast
    is_num = np.fromiter((_IS_NUMBER(v) is not None for v in values), bool, len(values))
    return _labels_from_mask(values, is_num, name)


def _labels_from_mask(values, is_num: np.ndarray, name: str) -> np.ndarray:
    n_num = int(is_num.sum())
    if n_num == len(is_num):
        return np.asarray(values, dtype=str).astype(np.float64)
    if n_num == 0:
        labels = np.asarray(values, dtype=str)
        empty = np.flatnonzero(np.char.strip(labels) == "")
        if empty.size:
            raise DataError(
                f"column {name!r} has an empty (missing) label in data row "
                f"{empty[0] + 1} (1-based): drop or fill those rows"
            )
        return labels
    odd = np.flatnonzero(~is_num if 2 * n_num >= len(is_num) else is_num)
    i = int(odd[0])
    value = str(values[i])
    what = (
        "empty (missing)"
        if value.strip() == ""
        else "a missing-value marker"
        if value.strip() in MISSING
        else "text"
    )
    if 2 * n_num >= len(is_num):
        raise DataError(
            f"column {name!r} holds numbers but data row {i + 1} (1-based) holds "
            f"{value!r} ({what}; {odd.size} such row(s)): drop or fix those rows "
            "(numbers are written with ASCII digits, e.g. 1000 or 1e3)"
        )
    raise DataError(
        f"column {name!r} holds text labels but data row {i + 1} (1-based) holds "
        f"the number {value!r} ({odd.size} such row(s)): make every label text or "
        "every label a number"
    )


def _floats(values, name: str) -> np.ndarray:
    """Text to float64 with the rules of the pyarrow path (ASCII numbers only; NaN is
    a missing value)."""
    out = _fast_floats(values)
    if out is not None:
        nan = np.flatnonzero(np.isnan(out))
        if nan.size:
            raise DataError(
                f"column {name!r} has missing values (first: data row "
                f"{nan[0] + 1}, 1-based: {values[nan[0]]!r}): drop or impute "
                "them before fitting"
            )
        return out
    out = np.empty(len(values))
    for i, v in enumerate(values):
        if _IS_NUMBER(v) is None:
            s = v.strip()
            if s in MISSING:
                raise DataError(
                    f"column {name!r} has missing values (first: data row {i + 1}, "
                    f"1-based: {v!r}): drop or impute them before fitting"
                )
            raise DataError(_not_numeric(name, i + 1, v))
        out[i] = float(v)
    return out


def _not_numeric(name: str, row: int | None, value: str) -> str:
    where = f"data row {row} (1-based) holds {value!r}" if row else f"it holds {value!r}"
    hint = (
        "; a decimal comma? write 1.5, not 1,5"
        if re.fullmatch(r"\s*-?[0-9]+,[0-9]+\s*", value)
        else ""
    )
    return (
        f"column {name!r} is not numeric: {where}{hint}; features and weights must be "
        "numbers written with ASCII digits (e.g. 1000, -2.5, 1e-3); encode the column or "
        "leave it out with --features"
    )


# -- CSV -----------------------------------------------------------------------------


def _delimiter_option(d: str | None) -> str | None:
    if d is None:
        return None
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}
    d = named.get(d.lower(), d)
    if len(d) != 1 or d in '"\r\n':
        raise DataError(
            f"--delimiter must be one character (or tab, comma, semicolon, pipe), got {d!r}"
        )
    return d


def _pyarrow_csv():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.csv as pacsv
    except ImportError:
        return None
    return pacsv


class _CSV:
    def __init__(
        self, path: str, compression: str | None, delimiter: str | None, encoding: str | None
    ):
        self.path, self.compression = path, compression
        enc = encoding or "utf-8"
        try:
            codec = codecs.lookup(enc).name
        except LookupError:
            raise DataError(
                f"--encoding {enc!r} is not an encoding Python knows (e.g. "
                "utf-8, latin-1, cp1252, utf-16)"
            ) from None
        # a UTF-8 byte-order mark (Excel) is not part of the first column's name
        self.encoding = "utf-8-sig" if codec in ("utf-8", "utf-8-sig") else codec
        self.explicit_encoding = encoding is not None
        sample, eof = self._sample()
        if not sample.strip():
            raise DataError(f"{path} is empty: a CSV file needs a header line of column names")
        ext = os.path.splitext(path[: -len(compression)] if compression else path)[1].lower()
        self.delimiter = _delimiter_option(delimiter) or (
            "\t" if ext in (".tsv", ".tab") else self._detect(sample)
        )
        text = io.StringIO(sample, newline="")
        try:
            names = next(csv.reader(text, delimiter=self.delimiter))
        except (csv.Error, StopIteration) as e:
            raise DataError(f"{path}: cannot read the header line ({e})") from None
        self.names = [c.strip() for c in names]
        self.header_chars = text.tell()  # the header record, quoted line ends included

    def max_rows(self) -> int | None:
        """Every row has a delimiter between fields and a line end: at least as many
        bytes as columns (unknown for a compressed file)."""
        if self.compression:
            return None
        return max(0, os.path.getsize(self.path) - self.header_chars) // max(1, len(self.names))

    def _open_text(self):
        opener = COMPRESSED.get(self.compression, open)
        try:
            if opener is open:
                return open(self.path, encoding=self.encoding, newline="")
            return opener(self.path, "rt", encoding=self.encoding, newline="")
        except OSError as e:
            raise DataError(f"{self.path}: cannot be read ({e})") from None

    def _decode_error(self, e: UnicodeDecodeError) -> DataError:
        if self.explicit_encoding:
            return DataError(
                f"{self.path} is not {self.encoding} text ({e.reason}): check --encoding"
            )
        try:
            with open(self.path, "rb") as f:
                head = f.read(4)
        except OSError:
            head = b""
        if head[:2] in (b"\xff\xfe", b"\xfe\xff") and not self.compression:
            return DataError(
                f"{self.path} is UTF-16 text (it starts with a UTF-16 byte-order "
                "mark): give --encoding utf-16"
            )
        return DataError(
            f"{self.path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} "
            "cannot be decoded): give its encoding with --encoding, e.g. "
            "--encoding latin-1 or --encoding cp1252"
        )

    def _sample(self) -> tuple[str, bool]:
        """The start of the text, enough for the header record: (text, reached the end)."""
        parts, size, quotes = [], 0, 0
        try:
            with self._open_text() as f:
                while size < HEADER_LIMIT:
                    part = f.read(1 << 20)
                    if not part:
                        return "".join(parts), True
                    parts.append(part)
                    size += len(part)
                    quotes += part.count('"')
                    if "\n" in part and quotes % 2 == 0:  # a header ends at an unquoted line end
                        text = "".join(parts)
                        more = f.read(1 << 16)  # a little beyond, for the delimiter check
                        return text + more, not more
        except UnicodeDecodeError as e:
            raise self._decode_error(e) from None
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
            raise DataError(f"{self.path}: cannot be read ({e})") from None
        raise DataError(
            f"{self.path}: no end of the header line in its first "
            f"{HEADER_LIMIT >> 20} MB: not a CSV file?"
        )

    @staticmethod
    def _detect(sample: str) -> str:
        lines = sample.splitlines()[:2]

        def width(d, line):
            try:
                return len(next(csv.reader([line], delimiter=d)))
            except (csv.Error, StopIteration):
                return 0

        best, best_n = ",", 1
        for d in DELIMITERS:
            n = width(d, lines[0]) if lines else 0
            consistent = len(lines) < 2 or width(d, lines[1]) == n
            if n > best_n and consistent:
                best, best_n = d, n
        return best

    def load(self, features, target, weights, progress):
        first = {}
        for j, c in enumerate(self.names):
            first.setdefault(c, j)
        idx = {c: first[c] for c in features + [target] + ([weights] if weights else [])}
        pacsv = _pyarrow_csv()
        if pacsv is not None and self.compression != ".xz":
            try:
                return self._load_arrow(
                    pacsv, idx, features, target, weights, progress, newlines=False
                )
            except _QuotedLineEnds:  # a quoted field spans lines: the slower, exact parse
                return self._load_arrow(
                    pacsv, idx, features, target, weights, progress, newlines=True
                )
        cols = self._load_python(idx, features, target, weights, progress)
        n = len(cols[target])
        X = np.empty((n, len(features)))
        for j, c in enumerate(features):
            X[:, j] = cols[c]
        return X, cols[target], (cols[weights] if weights else None)

    # the standard library's csv module (no pyarrow)
    def _load_python(self, idx, features, target, weights, progress):
        used = sorted(set(idx.values()))
        raw = {j: [] for j in used}
        size = max(1, os.path.getsize(self.path))
        width = len(self.names)
        collect = gc.isenabled()
        gc.disable()  # millions of short-lived row lists would trigger full collections
        try:
            with self._open_text() as f:
                buffer = getattr(f, "buffer", None)
                reader = csv.reader(f, delimiter=self.delimiter)
                next(reader)
                get = (
                    operator.itemgetter(*used)
                    if len(used) > 1
                    else (lambda row, j=used[0]: (row[j],))
                )
                chunk = []
                for i, row in enumerate(reader, 1):
                    if len(row) != width:
                        if not row:
                            continue  # a blank line
                        raise DataError(self._width_error(i, len(row), width))
                    chunk.append(get(row))
                    if len(chunk) == 65536:
                        for j, col in zip(used, zip(*chunk)):
                            raw[j].extend(col)
                        chunk = []
                        if buffer is not None:
                            progress(min(1.0, _raw_tell(buffer) / size))
                for j, col in zip(used, zip(*chunk)):
                    raw[j].extend(col)
        except UnicodeDecodeError as e:
            raise self._decode_error(e) from None
        except csv.Error as e:
            raise DataError(f"{self.path}: not valid CSV ({e})") from None
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
            raise DataError(f"{self.path}: cannot be read ({e})") from None
        finally:
            if collect:
                gc.enable()
        progress(1.0)
        cols = {}
        for c, j in idx.items():
            cols[c] = _labels(raw[j], c) if c == target else _floats(raw[j], c)
        return cols

    def _width_error(self, row: int | None, got: int, width: int) -> str:
        where = f"data row {row} (1-based)" if row else "a data row"
        more = "more" if got > width else "fewer"
        return (
            f"{self.path}: {where} has {got} fields, {more} than the header's {width} "
            f"(delimiter {self.delimiter!r}): fix the row, quote fields that contain the "
            "delimiter, or give --delimiter"
        )

    # pyarrow
    def _options(self, pacsv, idx, target, threads, rows, newlines=True):
        import pyarrow as pa

        names = [f"c{j}" for j in range(len(self.names))]
        types = {f"c{j}": (pa.string() if c == target else pa.float64()) for c, j in idx.items()}
        # bytes per block: a header fits; wide files get larger blocks (pyarrow's cost
        # per column and block dominates at 10^5 columns)
        block = max(CSV_CHUNK, 4 * self.header_chars + 4096, min(128 << 20, 1024 * len(self.names)))

        def invalid(row):
            rows.append(row)
            return "error"

        read = pacsv.ReadOptions(
            column_names=names,
            skip_rows=1,
            block_size=block,
            use_threads=threads,
            encoding="utf8" if self.encoding == "utf-8-sig" else self.encoding,
        )
        parse = pacsv.ParseOptions(
            delimiter=self.delimiter, newlines_in_values=newlines, invalid_row_handler=invalid
        )
        convert = pacsv.ConvertOptions(
            column_types=types,
            include_columns=sorted(types),
            null_values=sorted(MISSING),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        return read, parse, convert

    def _stream(self):
        import pyarrow as pa

        raw = pa.OSFile(self.path, "rb")
        codec = {".gz": "gzip", ".bz2": "bz2"}.get(self.compression)
        return raw, (pa.CompressedInputStream(raw, codec) if codec else raw)

    def _load_arrow(self, pacsv, idx, features, target, weights, progress, newlines):
        """Stream the file through pyarrow's reader (parsing in parallel); the feature
        columns of each batch become one row-major block (``to_tensor``)."""
        import pyarrow as pa

        size = max(1, os.path.getsize(self.path))
        rows: list = []
        read, parse, convert = self._options(pacsv, idx, target, True, rows, newlines)
        parts, labels, wparts, pos, start = [], [], [], None, 0
        raw, stream = self._stream()
        try:
            with raw:
                try:
                    reader = pacsv.open_csv(
                        stream, read_options=read, parse_options=parse, convert_options=convert
                    )
                    for batch in reader:
                        if pos is None:
                            at = {nm: i for i, nm in enumerate(batch.schema.names)}
                            pos = {c: at[f"c{j}"] for c, j in idx.items()}
                            fpos = [pos[c] for c in features]
                        if batch.num_rows:
                            fb = batch.select(fpos)
                            self._no_nulls(fb, features, start)
                            parts.append(_block(fb))
                            labels.append(batch.column(pos[target]))
                            if weights:
                                wb = batch.select([pos[weights]])
                                self._no_nulls(wb, [weights], start)
                                wparts.append(wb.column(0).to_numpy())
                            start += batch.num_rows
                        progress(min(1.0, raw.tell() / size) if not raw.closed else 1.0)
                except pa.ArrowInvalid as e:
                    if "Empty CSV file" in str(e) or "skip initial" in str(e):
                        parts, labels, wparts = [], [], []
                    elif rows and not newlines:
                        raise _QuotedLineEnds from None
                    else:
                        raise self._arrow_error(pacsv, idx, target, e) from None
        except (pa.ArrowException, OSError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{self.path}: cannot be read ({str(e).splitlines()[0]})") from None
        progress(1.0)
        X = (
            np.concatenate(parts)
            if len(parts) > 1
            else (parts[0] if parts else np.empty((0, len(features))))
        )
        y = self._arrow_labels(pa.chunked_array(labels, pa.string()), target)
        w = (np.concatenate(wparts) if wparts else np.empty(0)) if weights else None
        return X, y, w

    @staticmethod
    def _no_nulls(batch, names, start):
        for k, col in enumerate(batch.columns):
            if col.null_count:
                first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                raise DataError(
                    f"column {names[k]!r} has missing values (first: data row "
                    f"{start + first + 1}, 1-based: empty or a marker such as NA): "
                    "drop or impute them before fitting"
                )

    @staticmethod
    def _arrow_labels(arr, name):
        import pyarrow.compute as pc

        is_num = pc.match_substring_regex(arr, _NUMBER).to_numpy(zero_copy_only=False)
        if is_num.all():
            return pc.cast(pc.utf8_trim_whitespace(arr), "float64").to_numpy()
        return _labels_from_mask(arr.to_numpy(zero_copy_only=False), is_num, name)

    def _arrow_error(self, pacsv, idx, target, e) -> DataError:
        """The parse or conversion error, with its row (pyarrow numbers rows only when
        it reads on one thread, so the file is read again that way up to the error)."""
        rows: list = []
        read, parse, convert = self._options(pacsv, idx, target, False, rows)
        msg = str(e)
        raw, stream = self._stream()
        try:
            with raw:
                for _ in pacsv.open_csv(
                    stream, read_options=read, parse_options=parse, convert_options=convert
                ):
                    pass
        except Exception as e2:  # noqa: BLE001  (any pyarrow error: its text is parsed)
            msg = str(e2)
        if rows:
            r = rows[0]
            number = r.number - 1 if r.number else None
            return DataError(self._width_error(number, r.actual_columns, r.expected_columns))
        m = re.search(
            r"column #(\d+): (?:Row #(\d+): )?CSV conversion error to \w+: "
            r"invalid value '(.*)'",
            msg,
            re.S,
        )
        if m:
            j = int(m.group(1))
            name = self.names[j] if j < len(self.names) else f"#{j + 1}"
            row = int(m.group(2)) - 1 if m.group(2) else None
            return DataError(_not_numeric(name, row, m.group(3)))
        if "invalid UTF8" in msg or "UTF8" in msg:
            return DataError(
                f"{self.path} is not UTF-8 text: give its encoding with "
                "--encoding, e.g. --encoding latin-1 or --encoding cp1252"
            )
        return DataError(f"{self.path}: not valid CSV ({msg.splitlines()[0]})")


class _QuotedLineEnds(Exception):
    """A row had the wrong number of fields when line ends were taken as row ends."""


def _block(batch) -> np.ndarray:
    """A record batch of float64 columns as one (rows, columns) C-ordered array."""
    if hasattr(batch, "to_tensor"):  # pyarrow >= 16: one pass in C++
        return np.asarray(batch.to_tensor(row_major=True))
    return np.column_stack([c.to_numpy() for c in batch.columns])


def _raw_tell(buffer) -> int:
    """Bytes of the file consumed so far, under any decompressing layer."""
    for attr in ("fileobj", "_fp", "raw"):
        inner = getattr(buffer, attr, None)
        if inner is not None and hasattr(inner, "tell"):
            try:
                return inner.tell()
            except (OSError, ValueError):
                break
    try:
        return buffer.tell()
    except (OSError, ValueError):
        return 0


# -- Parquet -------------------------------------------------------------------------


class _Parquet:
    def __init__(self, path: str):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(
                "reading Parquet needs pyarrow: pip install 'fastmle[parquet]'"
            ) from None
        self.path = path
        try:
            self.file = pq.ParquetFile(path)
            self.schema = self.file.schema_arrow
        except Exception as e:  # pyarrow raises its own error types for corrupt files
            raise DataError(
                f"{path} is not a readable Parquet file "
                f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
            ) from None
        self.names = list(self.schema.names)
        try:  # pandas' to_parquet stores a non-default index as a column
            meta = self.schema.pandas_metadata or {}
        except Exception:  # noqa: BLE001  (malformed metadata: no index to skip)
            meta = {}
        self.index_columns = [c for c in meta.get("index_columns", []) if isinstance(c, str)]

    def max_rows(self) -> int:
        return self.file.metadata.num_rows

    def _check_types(self, features, target, weights):
        import pyarrow as pa

        t = pa.types
        for c in features + [target] + ([weights] if weights else []):
            typ = self.schema.field(c).type
            if t.is_dictionary(typ):
                typ = typ.value_type
            number = (
                t.is_integer(typ) or t.is_floating(typ) or t.is_boolean(typ) or t.is_decimal(typ)
            )
            text = t.is_string(typ) or t.is_large_string(typ)
            if c == target and not (number or text):
                raise DataError(
                    f"column {c!r} is a {typ} column: the target must be numbers or text labels"
                )
            if c != target and not number:
                raise DataError(
                    f"column {c!r} is not numeric (type {typ}): features and "
                    "weights must be numbers; encode it or leave it out with "
                    "--features"
                )

    def load(self, features, target, weights, progress):
        self._check_types(features, target, weights)
        cols = list(dict.fromkeys(features + [target] + ([weights] if weights else [])))
        n = self.file.metadata.num_rows
        X = np.empty((n, len(features)))
        y, w, start = [], [], 0
        try:
            for batch in self.file.iter_batches(columns=cols, batch_size=1 << 18):
                stop = start + batch.num_rows
                for j, c in enumerate(features):
                    X[start:stop, j] = _numeric(_arrow_numpy(batch.column(c), c, start), c)
                y.append(_target(_arrow_numpy(batch.column(target), target, start), target))
                if weights:
                    w.append(_numeric(_arrow_numpy(batch.column(weights), weights, start), weights))
                start = stop
                progress(stop / max(n, 1))
        except (OSError, ValueError) as e:  # pyarrow's errors for damaged pages
            if isinstance(e, DataError):
                raise
            raise DataError(f"{self.path} is damaged ({str(e).splitlines()[0]})") from None
        y = np.concatenate(y) if y else np.empty(0)
        if y.dtype.kind == "U":
            y = _labels(y, target)  # numbers-as-text and a stray label are told apart
        return X, y, np.concatenate(w).astype(np.float64) if weights else None


def _arrow_numpy(arr, name: str, offset: int = 0) -> np.ndarray:
    if arr.null_count:
        first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]) + offset
        raise DataError(
            f"column {name!r} has {arr.null_count} null (missing) value(s) "
            f"(first: data row {first + 1}, 1-based): drop or impute them before "
            "fitting"
        )
    import pyarrow as pa

    typ = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(typ)
    if pa.types.is_decimal(typ):
        arr = arr.cast(pa.float64())
    return arr.to_numpy(zero_copy_only=False)


# -- NumPy ---------------------------------------------------------------------------


class _Npy:
    """A 2-D array (columns named "0", "1", ...) or a 1-D structured array (its fields)."""

    def __init__(self, path: str):
        try:
            self.a = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            raise DataError(f"{path} is not a readable .npy file ({_first_line(e)})") from None
        a = self.a
        if not isinstance(a, np.ndarray):
            raise DataError(f"{path} is not a .npy file (an .npz archive? name it .npz)")
        if a.dtype.names:
            self.names = list(a.dtype.names)
            if a.ndim != 1:
                raise DataError(
                    f"{path} holds a {a.ndim}-d structured array: fastmle fit "
                    "reads a 1-d structured array (one record per row)"
                )
        elif a.ndim == 2:
            self.names = [str(j) for j in range(a.shape[1])]
        else:
            raise DataError(
                f"{path} holds a {a.ndim}-d array: fastmle fit reads a 2-d array "
                "(columns named 0, 1, ...) or a structured array"
            )

    def max_rows(self) -> int:
        return self.a.shape[0]

    def load(self, features, target, weights, progress):
        a = self.a
        if a.dtype.names:
            cols = {c: a[c] for c in features + [target] + ([weights] if weights else [])}
            X = np.column_stack([_numeric(cols[c], c) for c in features])
            w = _numeric(cols[weights], weights) if weights else None
            return X, _target(cols[target], target), w
        _numeric(a[:0, 0], "the array")
        j = [int(c) for c in features]
        if j == list(range(j[0], j[-1] + 1)):
            X = a[:, j[0] : j[-1] + 1]  # a view: the fit reads the memmap block by block
        else:
            X = a[:, j]
        w = np.asarray(a[:, int(weights)], dtype=np.float64) if weights else None
        return X, np.asarray(a[:, int(target)], dtype=np.float64), w


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def available_memory() -> int | None:
    """Bytes of memory available to this process now (Linux: MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class _Npz:
    """1-D arrays are columns named by their keys; a 2-D array ``K`` gives columns
    ``K[0]``, ``K[1]``, ... and is read whole when every feature comes from it.

    Only the arrays' headers are read to name the columns, and each array's size as
    its header declares it is checked against the archive's declared size and the
    memory available before anything is decompressed (a small file can expand to
    gigabytes)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
            infos = {i.filename: i for i in self.zip.infolist()}
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise DataError(
                f"{path} is not a readable .npz file ({_first_line(e)}): a "
                "truncated or damaged archive?"
            ) from None
        self.shapes, self.dtypes, self.members = {}, {}, {}
        for fname, info in infos.items():
            if not fname.endswith(".npy"):
                continue
            key = fname[:-4]
            shape, dtype, header = self._header(info)
            need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if need + header > info.file_size + 64:
                raise DataError(
                    f"{path}: array {key!r} declares shape {shape} "
                    f"({need:,} bytes) but its member holds {info.file_size:,} "
                    "bytes: a damaged archive"
                )
            self.shapes[key], self.dtypes[key], self.members[key] = shape, dtype, info
        total = sum(i.file_size for i in self.members.values())
        avail = available_memory()
        if avail is not None and total > avail:
            raise DataError(
                f"{path} expands to {total / 2**30:.1f} GiB but only "
                f"{avail / 2**30:.1f} GiB of memory is available: use a .npy file "
                "(read as a memory map) or fewer rows"
            )
        self.names, self.where = [], {}
        for key, shape in self.shapes.items():
            if self.dtypes[key].hasobject:
                raise DataError(
                    f"{path}: array {key!r} holds Python objects, which fastmle "
                    "does not unpickle: store numbers or fixed-width text"
                )
            if len(shape) == 1:
                self.names.append(key)
                self.where[key] = (key, None)
            elif len(shape) == 2:
                for j in range(shape[1]):
                    self.names.append(f"{key}[{j}]")
                    self.where[f"{key}[{j}]"] = (key, j)
            else:
                raise DataError(
                    f"{path}: array {key!r} is {len(shape)}-d; store 1-d columns "
                    "or 2-d (rows x columns) arrays"
                )
        lengths = {shape[0] for shape in self.shapes.values()}
        if len(lengths) > 1:
            raise DataError(
                f"{path}: the arrays have different numbers of rows "
                f"{sorted(lengths)}: every array needs one row per sample"
            )
        self._loaded: dict = {}

    def max_rows(self) -> int | None:
        return next(iter(self.shapes.values()))[0] if self.shapes else None

    def _header(self, info):
        try:
            with self.zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                reader = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = (
                    reader(f, max_header_size=1 << 16)
                    if "max_header_size" in reader.__code__.co_varnames
                    else reader(f)
                )
                return shape, dtype, f.tell()
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(
                f"{self.path}: member {info.filename!r} is not a readable .npy "
                f"array ({_first_line(e)})"
            ) from None

    def _array(self, key):
        if key not in self._loaded:
            try:
                with self.zip.open(self.members[key]) as f:
                    self._loaded[key] = np.lib.format.read_array(f, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise DataError(
                    f"{self.path}: array {key!r} cannot be read "
                    f"({_first_line(e)}): a truncated or damaged archive?"
                ) from None
        return self._loaded[key]

    def _col(self, name):
        key, j = self.where[name]
        a = self._array(key)
        return a if j is None else a[:, j]

    def load(self, features, target, weights, progress):
        key = self.where[features[0]][0]
        if (
            features == [n for n in self.names if self.where[n][0] == key]
            and self.where[features[0]][1] is not None
        ):
            X = self._array(key)  # the whole 2-D array, in its order
            _numeric(X[:, 0], key)
        else:
            X = np.column_stack([_numeric(self._col(c), c) for c in features])
        w = _numeric(self._col(weights), weights).astype(np.float64) if weights else None
        return X, _target(self._col(target), target), w


_READERS = {"csv": _CSV, "parquet": _Parquet, "npy": _Npy, "npz": _Npz}
