"""The columnar trace loader gives exactly what the line-by-line parser gives.

``load_trace_columns`` must return ``list(parse_trace_lines(...))`` or None (then
``load_trace`` parses line by line), so every test compares the two on the same bytes:
built-in workloads, hypothesis-generated traces with every op kind and optional field, and
every malformed case we know of, where ``load_trace`` must raise the line parser's message.
Valid traces must also *take* the columnar path (a fallback would hide a columnar bug).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.errors import BadInput
from simulator.imagetree import ImageTree
from simulator.inputs import load_image, load_trace, load_workload
from simulator.trace import OP_FIELDS, Op, dump_trace, parse_trace_lines
from simulator.trace_columns import load_trace_columns
from workloads.builtin import WORKLOADS

CORPUS = Path(__file__).parent / "bad_inputs" / "traces"
STORAGE_BENCHMARK_WORKLOADS = ("append-each", "read-each", "tree-walk")  # need its image's directories


def line_by_line(path: Path) -> list[Op] | str:
    """What ``load_trace`` gave before the columnar path: the ops, or the BadInput message."""
    try:
        with path.open(encoding="utf-8") as fh:
            return list(parse_trace_lines(fh, str(path)))
    except UnicodeDecodeError as exc:
        return f"{path}: not UTF-8 text: {exc.reason}"
    except BadInput as exc:
        return str(exc)


def loaded(path: Path) -> list[Op] | str:
    try:
        return load_trace(path)
    except BadInput as exc:
        return str(exc)


def assert_columnar(path: Path) -> list[Op]:
    """The columnar path takes the file and gives the line parser's ops."""
    ops = load_trace_columns(path.read_bytes())
    assert ops is not None, "the columnar path fell back on a valid trace"
    assert ops == line_by_line(path)
    assert all(type(op) is Op for op in ops)
    return ops


@pytest.fixture(scope="module")
def trees():
    return {name: ImageTree.build(load_image(spec, 0)) for name, spec in (
        ("synthetic", "synthetic:layers=4,files=300"),
        ("storage-benchmark", "storage-benchmark:copies=1,small_files=20,tree_depth=2"))}


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_builtin_workloads(workload, trees, tmp_path):
    tree = trees["storage-benchmark" if workload in STORAGE_BENCHMARK_WORKLOADS else "synthetic"]
    ops = load_workload(workload, tree, 0)
    path = tmp_path / "t.jsonl"
    path.write_text(dump_trace(ops), encoding="utf-8")
    assert assert_columnar(path) == ops
    assert load_trace(path) == ops


names = st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..") and not s.startswith("."))
paths = st.lists(names, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
sizes = st.one_of(st.integers(0, 5000), st.sampled_from([2**63 - 1, 2**40]))
ids = st.integers(0, 2**32 - 2)
FIELD_VALUES = {"path": paths, "src": paths, "dst": paths, "size": sizes, "offset": st.integers(0, 2**62),
                "length": st.integers(0, 2**62), "uid": ids, "gid": ids, "mode": st.integers(0, 0o7777),
                "name": st.sampled_from(["user.a", "trusted.x.y", "security.é"]),
                "target": st.text(min_size=1, max_size=8).filter(lambda t: "\0" not in t),
                "layer": st.text(min_size=1, max_size=8)}


@st.composite
def raw_ops(draw) -> dict:
    kind = draw(st.sampled_from(sorted(OP_FIELDS)))
    required, optional = OP_FIELDS[kind]
    raw: dict = {"op": kind}
    for key in required + tuple(k for k in optional if draw(st.booleans())):
        raw[key] = draw(st.sampled_from(["r", "w", "rw"]) if (kind, key) == ("open", "mode") else FIELD_VALUES[key])
    if draw(st.booleans()):
        raw["container"] = draw(st.integers(0, 1_000_000))
    return raw


@st.composite
def trace_texts(draw) -> str:
    """JSONL as tools write it: compact or spaced, keys in any order, ASCII-escaped or not,
    lines repeated, blank lines, CRLF or LF, with or without a final line break."""
    ops = draw(st.lists(raw_ops(), min_size=1, max_size=25))
    ops = [op for op in ops if op.get("offset", 0) + op.get("length", 0) <= 2**63 - 1]
    ops += draw(st.lists(st.sampled_from(ops), max_size=5)) if ops else []
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    lines = [json.dumps(dict(draw(st.permutations(list(op.items())))), separators=separators,
                        ensure_ascii=draw(st.booleans())) for op in ops]
    lines += [""] * draw(st.integers(0, 2))
    lines = draw(st.permutations(lines))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + (newline if draw(st.booleans()) else "")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=trace_texts())
