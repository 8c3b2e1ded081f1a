"""Traces recorded from real programs under strace replay on every driver.

Each program runs in a directory that is first imported as an image (the recording's
``image``); its trace, replayed on that image, must (1) fail exactly the operations whose
system calls failed for real, on every driver, (2) leave the view the program left on disk
(walked with lstat), and (3) never disagree with the model while being converted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from drivers import driver_names
from simulator.inputs import load_image
from helpers import run as run_metrics
from helpers import view
from test_importers import walk_view

STRACE = shutil.which("strace")
pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace)")
REPO = Path(__file__).parent.parent
PYTHON = os.path.realpath(sys.executable)  # the real interpreter, not a pyenv shim script


def _wheel(path: Path) -> None:
    """A tiny pure-Python wheel written by hand (no 'wheel' package offline): PEP 427 layout."""
    files = {"tinypkg/__init__.py": b"def hello():\n    return 42\n", "tinypkg/data.txt": b"x" * 5000,
             "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
             "tinypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
              for n, d in files.items()] + ["tinypkg-1.0.dist-info/RECORD,,"]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("tinypkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")


def setup_tar(root: Path, scratch: Path) -> list[str]:
    src = scratch / "pkg"
    (src / "sub").mkdir(parents=True)
    for i in range(4):
        (src / f"f{i}.txt").write_bytes(b"x" * (1000 * i + 1))
    os.symlink("f1.txt", src / "link")
    os.link(src / "f2.txt", src / "hard")
    with tarfile.open(root / "t.tar", "w") as t:
        t.add(src, "pkg")
    return ["tar", "-xf", "t.tar"]


def setup_compileall(root: Path, scratch: Path) -> list[str]:
    shutil.copytree(REPO / "simulator", root / "lib", ignore=shutil.ignore_patterns("__pycache__", "real"))
    return [PYTHON, "-m", "compileall", "-q", "lib"]


def setup_git(root: Path, scratch: Path) -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    (root / "README").write_text("hello\n")
    (root / "src").mkdir()
    (root / "src" / "a.py").write_text("print(1)\n")
    return ["sh", "-c", "git init -q . && git add . && git -c user.name=t -c user.email=t@t commit -qm init"]


def setup_pip(root: Path, scratch: Path) -> list[str]:
    _wheel(root / "tinypkg-1.0-py3-none-any.whl")
    (root / "tmp").mkdir()  # TMPDIR inside the root: pip's staging renames stay visible
    return [PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-cache-dir",
            "--disable-pip-version-check", "--target", "target", "tinypkg-1.0-py3-none-any.whl"]


PROGRAMS = {"tar": setup_tar, "compileall": setup_compileall, "git": setup_git, "pip": setup_pip}


@pytest.fixture(scope="module", params=sorted(PROGRAMS))
def recorded(request, tmp_path_factory):
    from workloads.strace import record

    tmp = tmp_path_factory.mktemp(request.param)
    root, scratch = tmp / "root", tmp / "scratch"
    root.mkdir()
    scratch.mkdir()
    cmd = PROGRAMS[request.param](root, scratch)
    env = {**os.environ, "TMPDIR": str(root / "tmp") if (root / "tmp").exists() else str(scratch),
           "HOME": str(scratch), "GIT_CONFIG_NOSYSTEM": "1"}
    rec = record(cmd, root, log_path=scratch / "strace.log", env=env)
    assert rec.returncode == 0
    return request.param, root, rec


def test_conversion_never_disagrees_with_the_model(recorded):
    name, root, rec = recorded
    c = rec.conversion
    assert c.mismatches == []
    assert len(c.ops) > 10
    # What was left out is named; nothing is left out of these four programs but readlink(2)
    # of non-symlinks (EINVAL: git), which is no failure of the name lookup.
    assert set(c.dropped) <= {"errno EINVAL"}


def test_replay_fails_exactly_the_calls_that_failed_on_every_driver(recorded):
    name, root, rec = recorded
    c = rec.conversion
    for driver in driver_names():
        metrics = run_metrics(driver, rec.image, c.ops)
        assert metrics["ops"] == len(c.ops), driver
        assert metrics["failed_ops"] == c.failed_calls, driver


def test_replay_leaves_the_view_the_program_left_on_disk(recorded):
    name, root, rec = recorded
    assert view("vfs", rec.image, rec.conversion.ops) == walk_view(root)


def test_programs_probe_missing_files(recorded):
    """compileall, git and pip look for files that are not there (negative lookups)."""
    name, root, rec = recorded
    if name == "tar":
        assert rec.conversion.failed_calls == 0
    else:
        assert rec.conversion.failed_calls > 0


def test_small_shell_script_converts_to_the_hand_written_trace(tmp_path):
    from workloads.strace import record

    root = tmp_path / "r"
    root.mkdir()
    script = "echo hi > a; echo more >> a; mkdir d; mkdir d; cat nofile; mv a d/b; ln -s b d/s"
    rec = record(["sh", "-c", script + " 2>/dev/null"], root)
    umask = os.umask(0)
    os.umask(umask)
    expected = [
        {"op": "create", "path": "/a", "size": 3, "mode": 0o666 & ~umask},  # 'hi\n'
        {"op": "append", "path": "/a", "length": 5},  # 'more\n'
        {"op": "mkdir", "path": "/d", "mode": 0o777 & ~umask},
        {"op": "mkdir", "path": "/d", "mode": 0o777 & ~umask},  # EEXIST
        {"op": "open", "path": "/nofile", "mode": "r"},  # ENOENT
    ]
    got = [op.to_dict() for op in rec.conversion.ops]
    assert got[:5] == expected
    assert {"op": "rename", "src": "/a", "dst": "/d/b"} in got
    assert got[-1] == {"op": "symlink", "target": "b", "path": "/d/s"}
    assert rec.conversion.failed_calls == 2
    assert run_metrics("overlay", rec.image, rec.conversion.ops)["failed_ops"] == 2


def test_cli_record_and_convert_write_the_same_trace(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "old").write_bytes(b"o" * 100)
    image_json = tmp_path / "before.json"
    image_json.write_text(json.dumps(load_image(str(root)).to_dict()))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log, out1, out2 = tmp_path / "log", tmp_path / "rec.jsonl", tmp_path / "conv.jsonl"
    rec = subprocess.run([sys.executable, "-m", "simulator", "trace", "record", "--root", str(root), "--output",
                          str(out1), "--log", str(log), "--", "sh", "-c", "cat old > new; rm old"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert rec.returncode == 0, rec.stderr
    conv = subprocess.run([sys.executable, "-m", "simulator", "trace", "convert", str(log), "--root", str(root),
                           "--image", str(image_json), "--output", str(out2)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert conv.returncode == 0, conv.stderr
    assert out1.read_text() == out2.read_text()
    lines = [json.loads(x) for x in out1.read_text().splitlines()]
    assert {"op": "read", "path": "/old", "offset": 0, "length": 100} in lines
    assert {"op": "unlink", "path": "/old"} in lines


def test_convert_refuses_a_log_that_is_not_strace(tmp_path):
    bad = tmp_path / "log"
    bad.write_text("hello world\n")
    out = subprocess.run([sys.executable, "-m", "simulator", "trace", "convert", str(bad), "--root", str(tmp_path)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 2 and "line 1" in out.stderr and "Traceback" not in out.stderr


def test_parser_joins_unfinished_calls_and_decodes_escapes():
    from workloads.strace_parse import int_arg, parse_log

    log = ['7 openat(-100</r>, "a\\x3eb", 0x241, 0666 <unfinished ...>',
           '8 mkdir("d", 0777) = -1 EEXIST (File exists)',
           '7 <... openat resumed>) = 3</r/a\\x3eb>',
           "8 --- SIGCHLD {si_signo=17} ---"]
    calls = list(parse_log(log))
    assert [(c.pid, c.name, c.errno) for c in calls] == [(8, "mkdir", "EEXIST"), (7, "openat", None)]
    assert calls[1].args == ("-100</r>", '"a\\x3eb"', "0x241", "0666") and calls[1].ret_path == "/r/a>b"
    assert (int_arg("0x241"), int_arg("0666"), int_arg("-100"), int_arg("|0x1000")) == (0x241, 0o666, -100, 0x1000)
