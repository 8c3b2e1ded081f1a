"""btrfs: small scenarios whose every number is computed by hand in the test.

Constants: 4096-byte sectors, 16384-byte metadata nodes written twice (DUP), files up to
2048 bytes inline, extents of at most 128 MiB.  A small container's fs tree is one leaf,
so its private metadata is that one node: 16384 B, 32768 B on disk with DUP.  Each
behaviour asserted here was measured on the real btrfs (drivers/btrfs.py docstring) and
the random cases are replayed on it by tests/test_real_btrfs.py.
"""

import numpy as np
import pytest

from drivers import make_driver
from helpers import f, image, ops, run
from simulator.costmodel import CostModel
from simulator.errors import BadInput
from simulator.harness import Run

KiB, MiB = 1 << 10, 1 << 20
NODE_ON_DISK = 2 * 16384  # one metadata node, DUP


def usage(img, trace, containers=1, **options):
    """The driver's per-container figures (what fi du and qgroups show) and the metrics."""
    r = Run(make_driver("btrfs", options), img, containers)
    for op in trace:
        r.apply(op)
    m = r.finish(CostModel())
    return [mount.usage() for mount in r.mounts], m


def test_aligned_4k_write_into_a_1mib_lower_file_copies_nothing():
    img = image([f("/big", MiB)])
    (u,), m = usage(img, ops({"op": "write", "path": "/big", "offset": 4096, "length": 4096}))
    assert m["copyup_bytes"] == 0  # a full-sector overwrite writes elsewhere, no read
    assert m["container_alloc_bytes"] == u["fi_du_exclusive"] == 4096  # measured: 4096
    assert m["cow_blocks"] == 1
    assert m["container_data_bytes"] == 4096
    assert m["container_physical_bytes"] == 4096 + NODE_ON_DISK
    assert u["qgroup_exclusive"] == 4096 + 16384  # measured: 20480
    assert m["copyup_count"] == 0 and m["whiteouts"] is None and m["opaque_dirs"] is None


def test_one_byte_write_read_modify_writes_one_sector():
    img = image([f("/big", MiB)])
    (u,), m = usage(img, ops({"op": "write", "path": "/big", "offset": 5000, "length": 1}))
    assert m["copyup_bytes"] == 4096  # sector 1 read, 1 byte changed, written elsewhere
    assert m["container_alloc_bytes"] == 4096
    # device: 1 data sector + one transaction (7 nodes x 16 KiB x 2 DUP + 2 superblocks x 4 KiB)
    # = 4096 + 229376 + 8192, exactly REAL_KERNEL's 1-byte overwrite in a snapshot
    assert m["device_write_bytes"] == 4096 + 7 * 16384 * 2 + 2 * 4096 == 241664


def test_a_run_of_page_writes_leaves_the_image_sectors_it_did_not_write():
    """Replayed (runs of writes): the first write copies nothing up; the run of two aligned
    writes after it is answered from its union, which takes sector 1 from the image; after a
    stat ends that run, one-byte writes into sectors 1 and 2 read only sector 2 first, the
    only one of them the image still holds."""
    img = image([f("/big", 10_000)])  # sectors 0, 1, 2 (the last one partial)
    trace = ops({"op": "write", "path": "/big", "offset": 0, "length": 4096},
                {"op": "write", "path": "/big", "offset": 4096, "length": 4096},
                {"op": "write", "path": "/big", "offset": 0, "length": 4096},
                {"op": "stat", "path": "/big"},
                {"op": "write", "path": "/big", "offset": 4100, "length": 1},
                {"op": "write", "path": "/big", "offset": 8200, "length": 1})
    r = Run(make_driver("btrfs"), img, 1)
    r.replay(trace)
    m = r.finish(CostModel())
    assert m["copyup_bytes"] == 4096
    assert m["written_bytes"] == 3 * 4096 + 2
    assert m == run("btrfs", img, trace)  # one by one


