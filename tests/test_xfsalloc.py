"""xfs's allocation groups (drivers/xfsalloc.py), by hand on a fresh 10 GiB filesystem.

mkfs.xfs on 10 GiB (xfs_db here): 4 AGs of 655,360 blocks, agblklog 20, so an inode number
is (AG << 20 | block) << 3 | slot.  Free space starts at block 10 of each AG (headers 0-5,
free list 6-9), but in AG 2, where the log takes blocks 6-16,389 and the free list
16,390-16,393.  AG 0's first chunk is at block 16 (inodes 128-191: the root and the two
realtime inodes), so AG 0's data starts at block 10 and again at 24.
"""

from drivers.fsgeometry import Geometry
from drivers.xfsalloc import (NO_BLOCK, XFS_DIR_SF_HEADER, XFS_DIR_SF_MAX, XFS_ROOT_INO, XfsGroups,
                              sf_entry_bytes)

GIB10_BLOCKS = (10 << 30) // 4096
AGB = 655360  # blocks an AG


def fresh() -> XfsGroups:
    groups = XfsGroups.make(GIB10_BLOCKS)
    groups.mount()
    return groups


def test_mkfs_geometry():
    g = fresh()
    assert (g.agblocks, g.agblklog) == (AGB, 20)
    assert g.inode_block(XFS_ROOT_INO) == 16  # 128 >> 3
    assert g.cluster(XFS_ROOT_INO) == 16  # 16 KiB clusters of 32 inodes: blocks 16-19
    assert g.cluster(XFS_ROOT_INO + 40) == 20  # inode 168: the chunk's second, blocks 20-23
    assert g.cluster((3 << 20 | 16403) << 3 | 5) == 3 * AGB + 16400  # in AG 3
    geo = Geometry.make("xfs", 10 << 30)
    assert geo.log_start == (2 * AGB + 6) * 4096  # sb_logstart 2097158 = AG 2, block 6
    assert g.inode_block(25165953) == 3 * AGB + 16  # /a/s/z below: AG 3, block 16
    assert g.alloc(5, regular=True, near=0) == [(10, 5)]  # AG 0's first free run
    assert g.alloc(2, regular=True, near=0) == [(24, 2)]  # 15 alone is too short: past the chunk


def test_directories_rotate_over_the_ags_files_follow_their_directory():
    # Measured (a laid image, decoded): /a /b /c /d /e /a/s in AGs 0 1 2 3 0 1, /a/x in 0,
    # /a/s/z in 1, /top in 0 -- each the lowest free inode of its AG's chunk.
    g = fresh()
    a = g.new_inode(XFS_ROOT_INO, "a", is_dir=True)
    b = g.new_inode(XFS_ROOT_INO, "b", is_dir=True)
    c = g.new_inode(XFS_ROOT_INO, "c", is_dir=True)
    d = g.new_inode(XFS_ROOT_INO, "d", is_dir=True)
    assert a == 131  # after root, rbmino, rsumino
    assert b == (1 << 20 | 16) << 3 == 8388736  # AG 1's first chunk, at its block 16
    assert c == (2 << 20 | 16400) << 3 == 16908416  # AG 2's after the log: 16,394 aligned up to 8
    assert d == (3 << 20 | 16) << 3 == 25165952
    assert g.new_inode(XFS_ROOT_INO, "e", is_dir=True) == 132  # the rotor is back at AG 0
    assert g.new_inode(a, "x", is_dir=False) == 133
    s = g.new_inode(a, "s", is_dir=True)
    assert s == b + 1  # AG 1
    assert g.new_inode(s, "z", is_dir=False) == b + 2
    g.mount()  # a new mount starts the rotor at AG 0 again
    assert g.new_inode(b, "again", is_dir=True) == 134


def test_a_full_chunk_gets_the_next_one_contiguous():
    g = fresh()
    inos = [g.new_inode(XFS_ROOT_INO, f"f{i}", is_dir=False) for i in range(62)]
    assert inos[0] == 131 and inos[60] == 191  # 61 free in the root's chunk (blocks 16-23)
    assert inos[61] == 192  # the next chunk at block 24, right after it
    assert g.fresh == [24]  # ThinFs writes its 8 blocks (xfs_ialloc_inode_init)
    assert g.alloc(1, regular=True, near=0) == [(10, 1)]  # data still finds block 10 first


def test_freed_inodes_and_blocks_wait_for_the_commit():
    g = fresh()
    x = g.new_inode(XFS_ROOT_INO, "x", is_dir=False)
    blocks = g.alloc(3, regular=True, near=0)
    assert (x, blocks) == (131, [(10, 3)])
    g.free_inode(x, is_dir=False)
    g.release(10, 3)
    # inactivation is deferred and freed extents are busy until the log has them
    assert g.new_inode(XFS_ROOT_INO, "y", is_dir=False) == 132
    assert g.alloc(3, regular=True, near=0) == [(13, 3)]
    g.settle()
    assert g.new_inode(XFS_ROOT_INO, "z", is_dir=False) == 131
    assert g.alloc(3, regular=True, near=0) == [(10, 3)]


def test_snapshots_share_ags_until_they_change():
    base = fresh()
    snap = base.snapshot()
    assert snap.ags[1] is base.ags[1]
    snap.new_inode(XFS_ROOT_INO, "d", is_dir=True)  # AG 0
    assert snap.ags[0] is not base.ags[0] and snap.ags[1] is base.ags[1]
    assert base.new_inode(XFS_ROOT_INO, "d", is_dir=True) == 131  # the base did not see it


def test_full_devices_hand_out_blocks_past_their_end():
    # sizes stay symbolic: a 1 TiB file on a 10 GiB device is allocated, not refused
    g = fresh()
    pieces = g.alloc(1 << 28, regular=True, near=0)
    assert sum(n for _, n in pieces) == 1 << 28
    assert pieces[-1][0] == GIB10_BLOCKS


def test_shortform_directory_sizes():
    # xfs_dir2_sf: a 6-byte header; an entry is namelen 1 + offset 2 + name + ftype 1 + ino 4
    assert XFS_DIR_SF_HEADER + sf_entry_bytes("lib") == 6 + 11 == 17
    # 336 bytes of literal area hold 30 entries of 3-character names (6 + 30 * 11 = 336), not 31
    assert XFS_DIR_SF_HEADER + 30 * sf_entry_bytes("abc") == XFS_DIR_SF_MAX
    assert NO_BLOCK < 0
