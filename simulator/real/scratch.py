"""Scratch directories, mounts and loop devices that are always released, even after ``kill -9``.

Every real backend works inside one scratch directory that it created itself, and announces
what it is about to hold in a *state file* before holding it::

    <state dir>/<pid>-<token>.json   {"pid", "start_time", "scratch", "mounts", "loop_files", "loops"}
    <scratch>/.layerbench-scratch    marker: this directory was made by layerbench (token inside)

The order is the guarantee.  A mount target is written to the state file *before* mount(2),
a loop backing file *before* ``losetup``; an entry is dropped only *after* its release.  So
at any moment the state file lists a superset of what is held, and every entry in it lies
inside the scratch directory.  A run that ends normally, by an exception, Ctrl-C (SIGINT
raises ``KeyboardInterrupt``) or SIGTERM/SIGHUP (raised as ``SystemExit`` by ``guard_signals``)
releases everything in ``finally`` and deletes its state file.  A run killed with SIGKILL
cannot; its state file stays, and ``stale.cleanup_stale`` (``layerbench cleanup``, also run at the
start of every real run) finds it by its dead pid and releases exactly what it lists:

* a listed mount target is unmounted only if /proc/self/mountinfo shows a mount there
  (lazily, ``MNT_DETACH``, when busy), innermost first;
* a loop device is detached only if its backing file (``/sys/block/loopN/loop/backing_file``)
  is a listed loop file; one whose file lies on a listed mount (a guest image on a loop-
  mounted host fs, ``thin.py``) is detached *before* that mount is unmounted, because after
  the mount is gone (lazily, when the loop holds it busy) sysfs no longer shows that path
  and the loop would keep the host fs, and its own loop device, alive for ever;
* a FUSE mount (``fuse_overlay.py``) is a mount like any other: for root, ``fusermount3 -u``
  is this same umount2(2), and the daemon exits when its connection goes away;
* the scratch directory is deleted only if it still holds our marker with the run's token and
  no mount is left anywhere below it, so ``rm -rf`` can never reach into a live file system.

A pid is judged dead when ``/proc/<pid>`` is gone or holds another process (its start time,
field 22 of ``/proc/<pid>/stat``, differs: pids are reused).  Two cleaners never work on one
state file: the first renames it to ``*.cleaning-<its pid>`` (rename(2) is atomic), and a
claim whose cleaner died is taken over by the next cleaner.

An explicit scratch path (``LAYERBENCH_SCRATCH`` or ``scratch_dir(path=...)``) must not exist
yet: an existing directory is not ours, and is refused (BadInput) rather than mounted over or
deleted at the end, whatever it holds.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Iterator

from simulator.errors import BadInput

MARKER = ".layerbench-scratch"
STATE_DIR_ENV = "LAYERBENCH_STATE_DIR"
SCRATCH_ENV = "LAYERBENCH_SCRATCH"
ROOT_STATE_DIR = "/run/layerbench"  # FHS: /run holds runtime state and is emptied at boot, as mounts are
MNT_DETACH = 2  # linux/fs.h: lazy unmount, for a mount still busy
LOOP_CLR_FD = 0x4C01  # linux/loop.h: detach; on a busy device the kernel sets autoclear instead
PR_SET_PDEATHSIG = 1  # linux/prctl.h
GUARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # SIGINT already raises KeyboardInterrupt

_libc = ctypes.CDLL(None, use_errno=True)


def state_dir() -> str:
    """Where state files live: $LAYERBENCH_STATE_DIR, /run/layerbench for root, else
    $XDG_RUNTIME_DIR/layerbench, else a per-user directory in the temp dir."""
    if os.environ.get(STATE_DIR_ENV):
        return os.environ[STATE_DIR_ENV]
    if os.geteuid() == 0 and os.path.isdir("/run"):
        return ROOT_STATE_DIR
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "layerbench")
    return os.path.join(tempfile.gettempdir(), f"layerbench-state-{os.geteuid()}")


def start_time(pid: int) -> int | None:
    """Clock ticks after boot when ``pid`` started, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])  # field 22; fields 1-2 end at ')'
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int, started: int | None) -> bool:
    """The process that wrote a state file still runs: same pid and start time, and not a
    zombie (killed, not yet reaped by its parent: it holds nothing, but its pid stays)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    if fields[0] in ("Z", "X"):  # field 3: zombie, dead
        return False
    return started is None or int(fields[19]) == started


def mount_points() -> list[str]:
    """Every mount point of this mount namespace (/proc/self/mountinfo field 5, unescaped)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            out.append(point.encode().decode("unicode_escape") if "\\" in point else point)
    return out


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def umount(target: str) -> None:
    """umount2(target), and a lazy unmount when it is busy."""
    if _libc.umount2(target.encode(), 0) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EBUSY and _libc.umount2(target.encode(), MNT_DETACH) == 0:
        return
    raise OSError(err, f"umount {target}: {os.strerror(err)}")


