"""The bad-input corpus (tests/bad_inputs/): every case is refused with exit code 2, one line on
stderr naming the file, line or key at fault, no traceback, and nothing written.

Image cases run as ``--image CASE --workload demo``, trace cases as ``--image demo --workload
CASE``; each expected fragment names where the fault is.  Campaign cases run as ``campaign CASE
--out DIR`` and must not create DIR.  Archive cases are JSON descriptions of hostile tar
members (``archives/*.json``), built at test time into an OCI layout tar (or a docker save tar,
or written raw) by the builders of ``test_hostile_archives``, and run as ``--image ARCHIVE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.cli import main
from test_hostile_archives import _member, layer_bytes, oci_tar

CORPUS = Path(__file__).parent / "bad_inputs"

IMAGE_CASES = {
    "absurd-size": "layer 0 'a' entry 0 (/x): 'size' must be an integer",
    "array-top": "must be a JSON object",
    "binary-garbage": "cannot read",
    "bool-mode": "entry 0 (/x): 'mode' must be an integer",
    "dot-path": "layer 0 'a' entry 0: path '/etc/./x'",
    "dotdot-path": "layer 0 'a' entry 0: path '/etc/../x'",
    "duplicate-layer-id": "layer id 'base' appears twice",
    "empty-file": "line 1: invalid JSON",
    "empty-layers": "'layers' must be a non-empty list",
    "entries-not-list": "layer 0 'a': 'entries' must be a list",
    "entry-not-object": "layer 0 'a' entry 0: an entry must be an object",
    "entry-under-whiteout": "layer 1 'b': /etc/y lies below /etc, which this layer makes a whiteout",
    "file-under-file": "layer 0 'a': /x/y lies below /x",
    "file-under-lower-file": "layer 1 'b': /etc/passwd/y lies below /etc/passwd",
    "hardlink-across-layers": "layer 1 'b': hardlink /x -> /etc/passwd",
    "hardlink-missing-target": "layer 0 'a': hardlink /x -> /nope",
    "hardlink-to-dir": "layer 0 'a': hardlink /x -> /d",
    "huge-int-size": "entry 0 (/x): 'size' = 99999999999999999999999 is out of range",
    "layer-without-id": "layer 0: 'id' must be a non-empty string",
    "layers-not-list": "'layers' must be a non-empty list",
    "long-name": "longer than NAME_MAX",
    "mode-too-big": "entry 0 (/x): 'mode' = 65536 is out of range",
    "negative-size": "entry 0 (/x): 'size' = -5 is out of range",
    "negative-uid": "entry 0 (/x): 'uid' = -1 is out of range",
    "no-layers": "'layers' must be a non-empty list",
    "not-json": "line 1: invalid JSON",
    "opaque-on-file": "entry 0 (/x): unknown or inapplicable key(s) for a file: opaque",
    "relative-path": "path 'etc/x' is not absolute",
    "root-entry": "path '/' names the root",
    "string-size": "entry 0 (/x): 'size' must be an integer, not '10'",
    "symlink-without-target": "entry 0 (/x): a symlink needs",
    "too-deep-for-overlay": "129 layers exceed driver overlay's limit of 128",
    "trailing-slash": "path '/etc/'",
    "truncated-json": "line 1: invalid JSON",
    "two-entries-one-path": "layer 0 'a': two entries for /x",
    "unknown-entry-key": "entry 0 (/x): unknown or inapplicable key(s) for a file: colour",
    "unknown-top-key": "unknown key(s): colour",
    "unknown-type": "entry 0 (/x): 'type' must be one of",
    "whiteout-name-reserved": "(/.wh.x): names starting with '.wh.' are reserved",
}

TRACE_CASES = {
    "array-line": "line 1: an operation must be a JSON object",
    "bad-open-mode": "line 1: open 'mode' must be one of r, w, rw",
    "bad-xattr-name": "line 1: 'name' must be a namespaced xattr name",
    "commit-layer-not-string": "line 1: 'layer' must be a non-empty string",
    "container-out-of-range": "operation 1 (stat) names container 5",
    "dotdot-path": "line 1: 'path': path '/a/../../etc'",
    "empty-symlink-target": "line 1: 'target' must be a non-empty string",
    "float-length": "line 1: 'length' must be an integer, not 1.5",
    "missing-field": "line 1: 'write' needs field(s) offset",
    "negative-length": "line 1: 'length' must not be negative",
    "negative-offset": "line 1: 'offset' must not be negative",
    "not-json-line": "line 2: invalid JSON",
    "not-utf8": "not UTF-8 text",
    "offset-overflow": "line 1: offset + length exceeds the maximum file size",
    "relative-path": "line 1: 'path': path 'x' is not absolute",
    "string-size": "line 1: 'size' must be an integer, not 'big'",
    "unknown-field": "line 1: unknown field(s) for 'stat': follow",
    "unknown-op": "line 1: unknown op 'teleport'",
}

ARGUMENT_CASES = {
    "unknown-driver": (["run", "--driver", "ext9", "--image", "demo", "--workload", "demo"], "unknown driver 'ext9'"),
    "unknown-option": (["run", "--driver", "overlay", "--opt", "turbo=1", "--image", "demo", "--workload", "demo"],
                       "unknown option 'turbo'"),
    "option-without-value": (["run", "--driver", "overlay", "--opt", "metacopy", "--image", "demo",
                              "--workload", "demo"], "--opt 'metacopy': expected key=value"),
    "option-twice": (["run", "--driver", "overlay", "--opt", "index=on", "--opt", "index=off", "--image", "demo",
                      "--workload", "demo"], "--opt index: given twice"),
    "bad-bool-option": (["run", "--driver", "overlay", "--opt", "index=perhaps", "--image", "demo",
                         "--workload", "demo"], "option 'index' takes true or false"),
    "option-out-of-range": (["run", "--driver", "overlay", "--opt", "max_layers=0", "--image", "demo",
                             "--workload", "demo"], "option 'max_layers' = 0 must be >= 1"),
    "block-size-not-power-of-two": (["run", "--driver", "overlay", "--opt", "block_size=3000", "--image", "demo",
                                     "--workload", "demo"], "must be a power of two"),
    "zero-containers": (["run", "--driver", "vfs", "--image", "demo", "--workload", "demo", "--containers", "0"],
                        "--containers 0"),
    "negative-seed": (["run", "--driver", "vfs", "--image", "demo", "--workload", "demo", "--seed", "-1"],
                      "--seed -1"),
    "non-integer-containers": (["run", "--driver", "vfs", "--image", "demo", "--workload", "demo",
                                "--containers", "many"], "invalid int value: 'many'"),
    "view-container-out-of-range": (["view", "--driver", "vfs", "--image", "demo", "--workload", "demo",
                                     "--container", "3"], "--container 3"),
    "unknown-builtin-image": (["run", "--driver", "vfs", "--image", "ubuntu", "--workload", "demo"],
                              "no built-in image is called 'ubuntu'"),
    "unknown-builtin-workload": (["run", "--driver", "vfs", "--image", "demo", "--workload", "fio"],
                                 "no built-in workload is called 'fio'"),
    "bad-builtin-parameter": (["run", "--driver", "vfs", "--image", "random:layers=-3", "--workload", "demo"],
                              "parameter 'layers' = -3 must be >= 1"),
    "malformed-builtin-spec": (["run", "--driver", "vfs", "--image", "random:layers", "--workload", "demo"],
                               "parameters are written key=value"),
    "missing-image-argument": (["run", "--driver", "vfs", "--workload", "demo"], "--image"),
    "unknown-command": (["explode"], "invalid choice: 'explode'"),
    "missing-image-file": (["run", "--driver", "vfs", "--image", "nowhere/img.json", "--workload", "demo"],
                           "nowhere/img.json: no such image file"),
    "trace-is-a-directory": (["run", "--driver", "vfs", "--image", "demo", "--workload", "tests/"],
                             "is a directory"),
}


CAMPAIGN_CASES = {
    "bad-option-value": ":3: drivers[0].options.metacopy: driver overlay: option 'metacopy' takes true or false",
    "drivers-not-array": ":1: drivers: must be an array of tables",
    "duplicate-driver": ": drivers: vfs is listed twice",
    "empty": ": missing [[drivers]]",
    "empty-axis": ":5: images[0].params.layers: an empty list makes an empty grid",
    "float-containers": ":1: containers: takes integers >= 1, not 1.5",
    "image-file-is-bad": ":4: images[0].file: ",  # then the image file's own message, checked below
    "label-names-two-drivers": ": drivers: label 'x' names two different variants",
    "missing-trace-file": ":6: workloads[0].trace: no such file",
    "name-and-trace": ":5: workloads[0]: give either name (a built-in) or trace",
    "name-with-dotdot": ":1: name: a campaign needs a name of letters",
    "negative-param": ":5: images[0].params.layers: image random: parameter 'layers' = -3 must be >= 1",
    "negative-seed": ":1: seeds: takes integers >= 0, not -1",
    "not-utf8": ": not UTF-8 text",
    "option-out-of-range": ":3: drivers[0].options.max_layers: driver overlay: option 'max_layers' = 100000",
    "repeated-seed": ":1: seeds: repeats a value: [1, 1]",
    "seed-not-integer": ":1: seeds: takes integers >= 0, not 'a'",
    "table-as-param": ":5: images[0].params.layers: takes numbers, strings or booleans",
    "trace-file-is-bad": ":6: workloads[0].trace: ",
    "unknown-driver": ":2: drivers[0].name: unknown driver 'ext9'",
    "unknown-driver-key": ":3: drivers[0].turbo: unknown key",
    "unknown-image-key": ":5: images[0].colour: unknown key",
    "unknown-top-key": ":1: colour: unknown key",
    "unknown-workload": ":6: workloads[0].name: no built-in workload 'fio'",
    "unterminated-string": ":1: invalid TOML",
    "zero-containers": ":1: containers: takes integers >= 1, not 0",
}

ARCHIVE_CASES = {
    "absolute-name": "member '/etc/evil' has an absolute name",
    "block-device": "member 'dev/sda' is a device node",
    "char-device": "member 'dev/null' is a device node",
    "declared-size-past-end": "member 'huge' declares 1,099,511,627,776 bytes but the archive ends",
    "declared-size-past-off-t": "member 'huge' declares 18446744073709551616 bytes (maximum 9223372036854775807)",
    "docker-layer-outside": "bad blob name '../../etc/passwd'",
    "dotdot-name": "member 'a/../../evil' has a '..' component",
    "duplicate-member": "two members for /a",
    "empty-file": "not a readable tar archive",
    "exabyte-sparse-file": "declared file sizes add up to more than 1,125,899,906,842,624 bytes",
    "fifo": "member 'run/fifo' is a FIFO",
    "file-under-file": "/a/b lies below /a",
    "hardlink-absolute": "member '/etc/passwd' has an absolute name",
    "hardlink-escaping": "member '../../etc/passwd' has a '..' component",
    "hardlink-to-later-member": "hard link /h -> /f",
    "not-a-tar": "not a readable tar archive",
    "symlink-escaping": "symlink /a/b/up -> ../../../etc/passwd points outside the image root",
    "whiteout-dir-as-parent": "lies below a name starting with '.wh.'",
}
TAR_TYPES = {"file": b"0", "hardlink": b"1", "symlink": b"2", "char": b"3", "block": b"4", "fifo": b"6"}


def build_archive(case: str, dest: Path) -> Path:
    """The archive that ``archives/<case>.json`` describes, written to ``dest``."""
    import io
    import json
    import tarfile

    spec = json.loads((CORPUS / "archives" / f"{case}.json").read_text())
    path = dest / f"{case}.tar"
    if "raw" in spec:
        path.write_text(spec["raw"])
        return path
    if "docker_layers" in spec:
        data = json.dumps([{"Config": "c.json", "RepoTags": ["x:y"], "Layers": spec["docker_layers"]}]).encode()
        with tarfile.open(path, "w") as t:
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        return path

    def members(t: tarfile.TarFile) -> None:
        for m in spec["members"]:
            if "sparse_size" in m:  # a GNU sparse file (PAX 0.1): no data, a huge real size
                info = tarfile.TarInfo(m["name"])
                info.pax_headers = {"GNU.sparse.map": "0,0", "GNU.sparse.size": str(m["sparse_size"]),
                                    "GNU.sparse.name": m["name"]}
                t.addfile(info)
                continue
            _member(t, m["name"], TAR_TYPES[m.get("type", "file")], m.get("data", "").encode(), m.get("linkname", ""),
                    m.get("size"))

    if any("sparse_size" in m for m in spec["members"]):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            members(t)
        return oci_tar(path, buf.getvalue())
    return oci_tar(path, layer_bytes(members))


def _refused(argv: list[str], capsys, fragment: str) -> None:
    before = set(os.listdir("."))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("layerbench: error: ")
    assert fragment in lines[0], lines[0]
    assert set(os.listdir(".")) == before  # nothing written


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(Path(__file__).parent.parent)


def test_the_corpus_is_complete():
    assert {p.stem for p in (CORPUS / "images").iterdir()} == set(IMAGE_CASES)
    assert {p.stem for p in (CORPUS / "traces").iterdir()} == set(TRACE_CASES)
    assert {p.stem for p in (CORPUS / "campaigns").iterdir()} == set(CAMPAIGN_CASES)
    assert {p.stem for p in (CORPUS / "archives").iterdir()} == set(ARCHIVE_CASES)
    assert len(IMAGE_CASES) + len(TRACE_CASES) + len(ARGUMENT_CASES) + len(CAMPAIGN_CASES) + len(ARCHIVE_CASES) >= 60


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_bad_image(case, capsys):
    path = f"tests/bad_inputs/images/{case}.json"
    _refused(["run", "--driver", "overlay", "--image", path, "--workload", "demo"], capsys,
             f"{path}" if case not in ("too-deep-for-overlay",) else IMAGE_CASES[case])
    _refused(["run", "--driver", "overlay", "--image", path, "--workload", "demo"], capsys, IMAGE_CASES[case])


@pytest.mark.parametrize("case", sorted(TRACE_CASES))
def test_bad_trace(case, capsys):
    path = f"tests/bad_inputs/traces/{case}.jsonl"
    _refused(["run", "--driver", "overlay", "--image", "demo", "--workload", path], capsys, path)
    _refused(["run", "--driver", "overlay", "--image", "demo", "--workload", path], capsys, TRACE_CASES[case])


@pytest.mark.parametrize("case", sorted(CAMPAIGN_CASES))
def test_bad_campaign(case, capsys, tmp_path):
    path = f"tests/bad_inputs/campaigns/{case}.toml"
    out = tmp_path / "out"
    _refused(["campaign", path, "--out", str(out)], capsys, f"{path}{CAMPAIGN_CASES[case]}")
    inner = {"image-file-is-bad": "images/file-under-file.json: layer 0 'a': /x/y lies below /x",
             "trace-file-is-bad": "traces/unknown-op.jsonl: line 1: unknown op 'teleport'"}.get(case, "")
    _refused(["campaign", path, "--out", str(out)], capsys, inner)
    assert not out.exists()  # refused before the output directory is made
    assert not Path("results", "x").exists() and not (Path("results") / case).exists()


@pytest.mark.parametrize("case", sorted(ARCHIVE_CASES))
def test_bad_archive(case, capsys, tmp_path):
    archive = build_archive(case, tmp_path)
    before = sorted(tmp_path.rglob("*"))
    _refused(["run", "--driver", "vfs", "--image", str(archive), "--workload", "demo"], capsys, str(archive))
    _refused(["view", "--driver", "vfs", "--image", str(archive), "--workload", "demo"], capsys, ARCHIVE_CASES[case])
    assert sorted(tmp_path.rglob("*")) == before  # read, never extracted


@pytest.mark.parametrize("case", sorted(ARGUMENT_CASES))
def test_bad_arguments(case, capsys):
    argv, fragment = ARGUMENT_CASES[case]
    _refused(argv, capsys, fragment)


def test_no_traceback_from_the_real_command():
    p = subprocess.run([sys.executable, "-m", "simulator", "run", "--driver", "overlay", "--image",
                        str(CORPUS / "images" / "binary-garbage.json"), "--workload", "demo"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1
