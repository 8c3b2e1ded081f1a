"""A columnar fast path for whole JSONL trace files: the same ``Op`` list, about twice as fast.

``parse_trace_lines`` spends about 1.4 us an operation in Python (a JSON parse and a dozen
checks a line); bench_trace's 452,493-operation trace took 0.65 s to load, 0.32 s here
(benchmarks/bench_trace.py).  Of those 0.32 s, Arrow's JSON parse of the 235,297 distinct
lines takes about 0.1 s, splitting and hashing the lines 0.07 s, and making the Op tuples
0.06 s: a further step would have to parse without Arrow's JSON reader.  Here Arrow does the per-line
work in C++: its CSV reader cuts the file into lines, a hash table keeps each distinct line
once (generated traces repeat about half their lines, and a repeated line is the same Op,
as ``parse_trace_lines``'s memo makes it), ``pyarrow.json`` parses the distinct lines into
columns, and every SPEC section 4 rule is checked on whole columns (``pyarrow.compute``,
numpy) or on each distinct string once.  Python then only builds each distinct ``Op``.

What keeps it exact: this module never words an error and never decides a doubtful case.
It returns None, and ``load_trace`` parses the whole file line by line as before (so each
message, line number and accept/reject decision is ``parse_trace_lines``'s), whenever
anything is not certain: a reader error, a byte-order mark, a line whose last byte is not
``}`` (blank-looking or split lines, and Arrow reads ``{..}{..}`` as two rows), fewer or more
rows than distinct lines, a column of another type than expected (a float, a bool, an
integer past 64 bits (read as a float), a nested value, a timestamp-looking string), an
explicit ``null`` (Arrow cannot tell it from a missing key), invalid UTF-8, or any row that
fails a check.  Arrow refuses duplicate keys, lone surrogates and raw control characters
in strings, so those fall back too.

``open``'s ``mode`` is a string where ``chmod``'s is an integer, and Arrow refuses a column of
both: then the ``"mode":"`` of string modes is renamed ``"@access":"`` and the lines parsed
again (a key renamed; the row keeps its place: ``"mode"`` followed by ``:`` is a key, as a
string's own quotes are escaped), and the count of renamed keys must equal the ``@access``
values read, so no key of the file itself can pose as one.
"""

from __future__ import annotations

from functools import partial
from itertools import repeat
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from .image import MAX_FILE_SIZE, MAX_ID, MAX_MODE
from .paths import NAME_MAX, path_problem
from .trace import OP_FIELDS, OPEN_MODES, Op

UTF8_BOM = b"\xef\xbb\xbf"  # Arrow skips it; json.loads refuses a line that starts with it
MAX_CONTAINER = 1_000_000  # op_from_dict's bound on "container"
SYMLINK_TARGET_MAX = 4096  # op_from_dict: a target must be under PATH_MAX bytes
BLOCK_SIZE = 1 << 23  # bytes Arrow reads at a time (8 MiB measured ~10% faster than 1 MiB)
BUILD_ROWS = 1 << 16  # distinct lines turned into Ops at a time: bounds the Python columns alive
ACCESS = "@access"  # the key open's string "mode" is renamed to (see the module docstring)
_EMPTY, _NEWLINE = pa.scalar(b"", pa.large_binary()), pa.scalar(b"\n", pa.large_binary())
_MODE_STRING_KEY = r'"mode"[ \t]*:[ \t]*"'
_EXPLICIT_NULL = r':[ \t]*null'  # a null can only stand after a key: arrays and top-level
# values make the reader fail or a line not end in "}"

_INTS = {"container": MAX_CONTAINER, "size": MAX_FILE_SIZE, "offset": MAX_FILE_SIZE,
         "length": MAX_FILE_SIZE, "uid": MAX_ID, "gid": MAX_ID, "mode": MAX_MODE}
_STRINGS = ("op", "path", "src", "dst", ACCESS, "name", "target", "layer")
_FEW_VALUES = ("op", ACCESS)


def _column_rules() -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """(JSON key -> kinds that allow it, JSON key -> kinds that require it), from OP_FIELDS,
    with open's "mode" under ``ACCESS`` (its integer "mode" is refused, as _int refuses it)."""
    allows: dict[str, set[str]] = {}
    requires: dict[str, set[str]] = {}
    for kind, (required, optional) in OP_FIELDS.items():
        for key in required + optional + ("container",):
            key = ACCESS if (kind, key) == ("open", "mode") else key
            allows.setdefault(key, set()).add(kind)
            if key in required or key == ACCESS:
                requires.setdefault(key, set()).add(kind)
    return ({k: frozenset(v) for k, v in allows.items()}, {k: frozenset(v) for k, v in requires.items()})


ALLOWS, REQUIRES = _column_rules()