def sync_fs(path: str) -> None:
    """syncfs(2): write back the one file system holding ``path``, and wait for it.

    Not sync(2): that writes back every file system, those of other runs going on at the
    same time included, and what a run measures depends on when its data is written back
    (delayed allocation: a file made and removed before writeback never gets blocks; btrfs
    extents written before a truncate leave bookends).  Measured here: a thin case (seed
    90569 of ``tests/test_real_thin.py``'s random cases) read 57 blocks more while another
    process called sync(2) every 5 ms; thin seeds 90000-90299 run beside btrfs cases had 5
    cases off the model by 9-19 blocks with sync(2) in both backends, 1 with syncfs, as
    when run alone."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def loops_backed_by(files: list[str]) -> list[str]:
    """Loop devices whose backing file is one of ``files`` (sysfs; no tool needed)."""
    wanted = {os.path.realpath(f) for f in files}
    out = []
    try:
        names = os.listdir("/sys/block")
    except OSError:
        return out
    for name in sorted(names):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                backing = f.read().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if backing in wanted:
            out.append(f"/dev/{name}")
    return out


def detach_loop(device: str) -> None:
    fd = os.open(device, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: not bound any more
            raise
    finally:
        os.close(fd)


def die_with_parent(parent: int) -> None:
    """In a forked child: be killed when ``parent`` dies, so a SIGKILLed run leaves no
    process holding its mounts busy (and exit now if it already died)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


@contextmanager
def guard_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise SystemExit(128 + signal) while real resources are held, so
    every ``finally`` runs; outside the main thread signals cannot be handled (no-op)."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = {}
    try:
        for sig in GUARDED_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def signals_blocked() -> Iterator[None]:
    """A release runs to its end: a second Ctrl-C or SIGTERM waits until it is done."""
    sigs = {signal.SIGINT, *GUARDED_SIGNALS}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ScratchDir:
    """A scratch directory this process created, and the mounts and loop devices it holds.

    Use ``will_mount``/``release_mount`` and ``will_attach``/``attached``/``release_loop``
    around each mount (kernel or FUSE) and losetup; ``close`` releases whatever is still held."""

    def __init__(self, prefix: str, path: str | None = None):
        from .stale import cleanup_stale  # it releases with this module's functions

        path = path or os.environ.get(SCRATCH_ENV) or None
        try:
            cleanup_stale()  # what runs killed with SIGKILL left behind, before taking more
        except OSError:
            pass  # a cleanup problem is for 'layerbench cleanup' to report, not for this run
        self.token = secrets.token_hex(8)
        if path is None:
            self.path = tempfile.mkdtemp(prefix=prefix)
        else:
            self.path = os.path.abspath(path)
            try:
                os.mkdir(self.path, 0o700)
            except FileExistsError:
                raise BadInput(f"scratch path {self.path} already exists and was not created by this run; "
                               f"give a path that does not exist (or run 'layerbench cleanup' if a killed "
                               f"run left it)") from None
            except OSError as exc:
                raise BadInput(f"scratch path {self.path}: cannot create it: {exc.strerror}") from None
        with open(os.path.join(self.path, MARKER), "w") as f:
            f.write(self.token + "\n")
        self.state: dict[str, Any] = {"pid": os.getpid(), "start_time": start_time(os.getpid()),
                                      "token": self.token, "scratch": self.path, "created": time.time(),
                                      "mounts": [], "loop_files": [], "loops": []}
        os.makedirs(state_dir(), mode=0o700, exist_ok=True)
        self.state_file = os.path.join(state_dir(), f"{os.getpid()}-{self.token}.json")
        try:
            self._save()
        except BaseException:
            _remove_scratch(self.path, self.token)
            raise

    def _save(self) -> None:
        _write_json(self.state_file, self.state)

    def will_mount(self, target: str) -> str:
        """Record ``target`` (inside the scratch) before mounting there; returns its full path."""
        full = os.path.normpath(os.path.join(self.path, target))
        if not _inside(full, self.path):
            raise ValueError(f"mount target {target} lies outside the scratch directory")
        self.state["mounts"].append(full)
        self._save()
        return full

    def release_mount(self, target: str) -> None:
        """Unmount ``target`` (full path or relative to the scratch) and forget it."""
        full = os.path.normpath(os.path.join(self.path, target))
        if full in mount_points():
            umount(full)
        self.state["mounts"].remove(full)
        self._save()

    def will_attach(self, backing: str) -> None:
        """Record a loop backing file (inside the scratch) before ``losetup``."""
        if not _inside(os.path.abspath(backing), self.path):
            raise ValueError(f"loop file {backing} lies outside the scratch directory")
        self.state["loop_files"].append(os.path.abspath(backing))
        self._save()

    def attached(self, device: str) -> None:
        self.state["loops"].append(device)
        self._save()

    def release_loop(self, backing: str) -> None:
        """Detach the loop device(s) backed by ``backing`` and forget the file."""
        backing = os.path.abspath(backing)
        for device in loops_backed_by([backing]):
            detach_loop(device)
            if device in self.state["loops"]:
                self.state["loops"].remove(device)
        self.state["loop_files"].remove(backing)
        self._save()

    def release_loops(self) -> None:
        for device in loops_backed_by(self.state["loop_files"]):
            detach_loop(device)
        self.state["loops"], self.state["loop_files"] = [], []
        self._save()

    def close(self) -> None:
        """Release everything still held, innermost first; delete the scratch and the state
        file only when nothing is left (else the state file stays for ``layerbench cleanup``)."""
        with signals_blocked():
            errors = release(self.state)
            if not errors:
                os.unlink(self.state_file)
        if errors:
            raise errors[0]


