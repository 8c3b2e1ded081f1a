"""Replay SPEC section 4 operations with real system calls inside a container's root.

Every real backend (overlay now; btrfs, reflinked ext4, vfs-as-copy later) mounts a
container's file system somewhere and hands the directory and the container's operations to
``replay``.  Container paths are absolute (``/a/b`` means ``root/a/b``) and symbolic links,
absolute ones included, must resolve inside the container, as the kernel resolves them for
a process whose root is the container's.  We get exactly that by forking a child that
``chroot``s into the root and makes plain path-based calls: the kernel does every
resolution, so a symlink ``/x -> /etc`` or ``../..`` can never reach the host.
(``openat2(RESOLVE_IN_ROOT)`` would also work, but every two-path call, rename, link and
symlink, would then need a parent fd resolved separately: more code, and not the same
single resolution the kernel does for a process.)  Measured here: fork + chroot + reporting
back of an empty trace costs 7.4 ms per container (mean of 50, from a process with numpy
loaded), about one overlay mount's worth.

The child reports over a pipe, as JSON: operations replayed, refused (any ``OSError``,
exactly the simulator's ``failed_ops``), bytes written and read, and the ``write_bytes``
delta of its own ``/proc/self/io`` (the kernel charges a copy-up to the process that
triggers it; REAL_KERNEL.md section 1).  The io file is opened before ``chroot``: /proc is
not visible inside.

What each op does is SPEC section 4 with these choices, each mirrored by the simulator:
``utime`` is ``os.utime`` (coreutils ``touch`` would open for write and copy up);
``remove_tree`` is ``rm -rf`` (a missing operand, ENOENT or ENOTDIR on its lookup, is not a
failure: coreutils ``ignorable_missing``; the contents go by directory fd and the operand by
its path, see ``_rm_rf``); ``move`` is ``mv``: rename(2), and on EXDEV a
``cp -a``-like copy (modes, owners, symlinks, hard links inside the tree; every data byte
written, no holes) then ``rm -rf`` of the source.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

from simulator.errors import LayerbenchError
from simulator.trace import WRITE_OPS, Op

from .scratch import die_with_parent

DEFAULT_CREATE_MODE = 0o644  # SPEC section 4 / simulator.operations
DEFAULT_MKDIR_MODE = 0o755
CHUNK = 1 << 20  # bytes per write(2)/read(2) call for large sizes
FILL_BYTE = b"x"  # data written is non-zero so no file system can store it as a hole
_FILL = FILL_BYTE * CHUNK
_OPEN_FLAGS = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}


@dataclass
class ReplayResult:
    ops: int = 0
    failed_ops: int = 0
    written_bytes: int = 0
    read_bytes: int = 0
    device_write_bytes: int = 0
    seconds: float = 0.0  # wall time of the operations alone, in the child (no fork, no chroot)

    def add_counts(self, other: ReplayResult) -> None:
        """Add another container's operation counts (what a multi-container run reports)."""
        self.ops += other.ops
        self.failed_ops += other.failed_ops
        self.written_bytes += other.written_bytes
        self.read_bytes += other.read_bytes


def bytes_to_write(ops: Iterable[Op]) -> int:
    """The most bytes ``ops`` write (creates' sizes, writes' and appends' lengths): what a
    backend sizes its tmpfs or loop file by, beyond the image."""
    return sum(op.size if op.kind == "create" else op.length for op in ops if op.kind in WRITE_OPS)


class _Counters:
    def __init__(self) -> None:
        self.written = 0
        self.read = 0


def create_filled(path: str, size: int, uid: int, gid: int, mode: int) -> None:
    """A new regular file of ``size`` fill bytes (dense: copy-up must copy it all), owned and
    moded as given; chown before chmod, since chown clears set-id bits."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        write_fill(fd, size)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def write_fill(fd: int, length: int, offset: int | None = None) -> int:
    """Write ``length`` fill bytes (at ``offset``, or the file position), in chunks."""
    done = 0
    while done < length:
        n = min(CHUNK, length - done)
        view = memoryview(_FILL)[:n]
        wrote = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset + done)
        done += wrote
    return done


def _read(fd: int, offset: int, length: int) -> int:
    done = 0
    while True:  # at least one call: read(2) of 0 bytes still fails on a directory (EISDIR)
        data = os.pread(fd, min(CHUNK, length - done), offset + done)
        done += len(data)
        if not data or done >= length:
            return done


def _rm_rf(path: str) -> None:
    """``rm -rf path`` as coreutils does it (fts): the operand is looked up by its path,
    its contents removed through directory fds (``unlinkat(dirfd, name)``), and the operand
    itself removed by its path at the end, where ENOENT or ENOTDIR is ignored (rm -f's
    ``ignorable_missing``).  So when the path runs through a symbolic link that the removal
    deletes, the operand directory stays, emptied (coreutils 9.1 here, strace'd)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        _empty_dir(fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except (FileNotFoundError, NotADirectoryError):
        pass


def _empty_dir(fd: int) -> None:
    """Remove everything inside the directory open as ``fd``, depth-first, by fd."""
    for name in os.listdir(fd):
        if stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            try:
                _empty_dir(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)


def _copy_tree(src: str, dst: str, links: dict[tuple[int, int], str], c: _Counters) -> None:
    """``cp -a src dst``: owners before modes (chown clears set-id bits), data dense."""
    st = os.lstat(src)
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(dst, 0o700)
        for name in os.listdir(src):
            _copy_tree(os.path.join(src, name), os.path.join(dst, name), links, c)
        os.chown(dst, st.st_uid, st.st_gid)
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
        os.lchown(dst, st.st_uid, st.st_gid)
    elif (st.st_dev, st.st_ino) in links:
        os.link(links[(st.st_dev, st.st_ino)], dst)
    else:
        fin = os.open(src, os.O_RDONLY)
        try:
            fout = os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            try:
                while True:
                    data = os.read(fin, CHUNK)
                    if not data:
                        break
                    c.read += len(data)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fout, view):]
                    c.written += len(data)
                os.fchown(fout, st.st_uid, st.st_gid)
                os.fchmod(fout, stat.S_IMODE(st.st_mode))
            finally:
                os.close(fout)
        finally:
            os.close(fin)
        if st.st_nlink > 1:
            links[(st.st_dev, st.st_ino)] = dst


