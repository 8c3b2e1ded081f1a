"""overlay: Docker's overlay2 on kernel overlayfs.

On-disk layout modelled (moby ``daemon/graphdriver/overlay2/overlay.go``)::

    /var/lib/docker/overlay2/<layer>/diff/   the layer's own files (whiteouts: char 0/0,
                                            opaque dirs: xattr trusted.overlay.opaque=y)
    /var/lib/docker/overlay2/<ctr>/diff/     the container's upperdir
                                   work/     the workdir
                                   merged/   lowerdir=l/<top>:...:l/<bottom>

Semantics, each measured on kernel 6.18 here (REAL_KERNEL.md section 1) and checked in
CI against a real overlay mount by ``tests/test_real_overlay.py``:

* Copy-up happens at *open for write*, of the whole file (``OVL_COPY_UP_CHUNK_SIZE``
  splices), before any byte is written; ``open(O_TRUNC)`` copies no data; ``truncate(2)``
  copies everything, then cuts.  Every ancestor directory not yet in the upperdir is
  copied up first (a metadata copy-up each).
* ``metacopy``: chmod, chown, utime, setxattr, rename and link copy only the inode
  (``trusted.overlay.metacopy``); the data follows at the first open for write.
* ``redirect_dir``: renaming a directory that has lower layers succeeds (redirect xattr);
  without it rename(2) fails with EXDEV and ``mv`` copies the tree.
* ``index``: a hard-linked lower file keeps its links across copy-up; without it the name
  written to gets a private copy and the other names keep the old file.
* Deleting a lower entry leaves a whiteout; a directory created where a lower entry was
  deleted is opaque.
* Lookups probe the layers of the parent's merged stack top-down (SPEC section 5).

Found by the differential test against the kernel (``tests/test_real_overlay.py``, seeded
random images and traces), each measured on kernel 6.18 here:

* With ``index``, ``metacopy`` or ``redirect_dir`` on, *every* directory created in a merged
  parent gets ``trusted.overlay.opaque=y``, even where nothing below had that name
  (``ovl_create_upper``: opaque unless ``ovl_allow_offline_changes()``); with all three off
  only a directory created over a whiteout is opaque.  Hence ``opaque_new_dirs``.
* Without ``index`` two image names of one hard-linked file are two overlay inodes
  (``ovl_hash_bylower`` refuses to hash a lower hard link that copy-up would break), so
  ``rename(a, b)`` between them is not the POSIX no-op: ``a`` is copied up onto ``b`` and
  whited out.  With ``index`` they are one inode and the rename does nothing.
* With ``index``, changing another image name of an already copied-up hard-linked file
  links that name up into its directory (``ovl_link_up``): it then counts in the upperdir.
* A whiteout in a lower directory that no layer below merges with shows up in readdir
  (``ovl_dir_is_real``) though lstat says ENOENT; the real backend does not write
  whiteouts that hide nothing (the image model says they do nothing).
* ``/proc/self/io`` ``write_bytes`` stays 0 for copy-ups into a tmpfs upper (no block
  device): the real backend reports ``device_write_bytes`` as null.
* The page cache is shared: every container reads a lower file through the same inode.

Found by the bigger differential runs (5 layers, 150 ops, 2 containers), minimised to the
regression tests named after each, measured on kernel 6.18 here:

* ``truncate(2)`` frees the blocks wholly beyond the new end and keeps the one that holds
  it, if allocated, tail zeroed (tmpfs ``shmem_undo_range``; ext4 and xfs free from
  ``ceil(size / block)`` alike): a write at 10000..75535 into a copied-up 4096-byte file,
  then a cut to 10000, leaves pages 0 and 2.  Hence ``_CopyState.blocks``, kept per block.
* A directory of the container's own (no lower), not yet opaque, renamed into a merge dir
  becomes opaque, whatever the options (``ovl_rename``: "else if (!old_opaque &&
  ovl_type_merge(new->d_parent))").  Hence ``opaque_moved_dirs``.
* With ``index``, ``setxattr`` on another name of an already copied-up hard-linked file
  sets the xattr on the upper inode (``ovl_xattr_set`` takes ``ovl_i_dentry_upper``) and
  does *not* link that name up; chmod, chown, utime, open for write, truncate do.
* With ``index``, removing (or renaming over) one name of a lower hard link first copies
  the inode up into ``workdir/index`` (``ovl_nlink_start``: the union nlink lives there),
  under no upperdir name; a later change through another name finds it up (no copy-up)
  and only links that name up.  Hence ``indexes_hardlinks``; the index is not the upperdir,
  so those bytes count nowhere until a name is linked up.
* Not overlay's but Linux's, found the same way: mkdir drops the set-id bits it is asked
  for (``vfs_mkdir``: ``S_IRWXUGO | S_ISVTX``) and a new directory in a set-group-ID
  directory gets S_ISGID and the directory's group (``inode_init_owner``); ``rm -rf P``
  empties P by directory fds and then removes P by its path, so when P runs through a
  symbolic link inside P, that rmdir gets ENOENT (ignored) and P stays, empty (coreutils
  9.1, strace'd; ``simulator.operations.remove_operand``).
"""