def load_trace_columns(data: bytes) -> list[Op] | None:
    """The Ops of a whole JSONL file's bytes, equal to ``list(parse_trace_lines(...))`` of
    it, or None when this path is not sure (then the caller parses line by line)."""
    try:
        return _load(data)
    except (pa.ArrowException, ValueError):  # ArrowInvalid is a ValueError
        return None


def _load(data: bytes) -> list[Op] | None:
    if data.startswith(UTF8_BOM):
        return None
    distinct, rows = _distinct_lines(data)
    if len(distinct) == 0:
        return []  # only line breaks: every line blank
    if not pc.all(pc.ends_with(distinct, "}")).as_py():
        return None
    if not data.isascii():
        distinct.cast(pa.large_string())  # raises on invalid UTF-8 (load_trace words that error)
    if pc.any(pc.match_substring_regex(distinct, _EXPLICIT_NULL)).as_py():
        return None
    table, renamed = _parse(distinct)
    del distinct
    if table.num_rows != len(rows.dictionary) or not _valid(table, renamed):
        return None
    ops = _build(table)
    del table
    if ops is None:
        return None
    return np.fromiter(ops, dtype=object, count=len(ops))[rows.indices.to_numpy()].tolist()


def _distinct_lines(data: bytes) -> tuple[pa.Array, pa.DictionaryArray]:
    """The file's non-empty lines, each once, and every line as an index into them.  Arrow's
    CSV reader with no delimiter or quoting in use ends lines where Python's universal
    newlines do (``\\n``, ``\\r\\n``, ``\\r``); a line holding \\x01 fails to parse."""
    lines = pa_csv.read_csv(
        pa.BufferReader(data),
        read_options=pa_csv.ReadOptions(column_names=["line"], use_threads=False, block_size=BLOCK_SIZE),
        parse_options=pa_csv.ParseOptions(delimiter="\x01", quote_char=False, escape_char=False,
                                          double_quote=False, newlines_in_values=False, ignore_empty_lines=True),
        convert_options=pa_csv.ConvertOptions(column_types={"line": pa.large_binary()}, strings_can_be_null=False),
    ).column(0).combine_chunks()
    rows = lines.dictionary_encode()
    return rows.dictionary, rows


def _parse(distinct: pa.Array) -> tuple[pa.Table, int]:
    """The distinct lines as columns, and how many string "mode" values became ``ACCESS``.
    A trace whose modes are all strings (or all integers) parses as it is; only where Arrow
    refuses a column of both are the string ones renamed, and the lines read again."""
    try:
        table = _read_json(distinct)
    except pa.ArrowInvalid:
        renamed = pc.sum(pc.count_substring_regex(distinct, _MODE_STRING_KEY)).as_py()
        if not renamed:
            raise
        return _read_json(pc.replace_substring_regex(distinct, _MODE_STRING_KEY, f'"{ACCESS}":"')), renamed
    names = table.column_names
    if "mode" in names and table.column("mode").type == pa.string() and ACCESS not in names:
        names = [ACCESS if name == "mode" else name for name in names]
        return table.rename_columns(names), table.num_rows - table.column("mode").null_count
    return table, 0


def _read_json(distinct: pa.Array) -> pa.Table:
    """The distinct lines, newline-joined in one Arrow buffer, parsed into columns."""
    joined = pc.binary_join_element_wise(distinct, _EMPTY, _NEWLINE)
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64)
    text = joined.buffers()[2].slice(0, int(offsets[len(joined)]))
    return pa_json.read_json(pa.BufferReader(text), read_options=pa_json.ReadOptions(
        use_threads=False, block_size=BLOCK_SIZE))


def _valid(table: pa.Table, renamed: int) -> bool:
    """Every row passes what ``op_from_dict`` checks (so it would accept the line)."""
    names = table.column_names
    if "op" not in names or any(name not in _INTS and name not in _STRINGS for name in names):
        return False
    for name in names:
        expected = pa.int64() if name in _INTS else pa.string()
        if table.column(name).type != expected:
            return False
    op = table.column("op")
    accesses = table.num_rows - table.column(ACCESS).null_count if ACCESS in names else 0
    if op.null_count or accesses != renamed:
        return False  # a row with no op, or a file's own "@access" key
    kinds = op.combine_chunks().dictionary_encode()
    kind_names = kinds.dictionary.to_pylist()
    if any(kind not in OP_FIELDS for kind in kind_names):
        return False
    kind_index = kinds.indices.to_numpy()
    for key in ALLOWS.keys() | {name for name in names if name != "op"}:
        present = table.column(key).is_valid().to_numpy(zero_copy_only=False) if key in names else None
        allowed = np.array([kind in ALLOWS.get(key, ()) for kind in kind_names])[kind_index]
        required = np.array([kind in REQUIRES.get(key, ()) for kind in kind_names])[kind_index]
        if present is None:
            if required.any():
                return False
        elif (present & ~allowed).any() or (required & ~present).any():
            return False
    for key, hi in _INTS.items():
        if key in names and table.column(key).null_count < table.num_rows:
            low_high = pc.min_max(table.column(key)).as_py()
            if low_high["min"] < 0 or low_high["max"] > hi:
                return False
    if "offset" in names and pc.any(pc.greater(table.column("offset"), pc.subtract(
            pa.scalar(MAX_FILE_SIZE), table.column("length")))).as_py():
        return False  # offset + length > MAX_FILE_SIZE, without overflowing int64
    return True


