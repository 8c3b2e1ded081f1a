"""aufs: small scenarios whose every number is computed by hand in the test.

Constants: 4096-byte blocks; an inode costs 256 B and a directory one 4096-B block
(drivers/base.py); a metadata change or a copy-up's inode writes one 4096-B block.  Every
rw branch holds aufs's own .wh..wh.aufs, .wh..wh.plnk/ and .wh..wh.orph/: 3 inodes and 2
directory blocks = 3 * 256 + 2 * 4096 = 8960 B.  No aufs here: model only.
"""

import pytest

from drivers.aufs import mount_batches
from helpers import d, f, image, ops, run, view
from simulator.costmodel import CostModel
from simulator.errors import BadInput

MiB = 1 << 20
RW_META = 3 * 256 + 2 * 4096


def test_a_4k_write_into_a_1mib_lower_file_copies_the_whole_mebibyte():
    img = image([f("/data/big", MiB)])
    m = run("aufs", img, ops({"op": "write", "path": "/data/big", "offset": 0, "length": 4096}))
    assert (m["copyup_count"], m["copyup_bytes"]) == (1, 1048576)
    assert m["copyup_meta_count"] == 1  # /data comes up first
    assert m["cow_blocks"] is None
    assert (m["container_files"], m["container_data_bytes"], m["container_alloc_bytes"]) == (1, MiB, MiB)
    # data + inodes of /data and the file + /data's block + the rw branch's own metadata
    assert m["container_physical_bytes"] == MiB + 2 * 256 + 4096 + RW_META == 1062144
    # copy-up: 256 blocks + its inode block; /data: 1 block; writeback of the 4 KiB: 1 block
    assert m["device_write_bytes"] == MiB + 4096 + 4096 + 4096


def test_open_for_write_copies_nothing_until_the_first_write():
    img = image([f("/a", 5000)])
    opened = run("aufs", img, ops({"op": "open", "path": "/a", "mode": "rw"}))
    assert (opened["copyup_count"], opened["copyup_bytes"], opened["container_files"]) == (0, 0, 0)
    assert opened["container_physical_bytes"] == RW_META
    written = run("aufs", img, ops({"op": "open", "path": "/a", "mode": "w"},
                                   {"op": "append", "path": "/a", "length": 1}))
    assert (written["copyup_count"], written["copyup_bytes"]) == (1, 5000)
    assert written["container_alloc_bytes"] == 8192  # 5001 bytes in 4 KiB blocks
    assert run("overlay", img, ops({"op": "open", "path": "/a", "mode": "rw"}))["copyup_bytes"] == 5000


def test_truncate_copies_only_what_it_keeps_and_o_trunc_nothing():
    img = image([f("/a", 8 * MiB), f("/b", 8 * MiB), f("/c", 100)])
    m = run("aufs", img, ops({"op": "truncate", "path": "/a", "size": MiB},  # len = ia_size: 1 MiB
                             {"op": "create", "path": "/b", "size": 10},  # O_TRUNC: len 0
                             {"op": "truncate", "path": "/c", "size": 1000}))  # growing: whole file
    assert m["copyup_bytes"] == MiB + 100
    assert (m["copyup_count"], m["copyup_meta_count"]) == (2, 1)
    assert m["container_data_bytes"] == MiB + 10 + 1000
    # /a 256 blocks, /b 1 block, /c: 100 copied bytes in 1 block (the rest is a hole)
    assert m["container_alloc_bytes"] == MiB + 4096 + 4096


@pytest.mark.parametrize("op", [
    {"op": "chmod", "path": "/a", "mode": 0o600},
    {"op": "chown", "path": "/a", "uid": 1, "gid": 1},
    {"op": "utime", "path": "/a"},
    {"op": "setxattr", "path": "/a", "name": "user.x", "size": 3},
    {"op": "rename", "src": "/a", "dst": "/b"},
    {"op": "link", "src": "/a", "dst": "/b"},
])
def test_attribute_and_name_changes_copy_the_whole_file(op):
    m = run("aufs", image([f("/a", 3 * MiB)]), ops(op))
    assert (m["copyup_count"], m["copyup_bytes"], m["container_alloc_bytes"]) == (1, 3 * MiB, 3 * MiB)


def test_whiteouts_and_opaque_dirs_are_links_to_the_whiteout_base():
    img = image([f("/etc/a"), f("/etc/b"), d("/var/cache"), f("/var/cache/x", 100)])
    m = run("aufs", img, ops({"op": "unlink", "path": "/etc/a"},
                             {"op": "remove_tree", "path": "/var/cache"},
                             {"op": "mkdir", "path": "/var/cache"}))
    # .wh.a; the old cache's .wh.x left with it (rmdir), and .wh.cache gave way to the new dir
    assert (m["whiteouts"], m["opaque_dirs"]) == (1, 1)
    # private dirs /etc, /var, /var/cache (new, opaque): 3 inodes and 3 blocks; no inode per whiteout
    assert m["container_physical_bytes"] == 3 * 256 + 3 * 4096 + RW_META


