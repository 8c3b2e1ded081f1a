"""overlay: small scenarios whose every number is computed by hand in the test.

Constants: 4096-byte blocks; a layer/upper inode costs 256 B and a directory one 4096-B
block (drivers/base.py); a metadata change writes one 4096-B block.
"""

import pytest

from helpers import d, f, image, ops, run, view
from simulator.errors import BadInput

MiB = 1 << 20
BIG = 8 * MiB


def test_one_byte_append_copies_the_whole_lower_file():
    img = image([f("/data/big", BIG)])
    m = run("overlay", img, ops({"op": "append", "path": "/data/big", "length": 1}))
    assert m["copyup_count"] == 1
    assert m["copyup_bytes"] == BIG
    assert m["copyup_meta_count"] == 1  # the ancestor /data
    assert (m["container_files"], m["container_data_bytes"]) == (1, BIG + 1)
    assert m["container_alloc_bytes"] == 2049 * 4096  # pages of 8 MiB + 1 byte
    # copy-up: 2048 blocks + its inode block; /data's copy-up: 1 block; writeback: 1 block
    assert m["device_write_bytes"] == 2048 * 4096 + 4096 + 4096 + 4096 == 8400896  # REAL_KERNEL: 8.40 MB
    assert m["container_physical_bytes"] == 2049 * 4096 + 2 * 256 + 4096
    assert m["image_physical_bytes"] == BIG + 2 * 256 + 4096
    assert m["ideal_bytes"] == BIG + 1
    assert m["written_bytes"] == 1
    assert m["write_amplification"] == 8400896 / 1


def test_a_gibibyte_lower_file_costs_no_memory():
    img = image([f("/big", 1 << 30)])
    m = run("overlay", img, ops({"op": "append", "path": "/big", "length": 1}))
    assert m["copyup_bytes"] == 1073741824
    assert m["container_data_bytes"] == (1 << 30) + 1


def test_o_trunc_copies_no_data_and_truncate_copies_all():
    img = image([f("/a", BIG), f("/b", BIG)])
    m = run("overlay", img, ops({"op": "create", "path": "/a", "size": 10},
                                {"op": "truncate", "path": "/b", "size": MiB}))
    assert m["copyup_count"] == 1 and m["copyup_bytes"] == BIG  # only truncate copies
    assert m["copyup_meta_count"] == 1  # the O_TRUNC copy-up moves metadata only
    assert m["container_data_bytes"] == 10 + MiB
    assert m["container_alloc_bytes"] == 4096 + MiB


def test_open_for_write_copies_up_without_writing():
    img = image([f("/a", 5000)])
    m = run("overlay", img, ops({"op": "open", "path": "/a", "mode": "rw"},
                                {"op": "open", "path": "/a", "mode": "r"}))
    assert (m["copyup_count"], m["copyup_bytes"], m["container_files"]) == (1, 5000, 1)
    assert m["container_alloc_bytes"] == 8192
    assert m["written_bytes"] == 0


@pytest.mark.parametrize("op", [
    {"op": "chmod", "path": "/a", "mode": 0o600},
    {"op": "chown", "path": "/a", "uid": 1, "gid": 1},
    {"op": "utime", "path": "/a"},
    {"op": "setxattr", "path": "/a", "name": "user.x", "size": 3},
])
def test_attribute_changes_copy_data_unless_metacopy(op):
    img = image([f("/a", BIG)])
    full = run("overlay", img, ops(op))
    assert (full["copyup_count"], full["copyup_bytes"], full["container_alloc_bytes"]) == (1, BIG, BIG)
    meta = run("overlay", img, ops(op), metacopy=True)
    assert (meta["copyup_count"], meta["copyup_meta_count"], meta["copyup_bytes"]) == (0, 1, 0)
    assert (meta["container_files"], meta["container_data_bytes"], meta["container_alloc_bytes"]) == (1, BIG, 0)
    then_write = run("overlay", img, ops(op, {"op": "write", "path": "/a", "offset": 0, "length": 1}), metacopy=True)
    assert (then_write["copyup_count"], then_write["copyup_bytes"]) == (1, BIG)  # data follows at first write


def test_deleting_lower_entries_leaves_whiteouts_and_recreating_a_dir_makes_it_opaque():
    img = image([f("/etc/a"), f("/etc/b"), d("/var/cache"), f("/var/cache/x", 100)])
    m = run("overlay", img, ops({"op": "unlink", "path": "/etc/a"},
                                {"op": "remove_tree", "path": "/var/cache"},
                                {"op": "mkdir", "path": "/var/cache"},
                                {"op": "create", "path": "/etc/new", "size": 1},
                                {"op": "unlink", "path": "/etc/new"}))  # upper-only: no whiteout
    assert m["whiteouts"] == 1  # /etc/a
    assert m["opaque_dirs"] == 1  # /var/cache
    assert m["container_files"] == 0
    assert m["failed_ops"] == 0


