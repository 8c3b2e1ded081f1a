"""aufs: Docker's (removed, v24) aufs driver on the AUFS union filesystem.  Model only.

There is no aufs in this kernel (aufs was never merged upstream), so this driver has no
real backend here.  Its diff is checked against a third-party OCI implementation instead
(tests/test_aufs_umoci.py): the layer, exported with AUFS whiteouts
(``workloads.oci_export``, ``layerbench diff``), stacked on the image and extracted by
``umoci unpack`` (0.4.7, Debian), equals the container's view on 48 random cases and the
hand-checked ones.  That check found hard-linked files changed through a name later
removed missing from the layer (fixed in simulator/diff.py).  Every rule
below is read in the aufs sources (sfjro/aufs-standalone, branch aufs6.x-rcN, same code in
aufs4-linux) or in moby's ``daemon/graphdriver/aufs/aufs.go`` (last in moby before commit
3903f16, "remove deprecated AuFS storage driver").

On-disk layout modelled::

    /var/lib/docker/aufs/diff/<layer>/   a layer's files, whiteouts ``.wh.<name>`` and
                                        opaque markers ``.wh..wh..opq`` (the OCI form)
    /var/lib/docker/aufs/diff/<ctr>/     the container's rw branch, also holding
                                        ``.wh..wh.aufs`` (whiteout base), ``.wh..wh.plnk/``
                                        and ``.wh..wh.orph/`` (whout.c au_wh_init_rw)
    /var/lib/docker/aufs/mnt/<ctr>       br:<ctr>=rw:<top>=ro+wh:...:<bottom>=ro+wh

Semantics (where they differ from overlay's, the source):

* Copy-up is whole-file, with the ancestor directories (au_cpup_dirs), but happens at the
  first *modification*, not at open: ``au_h_open`` opens a lower file read-only ("drop flags
  for writing") and ``au_write_pre`` -> ``au_ready_to_write(file, -1)`` copies it up at the
  first write.  So ``open(w)`` alone copies nothing and leaves nothing in the rw branch.
* ``truncate(2)`` and ``open(O_TRUNC)`` go through ``aufs_setattr`` -> ``au_pin_and_icpup``:
  copy-up length ``ia_size`` when it is below the file's size, else the whole file.  A
  shrinking truncate copies only the bytes kept (overlay copies all); O_TRUNC copies none.
* chmod, chown, utime, setxattr, rename and link copy the whole file (length -1): aufs has
  no metacopy.
* Renaming a directory fails with EXDEV when the directory has children on a lower branch
  that the container has not deleted (i_op_ren.c may_rename_srcdir with ``au_test_empty``/
  ``au_test_empty_lower``; "EXDEV even when both on a same AUFS layer, unless the directory
  has no children", DRIVERS.md section 2).  A directory made by the container renames.
* Hard links survive copy-up (pseudo-links, ``plink``, on by default).
* Lookup (dentry.c au_lkup_dentry/au_do_lookup) walks the branches holding the parent
  directory top-down and stops where overlayfs stops, so the lookup depth is the branches
  probed, by the overlay rule of SPEC section 5.  In each branch it first looks up the
  whiteout ``.wh.<name>`` (au_wh_test), then the name, and for a directory found also its
  ``.wh..wh..opq`` (au_diropq_test): these extra lookups go to ``tally.probes``.
* Permission: ``aufs_permission`` on a directory checks every branch holding it unless
  ``dirperm1`` (and returns -ECHILD to rcu-walk, so every lookup pays it).  We charge, per
  lookup, the checks beyond one per directory over the chain from the root to the parent
  directory (``tally.perm_checks``).  A directory the container made has no image path, so
  for lookups in it only its own branch is charged (a lower bound).
* Docker's mount (``aufsMount``) puts the rw branch and as many ro branches as fit in one
  page of mount data, then adds the rest with ``append:`` remounts, each also one page:
  the remounts are counted in ``tally.remounts``.
* ``max_branches`` (CONFIG_AUFS_BRANCH_MAX_127 by default: ``aufs_bindex_t`` is int8): an
  image needs its layers plus the rw branch.  Docker's "-init" layer is not modelled (as for
  overlay), so Docker itself would meet the limit one layer earlier.
* Native diff: Docker tars ``diff/<ctr>`` minus the ``.wh..wh.*`` metadata.  The page cache
  is shared: containers read a lower file through the same branch inode.

Simplifications: a file opened for writing but never written leaves its ancestor
directories private in the shared view, so they are still charged as copied up (aufs would
copy them only at the first write); a zero-length write gets no write event and copies
nothing.  Whiteouts and opaque markers are hard links of the whiteout base: no inode each.
"""