def test_straddling_write_costs_every_sector_it_touches():
    img = image([f("/big", MiB)])
    _, m = usage(img, ops({"op": "write", "path": "/big", "offset": 6000, "length": 8192}))
    # [6000, 14192) touches sectors 1, 2, 3; head and tail are partial: 2 sectors read
    assert m["container_alloc_bytes"] == 3 * 4096
    assert m["copyup_bytes"] == 2 * 4096


def test_n_containers_reading_one_file_need_n_copies_of_page_cache():
    img = image([f("/lib.so", 10 * 4096)])
    trace = ops(*({"op": "read", "path": "/lib.so", "offset": 0, "length": 10 * 4096, "container": c}
                  for c in range(3)))
    assert run("btrfs", img, trace, containers=3)["page_cache_bytes"] == 3 * 10 * 4096


def test_reading_before_and_after_writing_is_one_inode_in_the_page_cache():
    img = image([f("/a", 8192)])
    trace = ops({"op": "read", "path": "/a", "offset": 0, "length": 8192},
                {"op": "write", "path": "/a", "offset": 0, "length": 1},
                {"op": "read", "path": "/a", "offset": 0, "length": 8192})
    assert run("btrfs", img, trace)["page_cache_bytes"] == 8192


def test_append_rewrites_the_tail_sector():
    img = image([f("/s", 10000)])
    _, m = usage(img, ops({"op": "append", "path": "/s", "length": 100}))
    assert m["container_alloc_bytes"] == 4096  # sector 2 = [8192, 12288): measured 4096
    assert m["copyup_bytes"] == 4096
    _, m = usage(img, ops({"op": "append", "path": "/s", "length": 10000}))
    assert m["container_alloc_bytes"] == 3 * 4096  # [10000, 20000) -> sectors 2..4: measured 12288


@pytest.mark.parametrize("size, alloc", [
    (5000, 0),  # shrinking only trims the shared extent: measured 0
    (8192, 0),
    (0, 0),
    (20000, 4096),  # growing from 10000 zeroes (rewrites) the old tail sector: measured 4096
    (MiB, 4096),  # the rest is a hole
])
def test_truncate_of_an_inherited_file(size, alloc):
    img = image([f("/s", 10000)])
    assert run("btrfs", img, ops({"op": "truncate", "path": "/s", "size": size}))["container_alloc_bytes"] == alloc


def test_growing_from_an_aligned_size_leaves_a_hole():
    img = image([f("/big", MiB)])
    assert run("btrfs", img, ops({"op": "truncate", "path": "/big", "size": 2 * MiB}))["container_alloc_bytes"] == 0


def test_a_write_past_eof_rewrites_the_old_tail_too():
    img = image([f("/s", 10000)])
    _, m = usage(img, ops({"op": "write", "path": "/s", "offset": 65536, "length": 1}))
    assert m["container_alloc_bytes"] == 4096 + 4096  # old tail sector 2 + sector 16: measured 8192
    assert m["copyup_bytes"] == 4096  # only sector 2 held image data


@pytest.mark.parametrize("size, max_inline, alloc", [
    (1000, 2048, 0), (2048, 2048, 0),  # inline in the leaf: measured 0
    (2049, 2048, 4096),  # measured 4096
    (1000, 0, 4096),  # max_inline=0: REAL_KERNEL "a 1000-byte file then shows 4096"
    (4095, 65536, 0),  # the mount clamps max_inline to the sector (shows max_inline=4096): measured 0
    (4096, 65536, 4096),  # never inline at a whole sector: measured 4096
    (0, 2048, 0),
])
def test_small_new_files_go_inline(size, max_inline, alloc):
    m = run("btrfs", image([]), ops({"op": "create", "path": "/n", "size": size}), max_inline=max_inline)
    assert m["container_alloc_bytes"] == alloc
    assert m["container_files"] == 1
    assert m["container_data_bytes"] == size


