"""``kill -9`` a campaign three times at random moments, resume, and get the uninterrupted result.

The kill moments come from a seeded RNG, so a failure reproduces.  Each kill hits the
coordinating process only (as a user's ``kill -9 PID`` would); its pool workers must die with
it (``PR_SET_PDEATHSIG``), and the files it leaves must never show a half-finished cell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from simulator import load_results, run_campaign
from simulator.campaign import compare_campaigns, load_campaign

CAMPAIGN = """
name = "kill"
seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27]
containers = [1, 2]

[[images]]
name = "random"
params = { layers = 4, entries = 40 }

[[drivers]]
name = "overlay"

[[drivers]]
name = "vfs"

[[workloads]]
name = "random"
params = { ops = 1200 }
"""  # 1200 ops: at 300 the faster pool (workers write their cells) finished before the second kill
KILLS = 3
KILL_SEED = 20240917


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split()]


def _gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "X"


def test_three_kill9s_then_resume_equals_an_uninterrupted_run(tmp_path):
    path = tmp_path / "kill.toml"
    path.write_text(CAMPAIGN)
    total = len(load_campaign(path).cells)
    assert total == 1 * 2 * 1 * 2 * 28 == 112
    out = tmp_path / "killed"
    rng = np.random.default_rng(KILL_SEED)
    cmd = [sys.executable, "-m", "simulator", "campaign", str(path), "--out", str(out), "--jobs", "2", "--no-report"]
    counts: list[int] = []
    pools: list[int] = []
    for _ in range(KILLS):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        # Wait until this run has computed something new (imports take a while), then a random extra moment.
        start = len(list((out / "cells").glob("[!.]*.parquet"))) if (out / "cells").exists() else 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and \
                len(list((out / "cells").glob("[!.]*.parquet"))) <= start:
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 0.8)))
        workers = _children(proc.pid)
        assert proc.poll() is None, "the campaign finished before the kill: make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _gone(workers), "pool workers outlived the killed coordinator"
        pools.append(len(workers))  # 0 when the kill hit after the pool closed (consolidating)
        done = sorted(p.stem for p in (out / "cells").glob("[!.]*.parquet"))
        counts.append(len(done))
        assert 0 < len(done) <= total  # a kill while consolidating (all cells done) is a fair moment too
        for f in (out / "cells").glob("[!.]*.parquet"):  # every visible cell file is complete
            assert len(pd.read_parquet(f)) == 1
    assert counts == sorted(counts)  # nothing done was ever lost
    assert counts[0] < total and pools[0] == 2  # the first kill hit two busy workers mid-campaign

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"kill: {total}/{total} cells done, 0 failed" in resumed.stdout
    assert not list((out / "cells").glob(".tmp-*"))
    assert len(list((out / "cells").glob("*.parquet"))) == total

    straight = run_campaign(path, tmp_path / "straight", jobs=2, report=False, progress=None)
    a, b = load_results(out), load_results(straight)
    assert len(a) == total and a["cell_id"].is_unique
    comparison = compare_campaigns(straight, out)  # every metric but sim_seconds, sim_peak_rss_bytes
    assert comparison.equal, comparison.summary()
    assert comparison.cells_compared == total
    drop = ["sim_seconds", "sim_peak_rss_bytes"]
    pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop))