def test_generated_traces(text, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(text.encode("utf-8"))
    expected = line_by_line(path)
    assert not isinstance(expected, str), expected  # the generator makes valid traces
    if not any(line.strip() for line in text.splitlines()):
        return
    assert_columnar(path)


GOOD = '{"op": "stat", "path": "/ok"}\n'
# Bytes the columnar reader might read differently from json; load_trace must word each as
# the line parser does (or accept it as the line parser does).
EDGE_CASES = {
    "explicit-null-optional": b'{"op":"create","path":"/a","size":1,"mode":null}\n',
    "explicit-null-foreign": b'{"op":"stat","path":"/a","size":null}\n',
    "explicit-null-spaced": b'{"op": "stat", "path": "/a", "container":\tnull}\n',
    "duplicate-key": b'{"op":"stat","path":"/a","path":"/b"}\n',
    "duplicate-mode": b'{"op":"chmod","path":"/a","mode":"r","mode":5}\n',
    "two-objects-one-line": b'{"op":"stat","path":"/a"}{"op":"stat","path":"/b"}\n',
    "two-objects-spaced": b'{"op":"stat","path":"/a"} {"op":"stat","path":"/b"}\n{"op":"stat","path":"/c"}\n',
    "object-over-two-lines": b'{"op":"stat",\n"path":"/a"}\n',
    "split-and-doubled": b'{"op":"stat","path":"/a"}{"op":"stat","path":"/b"}\n{"op":"stat",\n"path":"/c"}\n',
    "lone-cr-inside": b'{"op":"stat",\r"path":"/a"}\n',
    "byte-order-mark": b'\xef\xbb\xbf{"op":"stat","path":"/a"}\n',
    "own-access-key": b'{"op":"open","path":"/a","@access":"r"}\n',
    "own-access-with-renamed": b'{"op":"open","path":"/a","mode":"r"}\n{"op":"chmod","path":"/a","mode":1}\n'
                               b'{"op":"open","path":"/b","@access":"w"}\n',
    "escaped-mode-key": b'{"op":"open","path":"/a","x\\"mode":"r"}\n{"op":"chmod","path":"/a","mode":1}\n',
    "open-int-mode": b'{"op":"open","path":"/a","mode":4}\n',
    "chmod-string-mode": b'{"op":"chmod","path":"/a","mode":"rw"}\n',
    "open-bad-mode-mixed": b'{"op":"open","path":"/a","mode":"a"}\n{"op":"chmod","path":"/a","mode":1}\n',
    "mode-too-big": b'{"op":"chmod","path":"/a","mode":4096}\n',
    "huge-int": b'{"op":"append","path":"/a","length":92233720368547758070}\n',
    "int64-overflow": b'{"op":"append","path":"/a","length":9223372036854775808}\n',
    "negative-huge": b'{"op":"append","path":"/a","length":-9223372036854775809}\n',
    "float-int-valued": b'{"op":"append","path":"/a","length":1.0}\n',
    "exponent": b'{"op":"append","path":"/a","length":1e2}\n',
    "bool": b'{"op":"append","path":"/a","length":true}\n',
    "uid-too-big": b'{"op":"chown","path":"/a","uid":4294967295,"gid":0}\n',
    "container-too-big": b'{"op":"stat","path":"/a","container":1000001}\n',
    "offset-plus-length": b'{"op":"read","path":"/a","offset":9223372036854775800,"length":8}\n',
    "timestamp-layer": b'{"op":"commit","layer":"2020-01-01"}\n',
    "int-layer": b'{"op":"commit","layer":7}\n',
    "empty-layer": b'{"op":"commit","layer":""}\n',
    "nested": b'{"op":"stat","path":"/a","x":{"y":1}}\n',
    "array-field": b'{"op":"stat","path":["/a"]}\n',
    "no-op": b'{"path":"/a"}\n',
    "empty-object": b'{}\n',
    "null-line": b'{"op":"stat","path":"/a"}\nnull\n',
    "number-op": b'{"op":5,"path":"/a"}\n',
    "lone-surrogate": b'{"op":"stat","path":"/\\ud800"}\n',
    "lone-surrogate-target": b'{"op":"symlink","target":"a\\udc00","path":"/l"}\n',
    "lone-surrogate-dst": b'{"op":"rename","src":"/a","dst":"/\\udfff"}\n',
    "nul-escape": b'{"op":"stat","path":"/a\\u0000b"}\n',
    "root-path": b'{"op":"stat","path":"/"}\n',
    "trailing-slash": b'{"op":"stat","path":"/a/"}\n',
    "dot-component": b'{"op":"stat","path":"/a/./b"}\n',
    "long-component": b'{"op":"stat","path":"/' + b"x" * 256 + b'"}\n',
    "long-path": b'{"op":"stat","path":"' + b"/abcdefghi" * 410 + b'"}\n',
    "whitespace-line": b'{"op":"stat","path":"/a"}\n   \n\t\n',
    "form-feed-line": b'{"op":"stat","path":"/a"}\n\x0c\n',
    "nbsp-line": b'{"op":"stat","path":"/a"}\n\xc2\xa0\n',
    "trailing-space": b'{"op":"stat","path":"/a"} \n',
    "control-byte": b'{"op":"stat","path":"/a"}\x01\n',
    "bad-utf8-after-bad-line": b'{"op":"fly"}\n' + b'{"op":"stat","path":"/x"}\n' * 3000 + b'{"op":"stat","path":"/\xff"}\n',
    "utf8-surrogate-bytes": b'{"op":"stat","path":"/\xed\xa0\x80"}\n',
    "leading-zero": b'{"op":"append","path":"/a","length":01}\n',
    "nan": b'{"op":"append","path":"/a","length":NaN}\n',
    "setxattr-bad-name": b'{"op":"setxattr","path":"/a","name":"user.","size":1}\n',
    "symlink-nul-target": b'{"op":"symlink","target":"a\\u0000","path":"/l"}\n',
    "symlink-long-target": b'{"op":"symlink","target":"' + b"t" * 4096 + b'","path":"/l"}\n',
    "empty-file": b"",
    "only-line-breaks": b"\n\r\n\n",
}
# Valid traces the columnar path must take (not fall back on).
COLUMNAR_CASES = {
    "no-final-newline": b'{"op":"stat","path":"/a"}',
    "crlf-and-blank-lines": b'\r\n{"op":"stat","path":"/a"}\r\n\r\n{"op":"unlink","path":"/a"}\r\n',
    "lone-cr-line-ends": b'{"op":"stat","path":"/a"}\r{"op":"stat","path":"/b"}\r',
    "non-ascii": '{"op":"stat","path":"/é/日本"}\n{"op":"stat","path":"/\\u00e9\\ud83d\\ude00"}\n'.encode(),
    "mixed-modes": b'{"op":"open","path":"/a","mode":"rw"}\n{"op":"chmod","path":"/a","mode":420}\n'
                   b'{"op": "open", "path": "/a", "mode": "r"}\n{"op":"create","path":"/b","size":0,"mode":0}\n',
    "string-modes-only": b'{"op":"open","path":"/a","mode":"w"}\n',
    "escaped-key": b'{"op":"st\\u0061t","p\\u0061th":"/a"}\n',
    "minus-zero": b'{"op":"append","path":"/a","length":-0}\n',
    "largest-values": b'{"op":"write","path":"/a","offset":9223372036854775800,"length":7,"container":1000000}\n'
                      b'{"op":"chown","path":"/a","uid":4294967294,"gid":4294967294}\n',
    "path-with-null-text": b'{"op":"stat","path":"/dev/null"}\n',
    "every-kind": b'{"op":"setxattr","path":"/a","name":"user.x","size":3}\n{"op":"symlink","target":"../b","path":"/l"}\n'
                  b'{"op":"commit","layer":"step1"}\n{"op":"commit"}\n{"op":"utime","path":"/a"}\n'
                  b'{"op":"move","src":"/a","dst":"/b","container":3}\n{"op":"truncate","path":"/b","size":9}\n',
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases_load_as_line_by_line(case, tmp_path):
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(EDGE_CASES[case])
    assert loaded(path) == line_by_line(path)


@pytest.mark.parametrize("case", sorted(COLUMNAR_CASES))
def test_valid_edge_cases_take_the_columnar_path(case, tmp_path):
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(COLUMNAR_CASES[case])
    assert loaded(path) == assert_columnar(path)


@pytest.mark.parametrize("case", sorted(p.name for p in CORPUS.iterdir()))
def test_bad_input_corpus(case):
    path = CORPUS / case
    expected = line_by_line(path)
    if isinstance(expected, str):
        assert load_trace_columns(path.read_bytes()) is None
    else:  # container-out-of-range parses: the run refuses it (the image has one container)
        assert load_trace_columns(path.read_bytes()) == expected
    assert loaded(path) == expected


# tests/test_loaders.py's bad lines, after a good line and a blank one (so "line 3").
LOADER_LINES = ['{"op": "fly", "path": "/a"}', '{"op": "write", "path": "/a", "offset": 0}',
                '{"op": "write", "path": "/a", "offset": -1, "length": 1}',
                '{"op": "write", "path": "/a", "offset": 0, "length": 1.5}',
                '{"op": "write", "path": "/a", "offset": 0, "length": true}', '{"op": "create", "path": "a", "size": 1}',
                '{"op": "create", "path": "/a/../b", "size": 1}', '{"op": "stat", "path": "/a", "colour": "red"}',
                '{"op": "open", "path": "/a", "mode": "x"}', '{"op": "setxattr", "path": "/a", "name": "noprefix", "size": 1}',
                '{"op": "rename", "src": "/a"}', '{"op": "stat", "path": "/a", "container": -1}',
                '{"op": "write", "path": "/a", "offset": 9223372036854775807, "length": 1}', '["op", "stat"]',
                '{"op": "stat", "path": "/a"']


@pytest.mark.parametrize("line", LOADER_LINES)
def test_loader_bad_lines(line, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(GOOD + "\n" + line + "\n" + GOOD, encoding="utf-8")
    expected = line_by_line(path)
    assert isinstance(expected, str) and ": line 3: " in expected
    assert loaded(path) == expected


VALID = (b'{"op": "create", "path": "/a", "size": 5}\n{"op": "open", "path": "/a", "mode": "rw"}\n'
         b'{"op": "chmod", "path": "/a", "mode": 384}\n{"op": "symlink", "target": "b", "path": "/c"}\n'
         b'{"op": "chown", "path": "/b", "uid": 1, "gid": 2, "container": 1}\n{"op": "commit"}\n')


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 2), st.integers(0, len(VALID)), st.sampled_from(
    b'{}[]":,\\ \t\n\r01-9.eEnulltrue/@amodex\x00\xff\xc3')), min_size=1, max_size=4))
def test_mutated_traces(edits, tmp_path):
    """test_fuzz_loaders' byte mutations of a valid trace: same ops or same message."""
    data = bytearray(VALID)
    for kind, pos, value in edits:
        pos = min(pos, len(data))
        if kind == 0 and pos < len(data):
            data[pos] = value
        elif kind == 1:
            del data[pos:pos + 1 + value % 5]
        else:
            data[pos:pos] = bytes([value])
    path = tmp_path / "t.jsonl"
    path.write_bytes(bytes(data))
    assert loaded(path) == line_by_line(path)