@pytest.mark.parametrize("op, alloc", [
    ({"op": "append", "path": "/f", "length": 100}, 0),  # 1100 B: still inline
    ({"op": "append", "path": "/f", "length": 2000}, 4096),  # 3000 B: converted, measured 4096
    ({"op": "truncate", "path": "/f", "size": 1500}, 0),
    ({"op": "truncate", "path": "/f", "size": 20000}, 4096),  # measured 4096
    ({"op": "write", "path": "/f", "offset": 8192, "length": 1}, 8192),  # sector 0 + sector 2: measured
])
def test_an_inherited_inline_file_converts_when_it_outgrows_the_limit(op, alloc):
    img = image([f("/f", 1000)])
    assert run("btrfs", img, ops(op))["container_alloc_bytes"] == alloc


def test_a_file_cut_below_the_limit_and_rewritten_goes_inline():
    img = image([f("/f", 4096)])
    trace = ops({"op": "truncate", "path": "/f", "size": 100},
                {"op": "write", "path": "/f", "offset": 0, "length": 50})
    assert run("btrfs", img, trace)["container_alloc_bytes"] == 0  # measured: 0


def test_bookend_keeps_the_whole_old_extent():
    trace = ops({"op": "create", "path": "/n", "size": MiB}, {"op": "fsync", "path": "/n"},
                {"op": "truncate", "path": "/n", "size": 4096})
    (u,), m = usage(image([]), trace)
    assert m["container_alloc_bytes"] == u["fi_du_exclusive"] == 4096  # fi du: the referenced part
    assert u["data_extent_bytes"] == MiB  # qgroup: measured 1 MiB
    assert m["cow_blocks"] == 256
    assert m["container_physical_bytes"] == MiB + NODE_ON_DISK


def test_overwrite_after_writeback_allocates_again_and_frees_a_wholly_replaced_extent():
    trace = ops({"op": "create", "path": "/n", "size": 200000}, {"op": "fsync", "path": "/n"},
                {"op": "write", "path": "/n", "offset": 100000, "length": 1})
    (u,), _ = usage(image([]), trace)
    assert u["fi_du_exclusive"] == 49 * 4096  # measured 200704
    assert u["data_extent_bytes"] == 49 * 4096 + 4096  # bookend: measured 204800
    trace = ops({"op": "create", "path": "/n", "size": MiB}, {"op": "fsync", "path": "/n"},
                {"op": "write", "path": "/n", "offset": 0, "length": MiB})
    (u,), _ = usage(image([]), trace)
    assert u["data_extent_bytes"] == u["fi_du_exclusive"] == MiB  # measured 1048576 both


def test_extents_are_at_most_128_mib():
    trace = ops({"op": "create", "path": "/n", "size": 200 * MiB}, {"op": "fsync", "path": "/n"},
                {"op": "truncate", "path": "/n", "size": 64 * MiB})
    (u,), _ = usage(image([]), trace)
    assert u["fi_du_exclusive"] == 64 * MiB
    assert u["data_extent_bytes"] == 128 * MiB  # the first extent (128 MiB) stays; the 72 MiB one is freed


def test_truncate_to_zero_flushes_the_next_writes_at_close():
    # O_TRUNC of an existing file sets BTRFS_INODE_FLUSH_ON_CLOSE: the 200000 B are allocated
    # at close, so the later cut leaves a bookend and sector 0 a regular extent (measured:
    # fi du 4096, qgroup data 200704).  A new file is not flushed and ends inline (0).
    img = image([f("/f", 10000)])
    cut = {"op": "truncate", "path": "/f", "size": 100}
    (u,), _ = usage(img, ops({"op": "create", "path": "/f", "size": 200000}, cut))
    assert (u["fi_du_exclusive"], u["data_extent_bytes"]) == (4096, 49 * 4096)
    (u,), _ = usage(img, ops({"op": "unlink", "path": "/f"}, {"op": "create", "path": "/f", "size": 200000}, cut))
    assert (u["fi_du_exclusive"], u["data_extent_bytes"]) == (0, 0)
    # an open for reading consumes the flag (measured: 0)
    (u,), _ = usage(img, ops({"op": "truncate", "path": "/f", "size": 0}, {"op": "open", "path": "/f", "mode": "r"},
                             {"op": "write", "path": "/f", "offset": 0, "length": 200000}, cut))
    assert u["data_extent_bytes"] == 0


