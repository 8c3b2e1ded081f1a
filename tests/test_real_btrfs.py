"""The btrfs model against a real btrfs on a loop file (REAL_KERNEL.md section 3).

For seeded random images and traces, with ``max_inline=0`` and with the default, the
simulator's ``container_alloc_bytes`` must equal the containers' exclusive bytes from
``btrfs filesystem du`` exactly, failed operations must agree, and the model's data
extents plus metadata must be within 10% of the qgroup exclusive figure.  The hand-made
scenarios of tests/test_driver_btrfs.py are replayed too.  Each case takes ~0.2 s
(mkfs + mount + a snapshot per layer and container + sync).
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from drivers import make_driver
from helpers import d, f, image, ops, why_unavailable
from simulator.costmodel import CostModel
from simulator.harness import Run
from simulator.imagetree import ImageTree
from workloads.random import random_image, random_trace

pytestmark = pytest.mark.kernel

from simulator.real.btrfs import btrfs_session, check_available, measure_btrfs

UNAVAILABLE = why_unavailable(check_available)

QGROUP_TOLERANCE = 0.10  # the metadata model is an estimate (leaves CoW'd), the data exact


@pytest.fixture(autouse=True)
def _needs_btrfs():
    if UNAVAILABLE:
        pytest.skip(f"real btrfs unavailable: {UNAVAILABLE}")


def compare(img, trace, containers, **options):
    drv = make_driver("btrfs", options)
    r = Run(drv, img, containers)
    for op in trace:
        r.apply(op)
    m = r.finish(CostModel())
    sim = [mount.usage() for mount in r.mounts]
    real = measure_btrfs(img, trace, containers, drv.options)
    assert m["failed_ops"] == real["failed_ops"]
    assert m["written_bytes"] == real["written_bytes"]
    assert m["container_alloc_bytes"] == real["container_alloc_bytes"]  # exact: fi du exclusive
    model_q = sum(u["qgroup_exclusive"] for u in sim)
    assert abs(model_q - real["qgroup_exclusive_bytes"]) <= QGROUP_TOLERANCE * real["qgroup_exclusive_bytes"], \
        (model_q, real["qgroup_exclusive_bytes"])
    return m, real


@pytest.mark.parametrize("max_inline", [0, 2048])
@pytest.mark.parametrize("seed", range(8))
def test_random_images_and_traces_match_fi_du_exactly(seed, max_inline):
    rng = np.random.default_rng(seed)
    img = random_image(rng)
    paths = [p for p, _ in ImageTree.build(img).walk()]
    trace = random_trace(rng, paths, ops=40, containers=2)
    compare(img, trace, 2, max_inline=max_inline)


@pytest.mark.parametrize("seed", range(4))
def test_larger_random_cases_match_too(seed):
    # 4 layers of ~25 entries: fs trees of one or several leaves; 150 ops over 3 containers
    rng = np.random.default_rng(seed)
    img = random_image(rng, layers=4, entries=25)
    paths = [p for p, _ in ImageTree.build(img).walk()]
    compare(img, random_trace(rng, paths, ops=150, containers=3), 3)


NODE = 16384  # mkfs.btrfs's default nodesize
# One directory of 300 files: ten leaves, so the fs tree's last leaf holds none of the items
# the operations below touch.  Removing an inode's last name adds an ORPHAN_ITEM under
# objectid -5 (after every inode: the last leaf) until the inode is evicted, so that leaf is
# the snapshot's too (dump-tree: the last leaf's owner is the container's subvolume).
BIG_DIR_IMAGE = [d("/a"), d("/a/e")] + [f(f"/a/f{i:03}", 5000) for i in range(300)]
# A rename over /a/f000 (its last name goes too) read 5 nodes in most runs and 6 in up to
# half of them under load: the model says 5, but the case is not steady enough to pin here.
LEAF_CASES = {  # trace, nodes the container owns (kernel 6.18: 12 runs each, all 12)
    "unlink": ([{"op": "unlink", "path": "/a/f000"}], 5),
    "rmdir": ([{"op": "rmdir", "path": "/a/e"}], 5),
    # another name is left: no orphan item, one node fewer than the unlink alone
    "unlink-one-of-two-names": ([{"op": "link", "src": "/a/f000", "dst": "/a/f000b"},
                                 {"op": "unlink", "path": "/a/f000"}], 4),
}
# Changes undone by the end still rewrote leaves, how many depends on whether a commit fell
# between them (the kernel delays DIR_INDEX items, and an insertion removed before it is
# flushed never reaches a leaf).  Measured over 12 runs: a name moved away and back (it
# returns with the directory's highest DIR_INDEX) 5 or 6 nodes, half and half; a file made
# and removed, 3 (8 runs) or 4.  The model says 5 and 4; before it saw such changes it said
# 2 and 1, the final state alone.
UNDONE_CASES = {
    "rename-there-and-back": ([{"op": "rename", "src": "/a/f150", "dst": "/a/x"},
                               {"op": "rename", "src": "/a/x", "dst": "/a/f150"}], 5),
    "create-then-unlink": ([{"op": "create", "path": "/a/new", "size": 10},
                            {"op": "unlink", "path": "/a/new"}], 4),
}


def _model_nodes(img, trace) -> int:
    r = Run(make_driver("btrfs"), img, 1)
    for op in trace:
        r.apply(op)
    r.finish(CostModel())
    return r.mounts[0].usage()["qgroup_exclusive"] // NODE


def _real_nodes(img, trace, runs: int) -> list[int]:
    return sorted(measure_btrfs(img, trace, 1, make_driver("btrfs").options)["qgroup_exclusive_bytes"] // NODE
                  for _ in range(runs))


@pytest.mark.parametrize("name", sorted(LEAF_CASES))
def test_the_leaves_a_name_change_rewrites_are_the_kernels(name):
    raw, nodes = LEAF_CASES[name]
    img, trace = image(BIG_DIR_IMAGE), ops(*raw)
    assert _model_nodes(img, trace) == nodes
    assert _real_nodes(img, trace, 3)[1] == nodes  # the median of three: one stray run does not decide


# relatime on a symbolic link walked through, as on a first read: its inode item (here in the
# last leaf, the link made last) is rewritten.  Kernel 6.18, 3 runs each, all alike.
LINK_IMAGE = BIG_DIR_IMAGE + [{"path": "/z", "type": "symlink", "target": "a"}]
LINK_CASES = {
    "stat": ([{"op": "stat", "path": "/a/f150"}], 1),
    "stat-through-a-link": ([{"op": "stat", "path": "/z/f150"}], 2),
    "read-through-a-link": ([{"op": "read", "path": "/z/f150", "offset": 0, "length": 10}], 3),
}


# relatime on reads (kernel 6.18, 3 runs each, all alike): a read past the end updates atime
# (filemap_read: file_accessed at EOF too), a read of 0 bytes does not (generic_file_read_iter
# returns first: "skip atime"), so it costs what a stat costs.
LINK_CASES.update({
    "read-of-0-bytes": ([{"op": "read", "path": "/a/f150", "offset": 0, "length": 0}], 1),
    "read-past-the-end": ([{"op": "read", "path": "/a/f150", "offset": 1_000_000, "length": 10}], 2),
})


@pytest.mark.parametrize("name", sorted(LINK_CASES))
def test_atime_updates_cost_the_kernels_leaves(name):
    raw, nodes = LINK_CASES[name]
    img, trace = image(LINK_IMAGE), ops(*raw)
    assert _model_nodes(img, trace) == nodes
    assert _real_nodes(img, trace, 3)[1] == nodes


@pytest.mark.parametrize("name", sorted(UNDONE_CASES))
def test_changes_undone_by_the_end_still_cow_their_leaves(name):
    raw, nodes = UNDONE_CASES[name]
    img, trace = image(BIG_DIR_IMAGE), ops(*raw)
    assert _model_nodes(img, trace) == nodes
    reals = _real_nodes(img, trace, 3)
    assert reals[0] - 1 <= nodes <= reals[-1] + 1, reals  # within a node of what the kernel did


MiB = 1 << 20
SCENARIOS = {
    "aligned-4k": ([f("/big", MiB)], [{"op": "write", "path": "/big", "offset": 4096, "length": 4096}]),
    "one-byte": ([f("/big", MiB)], [{"op": "write", "path": "/big", "offset": 5000, "length": 1}]),
    "extend-and-write-past-eof": ([f("/s", 10000), f("/t", 10000)],
                                  [{"op": "truncate", "path": "/s", "size": 20000},
                                   {"op": "write", "path": "/t", "offset": 65536, "length": 1}]),
    "inline-conversion": ([f("/f", 1000), f("/g", 1000)],
                          [{"op": "append", "path": "/f", "length": 2000},
                           {"op": "truncate", "path": "/g", "size": 1500}]),
    "bookend": ([], [{"op": "create", "path": "/n", "size": MiB}, {"op": "fsync", "path": "/n"},
                     {"op": "truncate", "path": "/n", "size": 4096}]),
    "flush-on-close": ([f("/f", 10000)], [{"op": "create", "path": "/f", "size": 200000},
                                          {"op": "truncate", "path": "/f", "size": 100}]),
    "cut-inside-a-dirty-page": ([f("/d", 10000)], [{"op": "write", "path": "/d", "offset": 200000, "length": 200000},
                                                   {"op": "truncate", "path": "/d", "size": 200000}]),
    "rename-over": ([f("/f", 10000)], [{"op": "create", "path": "/n", "size": 200000},
                                       {"op": "rename", "src": "/n", "dst": "/f"},
                                       {"op": "truncate", "path": "/f", "size": 100}]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_hand_made_scenarios_match(name):
    entries, trace = SCENARIOS[name]
    compare(image(entries), ops(*trace), 1)


def _mounted(path):
    with open("/proc/mounts") as fh:
        return any(path in line for line in fh)


def _loops(path):
    return subprocess.run(["losetup", "-j", os.path.join(path, "bt.img")], capture_output=True, text=True).stdout


def test_session_cleans_up_on_exception():
    seen = {}
    with pytest.raises(RuntimeError):
        with btrfs_session(image([f("/a", 10)]), make_driver("btrfs").options) as s:
            seen["path"] = s.path
            assert _mounted(s.path) and _loops(s.path)
            raise RuntimeError("boom")
    assert not _mounted(seen["path"]) and not os.path.exists(seen["path"])


def test_session_cleans_up_on_sigterm():
    code = ("import sys, time\n"
            "from drivers import make_driver\n"
            "from simulator.image import image_from_dict\n"
            "from simulator.real.btrfs import btrfs_session\n"
            "img = image_from_dict({'name': 't', 'layers': [{'id': 'l', 'entries': []}]})\n"
            "with btrfs_session(img, make_driver('btrfs').options) as s:\n"
            "    print(s.path, flush=True)\n"
            "    time.sleep(60)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        path = child.stdout.readline().strip()
        assert path and _mounted(path)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
    deadline = time.monotonic() + 5
    while _mounted(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _mounted(path) and not os.path.exists(path)
