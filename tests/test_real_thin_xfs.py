"""The devicemapper model on its default filesystem, xfs, against reflinked guest-xfs images.

As tests/test_real_thin.py does for ext4: ``simulator/real/thin.py`` lays the image down
as 10 GiB guest-xfs images (mkfs.xfs defaults, Docker's base size), reflink-copied on a
loop-mounted host xfs, and FIEMAP counts the container image's blocks that its origin does
not hold; with ``chunk_size=4096`` that is the model's ``container_alloc_bytes``.  The xfs
model places inodes and blocks by allocation group (drivers/xfsalloc.py); each scenario
below was checked block by block with ``xfs_db blockuse`` when it was found.

Every scenario's count includes 513 log blocks: the mount clears 2 MiB ahead of the log's
head and writes an unmount record (REAL_KERNEL 4a), and the container's one transaction.
"""


import numpy as np
import pytest

from drivers import make_driver
from helpers import d, f, image, kernel_inode_numbers, ops, why_unavailable
from simulator.costmodel import CostModel
from simulator.harness import Run
from simulator.imagetree import ImageTree
from simulator.runner import Cell, prepare
from workloads.random import random_image, random_trace

pytestmark = pytest.mark.kernel

from simulator.real.thin import check_available, measure_thin

UNAVAILABLE = why_unavailable(check_available)

BLOCK = 4096
OPTS = {"chunk_size": BLOCK}  # fs=xfs and base_size=10 GiB: the driver's defaults
LOG = 513
# Random cases: 151 of 200 fuzz cases were exact (docs/fidelity.md); most of the rest are
# the log's size (one block a transaction: log item sizes are estimated) and up to 24 blocks.
RANDOM_FLOOR = 8


@pytest.fixture(autouse=True)
def _needs_thin():
    if UNAVAILABLE:
        pytest.skip(f"reflinked-xfs thin emulation unavailable: {UNAVAILABLE}")


def unshared_blocks(img, trace, containers=1) -> tuple[int, int]:
    """(model, kernel) blocks the containers unshared; ops and bytes must agree exactly."""
    r = Run(make_driver("devicemapper", OPTS), img, containers)
    for op in trace:
        r.apply(op)
    sim = r.finish(CostModel())
    real = measure_thin(img, trace, containers, make_driver("devicemapper", OPTS).options)
    assert (sim["ops"], sim["failed_ops"], sim["written_bytes"], sim["read_bytes"]) == \
        (real["ops"], real["failed_ops"], real["written_bytes"], real["read_bytes"])
    return sim["container_alloc_bytes"] // BLOCK, real["container_physical_bytes"] // BLOCK