def test_rename_over_a_non_empty_file_flushes_the_source():
    img = image([f("/f", 10000), f("/z", 0)])
    for target, whole in (("/f", 49 * 4096), ("/z", 0), ("/new", 0)):  # measured 200704, 0, 0
        trace = ops({"op": "create", "path": "/n", "size": 200000}, {"op": "rename", "src": "/n", "dst": target},
                    {"op": "truncate", "path": target, "size": 100})
        (u,), _ = usage(img, trace)
        assert u["data_extent_bytes"] == whole, target


def test_hard_links_count_once_and_renames_chmods_unlinks_cost_no_data():
    img = image([f("/big", MiB)])
    trace = ops({"op": "create", "path": "/n", "size": 8192}, {"op": "link", "src": "/n", "dst": "/h"},
                {"op": "rename", "src": "/big", "dst": "/g"}, {"op": "chmod", "path": "/g", "mode": 0o600},
                {"op": "unlink", "path": "/g"})
    m = run("btrfs", img, trace)
    assert m["container_alloc_bytes"] == 8192  # measured 8192
    assert m["container_files"] == 1


def test_metadata_dup_doubles_only_the_metadata_on_disk():
    img = image([f("/big", MiB)])
    trace = ops({"op": "write", "path": "/big", "offset": 0, "length": 4096})
    dup = run("btrfs", img, trace)
    single = run("btrfs", img, trace, metadata_dup=False)
    assert dup["container_physical_bytes"] - single["container_physical_bytes"] == 16384
    # image: 1 MiB of data + its one leaf (x2 with DUP)
    assert dup["image_physical_bytes"] == MiB + NODE_ON_DISK
    assert single["image_physical_bytes"] == MiB + 16384


def test_many_new_objects_fill_several_leaves():
    # measured: 50 new dirs with one empty file each -> qgroup exclusive 65536 (4 nodes)
    trace = []
    for i in range(50):
        trace += [{"op": "mkdir", "path": f"/d{i}"}, {"op": "create", "path": f"/d{i}/x", "size": 0}]
    (u,), _ = usage(image([]), ops(*trace))
    assert u["metadata_nodes"] == 4
    assert u["qgroup_exclusive"] == 65536


@pytest.mark.parametrize("opt", [{"sector_size": 1000}, {"node_size": 3}, {"max_inline": -1},
                                 {"metadata_dup": "maybe"}, {"nodesize": 16384}])
def test_bad_options_are_refused(opt):
    with pytest.raises(BadInput):
        make_driver("btrfs", opt)


def test_a_tebibyte_file_costs_no_memory():
    img = image([f("/huge", 1 << 40)])
    trace = ops({"op": "write", "path": "/huge", "offset": 0, "length": 1 << 40}, {"op": "fsync", "path": "/huge"},
                {"op": "truncate", "path": "/huge", "size": 4096})
    (u,), _ = usage(img, trace)
    assert u["fi_du_exclusive"] == 4096
    assert u["data_extent_bytes"] == 128 * MiB  # 8192 extents of 128 MiB written; one left


