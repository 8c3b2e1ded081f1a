"""Runs of stats answered together (``simulator.statruns``) cost exactly what the same stats
cost one by one (``Run.apply``): every metric, cost count and lookup depth, on every driver,
on traces where runs of stats (present, missing, through links, under files, repeated)
interleave with every other kind of operation in several containers."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import make_driver
from simulator import statruns
from simulator.harness import Run
from simulator.image import Entry, Image, Layer
from simulator.trace import Op
from workloads.random import random_image, random_trace

from test_writeruns import DRIVERS, EVERY_TERM, IDS

# aufs with dirperm1 too: its lookups count no permission checks (``tabled_lookups``)
STAT_DRIVERS = DRIVERS + (("aufs", {"dirperm1": True}),)
STAT_IDS = IDS + ["aufs,dirperm1"]


@pytest.fixture(params=[1, statruns.STRETCH_RUN], ids=["stretches", "few"])
def stretch_run(request, monkeypatch) -> int:
    """Runs taken in stretches from 1 stat on (every run here), or from the default length
    on (none here but the long ones: a run of a few goes one by one, ``statruns._few``)."""
    monkeypatch.setattr(statruns, "STRETCH_RUN", request.param)
    return request.param


def stat_heavy_trace(rng: np.random.Generator, paths: list[str], ops: int, containers: int) -> list[Op]:
    """Runs of 1-12 stats, each of an image path, a missing name beside one, a name below
    one (ENOTDIR under a file, ENOENT under a missing directory) or a repeat, between
    single operations of the random generator (which create, remove and rename)."""
    others = iter(random_trace(rng, paths, ops, containers))
    out: list[Op] = []
    while len(out) < ops:
        c = int(rng.integers(containers))
        for _ in range(int(rng.integers(1, 13))):
            path = paths[int(rng.integers(len(paths)))]
            roll = rng.random()
            if roll < 0.25:
                path = f"{path}.missing"
            elif roll < 0.35:
                path = f"{path}/below"
            elif roll < 0.5 and out and out[-1].kind == "stat":
                path = out[-1].path
            out.append(Op("stat", path, container=c))
        out.append(next(others))
    return out


def replayed(driver: str, options: dict, image: Image, ops: list[Op], containers: int, one_by_one: bool):
    """Every metric and cost count (``EVERY_TERM``), the depth histogram and each
    container's cold lookups, after a replay batched or one by one."""
    run = Run(make_driver(driver, options), image, containers)
    if one_by_one:
        for op in ops:
            run.apply(op)
    else:
        run.replay(ops)
    spaces = [run.namespace(c) for c in range(containers)]
    colds = [(ns.cost.cold_lookups, ns.cost.cold_dir_layers, sorted(ns.cost.looked_up)) for ns in spaces]
    return run.finish(EVERY_TERM), dict(run.driver.depth_hist), colds


@pytest.mark.parametrize("driver,options", STAT_DRIVERS, ids=STAT_IDS)
@pytest.mark.parametrize("seed", range(10))
def test_runs_of_stats_cost_what_one_by_one_costs(driver: str, options: dict, seed: int, stretch_run: int) -> None:
    rng = np.random.default_rng(200 + seed)
    image = random_image(rng, layers=3, entries=25)
    paths = sorted({e.path for layer in image.layers for e in layer.entries})
    containers = 1 + seed % 3
    ops = stat_heavy_trace(rng, paths, 400, containers)
    batched = replayed(driver, options, image, ops, containers, one_by_one=False)
    assert batched == replayed(driver, options, image, ops, containers, one_by_one=True)
    metrics = batched[0]
    assert metrics["lookups"] > 200 and 0 < metrics["failed_ops"] < metrics["ops"]  # not vacuous


def test_a_run_of_stats_on_overlay_by_hand(stretch_run: int) -> None:
    """Two layers, both with /a; /a/x in the lower one.  Stats of /a/x, /a/z (missing),
    /a/x again, /nope/q (ENOENT on the way) and /a/x/q (ENOTDIR on the way): the last two
    fail before any lookup (resolve refuses them), /a/z fails after one; 3 lookups.  Merged
    /a has 2 layers: x is found in the second probed (2 probes), z in none (2 probes).  Cold
    lookups: /a/x and its directory /a (with its 2 layers), then /a/z."""
    image = Image("hand", (Layer("l0", (Entry("/a", "dir"), Entry("/a/x", "file", size=10))),
                           Layer("l1", (Entry("/a", "dir"), Entry("/a/y", "file", size=10)))))
    ops = [Op("stat", p) for p in ("/a/x", "/a/z", "/a/x", "/nope/q", "/a/x/q")]
    for one_by_one in (False, True):
        metrics, depths, colds = replayed("overlay", {}, image, ops, 1, one_by_one)
        assert metrics["ops"] == 5
        assert metrics["failed_ops"] == 3
        assert metrics["lookups"] == 3
        assert depths == {2: 3}
        assert colds == [(3, 2, ["/a", "/a/x", "/a/z"])]


def _changed_image(seed: int):
    """A random image, its paths and 60 random operations that make some of its directories
    private and remove some names."""
    rng = np.random.default_rng(seed)
    image = random_image(rng, layers=3, entries=25)
    paths = sorted({e.path for layer in image.layers for e in layer.entries})
    return image, paths, random_trace(rng, paths, 60, 1)


