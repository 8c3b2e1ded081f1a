"""devicemapper: Docker's dm-thin driver; every layer and container is a thin snapshot.

Layout modelled (moby ``daemon/graphdriver/devmapper/deviceset.go``; DRIVERS.md section 3)::

    thin pool (data_block_size = chunk_size, skip_block_zeroing)
      base device   mkfs.<fs> on base_size bytes            (image_physical_bytes)
      └ layer 0     snapshot of base, layer 0 untarred in   (image_physical_bytes)
        └ layer k   snapshot of layer k-1                   (image_physical_bytes)
          └ container c   snapshot of the top layer         (container_physical_bytes)

Each device carries its own filesystem (``drivers.thinfs``; mkfs's placement in
``drivers.fsgeometry``) on 4 KiB fs blocks, small files sharing a chunk as on a real fs: xfs
by allocation group (``drivers.xfsalloc``), ext4 by block group (``drivers.ext4alloc``), as
the kernel allocates, layers laid as the real backend lays them (``drivers.thinlaying``).  File operations become
fs block writes, and those chunk writes on the container's thin device (``drivers.thinpool``):
the first write into a chunk still shared with the image allocates a chunk, copying it
unless the batch covers it whole.  Data is allocated at writeback (SPEC section 5;
delalloc); dirty metadata goes to the journal or log, and home at the next commit point.
Deleting frees nothing in the pool: loop-lvm mounts without ``discard`` (DRIVERS.md 3).

Findings and sources:
* REAL_KERNEL.md 4a (reflinked guest images): mount + umount unshares the superblock on
  ext4, 2 MiB of log cleared ahead of the head + 8 KiB on xfs (``ThinFs.mount``).
* REAL_KERNEL.md 4b: qcow2 chains allocate a 64 KiB cluster per sub-cluster write, as dm-thin
  does (``tests/test_qcow2_chain.py``: our chunk counts against qemu-img).
* Lookups cost one btree walk at any depth (thin-provisioning.rst), page cache is per
  container (Docker docs: "each launched container loads one or more copies of its files
  into memory"), commit uses the naive diff (moby ``NewNaiveDiffDriver``).
* Reflinked journal-less ext4 images (``simulator/real/thin.py``, kernel 6.18, checked by
  ``tests/test_real_thin.py`` at ``chunk_size=4096``; every block named with dumpe2fs):
  - ``auto_da_alloc``: a file renamed over any existing name has its delayed data written
    at once (``ext4_rename``); after ``open(O_TRUNC)`` or a truncate to 0, at the next close
    of the file, any close (``EXT4_STATE_DA_ALLOC_CLOSE``): create 200000 B, rename over an
    empty file, unlink: 55 blocks, not 5.
  - relatime: the first read of a file writes its inode (image files were built moments
    before), even a read at EOF; again after a write or chmod.
  - the last link frees the inode (inode bitmap), and blocks (block bitmap) if some were
    allocated; a removed directory's block is never written (ext4_free_blocks, FORGET).
  - a directory whose entries change has its inode written; one moved to another parent its
    block (``..``); the block holding a file's end is zeroed past it and written back when a
    truncate moves the end or a write starts beyond it (10,000 B cut to 100 B: 5 blocks).
  - without a journal, metadata goes home at sync and unmount; an fsync writes the file's
    inode, then, while the node is newly named, its directory's block and inode, upwards
    (``ext4_fsync_nojournal``, ``ext4_sync_parent``).
  - relatime on a symbolic link followed: its inode written once a mount (``followed``).
  - with a journal: jbd2's superblock once a mount has logged; the fs superblock logged for
    the first file opened (``ext4_sample_last_mounted``) and the orphan list; revoke blocks.
  - a read of 0 bytes updates no atime (``op_read`` closes it as an open); one past the
    end does.
  - a hard link to an image symlink writes that link's own inode (``Symlink.image_path``).
  - without a journal, a large file flushed at a writer's close (an mballoc stream) takes
    the blocks an earlier stream freed: a 200,000-byte file rewritten twice unshares 53
    blocks, not 102 (``Ext4Groups.alloc``); with one, a truncate that does not grow logs
    the superblock (``ext4_truncate``: the orphan list).
  Not modelled: the block allocator's choice of another group for some data (per-CPU
  preallocations: one bitmap block).  ``scripts/fuzz.py thin`` measures what is left
  (docs/fidelity.md).
* Reflinked xfs images, Docker's 10 GiB (``tests/test_real_thin_xfs.py``; every block named
  with ``xfs_db blockuse``): inodes and blocks by allocation group, written as 16 KiB inode
  clusters, directories in their inode while they fit (``drivers.xfsalloc``); a truncate
  down (not of an empty file) flushes at the next close (``XFS_ITRUNCATED``), a rename over
  another file flushes nothing; freed blocks and inodes come back only after the commit
  (busy extents, background inactivation); an fsync forces the log, and what it logged
  goes home at the unmount, unless freed first (``ThinFs.logged``); truncate(2) of an empty
  file with no extents to 0 is no transaction at all, and a truncate that grows a file writes
  what lies past its size on disk at once (``xfs_setattr_size``; ``FileMap.disk_size``).
Simplifications: base_size bounds nothing (the real driver would fail with ENOSPC); one block
per ext4 directory, and per xfs directory past its inode; ext4's freed blocks are reused
only by a stream, new ones taken in order from the goal group (mballoc aligns and
preallocates: as many blocks, elsewhere), xfs's taken lowest first; ext4's journal writes home at each
commit point, not at checkpoint.
"""