def test_cutting_inside_a_dirty_page_keeps_it_dirty():
    # write [200000, 400000) into a 10000-B file (zeroes its old tail sector 2), then cut at
    # 200000: the page of sector 48 = [196608, 200704) was dirty and stays so, tail zeroed
    img = image([f("/d", 10000)])
    trace = ops({"op": "write", "path": "/d", "offset": 200000, "length": 200000},
                {"op": "truncate", "path": "/d", "size": 200000})
    assert run("btrfs", img, trace)["container_alloc_bytes"] == 2 * 4096  # sectors 2 and 48


def _index_of(st) -> dict:
    """A file's sector index regrouped per run: run -> its intervals in the index."""
    per_run: dict = {}
    for start, end, run in zip(st._ref_starts, st._ref_ends, st._ref_runs):
        per_run.setdefault(run, []).append((start, end))
    return per_run


@pytest.mark.parametrize("seed", range(8))
def test_the_sector_index_holds_exactly_every_runs_references(seed):
    """``FileState``'s index of referenced sectors (what a rewrite bisects) against the runs
    themselves, after page writes, appends, truncates and fsyncs in random order: sorted,
    disjoint, and per run exactly its ``refs``; no run is left referencing nothing."""
    from simulator.trace import Op
    from simulator.viewstats import private_inodes

    rng = np.random.default_rng(seed)
    img = image([f("/db", 64 * 4096), f("/log", 3000)])
    trace = []
    for _ in range(400):
        path = "/db" if rng.random() < 0.7 else "/log"
        kind = rng.choice(["write", "write", "append", "truncate", "fsync"])
        if kind == "write":
            trace.append(Op("write", path, offset=int(rng.integers(0, 80)) * 4096 + int(rng.integers(0, 2)) * 100,
                            length=int(rng.integers(1, 5)) * 4096))
        elif kind == "append":
            trace.append(Op("append", path, length=int(rng.integers(1, 9000))))
        elif kind == "truncate":
            trace.append(Op("truncate", path, size=int(rng.integers(0, 90)) * 4096 + int(rng.integers(0, 4096))))
        else:
            trace.append(Op("fsync", path))
    r = Run(make_driver("btrfs", {"max_inline": 0}), img, 1)
    r.replay(trace)
    r.mounts[0].flush_pending()
    states = [inode.drv for inode in private_inodes(r.namespace(0)) if inode.drv is not None]
    assert states and sum(len(st.runs) for st in states) >= 5  # the scenario left several runs
    for st in states:
        starts, ends = st._ref_starts, st._ref_ends
        assert all(s < e for s, e in zip(starts, ends))
        assert all(e <= s for e, s in zip(ends, starts[1:]))  # sorted and disjoint
        assert _index_of(st) == {run: list(run.refs) for run in st.runs}
        assert all(run.refs for run in st.runs)


def test_dropping_sectors_inside_a_run_splits_its_index_entry_by_hand():
    """A new file's writeback of sectors 0-9 and 20-29 makes two runs; dropping 3-4 splits the
    first (left 0-2, right 5-9), dropping 8-21 cuts the first's right part and the second's
    left part, and dropping 0-2 leaves the first run only 5-7."""
    from drivers.btrfs_layout import FileState
    from simulator.nodes import FileInode
    from simulator.ranges import RangeSet

    st = FileState(FileInode(120 * 1024, 0o644, 0, 0, None), 0, 4096)
    st.rewrite(RangeSet([(0, 10), (20, 30)]), chunk=32768)
    first, second = st.runs
    st.drop(3, 5)
    assert (st._ref_starts, st._ref_ends, st._ref_runs) == ([0, 5, 20], [3, 10, 30], [first, first, second])
    st.drop(8, 22)
    assert (st._ref_starts, st._ref_ends) == ([0, 5, 22], [3, 8, 30])
    assert list(first.refs) == [(0, 3), (5, 8)] and list(second.refs) == [(22, 30)]
    st.drop(0, 3)
    assert list(st.runs) == [first, second] and list(first.refs) == [(5, 8)]
    st.drop(5, 30)
    assert list(st.runs) == [] and st._ref_starts == []