def _move(src: str, dst: str, c: _Counters) -> None:
    try:
        os.rename(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # anything else is mv's failure too
            raise
    try:
        dst_st = os.lstat(dst)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISDIR(dst_st.st_mode):
            raise OSError(errno.ENOTDIR, "mv: a copied tree may only replace an empty directory", dst)
        os.rmdir(dst)  # must be empty, else mv fails (ENOTEMPTY)
    _copy_tree(src, dst, {}, c)
    _rm_rf(src)


def apply_op(op: Op, c: _Counters) -> None:
    """One operation with real calls; paths are taken as they are (the caller chroots)."""
    k, p = op.kind, op.path
    if k == "create":
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, DEFAULT_CREATE_MODE if op.mode < 0 else op.mode)
        try:
            c.written += write_fill(fd, op.size)
        finally:
            os.close(fd)
    elif k in ("write", "append"):
        fd = os.open(p, os.O_WRONLY | (os.O_APPEND if k == "append" else 0))
        try:
            c.written += write_fill(fd, op.length, op.offset if k == "write" else None)
        finally:
            os.close(fd)
    elif k == "truncate":
        os.truncate(p, op.size)
    elif k == "open":
        os.close(os.open(p, _OPEN_FLAGS[op.access]))
    elif k == "read":
        fd = os.open(p, os.O_RDONLY)
        try:
            c.read += _read(fd, op.offset, op.length)
        finally:
            os.close(fd)
    elif k == "stat":
        os.lstat(p)
    elif k == "unlink":
        os.unlink(p)
    elif k == "mkdir":
        os.mkdir(p, DEFAULT_MKDIR_MODE if op.mode < 0 else op.mode)
    elif k == "rmdir":
        os.rmdir(p)
    elif k == "remove_tree":
        _rm_rf(p)
    elif k == "rename":
        os.rename(p, op.dst)
    elif k == "move":
        _move(p, op.dst, c)
    elif k == "chmod":
        os.chmod(p, op.mode)
    elif k == "chown":
        os.chown(p, op.uid, op.gid)
    elif k == "utime":
        os.utime(p)
    elif k == "setxattr":
        os.setxattr(p, op.name, b"x" * op.size)
    elif k == "link":
        os.link(p, op.dst, follow_symlinks=False)
    elif k == "symlink":
        os.symlink(op.target, p)
    elif k == "fsync":
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        raise ValueError(f"operation {k!r} cannot be replayed here")


def _io_write_bytes(fd: int) -> int:
    for line in os.pread(fd, 4096, 0).decode().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _child(root: str, ops: Sequence[Op], out: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    io = os.open("/proc/self/io", os.O_RDONLY)
    os.chroot(root)
    os.chdir("/")
    os.umask(0)  # modes exactly as asked
    c = _Counters()
    failed = 0
    before = _io_write_bytes(io)
    start = time.perf_counter()
    for op in ops:
        try:
            apply_op(op, c)
        except OSError:
            failed += 1
    seconds = time.perf_counter() - start
    after = _io_write_bytes(io)
    report = {"ops": len(ops), "failed_ops": failed, "written_bytes": c.written, "read_bytes": c.read,
              "device_write_bytes": after - before, "seconds": seconds}
    os.write(out, json.dumps(report).encode())


def replay(root: str, ops: Iterable[Op]) -> ReplayResult:
    """Replay ``ops`` in a child process whose root directory is ``root``."""
    ops = list(ops)
    r, w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's stack (pytest, the CLI)
        code = 1
        try:
            die_with_parent(parent)  # a SIGKILLed parent must not leave it holding the mount busy
            os.close(r)
            _child(root, ops, w)
            code = 0
        except BaseException as exc:
            try:
                os.write(w, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            except BaseException:
                pass
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    try:
        while True:
            data = os.read(r, 65536)
            if not data:
                break
            chunks.append(data)
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # interrupted: the child must not keep the mount busy
        raise
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks) or b"{}")
    if "error" in report or os.waitstatus_to_exitcode(status) != 0:
        raise LayerbenchError(f"replay in {root} failed: {report.get('error', f'exit status {status}')}")
    return ReplayResult(**report)
