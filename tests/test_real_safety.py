"""Real backends leave nothing behind: SIGKILL mid-workload, then ``layerbench cleanup``.

Each test runs the real command in a child process with its own state directory
(``LAYERBENCH_STATE_DIR``) and its own temp dir (``TMPDIR``), so other suites running real
backends at the same time are never touched, and waits for the state file to list the
mounts (and, for devicemapper, the container's guest image) of the first container, and for
/proc/self/mountinfo to show them (the run is mid-workload then).  After SIGKILL the mounts,
loop devices and scratch dir are still there (checked: otherwise the test would prove
nothing); after ``layerbench cleanup`` none is, while decoys it must not touch stay.

Backends: overlay and btrfs (``run --backend real``), devicemapper (``run --backend real``:
reflinked ext4 guest images on a loop-mounted xfs, so two loop devices and two mounts, the
guest's file lying on the host's mount) and fuse-overlayfs (``validate --backend
fuse-overlayfs``: a tmpfs plus a FUSE mount whose daemon outlives the killed run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator.errors import BackendUnavailable

ROOT = Path(__file__).resolve().parent.parent
SLOW_CREATES = 200_000  # 4 KiB creates: minutes of work, so the kill always lands mid-workload

pytestmark = pytest.mark.kernel


THIN_OPTS = ("chunk_size=4096", "fs=ext4", "journal=false", f"base_size={1 << 30}")  # as tests/test_real_thin.py


def _available(driver: str) -> None:
    import importlib

    module = {"overlay": "overlay", "btrfs": "btrfs", "devicemapper": "thin", "fuse": "fuse_overlay"}[driver]
    try:
        importlib.import_module(f"simulator.real.{module}").check_available()
    except BackendUnavailable as exc:
        pytest.skip(f"real {driver} backend unavailable: {exc}")


def _command(driver: str, trace: Path, tmp: Path) -> list[str]:
    """The CLI run of ``trace`` on ``driver``'s real backend (fuse: a one-cell validate)."""
    if driver == "fuse":
        return ["validate", "--driver", "overlay", "--image", "demo", "--workload", str(trace),
                "--backend", "fuse-overlayfs", "--out", str(tmp / "out"), "--json"]
    opts = [a for o in THIN_OPTS for a in ("--opt", o)] if driver == "devicemapper" else []
    return ["run", "--backend", "real", "--driver", driver, *opts, "--image", "demo", "--workload", str(trace),
            "--json"]


def _first_container_up(driver: str, state: dict) -> bool:
    """The state file shows the first container's own resources (not just the image's)."""
    if driver == "devicemapper":
        return any(f.endswith("/h/C0.img") for f in state["loop_files"])
    if driver == "fuse":
        return any(m.endswith("/c/0/m") for m in state["mounts"])
    return True


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp / "tmp"), "LAYERBENCH_STATE_DIR": str(tmp / "state"), **extra}


def _mounts_under(path: Path) -> list[str]:
    from simulator.real.scratch import mount_points

    return [p for p in mount_points() if p.startswith(str(path) + "/")]


def _loops_under(path: Path) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(path) in line]


def _states(tmp: Path) -> list[dict]:
    out = []
    for p in (tmp / "state").glob("*.json"):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            pass  # being replaced right now
    return out


def _slow_trace(tmp: Path) -> Path:
    trace = tmp / "slow.jsonl"
    trace.write_text("".join(json.dumps({"op": "create", "path": f"/f{i}", "size": 4096}) + "\n"
                             for i in range(SLOW_CREATES)))
    return trace


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulator", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def _sigint_as_in_a_terminal() -> None:
    """The run gets Ctrl-C as a command in a terminal does, however the tests were started:
    a job a non-interactive shell puts in the background (``cmd &``) ignores SIGINT, and
    the ignoring is inherited, so Python never installs its KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_STARTED: list[tuple[subprocess.Popen, Path]] = []  # the runs this test started


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test():
    """A run a failed test left going (one that ignored its signal, say) is killed and its
    mounts released: left alone, it held a core and a FUSE mount that hung the removal of
    old pytest directories at the end of the next session."""
    yield
    while _STARTED:
        proc, tmp = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
            _cli("cleanup", env=_env(tmp))


def _start_and_wait_for_mount(tmp: Path, driver: str, wanted_mounts: int) -> subprocess.Popen:
    (tmp / "tmp").mkdir(exist_ok=True)
    trace = _slow_trace(tmp)
    proc = subprocess.Popen([sys.executable, "-m", "simulator", *_command(driver, trace, tmp)], cwd=ROOT,
                            env=_env(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_sigint_as_in_a_terminal)
    _STARTED.append((proc, tmp))
    deadline = time.monotonic() + 90
    while True:
        states = _states(tmp)
        listed = [m for s in states for m in s["mounts"]]
        if len(listed) >= wanted_mounts and all(m in _mounts_under(tmp) for m in listed) and \
                any(_first_container_up(driver, s) for s in states):
            break
        assert proc.poll() is None, f"the run ended before mounting: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "the run never mounted"
        time.sleep(0.01)
    time.sleep(0.3)  # well inside the 200k-create workload
    return proc


def _daemons_of(scratch: Path) -> list[int]:
    """Processes (a fuse-overlayfs daemon) whose command line names the scratch dir."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(scratch).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(int(pid))
        except OSError:
            pass  # gone meanwhile
    return out