from __future__ import annotations

from simulator.hooks import NEED_DATA, NEED_TRUNC_OPEN, NEED_TRUNCATE
from simulator.imagetree import ImageDir, ImageFile
from simulator.metrics import Space
from simulator.nodes import Dir, FileInode, Symlink
from simulator.ranges import RangeSet
from simulator.treestore import loaded
from simulator.writeruns import PASSING_KINDS

from .base import METADATA_WRITE_BYTES, BaseDriver, BaseMount
from .options import Option
from .upperdir import upper_space

DOCKER_MAX_LOWERS = 128  # moby overlay2 maxDepth: ((26+len("l")+1)*128) <= pageSize-512
KERNEL_MAX_LOWERS = 500  # fs/overlayfs/params.h OVL_MAX_STACK (REAL_KERNEL section 1, pitfall 2)

_LOWER, _META, _DATA = 0, 1, 2  # where a private file's data lives


class _CopyState:
    """Per-file upperdir state: whether the data is up yet, and which blocks the upper file
    allocates (copied-up data and written ranges, in block indices).  Blocks are tracked
    rather than derived from ``inode.written`` because a cut keeps the block that holds the
    new end of file if it was allocated, even where only bytes beyond the cut were written
    (see the module docstring: truncate)."""

    __slots__ = ("state", "blocks")

    def __init__(self, state: int = _LOWER, blocks: RangeSet | None = None) -> None:
        self.state = state
        self.blocks = blocks if blocks is not None else RangeSet()


def data_blocks(inode: FileInode, block: int) -> int:
    """Blocks a private file allocates in the upperdir: copied data plus written ranges,
    holes excluded, nothing for a metacopy file (its data is still below)."""
    drv = inode.drv
    if drv is None or drv.state == _META:
        return 0
    return drv.blocks.total()


