"""zfs: small scenarios whose every number is computed by hand in the test.

Constants: recordsize R = 131072; ashift 9 (512-byte sectors); a file up to R is one block
of its size rounded up to 512; a dnode is 512 B, a directory's ZAP block 512 B; a metadata
change (create, unlink, chmod, ...) writes one 4096-B block.  Data blocks are allocated at
writeback (fsync, commit, end).  No ZFS here: model only.
"""

import pytest

from helpers import f, image, ops, run, view
from simulator.errors import BadInput

R = 131072
MiB = 1 << 20
BIG = image([f("/data/big", MiB)])


def w(path, offset, length, **kw):
    return {"op": "write", "path": path, "offset": offset, "length": length, **kw}


def test_a_4k_write_into_a_1mib_lower_file_costs_one_record():
    m = run("zfs", BIG, ops(w("/data/big", 0, 4096)))
    assert m["cow_blocks"] == 1
    assert m["copyup_bytes"] == R  # the shared record is read-modify-written whole
    assert (m["copyup_count"], m["copyup_meta_count"]) == (0, 0)
    assert (m["container_files"], m["container_data_bytes"], m["container_alloc_bytes"]) == (1, R, R)
    assert m["container_physical_bytes"] == R + 512  # the record + the file's dnode
    assert m["device_write_bytes"] == R
    assert m["image_physical_bytes"] == 8 * R + 512 + (512 + 512) == 1050112  # file, dnode, /data
    assert (m["whiteouts"], m["opaque_dirs"], m["lookup_depth_max"]) == (None, None, 1)


def test_writes_into_one_record_before_writeback_cost_one_record():
    m = run("zfs", BIG, ops(w("/data/big", 0, 4096), w("/data/big", 8192, 4096)))
    assert (m["cow_blocks"], m["copyup_bytes"]) == (1, R)
    whole = run("zfs", BIG, ops(w("/data/big", R, 65536), w("/data/big", R + 65536, 65536)))
    assert (whole["cow_blocks"], whole["copyup_bytes"]) == (1, 0)  # record 1 covered whole: no read


def test_a_record_rewritten_after_writeback_allocates_again_but_copies_nothing():
    m = run("zfs", BIG, ops(w("/data/big", 0, 4096), {"op": "fsync", "path": "/data/big"},
                            w("/data/big", 0, 4096)))
    assert m["cow_blocks"] == 2  # CoW: the private record gets a new block too
    assert m["copyup_bytes"] == R  # only the first write read the image's record
    assert m["device_write_bytes"] == 2 * R
    assert m["container_alloc_bytes"] == R  # the first private block was freed


def test_a_write_straddling_two_records():
    m = run("zfs", BIG, ops(w("/data/big", 130000, 10000)))
    # [130000, 140000) covers neither record 0 nor record 1 whole: both are read-modify-written
    assert (m["cow_blocks"], m["copyup_bytes"]) == (2, 2 * R)
    assert m["container_alloc_bytes"] == 2 * R


def test_a_small_file_is_one_block_of_its_size_in_sectors():
    img = image([f("/s", 1000)])
    m = run("zfs", img, ops(w("/s", 0, 100)))
    assert (m["cow_blocks"], m["copyup_bytes"], m["container_alloc_bytes"]) == (1, 1000, 1024)
    assert m["image_physical_bytes"] == 1024 + 512
    assert run("zfs", img, ops(w("/s", 0, 100)), ashift=12)["container_alloc_bytes"] == 4096
    grown = run("zfs", img, ops({"op": "append", "path": "/s", "length": 1000}))
    assert (grown["cow_blocks"], grown["copyup_bytes"], grown["container_alloc_bytes"]) == (1, 1000, 2048)
    past = run("zfs", img, ops(w("/s", 200000, 10)))
    # past R the block becomes record 0 (rewritten, keeping 1000 bytes) and record 1 is new
    assert (past["cow_blocks"], past["copyup_bytes"], past["container_alloc_bytes"]) == (2, 1000, 2 * R)
    assert past["container_data_bytes"] == 200010


