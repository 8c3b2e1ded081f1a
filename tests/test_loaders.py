"""Image JSON and trace JSONL validation (SPEC sections 3, 4 and 7)."""

import json

import pytest

from simulator.errors import BadInput
from simulator.image import image_from_dict
from simulator.inputs import load_image_json, load_trace
from simulator.trace import dump_trace, op_from_dict, parse_trace_lines

GOOD_LAYER = {"id": "base", "entries": [{"path": "/etc/passwd", "type": "file", "size": 10}]}


@pytest.mark.parametrize("raw, fragment", [
    ([], "JSON object"),
    ({"name": "x"}, "'layers' must be a non-empty list"),
    ({"layers": [GOOD_LAYER], "extra": 1}, "unknown key(s): extra"),
    ({"layers": [{"id": "a", "entries": [{"path": "etc", "type": "file"}]}]}, "not absolute"),
    ({"layers": [{"id": "a", "entries": [{"path": "/a/../b", "type": "file"}]}]}, "'..'"),
    ({"layers": [{"id": "a", "entries": [{"path": "/a//b", "type": "file"}]}]}, "empty"),
    ({"layers": [{"id": "a", "entries": [{"path": "/a", "type": "socket"}]}]}, "'type' must be"),
    ({"layers": [{"id": "a", "entries": [{"path": "/a", "type": "file", "size": -1}]}]}, "out of range"),
    ({"layers": [{"id": "a", "entries": [{"path": "/a", "type": "file", "size": "1"}]}]}, "must be an integer"),
    ({"layers": [{"id": "a", "entries": [{"path": "/a", "type": "file", "mode": 0o17777}]}]}, "out of range"),
    ({"layers": [{"id": "a", "entries": [{"path": "/a", "type": "file", "target": "x"}]}]}, "inapplicable"),
    ({"layers": [{"id": "a", "entries": [{"path": "/a", "type": "symlink"}]}]}, "needs a non-empty"),
    ({"layers": [{"id": "a", "entries": [{"path": "/a", "type": "file"}, {"path": "/a", "type": "dir"}]}]},
     "two entries for /a"),
    ({"layers": [{"id": "a", "entries": [{"path": "/a", "type": "file"}, {"path": "/a/b", "type": "file"}]}]},
     "lies below /a"),
    ({"layers": [GOOD_LAYER, {"id": "l1", "entries": [{"path": "/etc/passwd/x", "type": "file"}]}]},
     "not a directory in the layers below"),
    ({"layers": [{"id": "a", "entries": [{"path": "/b", "type": "hardlink", "target": "/nope"}]}]},
     "hardlink /b -> /nope"),
    ({"layers": [GOOD_LAYER, {"id": "l1", "entries": [{"path": "/x", "type": "hardlink", "target": "/etc/passwd"}]}]},
     "same layer"),
    ({"layers": [GOOD_LAYER, GOOD_LAYER]}, "appears twice"),
    ({"layers": [{"id": "a", "entries": [{"path": "/.wh.x", "type": "file"}]}]}, "reserved"),
    ({"layers": [{"id": "a", "entries": [{"path": "/d", "type": "dir", "opaque": "yes"}]}]}, "true or false"),
])
def test_bad_images_are_refused_naming_the_place(raw, fragment):
    with pytest.raises(BadInput) as exc:
        image_from_dict(raw, "img.json")
    message = str(exc.value)
    assert fragment in message
    assert message.startswith("img.json")
    assert "\n" not in message


def test_image_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "layers": [\n}')
    with pytest.raises(BadInput, match=r"bad.json: line 3: invalid JSON"):
        load_image_json(bad)
    with pytest.raises(BadInput, match="no such image file"):
        load_image_json(tmp_path / "missing.json")


def test_image_defaults_follow_the_spec():
    img = image_from_dict({"layers": [{"id": "a", "entries": [
        {"path": "/f", "type": "file"}, {"path": "/d", "type": "dir"},
        {"path": "/s", "type": "symlink", "target": "f", "mode": 0o600}]}]}, "x.json")
    f, d, s = img.layers[0].entries
    assert (f.size, f.mode, f.uid, f.gid) == (0, 0o644, 0, 0)
    assert d.mode == 0o755
    assert s.mode == 0o777  # lstat of a symlink always shows 0777 on Linux
    assert img.name == "x"


@pytest.mark.parametrize("raw, fragment", [
    ('{"op": "fly", "path": "/a"}', "unknown op 'fly'"),
    ('{"op": "write", "path": "/a", "offset": 0}', "needs field(s) length"),
    ('{"op": "write", "path": "/a", "offset": -1, "length": 1}', "must not be negative"),
    ('{"op": "write", "path": "/a", "offset": 0, "length": 1.5}', "must be an integer"),
    ('{"op": "write", "path": "/a", "offset": 0, "length": true}', "must be an integer"),
    ('{"op": "create", "path": "a", "size": 1}', "not absolute"),
    ('{"op": "create", "path": "/a/../b", "size": 1}', "'..'"),
    ('{"op": "stat", "path": "/a", "colour": "red"}', "unknown field(s) for 'stat': colour"),
    ('{"op": "open", "path": "/a", "mode": "x"}', "open 'mode' must be one of"),
    ('{"op": "setxattr", "path": "/a", "name": "noprefix", "size": 1}', "namespaced"),
    ('{"op": "rename", "src": "/a"}', "needs field(s) dst"),
    ('{"op": "stat", "path": "/a", "container": -1}', "must not be negative"),
    ('{"op": "write", "path": "/a", "offset": 9223372036854775807, "length": 1}', "exceeds"),
    ('["op", "stat"]', "must be a JSON object"),
    ('{"op": "stat", "path": "/a"', "invalid JSON"),
])
def test_bad_trace_lines_name_file_and_line(raw, fragment):
    with pytest.raises(BadInput) as exc:
        list(parse_trace_lines(['{"op": "stat", "path": "/ok"}', "", raw], "t.jsonl"))
    assert str(exc.value).startswith("t.jsonl: line 3: ")
    assert fragment in str(exc.value)


def test_trace_round_trips_through_jsonl(tmp_path):
    lines = [
        {"op": "create", "path": "/a", "size": 5},
        {"op": "open", "path": "/a", "mode": "rw"},
        {"op": "rename", "src": "/a", "dst": "/b", "container": 2},
        {"op": "chmod", "path": "/b", "mode": 0o600},
        {"op": "symlink", "target": "b", "path": "/c"},
        {"op": "commit", "layer": "step1"},
        {"op": "commit"},
    ]
    ops = [op_from_dict(raw, "x") for raw in lines]
    path = tmp_path / "t.jsonl"
    path.write_text(dump_trace(ops))
    assert [json.loads(line) for line in path.read_text().splitlines()] == lines
    assert load_trace(path) == ops
