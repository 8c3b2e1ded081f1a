"""Speed-ups must not move a metric: every built-in workload on every driver (and overlay's
option sets) against a snapshot taken before the performance work (issue 7).

The snapshot, ``tests/data/metrics_snapshot.json``, holds the full metric dict of each case
except the simulator's own wall time and memory (``sim_seconds``, ``sim_peak_rss_bytes``);
``est_seconds`` is a pure function of the counts, so it must match to the last bit too.
A deliberate semantic change (a driver fix) regenerates it, and says so in its commit::

    LAYERBENCH_WRITE_SNAPSHOT=1 python3 -m pytest tests/test_metrics_snapshot.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from simulator.runner import Cell, run_cell

SNAPSHOT = Path(__file__).parent / "data" / "metrics_snapshot.json"
SIM_ONLY = ("sim_seconds", "sim_peak_rss_bytes")
IMAGE = "synthetic:layers=6,files=1500"
DRIVERS = (("overlay", {}), ("overlay", {"metacopy": True}), ("overlay", {"index": True}),
           ("overlay", {"redirect_dir": True}), ("aufs", {}), ("devicemapper", {}), ("btrfs", {}),
           ("zfs", {}), ("vfs", {}))
WORKLOADS = ("append-log:fsync_every=7", "overwrite-random", "small-files", "chmod-tree", "delete-tree:trees=2",
             "rename-dirs", "package-install", "read-startup", "import-scan", "build:steps=2", "mixed",
             "random:ops=300,containers=3")
EXTRA = (("demo", "demo:containers=2", 2, 0),  # (image, workload, containers, seed)
         *(("random:layers=5,entries=40", "random:ops=1500,containers=2", 2, seed) for seed in range(2, 6)))


def cases() -> list[tuple[str, Cell]]:
    out = []
    for driver, options in DRIVERS:
        tag = driver + "".join(f",{k}" for k in options)
        for workload in WORKLOADS:
            containers = 3 if "containers=3" in workload else 1
            out.append((f"{tag}|{IMAGE}|{workload}",
                        Cell(driver, IMAGE, workload, dict(options), containers, seed=1)))
        for image, workload, containers, seed in EXTRA:
            out.append((f"{tag}|{image}|{workload}|seed={seed}",
                        Cell(driver, image, workload, dict(options), containers, seed)))
    return out


def metrics_of(cell: Cell) -> dict:
    metrics = run_cell(cell)["metrics"]
    return {k: v for k, v in metrics.items() if k not in SIM_ONLY}


def test_snapshot_covers_every_case() -> None:
    if os.environ.get("LAYERBENCH_WRITE_SNAPSHOT"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        snap = {name: metrics_of(cell) for name, cell in cases()}
        SNAPSHOT.write_text(json.dumps(snap, indent=0, sort_keys=True) + "\n")
    snap = json.loads(SNAPSHOT.read_text())
    assert sorted(snap) == sorted(name for name, _ in cases())


@pytest.mark.parametrize("name,cell", cases(), ids=[name for name, _ in cases()])
def test_metrics_unchanged(name: str, cell: Cell) -> None:
    expected = json.loads(SNAPSHOT.read_text())[name]
    got = json.loads(json.dumps(metrics_of(cell)))  # the same JSON round trip as the snapshot
    assert got == expected


EDGE_LINES = [
    '{"op":"write","path":"/a/b","offset":1,"length":2}', '{"op":"write","path":"/a/b","offset":true,"length":2}',
    '{"op":"write","path":"/a/b","offset":-1,"length":2}', '{"op":"write","path":"/a/b","offset":1.0,"length":2}',
    '{"op":"write","path":"/a/b","offset":18446744073709551616,"length":2}',
    '{"op":"write","path":"/a/b","offset":1099511627776000,"length":1099511627776000}',
    '{"op":"append","path":"/a/.b","length":3}', '{"op":"append","path":"/a/..","length":3}',
    '{"op":"append","path":"/a//b","length":3}', '{"op":"append","path":"/a/b/","length":3}',
    '{"op":"append","path":"a/b","length":3}', '{"op":"append","path":"/","length":3}',
    '{"op":"append","path":"/a\\u0000b","length":3}', '{"op":"append","path":"/\\u00e9t\\u00e9","length":3}',
    '{"op":"append","path":"/' + "x" * 256 + '","length":3}', '{"op":"append","path":"/' + "x" * 254 + '","length":3}',
    '{"op":"append","path":["/a"],"length":3}', '{"op":"append","path":"/a","length":3,"extra":1}',
    '{"op":"append","length":3}', '{"op":"open","path":"/a","mode":"rw"}', '{"op":"open","path":"/a","mode":"x"}',
    '{"op":"open","path":"/a","mode":420}', '{"op":"chmod","path":"/a","mode":"rw"}', '{"op":"chmod","path":"/a","mode":420}',
    '{"op":"rename","src":"/a","dst":"/b","container":3}', '{"op":"link","src":"/a","dst":"/.b"}',
    '{"op":"symlink","target":"../x","path":"/l"}', '{"op":"setxattr","path":"/a","name":"user.x","size":3}',
    '{"op":"commit","layer":"L"}', '{"op":"stat","path":"/a","container":1000001}', '{"op":"nope","path":"/a"}',
    '[1]', '"\\ud800"', '{"op":"stat","path":"/a","op":"unlink"}', '', '   ', '{"op":"create","path":"/n","size":5,"mode":493}',
    '{"op":"mkdir","path":"/d"}', '{"op":"chown","path":"/a","uid":4294967296,"gid":0}', '{bad json',
]


@pytest.mark.parametrize("line", EDGE_LINES)
def test_fast_trace_parser_agrees_with_the_validator(line: str) -> None:
    """``parse_trace_lines``'s fast path accepts what ``op_from_dict`` accepts, builds the same
    ``Op`` and leaves every refusal (and its message) to the validator."""
    from simulator.errors import BadInput
    from simulator.trace import op_from_dict, parse_trace_lines

    def slow():
        if not line.strip():
            return []
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"t: line 1: invalid JSON: {exc.msg}"
        try:
            return [op_from_dict(raw, "t: line 1")]
        except BadInput as exc:
            return str(exc)

    try:
        fast = list(parse_trace_lines([line], "t"))
    except BadInput as exc:
        fast = str(exc)
    assert fast == slow()


def test_fast_trace_parser_round_trips_builtin_workloads() -> None:
    from simulator.imagetree import ImageTree
    from simulator.inputs import load_image, load_workload
    from simulator.trace import dump_trace, op_from_dict, parse_trace_lines

    image = load_image("synthetic:layers=4,files=800", 3)
    tree = ImageTree.build(image)
    for workload in WORKLOADS:
        ops = load_workload(workload, tree, 3)
        text = dump_trace(ops)
        assert list(parse_trace_lines(text.splitlines(), "t")) == ops
        assert [op_from_dict(json.loads(line), "t") for line in text.splitlines()] == ops
