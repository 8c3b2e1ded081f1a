"""Runs of writes answered together (``simulator.writeruns``) cost exactly what the same
operations cost one by one (``Run.apply``): every metric, on every driver, on traces made of
interleaved writes and appends to a few files with every other kind of operation mixed in."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import make_driver
from simulator.costmodel import CostModel
from simulator.harness import Run
from simulator.ranges import RangeSet
from simulator.trace import Op
from workloads.random import random_image, random_trace

DRIVERS = (("overlay", {}), ("overlay", {"metacopy": True, "index": True}), ("aufs", {}),
           ("devicemapper", {}), ("devicemapper", {"chunk_size": 4096}), ("btrfs", {}),
           ("btrfs", {"max_inline": 0}), ("zfs", {}), ("vfs", {}))
IDS = [d + "".join(f",{k}" for k in o) for d, o in DRIVERS]
# Every cost term at 1: est_seconds is then the sum of every count the cost model reads, so
# a count the runs of writes missed shows there even where no metric reports it.
EVERY_TERM = CostModel(**{name: 1.0 for name in CostModel().as_dict()})


def random_write_case(seed: int, containers: int = 1):
    """A seeded random image and a trace on it: the random generator's 300 operations, then
    200 of ``write_heavy_trace`` (the equality tests of every replay shortcut use it)."""
    rng = np.random.default_rng(seed)
    image = random_image(rng, layers=3, entries=25)
    paths = sorted({e.path for layer in image.layers for e in layer.entries})
    return image, random_trace(rng, paths, 300, containers) + write_heavy_trace(rng, paths, 200, containers)


def write_heavy_trace(rng: np.random.Generator, paths: list[str], ops: int, containers: int,
                      page: int = 1) -> list[Op]:
    """Mostly writes and appends to a handful of files, interleaved, broken now and then by
    any other operation (the random trace generator's), so runs start, stop and resume; and
    now and then the directory of one of them is renamed, and the writes follow it there
    (paths the container never looked up, to files it owns).  ``page``: writes start and
    end on multiples of it (a database's page writes)."""
    hot = [p for p in paths if rng.random() < 0.5][:6] + ["/new-a", "/new-b"]
    others = iter(random_trace(rng, paths, ops, containers))
    out: list[Op] = [Op("create", "/new-a"), Op("create", "/new-b", size=5000)]
    for _ in range(ops):
        c = int(rng.integers(containers))
        path = hot[int(rng.integers(len(hot)))]
        roll = rng.random()
        if roll < 0.45:
            out.append(Op("append", path, container=c, length=int(rng.integers(0, 9000))))
        elif roll < 0.85:
            out.append(Op("write", path, container=c, offset=page * int(rng.integers(0, 300_000 // page)),
                          length=page * int(rng.integers(0, 20_000 // page))))
        elif roll < 0.88 and path.count("/") > 1:
            old = path.rsplit("/", 1)[0]
            new = f"{old}-moved{len(out)}"
            out.append(Op("rename", old, new, container=c))
            hot = [new + p[len(old):] if p.startswith(old + "/") else p for p in hot]
        else:
            out.append(next(others))
    return out


def metrics(driver: str, options: dict, image, ops: list[Op], containers: int, one_by_one: bool,
            tree=None) -> dict:
    """Every metric and cost count (``EVERY_TERM``) of a replay, batched or one by one: what
    the equality tests of every replay shortcut compare."""
    run = Run(make_driver(driver, options), image, containers, tree)
    if one_by_one:
        for op in ops:
            run.apply(op)
    else:
        run.replay(ops)
    return run.finish(EVERY_TERM)


@pytest.mark.parametrize("driver,options", DRIVERS, ids=IDS)
@pytest.mark.parametrize("seed", range(12))
def test_runs_of_writes_cost_what_one_by_one_costs(driver: str, options: dict, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = random_image(rng, layers=3, entries=20)
    paths = sorted({e.path for layer in image.layers for e in layer.entries})
    containers = 1 + seed % 3
    ops = write_heavy_trace(rng, paths, 400, containers)
    batched = metrics(driver, options, image, ops, containers, one_by_one=False)
    single = metrics(driver, options, image, ops, containers, one_by_one=True)
    assert batched == single
    assert batched["written_bytes"] > 0  # the trace did write: the comparison is not vacuous


@pytest.mark.parametrize("driver,options", DRIVERS, ids=IDS)
@pytest.mark.parametrize("seed", range(6))
def test_runs_of_page_writes_cost_what_one_by_one_costs(driver: str, options: dict, seed: int) -> None:
    """Sector-aligned writes into image files (btrfs answers such runs from their union
    alone, also where the image still holds sectors of the file)."""
    rng = np.random.default_rng(100 + seed)
    image = random_image(rng, layers=3, entries=20)
    paths = sorted({e.path for layer in image.layers for e in layer.entries})
    ops = write_heavy_trace(rng, paths, 400, 1, page=4096)
    batched = metrics(driver, options, image, ops, 1, one_by_one=False)
    assert batched == metrics(driver, options, image, ops, 1, one_by_one=True)
    assert batched["written_bytes"] > 0


def test_interleaved_appends_on_overlay_by_hand() -> None:
    """Two image files of 10,000 and 3,000 bytes appended to alternately, 3 times each with
    100 bytes: each is copied up whole once (13,000 bytes), 600 bytes are written, and the
    upper copies hold 10,300 + 3,300 bytes; 6 operations, 6 lookups."""
    from simulator.image import Entry, Image, Layer

    image = Image("hand", (Layer("l0", (Entry("/logs", "dir"), Entry("/logs/a", "file", size=10_000),
                                        Entry("/logs/b", "file", size=3_000))),))
    ops = [Op("append", p, length=100) for _ in range(3) for p in ("/logs/a", "/logs/b")]
    got = metrics("overlay", {}, image, ops, 1, one_by_one=False)
    assert got["copyup_count"] == 2
    assert got["copyup_bytes"] == 10_000 + 3_000
    assert got["written_bytes"] == 6 * 100
    assert got["container_data_bytes"] == 10_300 + 3_300
    assert got["lookups"] == 6


def _flushes(driver: str, image, ops: list[Op]) -> tuple[int, dict]:
    """How often the replay answered its queued runs, and the metrics (every cost term)."""
    from simulator import writeruns

    calls = []
    real_flush = writeruns.WriteRuns.flush

    def counting(self) -> None:
        calls.append(sum(bool(f.starts) for f in self._files.values()))
        real_flush(self)

    writeruns.WriteRuns.flush = counting  # type: ignore[method-assign]
    try:
        got = metrics(driver, {}, image, ops, 1, one_by_one=False)
    finally:
        writeruns.WriteRuns.flush = real_flush  # type: ignore[method-assign]
    return len(calls), got


@pytest.mark.parametrize("driver", ["overlay", "aufs", "btrfs", "vfs", "zfs", "devicemapper"])
def test_first_writes_and_reads_pass_queued_runs_but_not_their_file(driver: str) -> None:
    """/a is appended to three times, /b (its first write: overlay copies it up), /c (read),
    /s (a symbolic link to /a, created by the trace) come between: the drivers that let
    those kinds pass answer /a's run once, at the end, except where an operation reaches
    /a through the link (a read of /s flushes); devicemapper flushes at every other
    operation.  Either way every metric equals the one-by-one replay's."""
    from simulator.image import Entry, Image, Layer

    image = Image("hand", (Layer("l0", (Entry("/a", "file", size=10_000), Entry("/b", "file", size=3_000),
                                        Entry("/c", "file", size=5_000))),))
    ops = [Op("write", "/a", offset=0, length=10), Op("symlink", "/s", target="/a"),
           Op("append", "/a", length=100), Op("write", "/b", offset=0, length=10), Op("append", "/a", length=100),
           Op("read", "/c", offset=0, length=5_000), Op("append", "/a", length=100)]
    flushes, got = _flushes(driver, image, ops)
    assert got == metrics(driver, {}, image, ops, 1, one_by_one=True)
    assert flushes == (3 if driver == "devicemapper" else 1)
    flushes, got = _flushes(driver, image, ops + [Op("read", "/s", offset=0, length=1), Op("append", "/a", length=1)])
    assert flushes == (4 if driver == "devicemapper" else 2)
    assert got["read_bytes"] == 5_000 + 1 and got["written_bytes"] == 10 + 3 * 100 + 10 + 1


def test_add_many_equals_adding_one_by_one() -> None:
    rng = np.random.default_rng(7)
    for _ in range(500):
        one = RangeSet()
        for _ in range(int(rng.integers(4))):
            s = int(rng.integers(100))
            one.add(s, s + int(rng.integers(20)))
        many = one.copy()
        starts = [int(x) for x in rng.integers(0, 100, int(rng.integers(8)))]
        ends = [s + int(rng.integers(0, 20)) for s in starts]
        for s, e in zip(starts, ends):
            one.add(s, e)
        many.add_many(starts, ends)
        assert many == one
