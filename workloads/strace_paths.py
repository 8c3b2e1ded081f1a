"""Path system calls for ``workloads.strace_ops``: the calls that name what they change
(mkdir, rmdir, unlink, truncate, chmod, chown, utime, setxattr, symlink, rename, link, mknod)
become the operation of the same name, or fail as the real call did (``strace_ops``'s tables).

A rename or link with one side outside ROOT is what the model can say of it: moved out, the
source is gone (``unlink``, or ``remove_tree`` for a directory); moved in, its contents are
unknown and the call is dropped.  ``chown`` with -1 keeps the id the shadow replay knows.
"""

from __future__ import annotations

from simulator.nodes import DIR_TYPES
from simulator.trace import Op

from .strace_parse import Call, fd_arg, int_arg, str_arg

AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_EMPTY_PATH = 0x100, 0x200, 0x1000  # linux/fcntl.h
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # linux/fs.h
UNCHANGED_ID = 0xFFFFFFFF  # chown(2): (uid_t)-1 keeps the id
MODELLED_ERRNOS = {"ENOENT", "EEXIST", "EISDIR", "ENOTDIR", "ENOTEMPTY", "ELOOP", "EINVAL", "EBUSY", "EXDEV"}


class PathCalls:
    """The path handlers; mixed into ``Converter``, whose paths (``at``), shadow (``node``)
    and tally (``path_call``, ``emit``, ``drop``) they use."""

    def _simple(self, c: Call, path: str | None, make) -> None:
        if self.path_call(c, path):
            self.emit(c, make(path))

    def _mkdir(self, c: Call, dirfd: str | None = None, args: tuple[str, ...] | None = None) -> None:
        name, mode = args or c.args
        umask = self.proc(c.pid).fs.umask
        self._simple(c, self.at(c, dirfd, name), lambda p: Op("mkdir", p, mode=int_arg(mode) & 0o7777 & ~umask))

    def _mkdirat(self, c: Call) -> None:
        self._mkdir(c, c.args[0], c.args[1:3])

    def _rmdir(self, c: Call) -> None:
        self._simple(c, self.at(c, None, c.args[0]), lambda p: Op("rmdir", p))

    def _unlink(self, c: Call) -> None:
        self._simple(c, self.at(c, None, c.args[0]), lambda p: Op("unlink", p))

    def _unlinkat(self, c: Call) -> None:
        kind = "rmdir" if int_arg(c.args[2]) & AT_REMOVEDIR else "unlink"
        self._simple(c, self.at(c, c.args[0], c.args[1]), lambda p: Op(kind, p))

    def _truncate(self, c: Call) -> None:
        self._simple(c, self.at(c, None, c.args[0]), lambda p: Op("truncate", p, size=int_arg(c.args[1])))

    def _chmod(self, c: Call, dirfd: str | None = None, args: tuple[str, ...] | None = None) -> None:
        name, mode = (args or c.args)[:2]
        self._simple(c, self.at(c, dirfd, name), lambda p: Op("chmod", p, mode=int_arg(mode) & 0o7777))

    def _fchmodat(self, c: Call) -> None:
        self._chmod(c, c.args[0], c.args[1:3])

    def _chown_op(self, path: str, uid: str, gid: str) -> Op:
        node = self.node(path)
        u, g = int_arg(uid) & 0xFFFFFFFF, int_arg(gid) & 0xFFFFFFFF
        old_u, old_g = (getattr(node, "uid", 0), getattr(node, "gid", 0)) if node is not None else (0, 0)
        return Op("chown", path, uid=old_u if u == UNCHANGED_ID else u, gid=old_g if g == UNCHANGED_ID else g)

    def _chown(self, c: Call) -> None:
        self._simple(c, self.at(c, None, c.args[0]), lambda p: self._chown_op(p, c.args[1], c.args[2]))

    _lchown = _chown

    def _fchownat(self, c: Call) -> None:
        path = self.at(c, c.args[0], c.args[1])
        if str_arg(c.args[1]) == "":
            path = self.rel(fd_arg(c.args[0])[1])
        self._simple(c, path, lambda p: self._chown_op(p, c.args[2], c.args[3]))

    def _utimensat(self, c: Call) -> None:
        path = self.at(c, c.args[0], c.args[1]) if str_arg(c.args[1]) else self.rel(fd_arg(c.args[0])[1])
        self._simple(c, path, lambda p: Op("utime", p))

    _futimesat = _utimensat

    def _utime(self, c: Call) -> None:
        self._simple(c, self.at(c, None, c.args[0]), lambda p: Op("utime", p))

    _utimes = _utime

    def _setxattr(self, c: Call) -> None:
        self._simple(c, self.at(c, None, c.args[0]),
                     lambda p: Op("setxattr", p, name=str_arg(c.args[1]) or "user.x", size=int_arg(c.args[3])))

    _lsetxattr = _setxattr

    def _symlink(self, c: Call, dirfd: str | None = None, args: tuple[str, ...] | None = None) -> None:
        target, name = args or c.args
        text = str_arg(target) or ""
        self._simple(c, self.at(c, dirfd, name), lambda p: Op("symlink", p, target=text))

    def _symlinkat(self, c: Call) -> None:
        self._symlink(c, c.args[1], (c.args[0], c.args[2]))

    def _two(self, c: Call, kind: str, src: str | None, dst: str | None, flags: int = 0) -> None:
        if src is None and dst is None:
            return
        self.result.calls_in_root += 1
        if c.failed and c.errno not in MODELLED_ERRNOS:
            self.drop(f"errno {c.errno}")
        elif flags & RENAME_EXCHANGE or flags & ~RENAME_NOREPLACE:
            self.drop("renameat2 flags other than RENAME_NOREPLACE")
        elif src is None:
            self.drop(f"{kind} from outside the root into it")
        elif dst is None:
            if kind == "rename" and not c.failed:
                node = self.node(src, follow=False)
                is_dir = node.__class__ in DIR_TYPES
                self.emit(c, Op("remove_tree" if is_dir else "unlink", src))
            else:
                self.drop(f"{kind} out of the root")
        elif c.failed and c.errno == "EEXIST" and flags & RENAME_NOREPLACE:
            self.emit(c, Op("mkdir", dst))
        else:
            self.emit(c, Op(kind, src, dst))

    def _rename(self, c: Call) -> None:
        self._two(c, "rename", self.at(c, None, c.args[0]), self.at(c, None, c.args[1]))

    def _renameat(self, c: Call) -> None:
        flags = int_arg(c.args[4]) if len(c.args) > 4 else 0
        self._two(c, "rename", self.at(c, c.args[0], c.args[1]), self.at(c, c.args[2], c.args[3]), flags)

    _renameat2 = _renameat

    def _link(self, c: Call) -> None:
        self._two(c, "link", self.at(c, None, c.args[0]), self.at(c, None, c.args[1]))

    def _linkat(self, c: Call) -> None:
        if int_arg(c.args[4]) & AT_EMPTY_PATH:
            if self.at(c, c.args[2], c.args[3]) is not None:
                self.result.calls_in_root += 1
                self.drop("linkat(AT_EMPTY_PATH) of an open file")
            return
        self._two(c, "link", self.at(c, c.args[0], c.args[1]), self.at(c, c.args[2], c.args[3]))

    def _mknod(self, c: Call) -> None:
        if self.at(c, None, c.args[0]) is not None:
            self.result.calls_in_root += 1
            self.drop("mknod")

    def _mknodat(self, c: Call) -> None:
        if self.at(c, c.args[0], c.args[1]) is not None:
            self.result.calls_in_root += 1
            self.drop("mknod")
