"""Fuzz every loader: any bytes in, either a value or ``BadInput`` out, never another exception.

Inputs are hypothesis-generated: structured values close to valid ones (JSON objects with the
right keys and wrong values), mutations of valid files (bytes flipped, cut, inserted), and raw
garbage.  The budget is bounded by ``max_examples`` (about 30 s for the module on the CI VM).
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.campaign.spec import load_campaign
from simulator.cli import error_line
from simulator.errors import BadInput
from simulator.image import image_from_dict
from simulator.trace import parse_trace_lines
from test_hostile_archives import _member, layer_bytes, oci_tar
from workloads import oci_layer

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID_IMAGE = json.dumps({"name": "t", "layers": [
    {"id": "a", "entries": [{"path": "/etc", "type": "dir", "mode": 493},
                            {"path": "/etc/f", "type": "file", "size": 10},
                            {"path": "/l", "type": "symlink", "target": "etc"},
                            {"path": "/h", "type": "hardlink", "target": "/etc/f"}]},
    {"id": "b", "entries": [{"path": "/etc/f", "type": "whiteout"}, {"path": "/v", "type": "dir", "opaque": True}]}]})
VALID_TRACE = "\n".join(json.dumps(op) for op in [
    {"op": "create", "path": "/a", "size": 5}, {"op": "write", "path": "/a", "offset": 1, "length": 2},
    {"op": "rename", "src": "/a", "dst": "/b"}, {"op": "symlink", "target": "b", "path": "/c"},
    {"op": "chown", "path": "/b", "uid": 1, "gid": 2}, {"op": "commit"}]) + "\n"
VALID_CAMPAIGN = """name = "f"
seeds = [0, 1]
containers = [1, 2]

[[images]]
name = "random"
params = { layers = [2, 3], entries = 10 }

[[drivers]]
name = "overlay"
options = { metacopy = true }

[[workloads]]
name = "random"
params = { ops = 5 }
"""

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["/", "/a", "a", "/a/..", "/.wh.x", "file", "dir",
                                                           "symlink", "hardlink", "whiteout", "/etc/f"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
ENTRY_KEYS = ["path", "type", "size", "mode", "uid", "gid", "target", "opaque", "digest"]
entries = st.dictionaries(st.sampled_from(ENTRY_KEYS + ["colour"]), scalars, max_size=6)
images = st.fixed_dictionaries({"name": scalars, "layers": st.lists(
    st.fixed_dictionaries({"id": scalars, "entries": st.lists(entries, max_size=5)}), max_size=4)})


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` with a few bytes flipped, a cut, or an insertion."""
    def apply(edits: list[tuple[int, int, int]]) -> bytes:
        data = bytearray(valid)
        for kind, pos, value in edits:
            pos %= max(len(data), 1)
            if kind == 0 and data:
                data[pos] = value
            elif kind == 1:
                del data[pos:]
            else:
                data[pos:pos] = bytes([value]) * (value % 7 + 1)
        return bytes(data)

    return st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2**20), st.integers(0, 255)),
                    min_size=1, max_size=4).map(apply)


def only_bad_input(load, data) -> None:
    try:
        load(data)
    except BadInput as exc:
        assert len(error_line(exc).splitlines()) == 1, "the command line prints one line"


def _load_image_bytes(data: bytes) -> None:
    from simulator.inputs import load_image_json

    with tempfile.NamedTemporaryFile(suffix=".json") as fh:
        fh.write(data)
        fh.flush()
        load_image_json(fh.name)


@FUZZ
@given(st.one_of(images, json_values))
def test_image_dicts(raw):
    only_bad_input(lambda r: image_from_dict(r, "fuzz.json"), raw)


@FUZZ
@given(st.one_of(mutated(VALID_IMAGE.encode()), st.binary(max_size=200)))
def test_image_files(data):
    only_bad_input(_load_image_bytes, data)


@FUZZ
@given(st.one_of(mutated(VALID_TRACE.encode()), st.lists(json_values.map(json.dumps), max_size=5)
                 .map(lambda lines: "\n".join(lines).encode())))
def test_traces(data):
    def load(b: bytes) -> None:
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError:
            return  # load_trace refuses it as "not UTF-8 text" before parsing
        list(parse_trace_lines(io.StringIO(text), "fuzz.jsonl"))

    only_bad_input(load, data)


@FUZZ
@given(st.one_of(mutated(VALID_CAMPAIGN.encode()), st.binary(max_size=120)))
def test_campaign_files(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_bytes(data)
        only_bad_input(load_campaign, path)
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["fuzz.toml"]  # validation writes nothing


def _valid_layer() -> bytes:
    def build(t: tarfile.TarFile) -> None:
        _member(t, "etc/", tarfile.DIRTYPE)
        _member(t, "etc/f", data=b"hello")
        _member(t, "etc/.wh.gone")
        _member(t, "l", tarfile.SYMTYPE, linkname="etc/f")
        _member(t, "h", tarfile.LNKTYPE, linkname="etc/f")
    return layer_bytes(build)


VALID_LAYER = _valid_layer()


@FUZZ
@given(st.one_of(mutated(VALID_LAYER), st.binary(max_size=2048)))
def test_layer_tars(data):
    only_bad_input(lambda b: oci_layer.read_layer_tar(io.BytesIO(b), "fuzz.tar", oci_layer.Budget("fuzz")), data)


@settings(max_examples=40, deadline=None)
@given(mutated(VALID_LAYER))
def test_whole_oci_archives(layer):
    from workloads.oci import load_image_tar

    with tempfile.TemporaryDirectory() as tmp:
        archive = oci_tar(Path(tmp) / "img.tar", layer)
        for data in (archive.read_bytes(), archive.read_bytes()[: len(layer) // 2]):
            archive.write_bytes(data)
            only_bad_input(load_image_tar, archive)
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["img.tar"]  # read, never extracted
