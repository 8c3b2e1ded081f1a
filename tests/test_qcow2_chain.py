"""devicemapper's chunk counts against a real block-CoW chain: qcow2 backing files.

qcow2 with ``cluster_size=65536`` behaves as a dm-thin snapshot chain with 64 KiB chunks:
a layer allocates a cluster the first time anything is written into it, whether the
cluster came from a backing file (then copied) or was never written (REAL_KERNEL.md 4b;
no root, kernel or mount needed).  ``qemu-img check`` reports ``allocated-clusters`` of one
layer only.  So for the same block writes, a layer's allocated clusters must equal the
chunks the model provisions for the matching thin device.

Two checks:
* a trace of writes on a file inherited from the image: the test turns each write into the
  4 KiB fs blocks it dirties at the file's device offset (its own arithmetic, not the
  model's) and writes those into the top qcow2 layer over a backing file holding the image.
  qcow2 has no filesystem, so only the file's data chunks are compared: the model's
  container chunks that hold the file's blocks (its fs metadata - inode, journal, super
  block - lives in other chunks, far from the file: checked below).
* a whole chain: every byte range the model wrote to each device (mkfs, each layer's untar,
  the container's workload with its metadata and journal) is replayed into one qcow2 layer
  per device; each layer's allocated clusters must equal that device's own chunks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from drivers import make_driver
from helpers import f, image, ops
from simulator.costmodel import CostModel
from simulator.harness import Run
from simulator.ranges import RangeSet

QEMU_IMG, QEMU_IO = shutil.which("qemu-img"), shutil.which("qemu-io")
pytestmark = pytest.mark.skipif(not (QEMU_IMG and QEMU_IO),
                                reason="qemu-img/qemu-io not installed (Debian package qemu-utils)")
CLUSTER = 65536
FS_BLOCK = 4096
BASE_SIZE = 1 << 30  # a smaller base device keeps mkfs's writes small; qcow2 is sparse anyway
COMMANDS_PER_PROCESS = 400


def make_layer(path: Path, backing: Path | None, ranges: RangeSet) -> int:
    """Create one qcow2 layer, write ``ranges`` into it, return its allocated clusters."""
    cmd = [QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", f"cluster_size={CLUSTER}"]
    if backing is not None:
        cmd += ["-b", str(backing), "-F", "qcow2"]
    subprocess.run(cmd + [str(path), str(BASE_SIZE * 8)], check=True)
    writes = [f"write -P 0xaa {s} {e - s}" for s, e in ranges]
    for i in range(0, len(writes), COMMANDS_PER_PROCESS):
        args = [QEMU_IO, "-f", "qcow2"]
        for w in writes[i:i + COMMANDS_PER_PROCESS]:
            args += ["-c", w]
        subprocess.run(args + [str(path)], check=True, capture_output=True)
    out = subprocess.run([QEMU_IMG, "check", "--output=json", str(path)], check=True, capture_output=True)
    return json.loads(out.stdout)["allocated-clusters"]


def own_chunks_within(own: RangeSet, ranges: RangeSet) -> int:
    """Chunks of ``own`` (chunk indices) that hold bytes of ``ranges``."""
    return sum(own.overlap(s, e) for s, e in ranges.units(CLUSTER))


# /pad makes /big start mid-chunk, and keeps it out of the 64 KiB cluster of xfs's first
# inode chunk (blocks 16-23), whose inode the write dirties: /pad takes 24-48, /big from 49
IMG = image([f("/pad", 100_000), f("/big", 3 << 20)])
PATTERNS = {
    "one byte": [(7, 1)],
    "straddling 100 KiB": [(60000, 100 * 1024)],
    "whole aligned chunks": [(0, 1 << 20)],
    "scattered bytes": [(i * 100_000 + 3, 1) for i in range(30)],
    "rewrite after fsync": [(0, 10), "fsync", (100, 10), (70_000, 5000), "fsync", (70_100, 1)],
    "tail and interior": [((3 << 20) - 1, 1), (1 << 20, 200_000)],
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_file_writes_allocate_what_qcow2_allocates(tmp_path, name, fs):
    trace = []
    for w in PATTERNS[name]:
        if w == "fsync":
            trace.append({"op": "fsync", "path": "/big"})
        else:
            trace.append({"op": "write", "path": "/big", "offset": w[0], "length": w[1]})
    run = Run(make_driver("devicemapper", {"fs": fs, "base_size": BASE_SIZE}), IMG, 1)
    for op in ops(*trace):
        assert run.apply(op)
    run.finish(CostModel())
    big = run.driver.layer_fs["l0"].layout.file(2)  # ImageTree numbers files 1 (/pad), 2 (/big)
    assert len(big.extents) == 1
    start, length = big.extents[0]
    file_ranges = RangeSet([(start, start + length)])
    # The test's own mapping: a write dirties whole fs blocks at start + file offset.
    blocks = RangeSet()
    for w in PATTERNS[name]:
        if w != "fsync":
            off, n = w
            blocks.add(start + off // FS_BLOCK * FS_BLOCK, start + -(-(off + n) // FS_BLOCK) * FS_BLOCK)
    base = make_layer(tmp_path / "image.qcow2", None, file_ranges)
    assert base == file_ranges.count_units(CLUSTER)
    top = make_layer(tmp_path / "ctr.qcow2", tmp_path / "image.qcow2", blocks)
    device = run.mounts[0].fs.device
    assert own_chunks_within(device.own, file_ranges) == top
    assert top == blocks.count_units(CLUSTER)  # qcow2 itself: one cluster per touched cluster


CHAIN = image([f("/etc/a", 10_000), f("/etc/b", 3000), f("/bin/sh", 150_000)],
              [f("/etc/c", 5000), {"path": "/etc/b", "type": "whiteout"}, f("/usr/lib/x", 70_000)],
              [f("/app/main", 1_000_000), {"path": "/bin/ls", "type": "symlink", "target": "sh"}])
CHAIN_TRACE = ops({"op": "write", "path": "/bin/sh", "offset": 1000, "length": 10},
                  {"op": "append", "path": "/etc/a", "length": 100_000},
                  {"op": "create", "path": "/app/new", "size": 20_000},
                  {"op": "fsync", "path": "/app/new"},
                  {"op": "unlink", "path": "/etc/c"},
                  {"op": "mkdir", "path": "/app/run"},
                  {"op": "write", "path": "/app/main", "offset": 500_000, "length": 65536})


@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_whole_chain_per_layer_matches_allocated_clusters(tmp_path, fs):
    run = Run(make_driver("devicemapper", {"fs": fs, "base_size": BASE_SIZE}), CHAIN, 1)
    for op in CHAIN_TRACE:
        assert run.apply(op)
    metrics = run.finish(CostModel())
    driver = run.driver
    devices = [driver.base.device] + [driver.layer_fs[f"l{i}"].device for i in range(3)] \
        + [run.mounts[0].fs.device]
    backing = None
    for dev in devices:
        path = tmp_path / f"{dev.id}.qcow2"
        assert make_layer(path, backing, dev.written) == dev.own_chunks(), dev.id
        backing = path
    assert metrics["cow_blocks"] == devices[-1].own_chunks()
