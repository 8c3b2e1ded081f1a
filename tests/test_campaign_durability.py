"""Campaign durability: ten ``kill -9``s, damaged cell files, and two processes on one directory.

The ten kill moments come from a seeded RNG: the first half at a random time after the
process starts (start-up, manifest writing, the first cells: wherever it lands on a loaded
machine), the second half once the run has written a random number (1-6) of new cell files,
plus a random fraction of a second, so those surely hit mid-computation.  Moments are tied
to progress rather than to the clock so that a fast, idle machine cannot finish the grid
before the tenth kill (it did, with clock-only moments).  Each kill is followed by a resume that is itself the next one
killed, and a last resume finishes.  The
result must equal an uninterrupted run in every deterministic metric.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simulator import load_results, run_campaign
from simulator.campaign import compare_campaigns, load_campaign
from simulator.campaign.results import check_cell_file
from simulator.campaign.run import directory_lock

REPO = Path(__file__).resolve().parent.parent
KILLS = 10
KILL_SEED = 8_2024
START_WINDOW = (0.2, 1.2)  # seconds after start; the first cell appears after 0.8-2 s here
NEW_CELLS = (1, 6)  # second half: kill after this many new cells (inclusive range)...
CELL_JITTER = (0.0, 0.2)  # ...plus this many seconds
DURABLE = """
name = "durable"
seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
         20, 21, 22, 23, 24, 25, 26, 27, 28, 29]
containers = [1, 2]

[[images]]
name = "random"
params = { layers = 3, entries = 30 }

[[drivers]]
name = "overlay"

[[drivers]]
name = "vfs"

[[drivers]]
name = "btrfs"

[[workloads]]
name = "random"
params = { ops = 600 }
"""
SMALL = """
name = "small"
seeds = [0, 1]

[[images]]
name = "demo"

[[drivers]]
name = "overlay"

[[drivers]]
name = "vfs"