from __future__ import annotations

from pyroaring import BitMap64

from simulator.errors import BadInput
from simulator.imagetree import ImageDir, ImageFile
from simulator.metrics import Space
from simulator.nodes import Dir, FileInode
from simulator.ranges import RangeSet
from simulator.units import GiB
from simulator.viewstats import private_inodes

from .base import BaseDriver, BaseMount
from .options import Option
from .fsgeometry import FS_BLOCK, Geometry
from .thinlaying import LaidView, lay_image_layer
from .thinfs import ThinFs, mkfs
from .thinlayout import ThinPlaces
from .xfsalloc import XFS_DIR_SF_HEADER
from .thinpool import (DM_THIN_CHUNK_STEP, DM_THIN_MAX_CHUNK, DM_THIN_MIN_CHUNK, DOCKER_DEFAULT_CHUNK,
                       REFERENCE_CHUNK_4K, chunk_physical_bytes)

DOCKER_DEFAULT_BASE_SIZE = 10 * GiB  # moby deviceset.go defaultBaseFsSize (dm.basesize)
MIN_BASE_SIZE = 1 * GiB  # the journal/log and inode region must fit (our limit)
MAX_BASE_SIZE = 1 << 50  # symbolic anyway; 1 PiB keeps offsets sane
NAMESPACE_OPS = ("create", "mkdir", "unlink", "rmdir", "rename", "link", "symlink")
INODE_ALLOC_OPS = ("create", "mkdir", "symlink")  # frees: ``remove`` with the last link
REMOVING_OPS = ("unlink", "rmdir")
NAMING_OPS = ("create", "mkdir", "link", "symlink", "rename")  # ext4_add_entry: EXT4_STATE_NEWENTRY
WRITING_CLOSES = ("create", "write", "append")  # operations whose close ends a writer's open