# driver, mounts the first container holds, loop devices then: overlay: the tmpfs + its
# overlay; btrfs: its mount + loop; devicemapper: host xfs + guest ext4 (C0.img), each on a
# loop device; fuse: the tmpfs + the FUSE mount
@pytest.mark.parametrize("driver,mounts,loops", [("overlay", 2, 0), ("btrfs", 1, 1), ("devicemapper", 2, 2),
                                                 ("fuse", 2, 0)])
def test_sigkill_mid_workload_then_cleanup_leaves_nothing(driver, mounts, loops, tmp_path):
    _available(driver)
    # Decoys that cleanup must leave alone: a foreign dir named like a scratch dir, a foreign
    # tmpfs mount, and the state file of a live process (this one) listing that mount.
    decoy = tmp_path / "tmp" / "layerbench-ovl-decoy"
    decoy.mkdir(parents=True)
    (decoy / "keep").write_text("mine")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(foreign)], check=True)
    try:
        proc = _start_and_wait_for_mount(tmp_path, driver, mounts)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        [state] = _states(tmp_path)
        scratch = Path(state["scratch"])
        live = tmp_path / "state" / f"{os.getpid()}-live.json"
        from simulator.real.scratch import start_time

        live.write_text(json.dumps({"pid": os.getpid(), "start_time": start_time(os.getpid()),
                                    "scratch": str(foreign), "mounts": [str(foreign)], "loop_files": []}))
        # What SIGKILL left: the scratch dir, its mounts, its loop devices, the FUSE daemon.
        assert scratch.is_dir() and len(_mounts_under(scratch.parent)) == mounts
        assert len(_loops_under(scratch)) == loops
        daemons = _daemons_of(scratch)
        assert len(daemons) == (driver == "fuse")  # the FUSE daemon outlives the killed run

        listed = _cli("cleanup", "--dry-run", "--json", env=_env(tmp_path))
        assert listed.returncode == 0, listed.stderr
        [report] = json.loads(listed.stdout)
        assert report["pid"] == proc.pid and report["scratch"] == str(scratch) and report["mounts"]
        assert scratch.is_dir()  # a dry run changes nothing

        done = _cli("cleanup", env=_env(tmp_path))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"pid {proc.pid}: released" in done.stdout
        assert not _mounts_under(tmp_path / "tmp") and not _loops_under(tmp_path) and not scratch.exists()
        deadline = time.monotonic() + 5  # a FUSE daemon exits on its own once unmounted
        while _daemons_of(scratch) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _daemons_of(scratch)
        assert [p.name for p in (tmp_path / "state").iterdir()] == [live.name]  # the live run's stays
        assert (decoy / "keep").read_text() == "mine"
        assert str(foreign) in _mounts_under(tmp_path)
        again = _cli("cleanup", env=_env(tmp_path))
        assert again.returncode == 0 and "nothing to clean up" in again.stdout
    finally:
        subprocess.run(["umount", str(foreign)], check=False)


