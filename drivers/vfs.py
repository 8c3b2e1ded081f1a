"""vfs: no copy-on-write at all; every layer and every container is a full copy.

Layout modelled (moby ``daemon/graphdriver/vfs/driver.go``): ``vfs/dir/<id>/`` holds a
complete tree, made by ``copy.DirCopy(parent, new)`` for every layer and container, so
space grows with the image size times the layer count - the reference for worst-case space
(docker docs ``vfs-driver.md``: five ubuntu layers take 104-125 MB *each*).  Writes go in
place into the container's own copy: there is no copy-up.  Each copy has its own inodes, so
the page cache is not shared.

``reflink=true`` models ``copyRegular``'s first choice, ``FICLONE``: on xfs/btrfs the
copies share data blocks and cost only their metadata; a write then allocates new blocks
(4 KiB) in the container's copy.
"""

from __future__ import annotations

from simulator.imagetree import TreeStats
from simulator.metrics import Space
from simulator.nodes import FileInode
from simulator.ranges import RangeSet
from simulator.units import PAGE_SIZE
from simulator.viewstats import private_inodes, view_totals
from simulator.writeruns import PASSING_KINDS

from .base import DIR_BLOCK_BYTES, INODE_BYTES, BaseDriver, BaseMount, layer_footprint
from .options import Option


def _metadata_bytes(entries: int, dirs: int) -> int:
    return entries * INODE_BYTES + dirs * DIR_BLOCK_BYTES


class VfsMount(BaseMount):
    # -- runs of writes (simulator.writeruns): a plain tree pays nothing per write --
    idempotent_lookup = True
    runs_pass = PASSING_KINDS  # a queued file's hooks touch nothing: its space is read at the end

    def batchable(self, inode: FileInode) -> bool:
        return True

    def write_run(self, inode: FileInode, starts: list[int], ends: list[int], union: RangeSet) -> None:
        pass

    def space(self) -> Space:
        reflink = bool(self.driver.options["reflink"])
        block = self.block
        totals = self.driver.totals()

        def blocks(inode: FileInode) -> int:
            if reflink:  # shared with the parent's copy except what the container wrote
                return inode.written.count_units(block)
            if inode.origin is not None and not inode.written and inode.size == inode.origin.size:
                return -(-inode.size // block)
            ranges = inode.written.copy()
            if inode.origin is not None:
                ranges.add(0, min(inode.origin.size, inode.size))
            return ranges.count_units(block)

        view = view_totals(self.ns, totals, blocks)
        if reflink:
            alloc = sum(blocks(i) for i in private_inodes(self.ns)) * block
        else:
            alloc = view.file_blocks * block
        return Space(whiteouts=None, opaque_dirs=None, container_files=view.files,
                     container_data_bytes=view.file_bytes, container_alloc_bytes=alloc,
                     image_physical_bytes=0,
                     container_physical_bytes=alloc + _metadata_bytes(view.entries(), view.dirs),
                     page_cache_bytes=0, cow_blocks=None)


class VfsDriver(BaseDriver):
    name = "vfs"
    summary = "a full copy of the parent for every layer and container (worst-case reference)"
    mount_class = VfsMount
    OPTIONS = (Option("reflink", False, "copies share data blocks (FICLONE on xfs/btrfs)"),)

    @property
    def block_size(self) -> int:
        return PAGE_SIZE  # the backing filesystem's block (ext4/xfs default 4 KiB)

    def level_stats(self, id: str) -> TreeStats:
        """Totals of the merged view at layer ``id``, from any built tree that contains it
        (a chain's trees record every level), so no tree is built per layer."""
        for tree in self._trees.values():
            for k, layer in enumerate(tree.image.layers):
                if layer.id == id and tree.image.layers[: k + 1] == self.images[id].layers:
                    return tree.level_stats[k]
        return self.tree(id).stats

    def layer_cost(self, id: str) -> int:
        """A full copy of the merged view at this layer; with reflink, metadata plus the
        blocks of the layer's own files."""
        stats = self.level_stats(id)
        entries = stats.files + stats.dirs + stats.symlinks
        if self.options["reflink"]:
            own_data = layer_footprint(self.images[id].layers[-1], self.block_size)[0]
            return own_data + _metadata_bytes(entries, stats.dirs)
        return stats.file_pages * PAGE_SIZE + _metadata_bytes(entries, stats.dirs)