class DevicemapperMount(ThinPlaces, BaseMount):
    """A container: a thin snapshot of the image's top device with its own filesystem."""

    idempotent_lookup = True  # a lookup only marks a new operation (``_replaced``)
    # runs_pass stays empty: the thin filesystem's allocations follow the order of writes
    # across files (blocks zeroed past a file's end, files allocated at close).  With every
    # kind passing, tests/test_writeruns.py seed 6 wrote one 4 KiB device block more one by
    # one than batched: writes and appends to three files past their ends, after a rename.

    def __init__(self, driver: DevicemapperDriver, id: str, tree) -> None:
        super().__init__(driver, id, tree)
        layers = tree.image.layers
        top = driver.layer_fs[layers[-1].id] if layers else driver.base
        self.fs = top.snapshot(id, on_cost=self._charge)
        self.dirs: dict[Dir, int] = {}  # container-made directory -> its dir block
        self.inodes: dict[object, int] = {}  # container-made dir/symlink -> fs inode
        self.sf_sizes: dict[object, int] = {}
        self.dir_blocks: dict[int, int] = {}
        self._created: FileInode | None = None  # the file this operation created
        # (directory, name) of the last name added and of the last one removed (``entry``)
        self._added: tuple[object, str] = (None, "")
        self._dropped: tuple[object, str] = (None, "")
        self._replaced = False  # this operation removed a name (a rename over a target)
        self.alloc_on_close: set[FileInode] = set()  # ext4 EXT4_STATE_DA_ALLOC_CLOSE, xfs XFS_ITRUNCATED
        self._writing = False  # a writeback under way is a writer's close-time flush (``_flush``)
        # EXT4_STATE_NEWENTRY: node named since its last fsync -> the directory named in (journal-
        # less ext4's fsync writes it too, ext4_sync_parent); None where a journal commits all
        self.new_entry: dict | None = {} if not self.fs.geometry.log_bytes else None
        self.atime_fresh = BitMap64()  # fs inodes whose atime is past mtime/ctime (relatime)
        self.fs.mount()

    # -- accounting sink --
    def _charge(self, cost, chunk: int) -> None:
        copied = cost.copied_chunks * chunk
        self.tally.device_write_bytes += cost.bytes_written + copied
        self.tally.copyup_bytes += copied
        self.tally.cow_copy_bytes += copied

    # -- hooks --
    def lookup(self, parent, name: str) -> int:
        self._replaced = False  # a new operation
        return 1  # one btree whatever the depth (thin-provisioning.rst)

    def followed(self, parent, name: str, link) -> None:
        """relatime on a symbolic link followed (pick_link: touch_atime): its inode is written
        once, as a file's first read."""
        ino = self._symlink_ino(link, parent, name)
        if ino is not None and ino not in self.atime_fresh:
            self.atime_fresh.add(ino)
            self.fs.dirty_inode(ino)

    def entry(self, parent, name: str, added: bool) -> None:
        """ext4 places a new directory by its name; a removed image symlink is found by it."""
        if added:
            self._added = (parent, name)
        else:
            self._dropped = (parent, name)
        if self.sf_sizes:
            self._entry_size(parent, name, added)

    def copy_up(self, inode: FileInode, need: str) -> None:
        self._filemap(inode)  # block-level: nothing is copied per file

    def write(self, inode: FileInode, offset: int, length: int) -> None:
        fm = self._filemap(inode)
        if offset + length > fm.size:
            self.fs.extend(fm, offset, offset + length)
        self.fs.dirty_inode(fm.ino)  # file_update_time: mtime, ctime
        self.atime_fresh.discard(fm.ino)

    # -- runs of writes (simulator.writeruns) --
    def batchable(self, inode: FileInode) -> bool:
        """Not flushed at close: writes then only dirty the inode (ext4 delalloc)."""
        return inode.drv is not None and inode not in self.alloc_on_close

    def write_run(self, inode: FileInode, starts: list[int], ends: list[int], union: RangeSet) -> None:
        fm = self._filemap(inode)
        top = max(ends)
        if top > fm.size:  # the first write past the old size decides (ThinFs.extend)
            first = next(i for i, e in enumerate(ends) if e > fm.size)
            self.fs.extend(fm, starts[first], top, union)
        self.fs.dirty_inode(fm.ino)  # marks the inode: once is all
        self.atime_fresh.discard(fm.ino)

    def lookup_many(self, parents: list, groups: list, depths) -> None:
        self._replaced = False  # (simulator.statruns) as ``lookup`` each time
        depths[1] += sum(map(len, groups))

    def _accessed(self, node) -> None:
        """relatime (the mount default): reading updates atime when it is not past mtime and
        ctime - the first read of any image file (built moments before), and of a file
        changed since its last read."""
        ino = self._inode_of(node)
        if ino not in self.atime_fresh:
            self.atime_fresh.add(ino)
            self.fs.dirty_inode(ino)

    def _flush(self, inode: FileInode, open_for_write: bool = False) -> None:
        """ext4_alloc_da_blocks: ``filemap_flush`` of the file's delayed data, now; at the
        close of a writer (``ext4_release_file``) the file is still open for writing."""
        self.alloc_on_close.discard(inode)
        self._writing = open_for_write
        try:
            self.ns.writeback(inode)
        finally:
            self._writing = False

    def closed(self, node, op: str) -> None:
        if op == "read":  # filemap_read: file_accessed() even at EOF (a 0-byte read closes as "open")
            self._accessed(node)
        if node.__class__ is ImageFile or node.__class__ is FileInode:
            self.fs.journal_super(opened=True)
        if node.__class__ is not FileInode:
            return
        if op == "create" and node is not self._created and self.fs.ext4:
            self.alloc_on_close.add(node)  # open(O_TRUNC) of an existing file, even an empty one
        self._created = None
        if node in self.alloc_on_close:  # ext4_release_file, on any close (a read's too)
            self._flush(node, open_for_write=op in WRITING_CLOSES)

    def writeback(self, inode: FileInode, ranges: RangeSet) -> None:
        fm = self._filemap(inode)
        self.fs.write_file(fm, ranges, inode.size, self._writing)
        self.fs.write_zeroed(fm)

    def truncate(self, inode: FileInode, old_size: int, new_size: int) -> None:
        fm = self._filemap(inode)
        if not new_size and not old_size and not fm.extents and not self.fs.ext4:
            # xfs_setattr_size: an empty file with no extents truncated to 0 returns at once,
            # with no transaction, when no timestamp was asked for (truncate(2) asks none);
            # ext4_setattr marks the inode dirty all the same (fuzz seed 95053: 5 blocks over)
            return
        if new_size <= old_size:  # ext4_setattr calls ext4_truncate unless the file grows (to drop
            self.fs.journal_super()  # preallocations), which puts the inode on the orphan list
        had_blocks = bool(fm.extents)
        disk_size = fm.disk_size
        self.fs.resize(fm, old_size, new_size)
        if new_size > old_size and not self.fs.ext4:
            self._grown(inode, fm, old_size, disk_size)
        self.fs.dirty_inode(fm.ino)
        self.atime_fresh.discard(fm.ino)
        if new_size == 0 if self.fs.ext4 else new_size <= old_size and (old_size or had_blocks):
            # ext4_truncate: EXT4_STATE_DA_ALLOC_CLOSE; xfs_setattr_size: XFS_ITRUNCATED on any
            # truncate down but of an empty file with no blocks (xfs_release flushes it)
            self.alloc_on_close.add(inode)

    def _grown(self, inode: FileInode, fm, old_size: int, disk_size: int) -> None:
        """xfs_setattr_size, growing a file: when it zeroed the tail of the old last block
        (one with data) or the file had grown past its size on disk, it writes what lies
        past that size now (``filemap_write_and_wait_range``), before it logs the new size.
        Measured: a 100-byte file grown to 64 KiB and then removed unshares its block; a new
        10,000-byte file grown to 20,000 and removed, its 3 blocks and the allocation's."""
        zeroed = self.fs.zeroed.get(fm)
        if old_size != disk_size or zeroed and old_size // FS_BLOCK in zeroed:
            self.ns.writeback_from(inode, disk_size)
            self.fs.write_zeroed(fm, disk_size)

    def fsync(self, node) -> None:
        self.tally.fsyncs += 1
        fs = self.fs
        if node.__class__ is FileInode:
            fs.write_zeroed(self._filemap(node))
        if fs.geometry.log_bytes:  # a journal commits every dirty block (xfs: to the log only)
            fs.commit(home=fs.ext4)
            return
        # Journal-less ext4 (ext4_fsync_nojournal): the file's own metadata blocks and inode,
        # then, while the node is a new entry, its directory's blocks and inode, upwards.
        blocks = [fs.geometry.inode_block(self._inode_of(node))]
        if node.__class__ in (Dir, ImageDir):
            blocks.append(self._dir_location(node)[1])
        while node in self.new_entry:  # type: ignore[operator]
            node = self.new_entry.pop(node)  # type: ignore[union-attr]
            ino, block = self._dir_location(node)
            blocks += (block, fs.geometry.inode_block(ino))
        fs.write_home(blocks)

    def metadata(self, op: str, node) -> None:
        self.tally.metadata_ops += 1
        fs = self.fs
        if op == "create" and node.__class__ is FileInode:
            self._filemap(node)
            self._created = node
        elif op == "rename" and self._replaced and node.__class__ is FileInode and fs.ext4:
            # ext4_rename: a file renamed over any existing name is flushed (auto_da_alloc);
            # xfs_rename flushes nothing (measured: a new 200,000-byte file renamed over
            # another, then removed, allocates no data block on xfs)
            self._flush(node)
        elif op == "mkdir":
            ino = self.inodes[node] = self._new_inode(True)
            self.dirs[node] = fs.new_dir_block(ino)
            if not fs.ext4:
                self.sf_sizes[node] = XFS_DIR_SF_HEADER
        elif op == "symlink":
            self.inodes[node] = self._new_inode(False)
        ino = self._inode_of(node)
        fs.dirty_inode(ino)
        self.atime_fresh.discard(ino)  # ctime moved
        if op in NAMESPACE_OPS:  # the directories whose entries changed (``entry``)
            if op == "rename":
                src, dst = self._dropped[0], self._added[0]
                self._entries_changed(src)
                self._entries_changed(dst)
                if node.__class__ is Dir and src is not dst:
                    fs.dirty_block(self._dir_location(node)[1])  # a directory moved: its ".." (ext4_rename)
            else:
                self._entries_changed(self._dropped[0] if op in REMOVING_OPS else self._added[0])
            if self.new_entry is not None and op in NAMING_OPS:
                self.new_entry[node] = self._added[0]
        if op in INODE_ALLOC_OPS:
            fs.dirty_ialloc(ino)
        if op == "rmdir":  # its block is freed with ext4_forget: a dirty copy is dropped, not written
            fs.forget_block(self._dir_location(node)[1])

    def remove(self, node, last_link: bool) -> None:
        self._replaced = True
        if node.__class__ is ImageFile:  # the namespace counts an image file's removed names
            last_link = self.ns.image_unlinks[node] >= node.nlink
        if node.__class__ is FileInode:
            self.alloc_on_close.discard(node)
            fm = self._filemap(node)
            if last_link:
                self.fs.zeroed.pop(fm, None)  # its dirty pages are dropped, never written
            blocks = [(d, n) for _, d, n in fm.extents]  # delalloc never written: none
        elif node.__class__ is ImageFile:
            blocks = list(self.fs.layout.file(node.ino).extents)
        elif node.__class__ in (Dir, ImageDir):
            block = self._dir_location(node)[1]
            blocks = [(block * FS_BLOCK, FS_BLOCK)] if block >= 0 else []
        else:
            blocks = []
        if last_link:  # the inode and blocks go back to the fs; the pool keeps them (no discard)
            self.fs.journal_super()  # the orphan list, until the inode is evicted
            self.fs.free_inode(self._inode_of(node), node.__class__ in (Dir, ImageDir))
            self.fs.free_extents(blocks)

    def cache_key(self, node) -> object:
        if node.__class__ is FileInode and node.origin is not None:
            node = node.origin  # the same file of this container's fs, before or after a change
        return node  # in this container's own cache: each container has its own fs and inodes

    # -- state at the end --
    def sync(self) -> None:
        self.fs.write_zeroed()
        if self.new_entry:
            self.new_entry.clear()
        self.fs.commit()

    def space(self) -> Space:
        self.sync()
        chunk = self.fs.chunk
        dev = self.fs.device
        chunks = dev.own_chunks()
        return Space(whiteouts=None, opaque_dirs=None, container_files=len(private_inodes(self.ns)),
                     container_data_bytes=dev.written_bytes(),
                     container_alloc_bytes=chunks * chunk, image_physical_bytes=0,
                     container_physical_bytes=chunk_physical_bytes(chunks, chunk),
                     page_cache_bytes=0, cow_blocks=chunks)


