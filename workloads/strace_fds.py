"""Descriptor system calls for ``workloads.strace_ops``: who holds which open file, at what
offset, and the data operations (``read``, ``write``, ``append``, ``truncate``, ``fsync``, ...)
that I/O through a descriptor becomes.

Processes are tracked as Linux shares their state: a thread created with ``CLONE_FILES``
shares the descriptor table, ``CLONE_FS`` shares the working directory and umask; ``fork``
copies both (the open file descriptions, with their offsets, stay shared, as ``dup`` does).
An offset is tracked from the open (0), through ``read``/``write`` (advance by the bytes
returned) and ``lseek`` (its result); ``O_APPEND`` writes go to the end, which the shadow
replay knows.  A descriptor the log never opened (inherited from outside the trace) has no
known offset: its I/O is dropped and counted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from simulator.trace import Op

from .strace_parse import Call, fd_arg, int_arg, str_arg

F_DUPFD, F_DUPFD_CLOEXEC = 0, 1030  # fcntl.h
READS = {"read", "readv", "pread64", "preadv", "preadv2"}
WRITES = {"write", "writev", "pwrite64", "pwritev", "pwritev2"}
POSITIONED = {"pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2"}

class Desc:
    """An open file description: its offset (None = unknown) and O_APPEND."""

    __slots__ = ("pos", "append", "path")

    def __init__(self, pos: int | None, append: bool, path: str | None = None):
        self.pos, self.append, self.path = pos, append, path  # path: the kernel's, at open


class Fs:
    """What CLONE_FS shares: the working directory and the umask."""

    __slots__ = ("cwd", "umask")

    def __init__(self, cwd: str, umask: int):
        self.cwd, self.umask = cwd, umask


@dataclass
class Proc:
    fds: dict[int, Desc]
    fs: Fs



class DescriptorCalls:
    """The descriptor handlers; mixed into ``Converter``, whose paths, shadow and tally they use."""

    def _close(self, c: Call) -> None:
        self.proc(c.pid).fds.pop(fd_arg(c.args[0])[0], None)

    def _dup(self, c: Call) -> None:
        if not c.failed and c.ret is not None:
            fds = self.proc(c.pid).fds
            desc = fds.get(fd_arg(c.args[0])[0])
            if desc is None:
                fds.pop(c.ret, None)
            else:
                fds[c.ret] = desc

    _dup2 = _dup3 = _dup

    def _fcntl(self, c: Call) -> None:
        if int_arg(c.args[1]) in (F_DUPFD, F_DUPFD_CLOEXEC):
            self._dup(c)

    def _lseek(self, c: Call) -> None:
        desc = self.proc(c.pid).fds.get(fd_arg(c.args[0])[0])
        if desc is not None and not c.failed:
            desc.pos = c.ret

    def _chdir(self, c: Call) -> None:
        if not c.failed:
            name = str_arg(c.args[0]) or ""
            fs = self.proc(c.pid).fs
            fs.cwd = os.path.normpath(os.path.join(fs.cwd, name))

    def _fchdir(self, c: Call) -> None:
        path = fd_arg(c.args[0])[1]
        if not c.failed and path is not None:
            self.proc(c.pid).fs.cwd = path

    def _umask(self, c: Call) -> None:
        self.proc(c.pid).fs.umask = int_arg(c.args[0]) & 0o777

    def fd_path(self, c: Call, arg: str) -> tuple[str | None, Desc | None]:
        fd, path = fd_arg(arg)
        if path is not None and path.endswith(" (deleted)") and path[:-10].startswith(self.root + "/"):
            self.result.calls_in_root += 1
            self.drop("I/O on an unlinked file")
            return None, None
        return self.rel(path), self.proc(c.pid).fds.get(fd)

    def _io(self, c: Call) -> None:
        path, desc = self.fd_path(c, c.args[0])
        positioned = c.name in POSITIONED
        self._data(c, path, desc, c.name in WRITES, int_arg(c.args[3]) if positioned else None)

    def _data(self, c: Call, path: str | None, desc: Desc | None, write: bool, offset: int | None,
              count_call: bool = True) -> None:
        if path is None:
            return
        if count_call:
            self.result.calls_in_root += 1
        if c.failed:
            self.drop(f"failed descriptor I/O ({c.errno})")
            return
        n = c.ret or 0
        if offset is None:
            if desc is None or (desc.pos is None and not (write and desc.append)):
                if desc is not None and n:
                    desc.pos = None
                self.drop("descriptor of unknown position")
                return
            offset = desc.pos
        if write and desc is not None and desc.append and c.name not in POSITIONED:
            if n:
                self.emit(c, Op("append", path, length=n))
            node = self.node(path)
            desc.pos = node.size if node is not None and hasattr(node, "size") else None
            return
        if n:
            assert offset is not None
            self.emit(c, Op("write" if write else "read", path, offset=offset, length=n))
        if desc is not None and c.name not in POSITIONED and desc.pos is not None:
            desc.pos += n

    def _sendfile(self, c: Call) -> None:
        out_path, out_desc = self.fd_path(c, c.args[0])
        in_path, in_desc = self.fd_path(c, c.args[1])
        m = re.match(r"\[(\d+)\]", c.args[2])
        self._data(c, in_path, in_desc, False, int(m.group(1)) if m else None)
        self._data(c, out_path, out_desc, True, None, count_call=in_path is None)

    _sendfile64 = _sendfile

    def _copy_file_range(self, c: Call) -> None:
        out_path, out_desc = self.fd_path(c, c.args[2])
        in_path, in_desc = self.fd_path(c, c.args[0])
        m_in, m_out = re.match(r"\[(\d+)\]", c.args[1]), re.match(r"\[(\d+)\]", c.args[3])
        self._data(c, in_path, in_desc, False, int(m_in.group(1)) if m_in else None)
        self._data(c, out_path, out_desc, True, int(m_out.group(1)) if m_out else None,
                   count_call=in_path is None)

    def _fd_op(self, c: Call, make) -> None:
        path, _ = self.fd_path(c, c.args[0])
        if self.path_call(c, path):
            self.emit(c, make(path))

    def _ftruncate(self, c: Call) -> None:
        self._fd_op(c, lambda p: Op("truncate", p, size=int_arg(c.args[1])))

    def _fsync(self, c: Call) -> None:
        self._fd_op(c, lambda p: Op("fsync", p))

    _fdatasync = _fsync

    def _fallocate(self, c: Call) -> None:
        path, _ = self.fd_path(c, c.args[0])
        if path is None or int_arg(c.args[1]) != 0:
            return  # KEEP_SIZE, PUNCH_HOLE...: the visible size does not change
        node = self.node(path)
        end = int_arg(c.args[2]) + int_arg(c.args[3])
        if self.path_call(c, path) and (c.failed or node is not None and end > getattr(node, "size", end)):
            self.emit(c, Op("truncate", path, size=end))

    def _fchmod(self, c: Call) -> None:
        self._fd_op(c, lambda p: Op("chmod", p, mode=int_arg(c.args[1]) & 0o7777))

    def _fchown(self, c: Call) -> None:
        self._fd_op(c, lambda p: self._chown_op(p, c.args[1], c.args[2]))

    def _fsetxattr(self, c: Call) -> None:
        self._fd_op(c, lambda p: Op("setxattr", p, name=str_arg(c.args[1]) or "user.x", size=int_arg(c.args[3])))