def test_truncate_frees_the_tail_and_rewrites_the_record_holding_the_new_end():
    m = run("zfs", BIG, ops({"op": "truncate", "path": "/data/big", "size": 200000}))
    # records 2..7 go; record 1 keeps [131072, 200000) and is rewritten with its tail zeroed
    assert (m["cow_blocks"], m["copyup_bytes"]) == (1, 200000 - R)
    assert (m["container_alloc_bytes"], m["container_data_bytes"]) == (R, 200000 - R)
    aligned = run("zfs", BIG, ops({"op": "truncate", "path": "/data/big", "size": 2 * R}))
    assert (aligned["cow_blocks"], aligned["container_alloc_bytes"]) == (0, 0)
    retruncated = run("zfs", BIG, ops({"op": "create", "path": "/data/big", "size": 10}))
    assert (retruncated["cow_blocks"], retruncated["copyup_bytes"], retruncated["container_alloc_bytes"]) \
        == (1, 0, 512)  # O_TRUNC drops every record; 10 bytes take one 512-byte block


def test_new_files_attributes_and_deletions():
    m = run("zfs", BIG, ops({"op": "create", "path": "/new", "size": 300000}))
    assert (m["cow_blocks"], m["copyup_bytes"]) == (3, 0)  # ceil(300000 / R) records
    assert (m["container_data_bytes"], m["container_alloc_bytes"]) == (300000, 3 * R)
    assert m["container_physical_bytes"] == 3 * R + 512 + (512 + 512)  # + dnode + root dnode and ZAP
    assert m["device_write_bytes"] == 3 * R + 4096  # records + the create's metadata block
    opened = run("zfs", BIG, ops({"op": "open", "path": "/data/big", "mode": "rw"}))
    assert (opened["container_files"], opened["container_physical_bytes"], opened["cow_blocks"]) == (0, 0, 0)
    chmod = run("zfs", BIG, ops({"op": "chmod", "path": "/data/big", "mode": 0o600}))
    assert (chmod["container_files"], chmod["container_physical_bytes"], chmod["cow_blocks"]) == (1, 512, 0)
    gone = run("zfs", BIG, ops({"op": "unlink", "path": "/data/big"}))
    assert gone["container_physical_bytes"] == 512 + 512  # /data's dnode and ZAP; the data stays
    assert gone["image_physical_bytes"] == 1050112


def test_n_containers_reading_one_file_share_one_arc_copy():
    n = 5
    whole = run("zfs", BIG, ops(*({"op": "read", "path": "/data/big", "offset": 0, "length": MiB,
                                   "container": c} for c in range(n))), containers=n)
    assert whole["page_cache_bytes"] == MiB
    one_page = run("zfs", BIG, ops({"op": "read", "path": "/data/big", "offset": 0, "length": 4096}))
    assert one_page["page_cache_bytes"] == R  # the ARC holds the whole record
    trace = ops(w("/data/big", 0, 4096), {"op": "read", "path": "/data/big", "offset": 0, "length": 4096},
                {"op": "read", "path": "/data/big", "offset": 0, "length": 4096, "container": 1})
    assert run("zfs", BIG, trace, containers=2)["page_cache_bytes"] == 2 * R  # c0's own record + shared


def test_commit_puts_whole_files_in_the_layer_and_the_next_write_shares_again():
    m = run("zfs", BIG, ops(w("/data/big", 0, 4096), {"op": "commit"}, w("/data/big", 0, 4096)))
    assert m["commit_bytes"] == MiB  # the naive diff takes the file whole
    assert m["cow_blocks"] == 2  # the retired container's record and the new one's
    assert m["copyup_bytes"] == 2 * R
    assert m["image_physical_bytes"] == 2 * 1050112  # the committed layer holds the file again
    assert m["container_physical_bytes"] == R + 512


def test_recordsize_option():
    small = run("zfs", BIG, ops(w("/data/big", 0, 4096)), recordsize=4096)
    assert (small["cow_blocks"], small["copyup_bytes"], small["container_alloc_bytes"]) == (1, 0, 4096)
    big = run("zfs", BIG, ops(w("/data/big", 0, 4096)), recordsize=MiB)
    assert (big["cow_blocks"], big["copyup_bytes"]) == (1, MiB)
    for bad in (3000, 256, 2 * MiB):
        with pytest.raises(BadInput, match="recordsize"):
            run("zfs", BIG, [], recordsize=bad)


def test_the_view_is_the_other_drivers_view():
    trace = ops(w("/data/big", 5, 7), {"op": "truncate", "path": "/data/big", "size": 3},
                {"op": "rename", "src": "/data", "dst": "/d2"}, {"op": "link", "src": "/d2/big", "dst": "/l"})
    assert view("zfs", BIG, trace) == view("vfs", BIG, trace)