def _plain_paths(paths: pa.Array) -> pa.Array:
    """``trace._plain_path`` on a column: absolute, at most NAME_MAX bytes, no empty, '.' or
    '..' component (no "//", no "/." and no trailing "/"), no NUL.  A sufficient test that
    ``path_problem`` finds nothing (byte lengths here, so non-ASCII names pass too); one
    regular expression is faster than three substring searches (20 against 42 ms)."""
    ok = pc.and_(pc.less_equal(pc.binary_length(paths), NAME_MAX), pc.starts_with(paths, "/"))
    return pc.and_(ok, pc.invert(pc.match_substring_regex(paths, r"//|/\.|\x00|/$")))


def _path_ok(path: str) -> bool:
    return path_problem(path) is None


def _xattr_name_ok(name: str) -> bool:
    return "." in name and bool(name.split(".", 1)[1]) and "\0" not in name


def _symlink_target_ok(target: str) -> bool:
    return bool(target) and "\0" not in target and len(target.encode()) < SYMLINK_TARGET_MAX


# Op field -> (JSON key, default, test of each distinct string value); "path" is filled from
# "src" where a row has it.
_SOURCES: dict[str, tuple[str, object, Callable[[str], bool] | None]] = {
    "kind": ("op", "", None), "path": ("path", "", _path_ok), "dst": ("dst", "", _path_ok),
    "container": ("container", 0, None), "size": ("size", 0, None), "offset": ("offset", 0, None),
    "length": ("length", 0, None), "mode": ("mode", -1, None), "access": (ACCESS, "", OPEN_MODES.__contains__),
    "uid": ("uid", 0, None), "gid": ("gid", 0, None), "name": ("name", "", _xattr_name_ok),
    "target": ("target", "", _symlink_target_ok), "layer": ("layer", "", bool)}
assert tuple(_SOURCES) == Op._fields


def _build(table: pa.Table) -> list[Op] | None:
    """The validated table's Ops in row order, ``BUILD_ROWS`` at a time, or None when a
    string value fails its test.  Kinds and access modes are dictionary-encoded (one str
    object each); paths of distinct lines are mostly distinct, so they are converted
    directly (36 against 70 ms for 226,000 paths of the benchmark trace)."""
    n = table.num_rows
    names = table.column_names
    path = None
    if "src" in names:
        path = pc.coalesce(table.column("src"), table.column("path")) if "path" in names else table.column("src")
    elif "path" in names:
        path = table.column("path")
    columns: list[object] = []  # per Op field: a default, (distinct values, row indices), or integers
    for field, (key, default, ok) in _SOURCES.items():
        column = path if field == "path" else (table.column(key) if key in names else None)
        if column is None or column.null_count == n:
            columns.append(repeat(default))
        elif key in _FEW_VALUES:  # dictionary-encoded: 21 kinds, 3 modes, one str object each
            encoded = pa.chunked_array(column).combine_chunks().dictionary_encode()
            if ok is not None and not all(map(ok, encoded.dictionary.to_pylist())):
                return None
            values = np.array(encoded.dictionary.to_pylist() + [default], dtype=object)
            columns.append((values, encoded.indices.fill_null(len(values) - 1).to_numpy()))
        elif isinstance(default, str):  # paths and names: mostly distinct once lines are
            column = pa.chunked_array(column).combine_chunks()
            doubtful = column.drop_null()
            if ok is _path_ok:
                doubtful = doubtful.filter(pc.invert(_plain_paths(doubtful)))  # those to test in full
            if not all(map(ok, doubtful.to_numpy(zero_copy_only=False))):
                return None
            columns.append(column.fill_null(default).to_numpy(zero_copy_only=False))
        else:
            columns.append(pc.fill_null(column, default).to_numpy())
    make = partial(tuple.__new__, Op)
    ops: list[Op] = []
    for start in range(0, n, BUILD_ROWS):
        fields = [column if isinstance(column, repeat) else
                  column[0][column[1][start:start + BUILD_ROWS]].tolist() if isinstance(column, tuple) else
                  column[start:start + BUILD_ROWS].tolist() for column in columns]
        ops.extend(map(make, zip(*fields)))
    return ops
