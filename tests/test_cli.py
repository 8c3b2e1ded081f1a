"""The command line: JSON shapes, exit codes, one-line errors (SPEC section 6)."""

import json
import os
import subprocess
import sys

import pytest

from simulator.metrics import METRIC_KEYS


def layerbench(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True, cwd=cwd)


def test_run_json_has_the_spec_shape():
    p = layerbench("run", "--driver", "overlay", "--opt", "metacopy=on", "--image", "demo", "--workload", "demo",
                   "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert set(out) == {"schema", "driver", "options", "image", "workload", "containers", "seed", "backend",
                        "metrics"}
    assert out["options"]["metacopy"] is True and out["backend"] == "sim"
    assert list(out["metrics"]) == list(METRIC_KEYS)
    assert out["metrics"]["ops"] == 10


def test_a_simulated_run_loads_no_columnar_libraries():
    """pyarrow and pandas cost a quarter of a second and ~60 MiB of RSS to import: the
    library, the drivers and a simulated run of built-in generators do without them (campaigns
    and trace files load them when asked: ``simulator.__getattr__``, ``load_trace``)."""
    code = ("import sys, simulator, drivers, workloads.builtin\n"
            "from simulator.cli import main\n"
            "assert main(['run', '--driver', 'overlay', '--image', 'synthetic:files=200', '--workload', 'mixed:scale=0.1',\n"
            "             '--json']) == 0\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyarrow', 'pandas', 'matplotlib'}))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"


def test_a_trace_on_a_pipe_is_read_once_whichever_parser_takes_it():
    """/dev/stdin can be read only once: a trace the columnar loader declines (a line with
    trailing blanks) is parsed line by line from the same bytes, and a bad one is refused
    with its line, not replayed as an empty trace."""
    good = '{"op":"create","path":"/p","size":5}  \n{"op":"stat","path":"/p"}\n'
    bad = '{"op":"stat","path":"/a"}\n{"op":"symlink","target":"a\\udc00","path":"/l"}\n'
    args = [sys.executable, "-m", "simulator", "run", "--driver", "overlay", "--image", "demo",
            "--workload", "/dev/stdin", "--json"]
    p = subprocess.run(args, input=good, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["metrics"]["ops"] == 2
    p = subprocess.run(args, input=bad, capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip() == "layerbench: error: /dev/stdin: line 2: 'target' is not valid Unicode (a lone surrogate)"


def test_run_prints_drivers_side_by_side():
    p = layerbench("run", "--driver", "overlay", "--driver", "vfs", "--image", "demo", "--workload", "demo")
    assert p.returncode == 0, p.stderr
    header = next(line for line in p.stdout.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "overlay", "vfs"]
    assert "copyup_bytes" in p.stdout and "MiB" in p.stdout
    # vfs has no section in the shipped calibration: the table says its est_seconds was not fitted
    assert p.stdout.splitlines()[-1].startswith("est_seconds of vfs: the cost model's default parameters, not fitted")
    alone = layerbench("run", "--driver", "overlay", "--driver", "btrfs", "--image", "demo", "--workload", "demo")
    assert alone.returncode == 0 and "not fitted" not in alone.stdout  # both calibrated


def test_view_prints_the_tree(tmp_path):
    p = layerbench("view", "--driver", "vfs", "--image", "demo", "--workload", "demo", "--json")
    assert p.returncode == 0, p.stderr
    view = json.loads(p.stdout)
    assert view["/app/assets"]["type"] == "dir" and "/app/static" not in view
    assert view["/var/log/app.log"] == {"type": "file", "size": 2097152 + 200, "mode": 0o644}
    assert "/etc/passwd" not in view


def test_listings():
    p = layerbench("drivers", "--json")
    drivers = {d["name"]: d for d in json.loads(p.stdout)}
    assert {"overlay", "vfs"} <= set(drivers)
    opts = {o["name"]: o["default"] for o in drivers["overlay"]["options"]}
    assert opts == {"metacopy": False, "redirect_dir": False, "index": False, "max_layers": 128, "block_size": 4096}
    assert "demo" in {w["name"] for w in json.loads(layerbench("workloads", "--json").stdout)}
    assert "random" in {w["name"] for w in json.loads(layerbench("images", "--json").stdout)}


@pytest.mark.parametrize("args, fragment", [
    (["run", "--driver", "nope", "--image", "demo", "--workload", "demo"], "unknown driver 'nope'"),
    (["run", "--driver", "overlay", "--opt", "metacopy=maybe", "--image", "demo", "--workload", "demo"],
     "option 'metacopy' takes true or false"),
    (["run", "--driver", "overlay", "--opt", "colour=red", "--image", "demo", "--workload", "demo"],
     "unknown option 'colour'"),
    (["run", "--driver", "overlay", "--opt", "max_layers=501", "--image", "demo", "--workload", "demo"],
     "must be <= 500"),
    (["run", "--driver", "overlay", "--image", "nosuch.json", "--workload", "demo"], "no such image file"),
    (["run", "--driver", "overlay", "--image", "demo", "--workload", "nosuch.jsonl"], "no such trace file"),
    (["run", "--driver", "overlay", "--image", "demo", "--workload", "demo", "--containers", "0"],
     "--containers 0"),
    (["run", "--driver", "overlay", "--image", "random:layers=x", "--workload", "demo"], "takes an integer"),
    (["run", "--driver", "overlay", "--image", "random:colour=1", "--workload", "demo"], "unknown parameter"),
    (["run", "--image", "demo", "--workload", "demo"], "--driver"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, fragment):
    p = layerbench(*args)
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert fragment in lines[0]
    assert "Traceback" not in p.stderr


def test_trace_for_a_missing_container_is_refused(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"op": "stat", "path": "/etc"}\n{"op": "stat", "path": "/etc", "container": 3}\n')
    p = layerbench("run", "--driver", "vfs", "--image", "demo", "--workload", str(trace), "--containers", "2")
    assert p.returncode == 2
    assert "operation 2 (stat) names container 3" in p.stderr


def test_scoped_options_reach_only_their_driver():
    p = layerbench("run", "--driver", "overlay", "--driver", "devicemapper", "--opt", "overlay.metacopy=true",
                   "--opt", "devicemapper.chunk_size=131072", "--image", "demo", "--workload", "demo", "--json")
    assert p.returncode == 0, p.stderr
    overlay, dm = json.loads(p.stdout)
    assert overlay["options"]["metacopy"] is True and dm["options"]["chunk_size"] == 131072
    p = layerbench("run", "--driver", "overlay", "--driver", "vfs", "--opt", "metacopy=true",
                   "--image", "demo", "--workload", "demo")
    assert p.returncode == 2 and "driver vfs: unknown option 'metacopy'" in p.stderr


def test_a_reader_that_stops_early_gets_no_traceback():
    """``layerbench workloads | head -1``: the pipe closes under the 7 KB listing; the command
    stops with SIGPIPE's status and says nothing on stderr (it printed a traceback).  The
    pipe holds one page, so the listing cannot fit in it before the reader goes."""
    import fcntl

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)  # F_SETPIPE_SZ
    p = subprocess.Popen([sys.executable, "-m", "simulator", "workloads"], stdout=write_end,
                         stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    with os.fdopen(read_end) as out:
        assert out.readline().startswith("demo:")
    assert p.wait(timeout=60) == 141
    assert p.stderr is not None and p.stderr.read() == ""