from __future__ import annotations

from operator import mul

from simulator.diff import DiffResult
from simulator.hooks import NEED_DATA, NEED_TRUNC_OPEN, NEED_TRUNCATE
from simulator.image import Layer
from simulator.imagetree import ImageDir, ImageFile
from simulator.metrics import Space
from simulator.nodes import Dir, FileInode
from simulator.ranges import RangeSet
from simulator.treestore import loaded
from simulator.units import PAGE_SIZE, ceil_div, round_up
from simulator.viewstats import walk_private
from simulator.writeruns import PASSING_KINDS

from .aufs_perm import PermWalks, branch_span
from .base import METADATA_WRITE_BYTES, BaseDriver, BaseMount
from .options import Option
from .upperdir import upper_space

AUFS_BRANCH_MAX = 127  # include/uapi/linux/aufs_type.h, CONFIG_AUFS_BRANCH_MAX_127 (int8 bindex)
AUFS_BRANCH_MAX_LARGEST = 32767  # CONFIG_AUFS_BRANCH_MAX_32767 (int16 bindex)

# moby aufs.go aufsMount: mount data is one page, minus room for ",xino=..." and the label.
DOCKER_AUFS_OPTION_RESERVE = 54  # "offset := 54"
DIRPERM1_OPTION = ",dirperm1"  # added to the reserve when dirperm1 is used
DOCKER_AUFS_BRANCH_PATH = len("/var/lib/docker/aufs/diff/") + 64  # layer ids: 64 hex digits
FIRST_BRANCH_BYTES = len("br:") + DOCKER_AUFS_BRANCH_PATH + len("=rw")  # 96
RO_BRANCH_BYTES = len(":") + DOCKER_AUFS_BRANCH_PATH + len("=ro+wh")  # 97
APPEND_BRANCH_BYTES = len("append:") + DOCKER_AUFS_BRANCH_PATH + len("=ro+wh,")  # 104
# The rw branch's own metadata: .wh..wh.aufs (a file) and .wh..wh.plnk/, .wh..wh.orph/.
RW_BRANCH_META_INODES, RW_BRANCH_META_DIRS = 3, 2

_LOWER, _DATA = 0, 1  # a private file's data: still only on a lower branch, or in the rw branch


