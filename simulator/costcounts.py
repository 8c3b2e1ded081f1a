"""What a container did that ``est_seconds`` prices beyond the SPEC metrics.

The cost model (``simulator.costmodel``) needs counts no metric reports: directory entries
``rm -rf`` listed, first lookups of names in a fresh mount, image files first read or changed,
dirty ranges written back while the workload waits...  The namespace keeps them here, one
object per container, so that its own code stays about the view and ``Run.finish`` sums them
in one place (``estimate_counts``).  Each count says, where it is defined, what was measured
to make it worth a term.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from pyroaring import BitMap64

from .imagetree import ImageDir
from .nodes import DIR_TYPES, Dir, DirNode, Node
from .units import PAGE_SIZE

if TYPE_CHECKING:
    from .namespace import Namespace, Resolved


class CostCounts:
    """One container's counts for the cost model."""

    def __init__(self, hooks: Any):
        self._hooks = hooks
        self.dirents_read = 0  # entries rm -rf / mv's copy list (getdents), priced as dirents
        self.dirent_layers = 0  # image layers their lookups by name probe (``note_listed``)
        self.new_file_writebacks = 0  # writebacks of files the container created
        self.image_reads = BitMap64()  # image inodes (ino) > inline_limit this container read
        self.image_first_read_bytes = 0  # bytes of the first read of each of those
        self.image_files_changed = 0  # image files > inline_limit first changed
        self.data_unlinks = 0  # files > inline_limit whose last name went (extents freed)
        self.dirty_ranges = 0  # disjoint dirty ranges written back (one extent or bio each)
        self.synced_bytes = 0  # their bytes (written back while the workload waits)
        # Cold lookups: names this container looked up for the first time, the directories
        # walked through included; each instantiates a dentry and an inode in its mount (a
        # fresh overlay mount or btrfs snapshot has none).  Keyed by the name's resolved
        # path; ``cold_dir_layers`` adds the image layers of each such directory (overlay
        # merges a directory from every layer that has it).  A set, not a dict of keys (202
        # KiB against 512 for 10,000 keys): filling a dict with import-scan's 125,618 names
        # cost that workload 12-15% of its speed (resizes), measured side by side.
        self.looked_up: set[str] = set()
        self.cold_lookups = 0
        self.cold_dir_layers = 0
        self.fsync_dirs: set[str] = set()  # directories of the files fsynced
        self.renames = 0  # renames done (rename(2), and mv's when it needs no copy)

    @property
    def inline_limit(self) -> int:
        """Largest file with no data extent of its own (reads, changes and removals of larger
        image files cost extent work).  btrfs keeps files of up to ``max_inline`` (2048 by
        default) in the metadata leaf, so a 3000-byte image file costs a first read like an
        8 KiB one there (measured here, kernel 6.18: ~40 us per file either way, in a fresh
        snapshot); other drivers keep the page as the threshold.  Read from the mount each
        time: the driver sets it after the namespace is made."""
        return getattr(self._hooks, "inline_limit", PAGE_SIZE)

    def note_cold(self, ns: Namespace, r: Resolved) -> None:
        """Count the names of ``r`` this container has not looked up before (cold_lookups).

        Keys are resolved paths, "/a/b"; every ancestor of a key in ``looked_up`` is in it
        too, so a directory's first walk adds its keys upwards until one is known."""
        if r.parent is None:  # the root: instantiated by the mount
            return
        seen = self.looked_up
        full = r.key
        if full is None:  # a walk through a link: the chain it took makes the keys
            dir_key = "/" + "/".join(r.names) if r.names else ""
            full = f"{dir_key}/{r.name}"
        else:
            dir_key = r.dir_key  # type: ignore[assignment]
        if full in seen:
            return
        seen.add(full)
        self.cold_lookups += 1
        if not dir_key or dir_key in seen:  # the parent chain was walked before (its keys all seen)
            return
        dirs = ns._dirs
        key = dir_key
        while key and key not in seen:  # a directory's first walk: once per directory per container
            known = dirs.get(key)
            if known is not None:
                seen.add(known[2])  # the remembered walk's key: one string for every container
                d = known[1]
            else:
                seen.add(key)
                d = _dir_at(ns, key)
            self.cold_lookups += 1
            base = d if d.__class__ is ImageDir else getattr(d, "base", None)
            if base is not None:
                self.cold_dir_layers += len(base.stack)  # type: ignore[union-attr]
            key = key.rpartition("/")[0]

    def note_listed(self, d: DirNode, listed: list[str]) -> None:
        """rm -rf or mv's copy listed ``listed`` in ``d``, and looks each name up next (fstatat,
        unlinkat): count the entries, and the image layers those lookups probe (overlay looks
        a name up in each layer of a merged directory down to the one that has it)."""
        self.dirents_read += len(listed)
        base = d if d.__class__ is ImageDir else d.base  # type: ignore[union-attr]
        if base is not None:
            own = d.own if d.__class__ is Dir else ()  # type: ignore[union-attr]
            probes = base.lookup_probes
            self.dirent_layers += sum(probes(n) for n in listed if n not in own)


def _dir_at(ns: Namespace, key: str) -> Node | None:
    """The node at the link-free chain ``key`` ("/a/b"), walked name by name (a chain the
    walk just took, when the namespace no longer remembers it)."""
    d: Node | None = ns.root
    for name in key[1:].split("/"):
        d = ns.child(d, name) if d.__class__ in DIR_TYPES else None  # type: ignore[arg-type]
    return d


def estimate_counts(counts: Iterable[CostCounts]) -> dict[str, int]:
    """The keyword arguments of ``CostModel.estimate`` these counts give, summed."""
    counts = list(counts)
    return {
        "dirents": sum(c.dirents_read for c in counts),
        "dirent_layers": sum(c.dirent_layers for c in counts),
        "new_file_writebacks": sum(c.new_file_writebacks for c in counts),
        "image_files_read": sum(len(c.image_reads) for c in counts),
        "image_first_read_bytes": sum(c.image_first_read_bytes for c in counts),
        "image_files_changed": sum(c.image_files_changed for c in counts),
        "data_unlinks": sum(c.data_unlinks for c in counts),
        "dirty_ranges": sum(c.dirty_ranges for c in counts),
        "cold_lookups": sum(c.cold_lookups for c in counts),
        "cold_dir_layers": sum(c.cold_dir_layers for c in counts),
        "fsync_dirs": sum(len(c.fsync_dirs) for c in counts),
        "renames": sum(c.renames for c in counts),
        "synced_bytes": sum(c.synced_bytes for c in counts),
    }
