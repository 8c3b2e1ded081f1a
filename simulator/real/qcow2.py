"""A qcow2 backing chain as the block-CoW reference for devicemapper (REAL_KERNEL.md 4b).

qcow2 with ``cluster_size=65536`` allocates a cluster in a layer the first time anything is
written into it, whether the cluster came from the backing file (then copied) or was never
written: exactly dm-thin's provisioning of 64 KiB blocks in a snapshot.  ``qemu-img check``
reports ``allocated-clusters`` of one layer only.  So replaying each thin device's written
byte ranges (the model's ``ThinDevice.written``) into one qcow2 layer per device, each
backed by its origin's layer, gives per device the clusters a real CoW chain allocates, to
set against the model's own chunks.  tests/test_qcow2_chain.py established the method.

No root, kernel or mount is needed; qemu-img/qemu-io (Debian qemu-utils) must be installed.
Writes go through ``qemu-io`` with many ``-c`` commands per process (~50 ms a process).
The layer files live in a ``scratch.ScratchDir`` (a fresh directory with a state file), so
the sparse files of a run killed with SIGKILL are found and deleted by ``layerbench
cleanup``; SIGTERM is raised as SystemExit (``guard_signals``) so ``finally`` deletes them.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Sequence

from simulator.errors import LayerbenchError
from simulator.ranges import RangeSet

from .requirements import require_tools
from .scratch import ScratchDir, guard_signals

QCOW2_CLUSTER = 65536  # qemu-img create -o cluster_size default, and dm-thin's 64 KiB block
COMMANDS_PER_PROCESS = 400  # qemu-io -c arguments per process: keeps argv well under ARG_MAX
VIRTUAL_SIZE = 1 << 44  # sparse, so any device size the model uses fits (16 TiB)


def check_available() -> None:
    require_tools(("qemu-img", "qemu-io"), "qemu-utils")


def _run(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise LayerbenchError(f"{' '.join(args[:4])} ...: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def make_layer(path: str, backing: str | None, ranges: RangeSet, cluster: int = QCOW2_CLUSTER) -> int:
    """Create one qcow2 layer over ``backing``, write ``ranges`` into it; its allocated clusters."""
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster}"]
    if backing is not None:
        cmd += ["-b", backing, "-F", "qcow2"]
    _run(cmd + [path, str(VIRTUAL_SIZE)])
    writes = [f"write -P 0xaa {s} {e - s}" for s, e in ranges]
    for i in range(0, len(writes), COMMANDS_PER_PROCESS):
        args = ["qemu-io", "-f", "qcow2"]
        for w in writes[i:i + COMMANDS_PER_PROCESS]:
            args += ["-c", w]
        _run(args + [path])
    return int(json.loads(_run(["qemu-img", "check", "--output=json", path]))["allocated-clusters"])


def chain_clusters(chain: Sequence[RangeSet], branches: Sequence[RangeSet] = (),
                   cluster: int = QCOW2_CLUSTER) -> tuple[list[int], list[int]]:
    """Allocated clusters of each layer of a linear ``chain`` (bottom first) and of each
    ``branches`` layer, all of which are backed by the chain's top (containers)."""
    check_available()
    with guard_signals():
        scratch = ScratchDir("layerbench-qcow2-")
        try:
            backing: str | None = None
            own = []
            for k, ranges in enumerate(chain):
                path = os.path.join(scratch.path, f"L{k}.qcow2")
                own.append(make_layer(path, backing, ranges, cluster))
                backing = path
            tops = [make_layer(os.path.join(scratch.path, f"C{c}.qcow2"), backing, ranges, cluster)
                    for c, ranges in enumerate(branches)]
            return own, tops
        finally:
            scratch.close()