def test_the_next_run_cleans_up_after_a_killed_one(tmp_path):
    _available("overlay")
    proc = _start_and_wait_for_mount(tmp_path, "overlay", 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    [state] = _states(tmp_path)
    assert _mounts_under(tmp_path / "tmp")
    ok = _cli("run", "--backend", "real", "--driver", "overlay", "--image", "demo", "--workload", "demo", "--json",
              env=_env(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert not _mounts_under(tmp_path / "tmp") and not Path(state["scratch"]).exists()
    assert not list((tmp_path / "state").iterdir())


@pytest.mark.parametrize("driver,mounts", [("overlay", 2), ("btrfs", 1), ("devicemapper", 2), ("fuse", 2)])
def test_sigint_mid_workload_releases_everything(driver, mounts, tmp_path):
    _available(driver)
    proc = _start_and_wait_for_mount(tmp_path, driver, mounts)
    [state] = _states(tmp_path)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "interrupted" in proc.stderr.read().decode()
    assert not _mounts_under(tmp_path) and not _loops_under(tmp_path)
    assert not list((tmp_path / "tmp").iterdir()) and not list((tmp_path / "state").iterdir())
    deadline = time.monotonic() + 5
    while _daemons_of(Path(state["scratch"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _daemons_of(Path(state["scratch"]))


def test_qcow2_chain_works_in_a_recorded_scratch_and_removes_it(tmp_path, monkeypatch):
    """qcow2 (no mounts, no root): its layer files live in a ScratchDir listed in a state file
    while they exist, and both are gone afterwards."""
    import tempfile

    from simulator.ranges import RangeSet
    from simulator.real import qcow2

    try:
        qcow2.check_available()
    except BackendUnavailable as exc:
        pytest.skip(f"qcow2 reference unavailable: {exc}")
    monkeypatch.setenv("LAYERBENCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen = []
    real_make_layer = qcow2.make_layer

    def make_layer(path, backing, ranges, cluster=qcow2.QCOW2_CLUSTER):
        seen.append(([s["scratch"] for s in _states(tmp_path)], path))
        return real_make_layer(path, backing, ranges, cluster)

    monkeypatch.setattr(qcow2, "make_layer", make_layer)
    # layer 0 writes [0, 70000): clusters 0 and 1 of 65536; the container writes 1 byte in
    # cluster 2 (offset 140000 // 65536 = 2): one cluster of its own
    own, tops = qcow2.chain_clusters([RangeSet([(0, 70000)])], [RangeSet([(140000, 140001)])])
    assert (own, tops) == ([2], [1])
    assert [os.path.basename(p) for _, p in seen] == ["L0.qcow2", "C0.qcow2"]
    [scratch] = seen[0][0]
    assert all(os.path.dirname(p) == scratch and listed == [scratch] for listed, p in seen)
    assert not os.path.exists(scratch) and not list((tmp_path / "state").iterdir())


@pytest.mark.parametrize("driver", ["overlay", "btrfs"])
def test_an_existing_scratch_path_is_refused_and_left_alone(driver, tmp_path):
    _available(driver)
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "data").write_text("do not delete")
    (tmp_path / "tmp").mkdir()
    p = _cli("run", "--backend", "real", "--driver", driver, "--image", "demo", "--workload", "demo",
             env=_env(tmp_path, LAYERBENCH_SCRATCH=str(foreign)))
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1
    assert f"scratch path {foreign} already exists and was not created by this run" in p.stderr
    assert [x.name for x in foreign.iterdir()] == ["data"] and (foreign / "data").read_text() == "do not delete"
    assert not _mounts_under(tmp_path)


def test_a_fresh_scratch_path_is_used_and_removed(tmp_path):
    _available("overlay")
    (tmp_path / "tmp").mkdir()
    scratch = tmp_path / "mine"
    p = _cli("run", "--backend", "real", "--driver", "overlay", "--image", "demo", "--workload", "demo", "--json",
             env=_env(tmp_path, LAYERBENCH_SCRATCH=str(scratch)))
    assert p.returncode == 0, p.stderr
    assert not scratch.exists() and not _mounts_under(tmp_path) and not list((tmp_path / "state").iterdir())


def test_cleanup_refuses_a_scratch_dir_without_its_marker(tmp_path):
    """A stale state file naming a directory that is not ours (no marker with its token):
    the directory and its contents stay, and cleanup says why and exits 1."""
    from simulator.real.stale import cleanup_stale

    target = tmp_path / "not-ours"
    target.mkdir()
    (target / "x").write_text("1")
    state = tmp_path / "state"
    state.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (state / f"{dead.pid}-x.json").write_text(json.dumps({"pid": dead.pid, "start_time": 1, "token": "t",
                                                           "scratch": str(target), "mounts": [],
                                                           "loop_files": []}))
    [report] = cleanup_stale(str(state))
    assert report["errors"] and "marker" in report["errors"][0]
    assert (target / "x").read_text() == "1"
    assert [p.name for p in state.iterdir()] == [f"{dead.pid}-x.json"]  # kept for another try


def test_a_killed_but_unreaped_run_is_stale(tmp_path) -> None:
    """A run killed with SIGKILL whose parent has not reaped it yet is a zombie: it holds no
    mount, so ``cleanup`` must treat its state file as a dead run's (it did not, once)."""
    from simulator.real.scratch import start_time
    from simulator.real.stale import stale_states

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        started = start_time(pid)
        deadline = time.monotonic() + 5
        while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        state = tmp_path / f"{pid}-feed.json"
        state.write_text(json.dumps({"pid": pid, "start_time": started, "token": "feed", "scratch": None,
                                     "mounts": [], "loop_files": [], "loops": []}))
        assert stale_states(str(tmp_path)) == [str(state)]
    finally:
        os.waitpid(pid, 0)