def release(state: dict[str, Any]) -> list[OSError]:
    """Release what ``state`` lists, only what it lists; the errors (an empty list: all gone)."""
    errors: list[OSError] = []
    scratch = state.get("scratch")
    if not isinstance(scratch, str) or not os.path.isabs(scratch) or scratch == "/":
        return [OSError(errno.EINVAL, f"state file names no usable scratch directory: {scratch!r}")]
    points = mount_points()
    loop_files = [f for f in state.get("loop_files", []) if _inside(f, scratch)]
    for target in reversed(state.get("mounts", [])):
        if not _inside(target, scratch):
            errors.append(OSError(errno.EINVAL, f"{target} lies outside {scratch}: left alone"))
            continue
        if target in points:  # loops on files of this mount first, while sysfs shows their path
            errors += _detach_all([f for f in loop_files if _inside(f, target)])
        while target in points:  # a target may carry stacked mounts; each is ours
            try:
                umount(target)
            except OSError as exc:
                errors.append(exc)
                break
            points.remove(target)
    errors += _detach_all(loop_files)
    if not errors:
        try:
            _remove_scratch(scratch, state.get("token"))
        except OSError as exc:
            errors.append(exc)
    return errors


def _detach_all(loop_files: list[str]) -> list[OSError]:
    errors = []
    for device in loops_backed_by(loop_files):
        try:
            detach_loop(device)
        except OSError as exc:
            errors.append(OSError(exc.errno, f"detach {device}: {exc.strerror}"))
    return errors


def _remove_scratch(path: str, token: str | None) -> None:
    """``rm -rf`` the scratch directory, if it is still ours and nothing is mounted inside."""
    try:
        with open(os.path.join(path, MARKER)) as f:
            mine = token is not None and f.read().strip() == token
    except FileNotFoundError:
        mine = not os.path.exists(path)
        if mine:
            return  # already gone
    if not mine:
        raise OSError(errno.EPERM, f"{path} does not hold this run's marker: left alone")
    left = [p for p in mount_points() if _inside(p, path)]
    if left:
        raise OSError(errno.EBUSY, f"{path}: still mounted below it: {', '.join(left)}")
    shutil.rmtree(path)