def _after(driver: str, options: dict, image, setup):
    """(run, namespace, mount) of a container that replayed ``setup``."""
    run = Run(make_driver(driver, options), image, 1)
    run.replay(setup)
    return run, run.namespace(0), run.driver.get("container-0")


@pytest.mark.parametrize("driver,options", DRIVERS, ids=IDS)
def test_each_drivers_lookup_many_is_its_lookups_in_order(driver: str, options: dict) -> None:
    """A driver's own ``lookup_many`` leaves the depths and every count of the default one
    (``BaseMount.lookup_many``: ``lookup`` for each, in order), on the image names of
    each directory and a missing one (one group per directory), after random operations made some directories
    private and removed some names."""
    from collections import Counter

    from drivers.base import BaseMount
    from simulator.nodes import DIR_TYPES

    image, paths, setup = _changed_image(7)

    def lookups(lookup_many) -> tuple[Counter, dict]:
        run, ns, mount = _after(driver, options, image, setup)
        parents, groups = [], []
        for where in [""] + paths:
            d = ns.root if not where else ns.exists(where)
            if d.__class__ in DIR_TYPES:
                parents.append(d)
                groups.append([p.rpartition("/")[2] for p in paths if p.rpartition("/")[0] == where] + ["missing"])
        depths: Counter = Counter()
        lookup_many(mount, parents, groups, depths)
        return depths, run.finish(EVERY_TERM)

    own = lookups(lambda mount, parents, groups, depths: mount.lookup_many(parents, groups, depths))
    assert own == lookups(BaseMount.lookup_many)
    assert sum(own[0].values()) > 20


def test_cold_keys_held_back_go_in_before_a_directory_is_asked_about(stretch_run: int) -> None:
    """``stat_run`` adds the cold keys of a stretch in a known directory to ``looked_up``
    together; a later stat whose directory is one of those keys must find it there.  One
    layer: /a, /a/b (a directory) and /a/b/x.  Stats of /a/q (missing), /a/b, /a/b/x, /a/b/y
    (missing), /a/b/ (a trailing slash: the name "" in /a/b, missing) and /a/b again.
    Cold lookups: /a (its walk, 1 layer), /a/q, /a/b, /a/b/x, /a/b/y, /a/b/ = 6, the directory
    layers 1: /a/b was looked up by the stat of /a/b, so its first walk as a directory adds
    no key.  Held back past that walk, /a/b would count twice and add its layer (7 and 2).
    Failed: /a/q, /a/b/y, /a/b/ = 3; every stat is one lookup of depth 1 (one layer)."""
    image = Image("hand", (Layer("l0", (Entry("/a", "dir"), Entry("/a/b", "dir"),
                                        Entry("/a/b/x", "file", size=10))),))
    ops = [Op("stat", p) for p in ("/a/q", "/a/b", "/a/b/x", "/a/b/y", "/a/b/", "/a/b")]
    results = [replayed(driver, {}, image, ops, 1, one_by_one)
               for driver in ("overlay", "aufs") for one_by_one in (False, True)]
    assert results[0] == results[1] and results[2] == results[3]
    metrics, depths, colds = results[0]
    assert (metrics["ops"], metrics["failed_ops"], metrics["lookups"]) == (6, 3, 6)
    assert depths == {1: 6}
    assert colds == [(6, 1, ["/a", "/a/b", "/a/b/", "/a/b/x", "/a/b/y", "/a/q"])]


@pytest.mark.parametrize("driver,options", STAT_DRIVERS, ids=STAT_IDS)
def test_each_drivers_lookup_table_is_its_lookups(driver: str, options: dict) -> None:
    """Where a driver answers ``lookup_table`` for a directory, the table's depths and
    ``tabled_lookups`` leave the depths and every count that ``lookup`` for each name leaves
    (``BaseMount.lookup_many``): on the image names of each directory (directories among
    them) and a missing one, twice over in two stretches of the same directory, after random
    operations made some directories private and removed some names."""
    from collections import Counter

    from drivers.base import BaseMount
    from simulator.nodes import DIR_TYPES
    from simulator.statruns import _children_get

    image, paths, setup = _changed_image(11)

    def lookups(tabled: bool) -> tuple[Counter, dict, int, int]:
        run, ns, mount = _after(driver, options, image, setup)
        parents, groups = [], []
        for where in [""] + paths:
            d = ns.root if not where else ns.exists(where)
            if d.__class__ in DIR_TYPES and mount.lookup_table(d) is not None:
                names = [p.rpartition("/")[2] for p in paths if p.rpartition("/")[0] == where] + ["missing"]
                parents += [d, d]
                groups += [names, names[::-1]]
        depths: Counter = Counter()
        found: list = []
        if tabled:
            answers = []
            for d, group in zip(parents, groups):
                get, default = mount.lookup_table(d)
                answers += [get(name, default) for name in group]
                found += [node for node in map(_children_get(d), group) if node is not None]
            depths.update(answers)
            counts = [len(group) for group in groups]
            mount.tabled_lookups(parents, counts, Counter(answers), found)
        else:
            BaseMount.lookup_many(mount, parents, groups, depths)
        return depths, run.finish(EVERY_TERM), len(parents), sum(n.__class__ in DIR_TYPES for n in found)

    tabled = lookups(True)
    assert tabled[:2] == lookups(False)[:2]
    if driver in ("overlay", "aufs"):  # the drivers with tables: not vacuous
        assert tabled[2] >= 4 and tabled[3] >= 2 and sum(tabled[0].values()) > 20
    else:
        assert tabled[2] == 0
