"""``est_seconds``: a linear cost model whose parameters are named, sourced constants.

The model prices the events a run counts (operations, lookup probes, copied and written
bytes, metadata updates, fsyncs, mounts, files a diff scans).  The defaults come from the
measurements in the project's REAL_KERNEL notes (kernel 6.18, this machine kind) where one
exists and are marked *uncalibrated* where not; ``layerbench calibrate`` fits them on the
real kernel and writes a calibration file (``simulator.calibration``, per-driver sections)
whose parameters ``CostModel.from_mapping`` reads; the shipped ``default.json`` is what
``est_seconds`` uses by default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from .errors import BadInput


@dataclass(frozen=True)
class CostModel:
    # Cold negative lookup grows ~4 us per layer (REAL_KERNEL section 1, pitfall 5: 13.5 us at
    # 1 layer, 312 us at 100, 2109 us at 500).
    probe_seconds: float = 4.0e-6
    # A system call that does no I/O: open/stat/close on a warm dentry (uncalibrated).
    syscall_seconds: float = 2.0e-6
    # The open + close pair around a data operation (create, write, append, read, open,
    # fsync): file descriptor, struct file and, on overlay, the real file's open (uncalibrated).
    open_seconds: float = 4.0e-6
    # Copy-up and page-cache write bandwidth on the tmpfs/ext4 upper (uncalibrated;
    # chriskuehl/docker-storage-benchmark copies 1.69 GiB in about a second on tmpfs).
    copy_bytes_per_second: float = 1.6e9
    write_bytes_per_second: float = 2.0e9
    # Fixed cost of one copy-up beyond its data: create in workdir, xattrs, rename, fsync
    # (uncalibrated).
    copyup_seconds: float = 30.0e-6
    # An inode or directory update (create, unlink, chmod, ...) (uncalibrated).
    metadata_seconds: float = 8.0e-6
    # fsync on an ext4 upper (uncalibrated; tmpfs makes it free).
    fsync_seconds: float = 1.0e-3
    # Overlay mount: 5.2 ms for 1 layer, 14.9 ms for 500 (REAL_KERNEL section 1, pitfall 5).
    mount_seconds: float = 5.2e-3
    mount_layer_seconds: float = 19.4e-6
    # One file examined by a diff (stat of both sides for the naive differ) (uncalibrated).
    diff_file_seconds: float = 5.0e-6
    # Bytes the workload moves through the page cache: write(2) into it, read(2) out of it
    # (memcpy plus page allocation; uncalibrated: a few GB/s).
    cache_write_bytes_per_second: float = 3.0e9
    read_bytes_per_second: float = 5.0e9
    # One extra per-branch permission check on a directory (aufs_permission walks every
    # branch unless dirperm1): generic_permission on a cached inode (uncalibrated).
    perm_check_seconds: float = 0.2e-6
    # One directory entry listed by rm -rf or by mv's copy after EXDEV (getdents, plus the
    # fd and stat rm's fts takes per directory): measured on overlay 6.18, rm -rf of 854
    # entries took 20.8 ms where unlinks alone priced 8.3 ms (docs/fidelity.md).  0 until
    # calibrated, so uncalibrated drivers' est_seconds is what it was before this term.
    dirent_seconds: float = 0.0
    # Writeback of a file the container created, beyond its bytes: measured on btrfs 6.18
    # here (1000 files each): creating a file costs ~20 us empty, ~150 us with 4 or 8 KiB
    # (~100 us for the first write into a new empty file), while appends to image files
    # cost ~10 us each.  0 until calibrated (as above).
    new_file_write_seconds: float = 0.0
    # First read of an image file with data (more than the inline limit: btrfs's max_inline,
    # else a page; ``Namespace.inline_limit``) in a container: on btrfs the
    # snapshot's inode has its own, cold page cache (~80 us per 8 KiB file measured here;
    # files up to max_inline live in the metadata leaf); overlay shares the lower file's
    # page cache.  0 until calibrated (as above).
    image_read_seconds: float = 0.0
    # Bytes of those first reads (the data a cold page cache reads from the device, beyond
    # the page-cache copy that read_bytes prices), in seconds per byte so that its
    # uncalibrated 0 adds exactly nothing.  0 until calibrated.
    cold_read_byte_seconds: float = 0.0
    # First change (chmod, write, ...) of an image file with data in a container:
    # on btrfs the snapshot's shared leaf is CoWed and every data extent it points to gets
    # a reference (btrfs_inc_ref); measured here: chmod of 1000 8 KiB image files 21 ms,
    # of 1000 100-byte (inline) ones 16 ms.  0 until calibrated.
    image_change_seconds: float = 0.0
    # Last name of a file with data removed: its data extents are freed (btrfs:
    # file extent items deleted, delayed refs dropped); measured here: unlinking 1000 8 KiB
    # image files 42 ms against 21 ms for chmodding them.  0 until calibrated.
    data_unlink_seconds: float = 0.0
    # One disjoint dirty range written back during the workload (fsync, flush on close,
    # commit; not the writeback after its end, which no wall time includes): one extent (btrfs CoW: file extent item,
    # checksums, extent item) or one bio; random 4 KiB overwrites fsynced cost ~2.5x what
    # their bytes do on btrfs here.  0 until calibrated.
    dirty_range_seconds: float = 0.0
    # First lookup of a name in a container (the directories a path walks through included):
    # a fresh overlay mount or btrfs snapshot has no dentry or inode for it yet, so the
    # lookup instantiates both (overlay: ovl_lookup + ovl_get_inode over the real dentries;
    # btrfs: the dir item and the inode item read from the btree, a new in-memory inode per
    # snapshot).  Measured here (kernel 6.18, 400 files in 400 directories, median of 5
    # fresh mounts, load ~1.7): stat of a name first looked up ~18 us,
    # of the same name again ~5 us on overlay; ~19 us against ~3.5 us on btrfs.  The
    # held-out read-startup (411 files in 127 directories) took 10.5 ms on a fresh overlay
    # mount and 7.0 ms when replayed again on the same mount; on btrfs (tmpfs loop, median
    # of 7, load 2.4) 25.6 ms in a fresh snapshot, 18.4 ms after a stat of every path walked.
    # The microbenchmarks alone leave this at ~0 on btrfs (cold_lookups there nearly equal
    # operations, whose cost absorbs it).  0 until calibrated.
    cold_lookup_seconds: float = 0.0
    # Per image layer of each directory looked up for the first time: overlay's ovl_lookup
    # of a merged directory looks it up in every lower layer to build its stack.  Measured
    # here (400 directories present in 1, 6 or 24 layers, a file each, fresh mounts): the
    # first stat through the directory cost ~3, ~24 and ~48 us more than a stat of a second
    # file in it (~2 us per layer); btrfs (a snapshot: one tree) showed no growth.  0 until
    # calibrated.
    cold_dir_layer_seconds: float = 0.0
    # Per image layer the lookup of an entry rm -rf or mv's copy listed probes (rm looks each
    # name up again: fstatat, unlinkat): on overlay, in a merged directory, every layer down
    # to the one holding it.  Measured here (kernel 6.18, rm -rf of 800 8 KiB files in 40
    # directories, median of 5 fresh mounts, load 2.5-3.5): 21 ms with the tree in one
    # layer, 32 ms with the directories in 6 layers and the files spread over them (~2.6 us
    # per extra layer probed); btrfs 35 against 37 ms.  0 until calibrated.
    dirent_layer_seconds: float = 0.0
    # First fsync in a directory: btrfs logs the parent directory with a file's first fsync
    # (tree-log.c, btrfs_log_inode_parent), copying its items into the log tree.  Measured
    # here (kernel 6.18, loop file on tmpfs, fresh snapshot, median of 5, load ~3): 30 pairs
    # of create 8 KiB + fsync cost 707 us each spread over 30 image directories, 215 us each
    # in one directory; 600 pairs over 40 directories 440 us each, in one 364 us.  0 until
    # calibrated.
    fsync_dir_seconds: float = 0.0
    # A rename beyond the metadata update every operation has: two directory entries and the
    # inode's back reference rewritten together (btrfs: dir item + dir index deleted and
    # inserted, inode ref moved).  Measured here (btrfs 6.18, tmpfs loop, 300 per run, median
    # of 5, load ~2): create 8 KiB 121 us, create 8 KiB + rename 180 us; create empty +
    # rename 58 us; rename of an image file 45 us.  0 until calibrated.
    rename_seconds: float = 0.0
    # Bytes of those dirty ranges (fsync, flush on close, commit), in seconds per byte: the
    # workload waits for them (btrfs: data checksums, bios through the loop device), unlike
    # the writeback after its end that device_write_bytes also counts.  dpkg-style unpacks
    # fsync every file; the held-out package-install fsyncs 27.8 MB.  0 until calibrated.
    synced_byte_seconds: float = 0.0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], source: str = "calibration") -> CostModel:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise BadInput(f"{source}: unknown cost parameter(s): {', '.join(sorted(unknown))}")
        values: dict[str, float] = {}
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise BadInput(f"{source}: '{key}' must be a non-negative number")
            values[key] = float(value)
        return cls(**values)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def estimate(self, *, ops: int, probes: int, copyup_bytes: int, copyups: int,
                 device_write_bytes: int, metadata_ops: int, fsyncs: int, mounts: int,
                 mounted_layers: int, diff_files: int, perm_checks: int = 0, written_bytes: int = 0,
                 read_bytes: int = 0, opens: int = 0, dirents: int = 0, new_file_writebacks: int = 0,
                 image_files_read: int = 0, image_first_read_bytes: int = 0, image_files_changed: int = 0,
                 data_unlinks: int = 0, dirty_ranges: int = 0, cold_lookups: int = 0,
                 cold_dir_layers: int = 0, dirent_layers: int = 0, fsync_dirs: int = 0,
                 renames: int = 0, synced_bytes: int = 0) -> float:
        """Predicted wall time of a workload from its event counts."""
        return (ops * self.syscall_seconds
                + probes * self.probe_seconds
                + copyup_bytes / self.copy_bytes_per_second
                + copyups * self.copyup_seconds
                + device_write_bytes / self.write_bytes_per_second
                + metadata_ops * self.metadata_seconds
                + fsyncs * self.fsync_seconds
                + mounts * self.mount_seconds
                + mounted_layers * self.mount_layer_seconds
                + diff_files * self.diff_file_seconds
                + perm_checks * self.perm_check_seconds
                + written_bytes / self.cache_write_bytes_per_second
                + read_bytes / self.read_bytes_per_second
                + opens * self.open_seconds
                + dirents * self.dirent_seconds
                + new_file_writebacks * self.new_file_write_seconds
                + image_files_read * self.image_read_seconds
                + image_first_read_bytes * self.cold_read_byte_seconds
                + image_files_changed * self.image_change_seconds
                + data_unlinks * self.data_unlink_seconds
                + dirty_ranges * self.dirty_range_seconds
                + cold_lookups * self.cold_lookup_seconds
                + cold_dir_layers * self.cold_dir_layer_seconds
                + dirent_layers * self.dirent_layer_seconds
                + fsync_dirs * self.fsync_dir_seconds
                + renames * self.rename_seconds
                + synced_bytes * self.synced_byte_seconds)