def mount_batches(ro_branches: int, dirperm1: bool) -> tuple[int, int]:
    """(ro branches in the first mount(2), number of ``append:`` remounts) for Docker."""
    budget = PAGE_SIZE - DOCKER_AUFS_OPTION_RESERVE - (len(DIRPERM1_OPTION) if dirperm1 else 0)
    first = min(ro_branches, (budget - FIRST_BRANCH_BYTES) // RO_BRANCH_BYTES)
    per_remount = budget // APPEND_BRANCH_BYTES
    return first, ceil_div(ro_branches - first, per_remount)


class _CopyState:
    __slots__ = ("state", "copied")

    def __init__(self) -> None:
        self.state = _LOWER
        self.copied = 0  # lower bytes the copy-up brought (still within the file's size)


def _ghost(node) -> bool:
    """A file opened for writing but never modified: aufs has nothing of it in the rw branch."""
    return node.__class__ is FileInode and node.origin is not None and node.drv is not None \
        and node.drv.state == _LOWER


class AufsMount(BaseMount, PermWalks):
    def __init__(self, driver: AufsDriver, id: str, tree) -> None:
        super().__init__(driver, id, tree)
        self.dirperm1 = bool(driver.options["dirperm1"])
        self._init_perm_walks(tree)

    def metadata(self, op: str, node) -> None:
        self._walks_after(op, node)
        super().metadata(op, node)

    # -- semantics --
    def rename_refused(self, node) -> bool:
        if node.__class__ is ImageDir:
            return bool(node.children)
        if node.__class__ is not Dir or node.base is None or node.opaque:
            return False
        own = node.own
        return any(own.get(name, True) is not None for name in node.base.children)

    # -- lookups --
    def lookup(self, parent, name: str) -> int:
        if parent.__class__ is not Dir:  # parent not in the rw branch: only its lower stack
            depth = parent.lookup_probes(name)
            child = parent.children.get(name)
        else:
            base = parent.base
            child = parent.own.get(name, parent)  # ``parent``: the name is not in ``own``
            if child is not parent and not _ghost(child):
                if child is None or child.__class__ is not Dir or child.opaque or base is None:
                    depth = 1  # the whiteout, the file or the opaque/new dir is in the rw branch
                else:
                    depth = 1 + base.lookup_probes(name)
            else:  # only on the lower branches (a ghost file too: nothing of it in rw)
                child = base.children.get(name) if base is not None else None
                depth = 1 + (base.lookup_probes(name) if base is not None else 0)
        tally = self.tally
        tally.probes += depth  # .wh.<name> in every branch probed
        if child is not None and (child.__class__ is Dir or child.__class__ is ImageDir):
            tally.probes += branch_span(child)  # .wh..wh..opq in every branch the directory is found
        if not self.dirperm1:
            tally.perm_checks += self._perm_walk(parent)
        return depth

    # -- copy-up --
    def meta_copy_up(self, node) -> None:
        self._walks_after_copy_up(node)
        self.tally.copyup_meta_count += 1
        self.tally.device_write_bytes += METADATA_WRITE_BYTES

    def _state(self, inode: FileInode) -> _CopyState:
        if inode.drv is None:
            inode.drv = _CopyState()
        return inode.drv

    def _copy_up(self, st: _CopyState, nbytes: int, data: bool) -> None:
        tally = self.tally
        if data:
            tally.copyup_count += 1
            tally.copyup_bytes += nbytes
            tally.device_write_bytes += round_up(nbytes, self.block) + METADATA_WRITE_BYTES
        else:
            tally.copyup_meta_count += 1
            tally.device_write_bytes += METADATA_WRITE_BYTES
        st.state, st.copied = _DATA, nbytes

    def copy_up(self, inode: FileInode, need: str) -> None:
        st = self._state(inode)
        if st.state == _DATA or need == NEED_DATA or need == NEED_TRUNCATE:
            return  # open(w): nothing yet; write/truncate hooks copy when they know how much
        if need == NEED_TRUNC_OPEN:
            self._copy_up(st, 0, data=False)
        else:  # meta, rename, link: the whole file
            self._copy_up(st, inode.origin.size, data=True)

    def write(self, inode: FileInode, offset: int, length: int) -> None:
        if inode.origin is not None:
            st = self._state(inode)
            if st.state == _LOWER:
                self._copy_up(st, inode.origin.size, data=True)

    # -- runs of writes (simulator.writeruns) --
    # A queued file's hooks touch nothing of the branch (``write_run`` passes); its lookups'
    # probes and permission checks depend on its directories alone, all private already,
    # which no passing operation moves.
    runs_pass = PASSING_KINDS

    def batchable(self, inode: FileInode) -> bool:
        """In the rw branch: further writes copy nothing."""
        return inode.origin is None or (inode.drv is not None and inode.drv.state == _DATA)

    def lookup_run(self, parent, name: str, count: int) -> int:
        """One lookup, its probes and permission checks counted ``count`` times."""
        tally = self.tally
        probes, perm_checks = tally.probes, tally.perm_checks
        depth = self.lookup(parent, name)
        tally.probes += (tally.probes - probes) * (count - 1)
        tally.perm_checks += (tally.perm_checks - perm_checks) * (count - 1)
        return depth

    def write_run(self, inode: FileInode, starts: list[int], ends: list[int], union: RangeSet) -> None:
        pass  # batchable: ``write`` has nothing left to copy

    def lookup_many(self, parents: list, groups: list, depths) -> None:
        """(simulator.statruns) ``lookup`` for each: its sums commute, and its walk caches
        only remember.  A parent wholly below takes ``lookup``'s first branch inlined, its
        probe counts, children and permission walk fetched once for its group of names (an
        import probes five names in each directory)."""
        out: list[int] = []
        add = out.append
        probes = perm_checks = 0
        for parent, group in zip(parents, groups):
            if parent.__class__ is not ImageDir:
                for name in group:
                    add(self.lookup(parent, name))
                continue
            counts, children, stack = loaded(parent.probes), loaded(parent.children), len(parent.stack)
            for name in group:
                depth = counts.get(name, stack)
                child = children.get(name)
                probes += depth + (len(child.stack) if child.__class__ is ImageDir else 0)
                add(depth)
            if not self.dirperm1:
                perm_checks += self._perm_walk(parent) * len(group)
        self.tally.probes += probes
        self.tally.perm_checks += perm_checks
        depths.update(out)

    def lookup_table(self, parent):
        """(simulator.statruns) A parent wholly below: ``lookup``'s depth is its probe
        count; the rest (``tabled_lookups``) is sums, and walk caches that only remember."""
        if parent.__class__ is ImageDir:
            return loaded(parent.probes).get, len(parent.stack)
        return None

    def tabled_lookups(self, parents: list, counts: list[int], depths, found: list) -> None:
        """``lookup``'s counts for lookups in parents wholly below: ``.wh.<name>`` in each
        branch probed, ``.wh..wh..opq`` in each branch of a directory found, and the
        permission checks of each parent's walk (the same for every name in it)."""
        tally = self.tally
        tally.probes += sum(depth * count for depth, count in depths.items()) + sum(
            branch_span(child) for child in found if child.__class__ is Dir or child.__class__ is ImageDir)
        if self.dirperm1:
            return
        # Each parent's checks (an image directory's: ``_perm_walk`` is ``_perm_at`` of its
        # path), its remembered answer taken here, else walked.
        cache = self._image_perm_extra if self.ns.shares_image_walks() else self._perm_extra
        checks = {}
        for parent in dict.fromkeys(parents):
            known = cache.get(parent.path)
            checks[parent] = known[0] if known is not None else self._perm_walk(parent)
        tally.perm_checks += sum(map(mul, map(checks.__getitem__, parents), counts))

    def truncate(self, inode: FileInode, old_size: int, new_size: int) -> None:
        if inode.origin is None:
            return
        st = self._state(inode)
        if st.state == _LOWER:
            lower = inode.origin.size
            if new_size < lower:  # au_pin_and_icpup: len = ia_size
                self._copy_up(st, new_size, data=new_size > 0)
            else:  # len = -1: the whole file
                self._copy_up(st, lower, data=True)
        elif st.copied > new_size:
            st.copied = new_size

    # -- page cache --
    def cache_key(self, node) -> object:
        if node.__class__ is ImageFile:
            return node  # the lower branch's inode: one page cache for every container
        if node.origin is not None and (node.drv is None or node.drv.state == _LOWER):
            return node.origin
        return node

    # -- state at the end --
    def space(self) -> Space:
        # Whiteouts are hard links of .wh..wh.aufs: a name each, no inode.
        return upper_space(self.ns, self.block, self._blocks, whiteout_inodes=False, absent=_ghost,
                           extra_inodes=RW_BRANCH_META_INODES, extra_dirs=RW_BRANCH_META_DIRS)

    def _blocks(self, inode: FileInode) -> int:
        copied = min(inode.drv.copied, inode.size) if inode.drv is not None else 0
        if not copied:
            return inode.written.count_units(self.block)
        ranges = inode.written.copy()
        ranges.add(0, copied)
        return ranges.count_units(self.block)


class AufsDriver(BaseDriver):
    name = "aufs"
    summary = "Docker aufs (model only): whole-file copy-up at first write, branch-by-branch lookups"
    naive_diff = False  # Docker tars diff/<ctr>
    page_cache_shared = True
    mount_class = AufsMount
    OPTIONS = (
        Option("max_branches", AUFS_BRANCH_MAX, "most branches of a mount (image layers + the rw branch)",
               minimum=2, maximum=AUFS_BRANCH_MAX_LARGEST),
        Option("dirperm1", False, "check directory permission on the top branch only"),
        Option("block_size", 4096, "allocation unit of the filesystem under the branches, bytes",
               minimum=512, maximum=65536, power_of_two=True),
    )

    def layer_limit(self) -> int:
        return int(self.options["max_branches"]) - 1  # one branch is the container's rw branch

    def create_read_write(self, id: str, parent: str) -> None:
        super().create_read_write(id, parent)
        ro = len(self.images[parent].layers)
        self.tally.remounts += mount_batches(ro, bool(self.options["dirperm1"]))[1]

    def _diff(self, id: str) -> DiffResult:
        """The native diff without files aufs never copied up (opened for writing only),
        under any of their names (a hard link's other image names included)."""
        result = super()._diff(id)
        ns = self.containers[id].ns
        walked = {path for path, _p, _n, node in walk_private(ns) if _ghost(node)}
        ghosts = set(walked)
        for image_file, inode in ns.promoted.items():
            if _ghost(inode):
                ghosts.update(p for p in ns.tree.link_names.get(image_file, ()) if ns.exists(p) is inode)
        if not ghosts:
            return result
        entries = tuple(e for e in result.layer.entries if e.type == "whiteout" or not (
            e.path in ghosts or (e.type == "hardlink" and e.target in ghosts)))
        changes = [c for c in result.changes if c.kind == "D" or c.path not in ghosts]
        return DiffResult(Layer(result.layer.id, entries), changes, result.files_scanned - len(walked))