class DevicemapperDriver(BaseDriver):
    name = "devicemapper"
    summary = "Docker devicemapper: dm-thin snapshots, block (chunk) copy-on-write, own fs per container"
    mount_class = DevicemapperMount
    OPTIONS = (
        Option("chunk_size", DOCKER_DEFAULT_CHUNK,
               "thin pool data block, bytes (64 KiB..1 GiB in 64 KiB steps; 4096 for reference checks)",
               minimum=DM_THIN_MIN_CHUNK, maximum=DM_THIN_MAX_CHUNK, multiple_of=DM_THIN_CHUNK_STEP,
               also=(REFERENCE_CHUNK_4K,)),
        Option("base_size", DOCKER_DEFAULT_BASE_SIZE, "size of the base device and its filesystem, bytes",
               minimum=MIN_BASE_SIZE, maximum=MAX_BASE_SIZE, multiple_of=FS_BLOCK),
        Option("fs", "xfs", "filesystem on the thin devices", choices=("xfs", "ext4")),
        Option("journal", True, "ext4 with a journal (Docker's mkfs); false: mkfs.ext4 -O ^has_journal, "
               "the reflinked-image reference of REAL_KERNEL.md 4a (xfs always logs)"),
    )

    def __init__(self, options=None):
        super().__init__(options)
        if self.options["fs"] == "xfs" and not self.options["journal"]:
            raise BadInput("devicemapper: journal=false needs fs=ext4 (xfs cannot run without its log)")
        self.geometry = Geometry.make(str(self.options["fs"]), int(self.options["base_size"]),
                                      bool(self.options["journal"]))
        self.chunk = int(self.options["chunk_size"])
        self.base = mkfs(self.geometry, self.chunk)  # the base device, before any layer
        self.base.view = LaidView.empty(*self.base.layout.root)
        self.layer_fs: dict[str, ThinFs] = {}

    @property
    def block_size(self) -> int:
        return FS_BLOCK

    def create(self, id: str, parent: str | None, layer=None) -> None:
        super_counting, self.counting = self.counting, False  # our own device accounting below
        try:
            super().create(id, parent, layer)
        finally:
            self.counting = super_counting
        origin = self.layer_fs[parent] if parent is not None else self.base
        on_cost = self._charge_layer if self.counting else None
        fs = origin.snapshot(id, on_cost=on_cost)
        lay_image_layer(origin, fs, self.images[id].layers, self.base)
        self.layer_fs[id] = fs

    def _charge_layer(self, cost, chunk: int) -> None:
        self.tally.device_write_bytes += cost.bytes_written + cost.copied_chunks * chunk

    def remove(self, id: str) -> None:
        super().remove(id)
        self.layer_fs.pop(id, None)  # dm-thin delete: the device's blocks go back to the pool

    def commit(self, id: str, layer_id: str, new_id: str):
        mount = self.containers.get(id)
        if mount is not None:
            mount.ns.flush()
            mount.sync()
        return super().commit(id, layer_id, new_id)

    def image_bytes(self) -> int:
        chunks = self.base.device.own_chunks() + sum(fs.device.own_chunks() for fs in self.layer_fs.values())
        return chunk_physical_bytes(chunks, self.chunk)

    def status(self) -> list[tuple[str, str]]:
        return super().status() + [("Pool Blocksize", str(self.chunk)),
                                   ("Base Device Size", str(self.options["base_size"])),
                                   ("Backing Filesystem", str(self.options["fs"]))]

