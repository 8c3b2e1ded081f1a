"""vfs: full copies, computed by hand (4 KiB blocks, 256-B inodes, a 4 KiB block per directory)."""

from helpers import f, image, ops, run

IMG = image([f("/a", 100), f("/d/b", 5000)], [{"path": "/a", "type": "whiteout"}, f("/c", 10)])
# view after l0: /a (1 block) /d/b (2 blocks), dir /d: 3 blocks, 3 entries, 1 dir
# view after l1: /d/b (2) /c (1):                3 blocks, 3 entries, 1 dir
COPY = 3 * 4096 + 3 * 256 + 4096


def test_every_layer_and_container_is_a_full_copy():
    m = run("vfs", IMG, [])
    assert m["image_physical_bytes"] == 2 * COPY
    assert m["container_physical_bytes"] == COPY
    assert (m["container_files"], m["container_data_bytes"], m["container_alloc_bytes"]) == (2, 5010, 3 * 4096)
    assert m["space_amplification"] == 3 * COPY / 5010
    assert (m["copyup_count"], m["copyup_bytes"], m["cow_blocks"], m["whiteouts"]) == (0, 0, None, None)


def test_writes_go_in_place_without_copy_up():
    m = run("vfs", IMG, ops({"op": "write", "path": "/d/b", "offset": 8192, "length": 100}))
    assert (m["copyup_count"], m["copyup_bytes"]) == (0, 0)
    assert m["container_alloc_bytes"] == (1 + 3) * 4096  # /c, and /d/b grown to 8292 bytes
    assert m["device_write_bytes"] == 4096  # one dirty block written back
    assert m["lookup_depth_max"] == 1


def test_reflink_copies_share_data():
    m = run("vfs", IMG, ops({"op": "write", "path": "/d/b", "offset": 0, "length": 1}), reflink=True)
    # layer 0 stores its data; layer 1 only its own /c; each copy pays metadata
    assert m["image_physical_bytes"] == (3 * 4096 + 3 * 256 + 4096) + (4096 + 3 * 256 + 4096)
    assert m["container_alloc_bytes"] == 4096  # the one block written
    assert m["container_physical_bytes"] == 4096 + 3 * 256 + 4096


def test_containers_each_hold_a_copy():
    m = run("vfs", IMG, [], containers=3)
    assert m["container_physical_bytes"] == 3 * COPY
    assert m["container_files"] == 6


def test_a_hard_link_made_private_through_one_name_counts_once():
    # /a/x and /b/y are one inode; writing through /a/x makes it private while /b stays the
    # image's directory: the copy holds one file of 101 bytes, not two.
    img = image([f("/a/x", 100), {"path": "/b/y", "type": "hardlink", "target": "/a/x"}])
    m = run("vfs", img, ops({"op": "append", "path": "/a/x", "length": 1}))
    assert (m["container_files"], m["container_data_bytes"]) == (1, 101)