SCENARIOS = {
    # 5 new names fit in /a's inode (shortform): AG 0's block 0 (AGI), the inobt and finobt
    # roots (blocks 3, 4) and the inode cluster of 128-159 (blocks 16-19): 1 + 2 + 4.
    "shortform-directory": ([d("/a"), f("/a/x", 100)],
                            [{"op": "create", "path": f"/a/f{i}", "size": 0} for i in range(5)], 1 + 2 + 4),
    # 30 more names do not (6 + 9 + 30 * 14 = 435 > 336 bytes): /a's entries move to a
    # block of their own (block 11; /a/x's data has 10), which also dirties the AGF and
    # the free-space roots (blocks 0-4), and 30 new inodes span two clusters (16-23).
    "directory-outgrows-its-inode": ([d("/a"), f("/a/x", 100)],
                                     [{"op": "create", "path": f"/a/file{i:02d}", "size": 0} for i in range(30)],
                                     5 + 1 + 8),
    # 20 of 30 names removed: the rest fit in the inode again, and the block is freed.
    "directory-shrinks-back": ([d("/a")] + [f(f"/a/file{i:02d}", 10) for i in range(30)],
                               [{"op": "unlink", "path": f"/a/file{i:02d}"} for i in range(20)], None),
    # A file truncated by O_TRUNC and rewritten: xfs flushes at close after a truncate
    # (XFS_ITRUNCATED), and the blocks the second truncate frees are busy until the log
    # has the transaction, so the second flush takes 49 new blocks: 98 data blocks, the AGF
    # and free-space roots (0-2) and the inode's cluster (16-19).
    "truncate-and-rewrite": ([f("/x", 1)],
                             [{"op": "create", "path": "/x", "size": 200000}] * 2, 3 + 4 + 98),
    # O_TRUNC of an empty file sets no XFS_ITRUNCATED: nothing is flushed at close, and the
    # delayed data dies with the unlink.  The inode's cluster, the AGI and inode roots only.
    "empty-file-reopened-then-removed": ([f("/e", 0)],
                                         [{"op": "create", "path": "/e", "size": 200000},
                                          {"op": "unlink", "path": "/e"}], 1 + 2 + 4),
    # The same with a 10-byte file: flushed at close (49 blocks), freed by the unlink.
    "file-truncated-reopened-then-removed": ([f("/e", 10)],
                                             [{"op": "create", "path": "/e", "size": 200000},
                                              {"op": "unlink", "path": "/e"}], 5 + 4 + 49),
    # A new 200,000-byte file renamed over another, then removed: xfs_rename flushes
    # nothing (ext4 does: auto_da_alloc), so the delayed data dies with the file; the new
    # inode's AGI, inode roots and cluster only (fuzz seed 95211 was 49 blocks over).
    "file-renamed-over-then-removed": ([f("/e", 0), f("/x", 10)],
                                       [{"op": "create", "path": "/t", "size": 200000},
                                        {"op": "rename", "src": "/t", "dst": "/e"},
                                        {"op": "unlink", "path": "/e"}], 1 + 2 + 4),
    # A read of 0 bytes stops before the filesystem's read and its atime update
    # (generic_file_read_iter: "skip atime"): the unmount's block 0 only.  A read past the
    # end reads nothing but does update atime: the inode's cluster too (fuzz seed 95054 was
    # 4 blocks over, the model took a 0-byte read for a read).
    "read-of-0-bytes": ([f("/x", 5000)], [{"op": "read", "path": "/x", "offset": 0, "length": 0}], 1),
    "read-past-the-end": ([f("/x", 5000)], [{"op": "read", "path": "/x", "offset": 10000, "length": 10}], 1 + 4),
    # link(2) names a symbolic link itself again: its own inode's cluster is written, not
    # that of the last name removed, /q/u's (4 blocks short before 0.2.10)
    "hard-link-to-an-image-symlink": ([d("/p"), d("/q")] + [f(f"/p/f{i}", 10) for i in range(40)]
                                      + [f(f"/q/g{i}", 10) for i in range(40)]
                                      + [{"path": "/p/s", "type": "symlink", "target": "f1"},
                                         {"path": "/q/u", "type": "symlink", "target": "g1"}],
                                      [{"op": "unlink", "path": "/q/u"},
                                       {"op": "link", "src": "/p/s", "dst": "/p/s2"}], None),
    # truncate(2) of an empty file with no extents to 0 returns at once in xfs_setattr_size
    # (it asks no timestamp update): no transaction, block 0 only, as with no operation at
    # all (fuzz seed 95053 was 5 blocks over: the model wrote the inode's cluster).  An
    # extended file truncated back to 0 (its blocks never allocated) is a transaction.
    "truncate-an-empty-file-to-0": ([f("/x", 0), f("/y", 10)], [{"op": "truncate", "path": "/x", "size": 0}], 1),
    "truncate-a-grown-file-to-0": ([f("/x", 0), f("/y", 10)], [{"op": "truncate", "path": "/x", "size": 5000},
                                                                {"op": "truncate", "path": "/x", "size": 0}], 1 + 4),
    # xfs_setattr_size growing a file writes what lies past its size on disk at once
    # (filemap_write_and_wait_range), where it zeroed the old last block's tail or the file
    # had grown past that size; so a removal after it frees blocks already written.  Each
    # unmount writes block 0 and the roots of the free-space and inode btrees (1-4): the
    # files are freed.  A 100-byte file grown to 64 KiB: its zeroed block (fuzz seed 95015
    # was 1 short).  A new 10,000-byte file grown to 20,000: its 3 delayed blocks.  An
    # overwrite at the start of a 20,000-byte file is not written: it lies below the size
    # on disk; only the zeroed last block is.
    "grow-a-partial-block-then-remove": ([f("/s", 100), f("/y", 10)],
                                         [{"op": "truncate", "path": "/s", "size": 65536},
                                          {"op": "unlink", "path": "/s"}], 5 + 4 + 1),
    "grow-a-new-file-then-remove": ([f("/y", 10)], [{"op": "create", "path": "/n", "size": 10000},
                                                    {"op": "truncate", "path": "/n", "size": 20000},
                                                    {"op": "unlink", "path": "/n"}], 5 + 4 + 3),
    "overwrite-grow-then-remove": ([f("/s", 20000), f("/y", 10)],
                                   [{"op": "write", "path": "/s", "offset": 0, "length": 100},
                                    {"op": "truncate", "path": "/s", "size": 65536},
                                    {"op": "unlink", "path": "/s"}], 5 + 4 + 1),
    # New directories take AGs 0, 1, 2, 3, 0 in turn, each with a 2-block file: every AG's
    # headers and a new inode chunk (8 blocks) in AGs 1-3.
    "directories-rotate-over-ags": ([f("/x", 10)],
                                    [{"op": "mkdir", "path": f"/d{i}"} for i in range(5)]
                                    + [{"op": "create", "path": f"/d{i}/f", "size": 5000} for i in range(5)], None),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenarios_match_block_for_block(name):
    entries, trace, expected = SCENARIOS[name]
    model, kernel = unshared_blocks(image(entries), ops(*trace))
    assert model == kernel
    if expected is not None:
        assert kernel == LOG + expected


def test_demo_workload_is_exact():
    # Before the allocation-group model: 13 blocks short of 564 (everything in AG 0).
    p = prepare(Cell("devicemapper", "demo", "demo", OPTS))
    assert unshared_blocks(p.image, p.ops) == (564, 564)


def random_case_blocks(seed: int) -> tuple[int, int]:
    """``unshared_blocks`` of the random case of ``seed``: the image and two containers'
    trace that ``scripts/fuzz.py thin-xfs`` makes for that seed."""
    rng = np.random.default_rng(seed)
    img = random_image(rng, layers=3, entries=25)
    paths = [p for p, _ in ImageTree.build(img).walk()]
    return unshared_blocks(img, random_trace(rng, paths, ops=80, containers=2), 2)


@pytest.mark.parametrize("seed", range(6))
def test_random_images_and_traces(seed):
    model, kernel = random_case_blocks(seed)
    assert abs(model - kernel) <= RANDOM_FLOOR, (model, kernel)


@pytest.mark.parametrize("seed", [95086, 95460])
def test_renamed_image_symlinks_keep_their_inodes(seed):
    """Fuzz cases that rename image symbolic links and remove them under their new names:
    3 blocks over and 3 short before 0.2.9, when the model looked a moved link's inode up by
    its new name (tests/test_driver_devicemapper.py); exact now, in 5 of 5 runs of each
    alone.  Under the whole suite's load the kernel once counted 2 blocks more (95460:
    1,101 against 1,099), never fewer: the bound takes that, and still fails both before."""
    model, kernel = random_case_blocks(seed)
    assert 0 <= kernel - model <= 2, (model, kernel)


def test_an_fsync_leaves_what_it_logged_to_go_home_later():
    """Fuzz seed 95004's image, reduced to four operations: a file renamed over the only
    entry of a directory (a symlink, freed), an fsync elsewhere, the file unlinked, the
    directory removed.  The fsync forces the log; the directory's inode cluster is not
    written home before its chunk, now empty, is freed, so it is never written.  The model
    wrote the cluster home at the fsync: 4 blocks over before 0.2.9."""
    rng = np.random.default_rng(95004)
    img = random_image(rng, layers=3, entries=25)
    trace = ops({"op": "rename", "src": "/c/c", "dst": "/b/etc/x/etc/lib"}, {"op": "fsync", "path": "/d/x/etc"},
                {"op": "unlink", "path": "/b/etc/x/etc/lib"}, {"op": "rmdir", "path": "/b/etc/x/etc"})
    model, kernel = unshared_blocks(img, trace)
    assert 0 <= kernel - model <= 2, (model, kernel)


@pytest.mark.parametrize("seed", [0, 1, 5, 8])
def test_laid_image_inode_numbers_match_the_kernel(seed):
    """Every path of the laid image has the inode the kernel gave it: directories rotate
    over the AGs each mount, files follow their directory, freed inodes come back after
    the commit (drivers/xfsalloc.py)."""
    rng = np.random.default_rng(seed)
    img = random_image(rng, layers=3, entries=25)
    model = Run(make_driver("devicemapper", OPTS), img, 1).driver.layer_fs[img.layers[-1].id].view.inos
    real = kernel_inode_numbers(img, OPTS)
    assert model == real