def test_renaming_a_directory_with_lower_children_is_exdev_unless_they_are_all_deleted():
    img = image([f("/d/x", 1), f("/d/y", 1), d("/empty")])
    refused = run("aufs", img, ops({"op": "rename", "src": "/d", "dst": "/e"}))
    assert refused["failed_ops"] == 1
    copied = run("aufs", img, ops({"op": "write", "path": "/d/x", "offset": 0, "length": 1},
                                  {"op": "unlink", "path": "/d/y"},
                                  {"op": "rename", "src": "/d", "dst": "/e"}))
    assert copied["failed_ops"] == 1  # /d/x is up, but the lower /d still has x
    emptied = ops({"op": "unlink", "path": "/d/x"}, {"op": "unlink", "path": "/d/y"},
                  {"op": "rename", "src": "/d", "dst": "/e"}, {"op": "rename", "src": "/empty", "dst": "/e2"})
    assert run("aufs", img, emptied)["failed_ops"] == 0
    assert run("overlay", img, emptied)["failed_ops"] == 2  # overlay refuses any lower directory
    mine = ops({"op": "mkdir", "path": "/n"}, {"op": "create", "path": "/n/f", "size": 1},
               {"op": "rename", "src": "/n", "dst": "/m"})
    assert run("aufs", img, mine)["failed_ops"] == 0
    moved = view("aufs", img, ops({"op": "move", "src": "/d", "dst": "/e"}))  # mv copies on EXDEV
    assert view("vfs", img, ops({"op": "move", "src": "/d", "dst": "/e"})) == moved
    assert "/e/x" in moved and "/d" not in moved


def test_hard_links_survive_copy_up():
    img = image([f("/bin/a", 1000), {"path": "/bin/b", "type": "hardlink", "target": "/bin/a"}])
    trace = ops({"op": "append", "path": "/bin/a", "length": 24})
    assert view("aufs", img, trace)["/bin/b"]["size"] == 1024
    assert view("overlay", img, trace)["/bin/b"]["size"] == 1000  # overlay without index breaks it
    assert run("aufs", img, trace)["copyup_bytes"] == 1000


def test_lookup_depth_counts_branches_and_extra_probes_and_permission_checks():
    # /usr exists in all 3 layers; /usr/f only in the bottom one.
    img = image([d("/usr"), f("/usr/f", 1)], [d("/usr"), f("/usr/g", 1)], [d("/usr"), f("/usr/h", 1)])
    trace = ops({"op": "stat", "path": "/usr/f"}, {"op": "stat", "path": "/usr/nope"})
    m = run("aufs", img, trace)
    assert (m["lookups"], m["lookup_depth_max"], m["lookup_depth_mean"]) == (2, 3, 3)  # 3 branches each
    base = run("aufs", img, trace, dirperm1=True)
    cost = CostModel()
    # whiteout probes: 3 + 3; permission: the root spans 4 branches, /usr 3 -> (3 + 2) extra per lookup
    extra = 6 * cost.probe_seconds + 2 * (3 + 2) * cost.perm_check_seconds
    assert m["est_seconds"] == pytest.approx(base["est_seconds"] + 2 * (3 + 2) * cost.perm_check_seconds)
    ovl = run("overlay", img, trace)
    assert ovl["lookup_depth_mean"] == 3
    assert m["est_seconds"] == pytest.approx(ovl["est_seconds"] + extra)


def test_mount_data_fits_40_branches_then_38_per_append_remount():
    # page 4096 - 54 reserved = 4042: "br:<90>=rw" = 96, ":<90>=ro+wh" = 97 -> (4042-96)//97 = 40
    # "append:<90>=ro+wh," = 104 -> 4042//104 = 38 per remount
    assert mount_batches(40, False) == (40, 0)
    assert mount_batches(41, False) == (40, 1)
    assert mount_batches(78, False) == (40, 1)
    assert mount_batches(79, False) == (40, 2)
    assert mount_batches(126, True) == (40, 3)  # 4033: still 40 and 38; 86 more -> 3 remounts
    cost = CostModel()
    flat = [[f(f"/l{i}", 1)] for i in range(41)]
    m41 = run("aufs", image(*flat), [])
    m40 = run("aufs", image(*flat[:40]), [])
    # one more layer: one more mounted layer and one remount
    assert m41["est_seconds"] - m40["est_seconds"] == pytest.approx(cost.mount_layer_seconds + cost.mount_seconds)


def test_max_branches_counts_the_rw_branch():
    flat = [[f(f"/l{i}", 1)] for i in range(4)]
    assert run("aufs", image(*flat), [], max_branches=5)["ops"] == 0
    with pytest.raises(BadInput, match="4 layers exceed driver aufs.s limit of 3"):  # 3 ro + rw = 4
        run("aufs", image(*flat), [], max_branches=4)
    with pytest.raises(BadInput):
        run("aufs", image(*flat), [], max_branches=1)


def test_n_containers_reading_one_file_share_one_page_cache():
    img = image([f("/lib.so", 10 * 4096 + 1)])
    trace = ops(*({"op": "read", "path": "/lib.so", "offset": 0, "length": 50000, "container": c}
                  for c in range(5)))
    assert run("aufs", img, trace, containers=5)["page_cache_bytes"] == 11 * 4096


def test_native_diff_takes_the_rw_branch_without_files_only_opened():
    img = image([f("/a", 100), f("/b", 200), f("/c", 300)])
    m = run("aufs", img, ops({"op": "open", "path": "/a", "mode": "w"},
                             {"op": "append", "path": "/b", "length": 5},
                             {"op": "commit"}))
    assert m["commit_bytes"] == 205  # /b whole; /a never reached the rw branch
    assert m["commit_files_scanned"] == 1  # the rw branch holds /b only
