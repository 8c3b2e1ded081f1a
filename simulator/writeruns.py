"""Runs of writes answered together: the replay's fast path (issue 7).

Workloads spend most of their operations writing to files they already own: a log gets
appended to ten thousand times, a database file rewritten at random offsets.  Replayed one
by one, each such write walks its path, asks the driver for the lookup, the copy-up, the
write and the close.  Yet once a file is private and the driver calls it ``batchable``
(``simulator.hooks``), nothing about those calls depends on when, between other files'
writes, they happen: so ``WriteRuns`` queues them per file, cheaply, and answers each file's
run at once — one lookup per path with its count, one range union, one driver call — before
any other operation runs and at the end of the replay.

What keeps it exact:

* a run crosses no operation that could see it: any other operation first flushes every
  queued run and forgets every remembered path (a truncate, an fsync, a rename may change
  what a path leads to or whether a file is still batchable), except the kinds the driver
  lets pass (``StorageHooks.runs_pass``: a file's first write, which copies it up, a read, a
  stat, a create, a chmod...) where the operation's path leads to no queued file; a kind
  that passes touches, besides its own file, only driver state that the queued files'
  hooks touch in an order-free way, and it adds no name a remembered path goes through;
* a queued file takes its place among the files awaiting writeback (``Namespace.dirty``,
  an ordered set: writeback at a commit or the end goes in that order) at its first queued
  write, as ``write_range`` would, not at the flush;
* per file the writes keep their order (appends take their offsets from the running size);
* a path is remembered (``Namespace.peek``, which counts nothing) only while it leads to a
  private regular file, under that very name in a private directory, that the driver calls
  batchable: a file's first write, which copies it up, always goes the ordinary way;
* a driver that calls a file batchable answers its runs in ``write_run`` with what its
  ``write`` for each would do (btrfs replays the order-dependent part, write by write).

The metrics snapshot (``tests/test_metrics_snapshot.py``) pins every metric of the
workloads on every driver to what the one-by-one replay gives.
"""

from __future__ import annotations

from .hooks import NEED_DATA
from .namespace import Namespace
from .nodes import Dir, FileInode
from .trace import Op

WRITE_KINDS = frozenset({"write", "append"})
PASS_UNLOOKED = frozenset({"stat", "mkdir", "symlink"})  # kinds that pass without a look at the path
# The kinds a driver may let pass queued runs (``StorageHooks.runs_pass``): each changes at
# most the node its path leads to (followed), or adds a new name.  Not link (its source's
# link count), unlink, rename, truncate, fsync, commit: those always flush.
PASSING_KINDS = frozenset({"write", "append", "read", "open", "create", "stat", "mkdir", "symlink",
                           "chmod", "chown", "utime", "setxattr"})


class FileRun:
    """The queued writes of one file: ``[starts[i], ends[i])`` in order, and its size after them."""

    __slots__ = ("ns", "inode", "size", "starts", "ends", "kind")

    def __init__(self, ns: Namespace, inode: FileInode):
        self.ns, self.inode, self.size = ns, inode, inode.size
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.kind = "write"


class PathRun:
    """A remembered path: where it leads, and how many queued writes named it."""

    __slots__ = ("parent", "name", "file", "count")

    def __init__(self, parent: Dir, name: str, file: FileRun):
        self.parent, self.name, self.file, self.count = parent, name, file, 0


class WriteRuns:
    """Remembered paths per container (``hot``) and the runs queued since the last flush."""

    def __init__(self, containers: int):
        self.hot: list[dict[str, PathRun]] = [{} for _ in range(containers)]
        self.active = False  # some path is remembered: flush before any other operation
        self._paths: list[PathRun] = []
        self._files: dict[FileInode, FileRun] = {}

    def remember(self, container: int, ns: Namespace, path: str) -> PathRun | None:
        """A write to ``path`` not remembered yet: remember the path if later writes (and
        this one) may be queued, that is if it leads to a private regular file, under
        that name in a private directory, which the driver calls ``batchable``."""
        r = ns.peek(path, True)
        if r is None:
            return None
        inode, parent = r.node, r.parent
        if inode.__class__ is not FileInode or parent.__class__ is not Dir \
                or parent.own.get(r.name) is not inode or not ns.hooks.batchable(inode):  # type: ignore[union-attr]
            return None
        ns.cost.note_cold(ns, r)  # as the ordinary walk would (a set: when does not matter)
        file = self._files.get(inode)  # type: ignore[arg-type]
        if file is None:
            file = self._files[inode] = FileRun(ns, inode)  # type: ignore[arg-type]
            ns.dirty[inode] = None  # its place among the dirty files: now, as write_range's
        run = self.hot[container][path] = PathRun(parent, r.name, file)  # type: ignore[arg-type]
        self._paths.append(run)
        self.active = True
        return run

    def passes(self, ns: Namespace, op: Op) -> bool:
        """True when ``op`` may run with the runs still queued: the driver lets its kind
        pass (``runs_pass``) and its path leads to no queued file (a stat reads no file's
        data; a mkdir or symlink only adds a name, or fails)."""
        kind = op.kind
        if kind not in ns.hooks.runs_pass:
            return False
        if kind in PASS_UNLOOKED:
            return True
        r = ns.peek(op.path, True)
        return r is None or r.node not in self._files

    def flush(self) -> None:
        """Answer every queued run, then forget every remembered path."""
        for run in self._paths:
            count = run.count
            if count:
                ns = run.file.ns
                ns.lookups += count
                ns.depth_hist[ns.hooks.lookup_run(run.parent, run.name, count)] += count
        for file in self._files.values():
            if file.starts:
                ns, inode, hooks = file.ns, file.inode, file.ns.hooks
                if inode.origin is not None:
                    hooks.copy_up(inode, NEED_DATA)
                ns.write_run(inode, file.starts, file.ends)
                if ns.notes_close:
                    hooks.closed(inode, file.kind)
        for hot in self.hot:
            hot.clear()
        self._paths.clear()
        self._files.clear()
        self.active = False