[[workloads]]
name = "demo"
"""


def _cmd(toml: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "simulator", "campaign", str(toml), "--out", str(out), "--jobs", "2", "--no-report"]


def _cells(out: Path) -> list[Path]:
    return sorted((out / "cells").glob("[!.]*.parquet")) if (out / "cells").exists() else []


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{p}").exists() and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
              != "Z" for p in pids if Path(f"/proc/{p}").exists()):
        assert time.monotonic() < deadline, "pool workers outlived the killed coordinator"
        time.sleep(0.05)


def test_ten_kill9s_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
    toml = tmp_path / "durable.toml"
    toml.write_text(DURABLE)
    total = len(load_campaign(toml).cells)
    assert total == 3 * 2 * 30 == 180
    out = tmp_path / "killed"
    rng = np.random.default_rng(KILL_SEED)
    counts, mid = [], 0
    for k in range(KILLS):
        before = len(_cells(out))
        proc = subprocess.Popen(_cmd(toml, out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after_progress = k >= KILLS // 2
        if after_progress:
            target = before + int(rng.integers(NEW_CELLS[0], NEW_CELLS[1] + 1))
            deadline = time.monotonic() + 60
            while len(_cells(out)) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
        time.sleep(float(rng.uniform(*(CELL_JITTER if after_progress else START_WINDOW))))
        assert proc.poll() is None, "the campaign finished before its kill: make it longer"
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _wait_gone(workers)
        cells = _cells(out)
        for f in cells:  # whatever the moment, every visible cell file is whole and checks
            assert check_cell_file(f, f.stem) is None, f
        counts.append(len(cells))
        mid += before < len(cells) < total
    assert counts == sorted(counts)  # nothing done was ever lost
    assert mid >= KILLS // 2, f"too few kills landed mid-computation: {counts}"
    assert counts[-1] < total, counts

    resumed = subprocess.run(_cmd(toml, out), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"durable: {total}/{total} cells done, 0 failed" in resumed.stdout
    assert not list((out / "cells").glob(".tmp-*")) and not (out / ".lock").exists()

    straight = run_campaign(toml, tmp_path / "straight", jobs=2, report=False, progress=None)
    comparison = compare_campaigns(straight, out)  # every metric but the simulator's own time and memory
    assert comparison.equal and comparison.cells_compared == total, comparison.summary()
    drop = ["sim_seconds", "sim_peak_rss_bytes"]
    pd.testing.assert_frame_equal(load_results(out).drop(columns=drop), load_results(straight).drop(columns=drop))


def test_truncated_damaged_and_misplaced_cell_files_are_recomputed(tmp_path, capsys):
    toml = tmp_path / "small.toml"
    toml.write_text(SMALL)
    out = run_campaign(toml, tmp_path / "r", jobs=1, report=False, progress=None)
    reference = tmp_path / "reference"
    shutil.copytree(out, reference)
    a, b, c, d = _cells(out)
    assert all(check_cell_file(f, f.stem) is None for f in (a, b, c, d))
    # a: cut in half (a torn copy); b: one metric changed, metadata (and its checksum) kept --
    # the file parses, only the checksum can tell; c: d's valid file under c's name.
    a.write_bytes(a.read_bytes()[: a.stat().st_size // 2])
    table = pq.read_table(b)
    column = table.column_names.index("written_bytes")
    changed = table.set_column(column, "written_bytes", pa.array([12345], type=pa.int64()))
    pq.write_table(changed.replace_schema_metadata(table.schema.metadata), b)
    assert check_cell_file(b, b.stem) == "checksum mismatch"
    shutil.copy(d, c)
    assert check_cell_file(a, a.stem).startswith("unreadable")
    assert "holds cell" in check_cell_file(c, c.stem)

    capsys.readouterr()
    import io

    log = io.StringIO()
    run_campaign(toml, out, jobs=1, report=False, progress=log)
    damaged = [line for line in log.getvalue().splitlines() if "is damaged" in line]
    assert sorted(Path(line.split()[1]).name for line in damaged) == sorted(f.name for f in (a, b, c))
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runs"][-1]["computed"] == 3 and manifest["cells"] == {"total": 4, "done": 4, "failed": 0}
    assert compare_campaigns(reference, out).equal
    assert all(check_cell_file(f, f.stem) is None for f in _cells(out))


def test_a_second_process_on_the_same_directory_is_refused(tmp_path):
    toml = tmp_path / "small.toml"
    toml.write_text(SMALL)
    out = tmp_path / "r"
    with directory_lock(out):
        before = sorted(p.name for p in out.rglob("*"))
        p = subprocess.run(_cmd(toml, out), cwd=REPO, capture_output=True, text=True, timeout=120)
        assert p.returncode == 1 and p.stdout == ""
        assert p.stderr.splitlines() == [f"layerbench: error: {out}: another campaign process (pid {os.getpid()}) "
                                         f"is using this directory; wait for it to finish or choose another --out"]
        assert sorted(p.name for p in out.rglob("*")) == before == [".lock"]  # nothing written
    assert not out.exists()  # the lock of a directory that stayed empty leaves no trace


def test_two_real_processes_one_directory(tmp_path):
    """A running campaign and a second one started on its directory: the second is refused at
    once, the first finishes untouched."""
    toml = tmp_path / "durable.toml"
    toml.write_text(DURABLE.replace("ops = 600", "ops = 200"))
    out = tmp_path / "r"
    first = subprocess.Popen(_cmd(toml, out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _cells(out):
        assert first.poll() is None and time.monotonic() < deadline, "the first campaign never wrote a cell"
        time.sleep(0.01)
    second = subprocess.run(_cmd(toml, out), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1 and f"another campaign process (pid {first.pid})" in second.stderr
    assert len(second.stderr.splitlines()) == 1
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert "durable: 180/180 cells done, 0 failed" in stdout
    assert len(load_results(out)) == 180


@pytest.mark.parametrize("damage", ["empty", "garbage"])
def test_a_cell_file_of_any_shape_is_judged_without_raising(tmp_path, damage):
    f = tmp_path / "0123456789abcdef.parquet"
    f.write_bytes(b"" if damage == "empty" else os.urandom(4096))
    assert check_cell_file(f, f.stem).startswith("unreadable")
