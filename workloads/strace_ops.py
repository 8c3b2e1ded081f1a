"""Turning the system calls of a real program (``workloads.strace_parse``) into SPEC section 4
operations on the part of the file system under one directory, ROOT.

Paths come from strace's ``-y`` annotations (the kernel's path of every descriptor and of
``AT_FDCWD``) joined with the name argument and normalised lexically; a path under ROOT
becomes ``/rel/path``; calls on paths outside ROOT, and on ROOT itself, are dropped.

A *shadow* replay of the emitted operations (the vfs driver over the image of ROOT as it was
before the run) answers what strace cannot: whether ``open(O_CREAT)`` without ``O_TRUNC``
created the file, a file's size for ``O_APPEND``, and what ``chown(-1)`` keeps.  It also checks
every operation: one that succeeds in the model but failed for real (or the reverse) is not
written, and counts as a *mismatch* (the tests require none).  Succeeding calls:

======================================================  =========================================
system call                                             operation
======================================================  =========================================
open/openat/openat2/creat with O_TRUNC (write access)   ``create`` size 0, mode & ~umask
... with O_CREAT on a missing file                      ``create`` size 0, mode & ~umask
... write access otherwise                              ``open`` w / rw
... read only (also O_DIRECTORY, O_PATH)                ``open`` r
write/writev/pwrite64/pwritev(2), sendfile/copy_file_   ``write`` at the tracked offset (pread/pwrite:
range (out side)                                        the given one); ``append`` on O_APPEND fds
read/readv/pread64/preadv(2), sendfile (in side)        ``read`` (bytes returned; EOF reads dropped)
truncate, ftruncate, fallocate(mode 0, growing)         ``truncate``
fsync, fdatasync                                        ``fsync``
stat, lstat, newfstatat, statx, access, faccessat(2),   ``stat``
readlink(at), getxattr family, execve(at)
mkdir(at), rmdir, unlink(at) (AT_REMOVEDIR: rmdir)      ``mkdir`` (mode & ~umask), ``rmdir``, ``unlink``
rename(at)(2) (flags 0 or NOREPLACE)                    ``rename``; moved out of ROOT: ``unlink``
                                                        or ``remove_tree``
link(at), symlink(at)                                   ``link``, ``symlink``
chmod, fchmod(at), chown, lchown, fchown(at)            ``chmod``, ``chown`` (-1 keeps the old id)
utime(s), utimensat, futimesat                          ``utime``
setxattr, lsetxattr, fsetxattr                          ``setxattr`` name, size
======================================================  =========================================

Consecutive operations that one operation expresses are merged (``create`` + writes at its
end, contiguous writes or reads, ``open`` followed by a write or read of the same file).
A call that *failed* becomes an operation that fails the same way in the model:

=================================================  ========================================
failed call (errno)                                operation (fails because ...)
=================================================  ========================================
open-like/followed stat, ENOENT or ELOOP           ``open`` r (the path does not resolve)
lstat-like (no follow), ENOENT                     ``stat`` (negative lookup)
open(O_CREAT|O_EXCL), EEXIST                       ``mkdir`` (the name exists)
open for write, EISDIR                             ``open`` w (a directory)
any open/stat, ENOTDIR with the last component     ``rmdir`` (not a directory; with the
a non-directory; O_NOFOLLOW on a symlink, ELOOP    last component a symlink, ENOTDIR too)
... ENOTDIR in an intermediate component           ``open`` r
renameat2(RENAME_NOREPLACE), EEXIST                ``mkdir`` of the destination
mkdir, rmdir, unlink, rename, link, symlink,       the same operation (EEXIST, ENOENT,
chmod, chown, utime, truncate, setxattr            ENOTEMPTY, EISDIR, ENOTDIR, EINVAL, EBUSY)
=================================================  ========================================

Dropped and counted by reason (``Conversion.dropped``): errnos the model has no cause for
(EACCES, EPERM, EROFS, ENOSPC, ETXTBSY, ENODATA, EAGAIN, EINTR, restarted calls, ...); failed
descriptor I/O; I/O on a descriptor whose file was unlinked (the model has no anonymous
inodes) or whose position is unknown (inherited from outside the trace); RENAME_EXCHANGE,
O_TMPFILE, mknod; renames into ROOT from outside (their contents are unknown).  Not seen at
all: writes through ``mmap``, and calls of programs started outside strace.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from simulator.errors import BadInput
from simulator.image import Image
from simulator.nodes import DIR_TYPES
from simulator.trace import Op

from .strace_fds import READS, WRITES, Desc, DescriptorCalls, Fs, Proc
from .strace_paths import AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW, MODELLED_ERRNOS, PathCalls
from .strace_parse import Call, fd_arg, int_arg, str_arg

# Linux x86_64 open(2) flags (include/uapi/asm-generic/fcntl.h)
O_ACCMODE, O_WRONLY, O_RDWR = 0o3, 0o1, 0o2
O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o100, 0o200, 0o1000, 0o2000
O_DIRECTORY, O_NOFOLLOW, O_PATH, O_TMPFILE = 0o200000, 0o400000, 0o10000000, 0o20200000
AT_FDCWD = -100
CLONE_FS, CLONE_FILES = 0x200, 0x400  # linux/sched.h
DEFAULT_UMASK = 0o022  # what a login shell sets on Debian (/etc/login.defs UMASK)

FOLLOWING_STATS = {"stat": 0, "access": 0, "getxattr": 0, "listxattr": 0, "execve": 0}  # name arg index
NOFOLLOW_STATS = {"lstat": 0, "readlink": 0, "lgetxattr": 0, "llistxattr": 0}
AT_STATS = {"newfstatat": 3, "fstatat64": 3, "statx": 2, "faccessat": None, "faccessat2": 3,
            "readlinkat": -1, "execveat": 4}  # index of the flags argument; -1: never follows
IGNORED_ERRNOS = {"ERESTARTSYS", "ERESTARTNOINTR", "ERESTARTNOHAND", "ERESTART_RESTARTBLOCK"}
PROC_FD = re.compile(r"^/proc/(self|thread-self|\d+)/fd/(\d+)$")
LOOKUP_ERRNOS = {"ENOENT", "ENOTDIR", "ELOOP"}  # a lookup's own failures; EINVAL (readlink of a
# non-symlink), ENODATA (no such xattr), EACCES (access(2) of a mode) are not the name's
OPEN_ERRNOS = LOOKUP_ERRNOS | {"EEXIST", "EISDIR"}


@dataclass
class Conversion:
    """The operations, and an account of every call that did not become one."""

    ops: list[Op] = field(default_factory=list)
    failing: list[bool] = field(default_factory=list)  # per op: it fails (as the real call did)
    calls_in_root: int = 0
    failed_calls: int = 0  # failed calls under ROOT that became failing operations
    dropped: Counter = field(default_factory=Counter)  # reason -> calls
    mismatches: list[str] = field(default_factory=list)  # calls the model disagrees with

    @property
    def failed_ops(self) -> int:
        return sum(self.failing)


class Converter(DescriptorCalls, PathCalls):
    def __init__(self, root: str, image: Image, cwd: str | None = None, umask: int = DEFAULT_UMASK):
        from drivers import make_driver
        from simulator.harness import Run

        self.root = os.path.normpath(root)
        self.run = Run(make_driver("vfs"), image, 1)
        self.ns = self.run.namespace(0)
        self.result = Conversion()
        self.initial = Proc({}, Fs(os.path.normpath(cwd or root), umask))
        self.procs: dict[int, Proc] = {}
        self.children: dict[int, tuple[int, int]] = {}  # child pid -> (parent pid, clone flags)

    # -- processes ------------------------------------------------------------------------
    def proc(self, pid: int) -> Proc:
        p = self.procs.get(pid)
        if p is None:
            parent, flags = self.children.get(pid, (None, 0))
            base = self.procs.get(parent, self.initial) if parent is not None else self.initial
            p = Proc(base.fds if flags & CLONE_FILES else dict(base.fds),
                     base.fs if flags & CLONE_FS else Fs(base.fs.cwd, base.fs.umask))
            self.procs[pid] = p
        return p

    # -- paths ----------------------------------------------------------------------------
    def rel(self, path: str | None) -> str | None:
        """``/root/a/b`` -> ``/a/b``; None outside ROOT (or ROOT itself, or deleted)."""
        if path is None or path.endswith(" (deleted)"):
            return None
        path = os.path.normpath(path)
        if not path.startswith(self.root + "/"):
            return None
        return path[len(self.root):]

    def at(self, call: Call, dirfd: str | None, name_arg: str) -> str | None:
        name = str_arg(name_arg)
        if name is None:
            return None
        p = self.proc(call.pid)
        proc_fd = PROC_FD.match(name)
        if proc_fd:  # glibc's fchmodat(AT_SYMLINK_NOFOLLOW) goes through /proc/self/fd/N
            desc = p.fds.get(int(proc_fd.group(2))) if proc_fd.group(1) in ("self", "thread-self", str(call.pid)) else None
            return self.rel(desc.path) if desc is not None else None
        if name.startswith("/"):
            return self.rel(name)
        base = p.fs.cwd
        if dirfd is not None:
            fd, fd_path = fd_arg(dirfd)
            if fd_path is not None:
                base = fd_path
                if fd == AT_FDCWD:
                    p.fs.cwd = fd_path
        return self.rel(os.path.join(base, name) if name else base)

    # -- emitting -------------------------------------------------------------------------
    def emit(self, call: Call, op: Op) -> None:
        """Check ``op`` in the shadow against the real outcome, then keep (or merge) it."""
        fails = call.failed
        ok = self.run.apply(op)
        if ok == fails:
            self.result.mismatches.append(f"line {call.line}: {call.name} {'failed' if fails else 'succeeded'} "
                                          f"({call.errno or call.ret}) but {op.to_dict()} "
                                          f"{'succeeds' if ok else 'fails'} in the model")
            return
        if fails:
            self.result.failed_calls += 1
        elif self._merge(op):
            return
        self.result.ops.append(op)
        self.result.failing.append(fails)

    def _merge(self, op: Op) -> bool:
        ops = self.result.ops
        if not ops or self.result.failing[-1] or ops[-1].path != op.path:
            return False
        prev = ops[-1]
        new = None
        if prev.kind == "open" and prev.access != "r" and op.kind in ("write", "append", "truncate"):
            new = op
        elif prev.kind == "open" and op.kind == "read":
            new = op
        elif prev.kind == "create" and op.kind in ("write", "append") and (op.kind == "append" or op.offset == prev.size):
            new = Op("create", prev.path, size=prev.size + op.length, mode=prev.mode)
        elif prev.kind == op.kind == "write" and op.offset == prev.offset + prev.length:
            new = Op("write", prev.path, offset=prev.offset, length=prev.length + op.length)
        elif prev.kind == op.kind == "append":
            new = Op("append", prev.path, length=prev.length + op.length)
        elif prev.kind == op.kind == "read" and op.offset == prev.offset + prev.length:
            new = Op("read", prev.path, offset=prev.offset, length=prev.length + op.length)
        if new is None:
            return False
        ops[-1] = new
        return True

    def drop(self, reason: str) -> None:
        self.result.dropped[reason] += 1

    def node(self, path: str, follow: bool = True):
        return self.ns.exists(path, follow=follow)

    # -- the dispatch ---------------------------------------------------------------------
    def convert(self, calls: Iterable[Call]) -> Conversion:
        calls = list(calls)
        for c in calls:
            if c.name in ("clone", "clone3", "fork", "vfork") and c.ret and c.ret > 0:
                self.children[c.ret] = (c.pid, _clone_flags(c))
        for c in calls:
            if c.errno in IGNORED_ERRNOS:
                continue
            try:
                self._dispatch(c)
            except (ValueError, IndexError) as exc:
                raise BadInput(f"strace log line {c.line}: cannot read the arguments of {c.name}: {exc}") from None
        return self.result

    def _dispatch(self, c: Call) -> None:
        handler = getattr(self, "_" + c.name, None)
        if handler is not None:
            handler(c)
        elif c.name in READS or c.name in WRITES:
            self._io(c)
        elif c.name in FOLLOWING_STATS or c.name in NOFOLLOW_STATS:
            self._lookup(c, self.at(c, None, c.args[0]), c.name in FOLLOWING_STATS)
        elif c.name in AT_STATS:
            self._at_stat(c)

    def path_call(self, c: Call, path: str | None, errnos: set[str] = MODELLED_ERRNOS) -> bool:
        """Count a call on ``path``; False (and dropped) when it cannot become an operation."""
        if path is None:
            return False
        self.result.calls_in_root += 1
        if c.failed and c.errno not in errnos:
            self.drop(f"errno {c.errno}")
            return False
        return True

    def _fail_lookup(self, c: Call, path: str, follow: bool, directory: bool = False) -> None:
        """A failed open or stat: the operation that fails the same way (module table)."""
        last = self.node(path, follow=False)
        if c.errno == "EEXIST":
            op = Op("mkdir", path)
        elif c.errno == "EISDIR":
            op = Op("open", path, access="w")
        elif c.errno in ("ENOTDIR", "ELOOP") and last is not None and (c.errno == "ELOOP" or directory or
                                                                     last.__class__ not in DIR_TYPES):
            op = Op("rmdir", path)
        elif follow or c.errno != "ENOENT":
            op = Op("open", path, access="r")
        else:
            op = Op("stat", path)
        self.emit(c, op)

    def _lookup(self, c: Call, path: str | None, follow: bool) -> None:
        if not self.path_call(c, path, LOOKUP_ERRNOS):
            return
        assert path is not None
        if c.failed:
            self._fail_lookup(c, path, follow)
        else:
            self.emit(c, Op("stat", path))

    def _at_stat(self, c: Call) -> None:
        idx = AT_STATS[c.name]
        if len(c.args) < 2:
            return
        flags = int_arg(c.args[idx]) if idx is not None and idx >= 0 and len(c.args) > idx else 0
        if str_arg(c.args[1]) == "" and flags & AT_EMPTY_PATH:
            return  # fstat of a descriptor: no lookup
        follow = idx != -1 and not flags & AT_SYMLINK_NOFOLLOW
        self._lookup(c, self.at(c, c.args[0], c.args[1]), follow)

    # -- open -----------------------------------------------------------------------------
    def _open(self, c: Call) -> None:
        self._do_open(c, None, c.args[0], int_arg(c.args[1]), int_arg(c.args[2]) if len(c.args) > 2 else 0)

    def _openat(self, c: Call) -> None:
        self._do_open(c, c.args[0], c.args[1], int_arg(c.args[2]), int_arg(c.args[3]) if len(c.args) > 3 else 0)

    def _openat2(self, c: Call) -> None:
        how = c.args[2]
        flags = re.search(r"flags=([0-9a-fx|]+)", how)
        mode = re.search(r"mode=([0-9a-fx]+)", how)
        self._do_open(c, c.args[0], c.args[1], int_arg(flags.group(1)) if flags else 0,
                      int_arg(mode.group(1)) if mode else 0)

    def _creat(self, c: Call) -> None:
        self._do_open(c, None, c.args[0], O_CREAT | O_WRONLY | O_TRUNC, int_arg(c.args[1]))

    def _do_open(self, c: Call, dirfd: str | None, name: str, flags: int, mode: int) -> None:
        path = self.at(c, dirfd, name)
        proc = self.proc(c.pid)
        if not self.path_call(c, path, OPEN_ERRNOS):
            return
        assert path is not None
        if flags & O_TMPFILE == O_TMPFILE:
            self.drop("O_TMPFILE")
            return
        if c.failed:
            self._fail_lookup(c, path, not flags & O_NOFOLLOW, bool(flags & O_DIRECTORY))
            return
        access = flags & O_ACCMODE
        if (flags & O_PATH or access == 0) and not flags & O_CREAT:
            op = Op("stat", path) if flags & O_NOFOLLOW else Op("open", path, access="r")
        else:
            existing = self.node(path)
            perm = mode & 0o7777 & ~proc.fs.umask
            if existing is None or (flags & O_TRUNC and access):
                op = Op("create", path, size=0, mode=perm)
            else:
                op = Op("open", path, access={0: "r", O_WRONLY: "w"}.get(access, "rw"))
        self.emit(c, op)
        if c.ret is not None and c.ret >= 0:
            proc.fds[c.ret] = Desc(0, bool(flags & O_APPEND), c.ret_path)


def _clone_flags(c: Call) -> int:
    if c.name in ("fork", "vfork"):
        return 0
    m = re.search(r"flags=([0-9a-fx|]+)", ", ".join(c.args))
    return int_arg(m.group(1)) if m else 0


def convert_calls(calls: Iterable[Call], root: str, image: Image, cwd: str | None = None,
                  umask: int = DEFAULT_UMASK) -> Conversion:
    """The operations of ``calls`` under ``root``, checked against ``image`` (ROOT before the run)."""
    if not os.path.isabs(root):
        raise BadInput(f"--root {root}: must be an absolute path")
    return Converter(root, image, cwd, umask).convert(calls)