class OverlayMount(BaseMount):
    def __init__(self, driver: OverlayDriver, id: str, tree) -> None:
        super().__init__(driver, id, tree)
        opts = driver.options
        self.metacopy = bool(opts["metacopy"])
        self.redirect_dir = bool(opts["redirect_dir"]) or self.metacopy  # metacopy=on implies it
        self.keeps_hardlinks = bool(opts["index"])
        # fs/overlayfs/dir.c ovl_create_upper: a new dir in a merge dir is made opaque unless
        # ovl_allow_offline_changes() (no index, metacopy or redirect_dir).
        self.opaque_new_dirs = bool(opts["index"]) or self.redirect_dir
        # ovl_rename: a pure-upper directory, not yet opaque, moved into a merge dir is made
        # opaque whatever the options ("else if (!old_opaque && ovl_type_merge(new->d_parent))").
        self.opaque_moved_dirs = True
        # ovl_nlink_start: with index, removing (or renaming over) one name of a lower hard
        # link first copies the inode up into workdir/index, where the union nlink is kept.
        self.indexes_hardlinks = bool(opts["index"])

    def rename_refused(self, node) -> bool:
        if self.redirect_dir:
            return False
        return node.__class__ is not Dir and node.__class__ is not Symlink and hasattr(node, "children") \
            or (node.__class__ is Dir and node.base is not None)

    def lookup(self, parent, name: str) -> int:
        if parent.__class__ is not Dir:  # parent not in the upperdir: only its lower stack
            return parent.lookup_probes(name)
        base = parent.base
        own = parent.own
        if name in own:
            node = own[name]
            if node is None:  # whiteout
                return 1
            if node.__class__ is Dir:
                if node.opaque or base is None:
                    return 1
                if node.moved:  # redirect: continue at the origin's stack
                    return 1 + len(node.base.stack) if node.base is not None else 1
                return 1 + base.lookup_probes(name)
            if node.__class__ is FileInode and node.drv is not None and node.drv.state == _META:
                return 1 + (base.lookup_probes(name) if base is not None else 0)
            return 1
        return 1 + base.lookup_probes(name) if base is not None else 1

    def meta_copy_up(self, node) -> None:
        self.tally.copyup_meta_count += 1
        self.tally.device_write_bytes += METADATA_WRITE_BYTES

    def copy_up(self, inode: FileInode, need: str) -> None:
        drv = inode.drv
        if drv is None:
            drv = inode.drv = _CopyState()
        if drv.state == _DATA:
            return
        tally = self.tally
        if need == NEED_TRUNC_OPEN:
            if drv.state == _LOWER:
                tally.copyup_meta_count += 1
                tally.device_write_bytes += METADATA_WRITE_BYTES
            drv.state = _DATA
            drv.blocks.clear()
            return
        if need in (NEED_DATA, NEED_TRUNCATE) or not self.metacopy:
            size = inode.origin.size  # the lower file, whole: O(size), not O(bytes written)
            tally.copyup_count += 1
            tally.copyup_bytes += size
            tally.device_write_bytes += -(-size // self.block) * self.block + METADATA_WRITE_BYTES
            drv.state = _DATA
            drv.blocks.add(0, -(-min(size, inode.size) // self.block))
        elif drv.state == _LOWER:
            tally.copyup_meta_count += 1
            tally.device_write_bytes += METADATA_WRITE_BYTES
            drv.state = _META

    def write(self, inode: FileInode, offset: int, length: int) -> None:
        drv = inode.drv
        block = self.block
        if drv is None:  # a file the container created: nothing below to copy
            inode.drv = _CopyState(_DATA, RangeSet.span(offset // block, -(-(offset + length) // block)))
        else:
            drv.blocks.add(offset // block, -(-(offset + length) // block))

    # -- runs of writes (simulator.writeruns) and of stats (simulator.statruns) --
    idempotent_lookup = True  # reads the layers' state, changes nothing
    # A queued file's hooks touch its own copy state only; a first write's copy-up, a read's
    # shared page cache, a new name's or attribute's tallies are sums and sets.
    runs_pass = PASSING_KINDS

    def lookup_many(self, parents: list, groups: list, depths) -> None:
        """``lookup`` for each (it changes nothing), its first branch (a parent still wholly
        below) taken for a whole group of names at once."""
        out: list[int] = []
        add = out.append
        for parent, group in zip(parents, groups):
            if parent.__class__ is ImageDir:
                probes, stack = loaded(parent.probes), len(parent.stack)
                for name in group:
                    add(probes.get(name, stack))
            else:
                for name in group:
                    add(self.lookup(parent, name))
        depths.update(out)

    def lookup_table(self, parent):
        """A parent wholly below: ``lookup`` is its probe count, nothing else."""
        if parent.__class__ is ImageDir:
            return loaded(parent.probes).get, len(parent.stack)
        return None

    def batchable(self, inode: FileInode) -> bool:
        """Copied up: writes then only add blocks to this file (copy_up returns at once)."""
        return inode.drv is not None and inode.drv.state == _DATA

    def write_run(self, inode: FileInode, starts: list[int], ends: list[int], union: RangeSet) -> None:
        inode.drv.blocks.update(union.units(self.block))

    def truncate(self, inode: FileInode, old_size: int, new_size: int) -> None:
        # Blocks wholly beyond the new end are freed; the one holding it stays if allocated
        # (its tail zeroed): shmem_undo_range / truncate_inode_pages_range keep a partial page.
        if inode.drv is not None:
            inode.drv.blocks.truncate(-(-new_size // self.block))

    def cache_key(self, node) -> object:
        if node.__class__ is ImageFile:
            return node  # the lower inode: one page cache for every container
        if node.origin is not None and (node.drv is None or node.drv.state != _DATA):
            return node.origin  # metacopy or not yet copied: reads go to the lower file
        return node

    def space(self) -> Space:
        return upper_space(self.ns, self.block, lambda inode: data_blocks(inode, self.block))


class OverlayDriver(BaseDriver):
    name = "overlay"
    summary = "Docker overlay2 on kernel overlayfs: whole-file copy-up, shared page cache"
    naive_diff = False  # native diff: tar the upperdir (naive when redirect_dir is on, see below)
    page_cache_shared = True
    mount_class = OverlayMount
    OPTIONS = (
        Option("metacopy", False, "copy only metadata on chmod/chown/rename; data at first write"),
        Option("redirect_dir", False, "allow renaming lower directories (else EXDEV)"),
        Option("index", False, "keep hard links across copy-up (inodes index)"),
        Option("max_layers", DOCKER_MAX_LOWERS, "most lower layers (Docker 128; the kernel allows 500)",
               minimum=1, maximum=KERNEL_MAX_LOWERS),
        Option("block_size", 4096, "allocation unit of the upper filesystem, bytes",
               minimum=512, maximum=65536, power_of_two=True),
    )

    def __init__(self, options=None):
        super().__init__(options)
        # moby overlay2 falls back to the naive differ when redirect_dir is enabled
        # (DRIVERS.md section 1.4: "Not using native diff").
        if self.options["redirect_dir"] or self.options["metacopy"]:
            self.naive_diff = True

    def layer_limit(self) -> int:
        return int(self.options["max_layers"])