def test_recreating_a_deleted_lower_file_leaves_a_plain_file():
    img = image([f("/a", 100)])
    m = run("overlay", img, ops({"op": "unlink", "path": "/a"}, {"op": "create", "path": "/a", "size": 7}))
    assert (m["whiteouts"], m["container_files"], m["container_data_bytes"]) == (0, 1, 7)


def test_renaming_a_lower_directory_needs_redirect_dir():
    img = image([f("/dir/a", 10), f("/dir/b", 20)])
    trace = ops({"op": "rename", "src": "/dir", "dst": "/dir2"})
    refused = run("overlay", img, trace)
    assert refused["failed_ops"] == 1 and refused["container_files"] == 0
    allowed = run("overlay", img, trace, redirect_dir=True)
    assert allowed["failed_ops"] == 0
    assert (allowed["container_files"], allowed["whiteouts"], allowed["copyup_meta_count"]) == (0, 1, 1)
    assert "/dir2/b" in view("overlay", img, trace, redirect_dir=True)


def test_mv_falls_back_to_copying_on_exdev():
    img = image([f("/dir/a", 10), f("/dir/b", 20)])
    m = run("overlay", img, ops({"op": "move", "src": "/dir", "dst": "/dir2"}))
    assert m["failed_ops"] == 0
    assert (m["container_files"], m["container_data_bytes"]) == (2, 30)  # copies in the upper
    assert m["whiteouts"] == 1  # /dir, after rm -rf of the source
    assert m["written_bytes"] == 30 and m["read_bytes"] == 30
    assert m["copyup_count"] == 0


def test_hard_links_break_on_copy_up_without_index():
    img = image([f("/a", 100), {"path": "/b", "type": "hardlink", "target": "/a"}])
    trace = ops({"op": "append", "path": "/a", "length": 1})
    broken = view("overlay", img, trace)
    assert (broken["/a"]["size"], broken["/b"]["size"]) == (101, 100)
    kept = view("overlay", img, trace, index=True)
    assert (kept["/a"]["size"], kept["/b"]["size"]) == (101, 101)
    assert run("overlay", img, trace, index=True)["container_files"] == 1


def test_lookup_depth_probes_the_parents_stack():
    # root's stack is (l2, l1, l0); /d exists in l1 and l0; /e only in l2.
    img = image([f("/d/f")], [f("/d/g")], [f("/e/h")])
    m = run("overlay", img, ops({"op": "stat", "path": "/d/f"},        # l1 miss, l0 hit: 2
                                {"op": "stat", "path": "/d/missing"},  # negative: all of (l1, l0): 2
                                {"op": "stat", "path": "/e/h"},        # (l2): 1
                                {"op": "stat", "path": "/x"}))         # upper + 3 lowers, negative: 4
    assert m["lookups"] == 4 and m["failed_ops"] == 2
    assert m["lookup_depth_mean"] == (2 + 2 + 1 + 4) / 4
    assert (m["lookup_depth_p50"], m["lookup_depth_p99"], m["lookup_depth_max"]) == (2, 4, 4)


def test_containers_share_the_page_cache_of_lower_files():
    img = image([f("/lib.so", 3 * 4096 + 1)])
    trace = ops(*({"op": "read", "path": "/lib.so", "offset": 0, "length": 1 << 20, "container": c}
                  for c in range(3)))
    assert run("overlay", img, trace, containers=3)["page_cache_bytes"] == 4 * 4096
    assert run("vfs", img, trace, containers=3)["page_cache_bytes"] == 3 * 4 * 4096


def test_native_diff_commits_the_upper_directory():
    img = image([f("/a", 1000), f("/b", 2000)])
    m = run("overlay", img, ops({"op": "open", "path": "/a", "mode": "w"},  # copied up, unchanged
                                {"op": "create", "path": "/c", "size": 300},
                                {"op": "commit", "layer": "step"}))
    assert m["commit_bytes"] == 1000 + 300  # native diff: everything in the upper
    assert m["commit_files_scanned"] == 2
    assert m["container_files"] == 0  # the container goes on in a fresh writable layer


def test_layer_limit():
    layers = [[f(f"/f{i}")] for i in range(129)]
    with pytest.raises(BadInput, match="129 layers exceed driver overlay's limit of 128"):
        run("overlay", image(*layers), [])
    assert run("overlay", image(*layers), [], max_layers=500)["failed_ops"] == 0
