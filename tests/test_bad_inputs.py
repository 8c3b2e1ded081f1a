"""The bad-input corpus (tests/bad_inputs/): every case is refused with exit code 2, one line on
stderr naming the file, line or key at fault, no traceback, and nothing written.

Image cases run as ``--image CASE --workload demo``, trace cases as ``--image demo --workload
CASE``; each expected fragment names where the fault is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.cli import main

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
    assert len(IMAGE_CASES) + len(TRACE_CASES) + len(ARGUMENT_CASES) >= 60


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


@pytest.mark.parametrize("case", sorted(ARGUMENT_CASES))
def test_bad_arguments(case, capsys):
    argv, fragment = ARGUMENT_CASES[case]
    _refused(argv, capsys, fragment)


def test_no_traceback_from_the_real_command():
    p = subprocess.run([sys.executable, "-m", "simulator", "run", "--driver", "overlay", "--image",
                        str(CORPUS / "images" / "binary-garbage.json"), "--workload", "demo"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1
