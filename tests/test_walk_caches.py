"""The replay's remembered walks cost exactly what walking every path afresh costs.

What is remembered (issue 7: distinct-path workloads): every directory of a walk
(``simulator.walks.walk_dirs``), the cold-lookup keys a walk hands to ``CostCounts.note_cold``,
aufs's branch permission checks per path (``AufsMount._perm_at``) and the page
cache's one-run-of-pages keys (``PageCache``).  The reference run turns all of that off: each
path goes through the general walk (``walks.resolve_links``, which remembers nothing and gives no
keys), aufs walks from the root at every lookup, and each operation is applied one by one
(``Run.apply``).  Every metric and every cost count (each cost term at 1) must be equal, on
every driver, for random traces (failures, renames and removals of directories included)
and for the distinct-path built-in workloads.  Two driver shortcuts are checked against the
long way too: devicemapper's image-file records found by bisection, and dm-thin's partial
chunks told by arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers import make_driver
from drivers.aufs import AufsMount
from simulator.harness import Run
from simulator.imagetree import ImageDir, ImageFile, ImageTree
from simulator.nodes import Dir
from simulator.inputs import load_image, load_workload
from simulator.namespace import Namespace
from simulator.pagecache import PageCache
from simulator.ranges import RangeSet
from simulator.units import PAGE_SIZE
from simulator.walks import resolve_links
from test_writeruns import DRIVERS, IDS, random_write_case
from test_writeruns import metrics as replay_metrics


def _general_walk(self: Namespace, path: str, follow: bool):
    return resolve_links(self, path, follow)


def _uncached_perm_walk(self: AufsMount, parent) -> int:
    """``AufsMount._perm_walk`` by its definition: from this container's root, through its
    own view of each directory (``Namespace.child``), nothing remembered or shared."""
    from drivers.aufs_perm import branch_span as _span

    ns = self.ns
    image_dir = parent if parent.__class__ is ImageDir else parent.base
    if image_dir is None:
        return _span(ns.root) - 1 + _span(parent) - 1
    d, extra = ns.root, _span(ns.root) - 1
    for name in image_dir.path.split("/")[1:] if image_dir.path != "/" else ():
        d = ns.child(d, name) if d is not None else None
        if d.__class__ is Dir or d.__class__ is ImageDir:
            extra += _span(d) - 1
        else:
            d = None
    return extra


def metrics(driver: str, options: dict, image, ops, containers: int, remembered: bool,
            monkeypatch: pytest.MonkeyPatch, tree: ImageTree | None = None) -> dict:
    with monkeypatch.context() as patch:
        if not remembered:
            patch.setattr(Namespace, "_walk", _general_walk)
            patch.setattr(AufsMount, "_perm_walk", _uncached_perm_walk)
        return replay_metrics(driver, options, image, ops, containers, not remembered, tree)


@pytest.mark.parametrize("driver,options", DRIVERS, ids=IDS)
@pytest.mark.parametrize("seed", range(8))
def test_remembered_walks_cost_what_fresh_walks_cost(driver: str, options: dict, seed: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    containers = 1 + seed % 2
    image, ops = random_write_case(100 + seed, containers)
    fast = metrics(driver, options, image, ops, containers, True, monkeypatch)
    fresh = metrics(driver, options, image, ops, containers, False, monkeypatch)
    assert fast == fresh
    assert fast["lookups"] > 0 and fast["failed_ops"] > 0  # walks were made, some refused


@pytest.mark.parametrize("driver,options", DRIVERS, ids=IDS)
@pytest.mark.parametrize("workload", ["read-startup:containers=2", "import-scan:modules=300,path_dirs=6",
                                      "small-files:files=400", "mixed:scale=0.2"])
def test_builtin_distinct_path_workloads(driver: str, options: dict, workload: str, small_image,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    image, tree = small_image
    ops = load_workload(workload, tree, 0)
    containers = 1 + max(op.container for op in ops)
    fast = metrics(driver, options, image, ops, containers, True, monkeypatch, tree)
    fresh = metrics(driver, options, image, ops, containers, False, monkeypatch, tree)
    assert fast == fresh
    assert fast["lookups"] >= len(ops) // 2


def test_page_cache_runs_equal_range_sets() -> None:
    """Random reads of a few keys: the bytes held equal a RangeSet of pages per key."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        cache, reference = PageCache(), {}
        for _ in range(int(rng.integers(1, 12))):
            key = int(rng.integers(3))
            offset, length = int(rng.integers(0, 40_000)), int(rng.integers(-10, 20_000))
            cache.touch(key, offset, length)
            if length > 0:
                reference.setdefault(key, RangeSet()).add(offset // PAGE_SIZE, -(-(offset + length) // PAGE_SIZE))
        assert cache.bytes() == sum(r.total() for r in reference.values()) * PAGE_SIZE


def test_page_cache_by_hand() -> None:
    """Pages 0-1 then 3 (a gap: two runs) then 2 (joins them): 4 pages; a 0-byte read adds none."""
    cache = PageCache()
    cache.touch("f", 0, 2 * PAGE_SIZE)
    cache.touch("f", 3 * PAGE_SIZE, 1)
    assert cache.bytes() == 3 * PAGE_SIZE
    cache.touch("f", 2 * PAGE_SIZE + 5, 10)
    cache.touch("f", 9 * PAGE_SIZE, 0)
    assert cache.bytes() == 4 * PAGE_SIZE


def test_owned_page_caches_count_apart_and_in_the_drivers() -> None:
    """A container's own cache (drivers that share none) keys by file alone: two containers
    reading one 5000-B file hold 2 pages each, the shared cache 1 page of it: 5 pages."""
    cache = PageCache()
    a, b = cache.owned("container-0"), cache.owned("container-1")
    assert cache.owned("container-0") is a and a is not b
    a.touch("f", 0, 5000)
    b.touch("f", 0, 5000)
    b.touch("f", 4096, 904)  # already held
    cache.touch("f", 0, PAGE_SIZE)
    assert (a.bytes(), b.bytes(), cache.bytes()) == (2 * PAGE_SIZE, 2 * PAGE_SIZE, 5 * PAGE_SIZE)


def test_a_run_from_page_0_becomes_a_run_elsewhere_and_back() -> None:
    """The one-run forms: from page 0 (an int), elsewhere (a tuple), joined back to page 0."""
    cache = PageCache()
    cache.touch("f", 5 * PAGE_SIZE, PAGE_SIZE)  # pages 5-6
    cache.touch("f", 3 * PAGE_SIZE, 2 * PAGE_SIZE)  # 3-5: one run 3-6
    assert cache.bytes() == 3 * PAGE_SIZE
    cache.touch("f", 0, 3 * PAGE_SIZE + 1)  # 0-4: one run 0-6
    assert cache.bytes() == 6 * PAGE_SIZE
    cache.touch("f", 8 * PAGE_SIZE, 1)  # a gap: two runs
    assert cache.bytes() == 7 * PAGE_SIZE


def test_an_owned_cache_holds_whole_image_files_as_the_plain_cache_does() -> None:
    """Random reads of a few image files, whole or not: an owned cache (whole files in a
    bitmap) holds the bytes a plain cache (a dict entry each) holds, after every read."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        files = [ImageFile(int(rng.integers(0, 30_000)), 0o644, 0, 0, 0, None, ino) for ino in range(1, 4)]
        owned, plain = PageCache().owned("c"), PageCache()
        for _ in range(int(rng.integers(1, 12))):
            f = files[int(rng.integers(3))]
            whole = rng.integers(2) == 0
            offset = 0 if whole else int(rng.integers(0, 30_000))
            length = max(0, min(f.size if whole else int(rng.integers(0, 20_000)), f.size - offset))  # read_node's
            owned.touch(f, offset, length)
            plain.touch(f, offset, length)
            assert owned.bytes() == plain.bytes()


def test_an_owned_cache_by_hand() -> None:
    """f (10000 B) read whole: 3 pages, then a part of it: none more; g (5000 B) read in part
    then whole: 2 pages; a container's own file (not an image file) keys by object: 1 page."""
    f = ImageFile(10_000, 0o644, 0, 0, 0, None, 5)
    g = ImageFile(5_000, 0o644, 0, 0, 0, None, 6)
    cache = PageCache()
    own = cache.owned("container-0")
    own.touch(f, 0, 10_000)
    own.touch(f, 4096, 10)
    assert own.bytes() == 3 * PAGE_SIZE
    own.touch(g, 0, 100)
    own.touch(g, 0, 5_000)
    own.touch("private", 0, 1)
    assert own.bytes() == cache.bytes() == 6 * PAGE_SIZE


def test_aufs_rename_of_a_private_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A private directory whose image entries are all deleted may be renamed on aufs (no
    EXDEV); no copy-up tells aufs, only the rename does, and a lookup below its new name walks
    its old image path (gone now: the walk stops at /a) where it walked all of it before."""
    from simulator.image import Entry, Image, Layer
    from simulator.trace import Op

    image = Image("hand", (Layer("l0", (Entry("/a", "dir"), Entry("/a/b", "dir"))),
                           Layer("l1", (Entry("/a/b/f", "file", size=10),))))
    ops = [Op("chmod", "/a/b", mode=0o700), Op("unlink", "/a/b/f"), Op("stat", "/a/b/f"),
           Op("rename", "/a/b", "/a/x"), Op("stat", "/a/x/f")]
    fast = metrics("aufs", {}, image, ops, 1, True, monkeypatch)
    assert fast == metrics("aufs", {}, image, ops, 1, False, monkeypatch)
    assert fast["failed_ops"] == 2  # the two stats: f is gone; the rename went through


def _walk_down(layout, ino: int):
    """``Layout.file`` the long way: the first layout from the top that has the ino."""
    while layout is not None:
        if ino in layout.files:
            return layout.files[ino]
        layout = layout.parent
    return None


@pytest.mark.parametrize("commits", [0, 2])
def test_thin_layout_bisection_finds_what_the_walk_finds(commits: int) -> None:
    """Every image file of a devicemapper container (after ``commits`` commits, whose layers
    number their files on), looked up by bisection, is the record the walk down finds."""
    from simulator.trace import Op

    image = load_image("synthetic:layers=7,files=600")
    ops = [Op("create", f"/new{i}-{k}", size=5000) for k in range(commits) for i in range(3)]
    ops = [op for k in range(commits) for op in ops[3 * k:3 * k + 3] + [Op("commit", layer=f"c{k}")]]
    run = Run(make_driver("devicemapper"), image, 1)
    run.replay(ops)
    layout = run.mounts[0].fs.layout
    found = 0
    top = max(layout.parent.first_ino, 1)
    for ino in range(1, top + 20):
        expected = _walk_down(layout, ino)
        if expected is None:
            with pytest.raises(KeyError):
                layout.file(ino)
        else:
            assert layout.file(ino) is expected
            found += 1
    assert found >= 500 + 3 * commits


def _reference_cost(dev, ranges: RangeSet) -> tuple[int, int, int]:
    """``ThinDevice.write``'s cost as it was computed before, a chunk's coverage asked of
    the range set itself (``covers``), on a copy of the device's state."""
    chunk = dev.chunk
    shared = dev.shared()
    new = RangeSet()
    for start, end in ranges.units(chunk):
        for s, e in dev.own.gaps(start, end):
            new.add(s, e)
    partial = {c for start, end in ranges for c in (start // chunk, (end - 1) // chunk)
               if not ranges.covers(c * chunk, (c + 1) * chunk)}
    copied = sum(1 for c in partial if new.covers(c, c + 1) and shared.covers(c, c + 1))
    return new.total(), copied, ranges.total()


def test_thin_partial_chunks_by_arithmetic() -> None:
    """Random batches of writes on a snapshot of a half-mapped origin: each batch costs what
    the coverage-by-query computation gives (new chunks, copied chunks, bytes)."""
    from drivers.thinpool import ThinDevice

    rng = np.random.default_rng(11)
    copied = 0
    for chunk in (4096, 65536):
        origin = ThinDevice("origin", chunk)
        origin.write(RangeSet((s, s + chunk * 3) for s in range(0, 200 * chunk, 7 * chunk)))
        dev = ThinDevice("snap", chunk, origin)
        for _ in range(200):
            batch = RangeSet()
            for _ in range(int(rng.integers(1, 6))):
                s = int(rng.integers(0, 200 * chunk))
                batch.add(s, s + int(rng.integers(1, 3 * chunk)))
            expected = _reference_cost(dev, batch)
            cost = dev.write(batch)
            assert (cost.new_chunks, cost.copied_chunks, cost.bytes_written) == expected
            copied += cost.copied_chunks
    assert copied > 0


def _shared_memo_image():
    from simulator.image import Entry, Image, Layer

    return Image("hand", (Layer("l0", (Entry("/a", "dir"), Entry("/a/b", "dir"), Entry("/a/b/f", "file", size=10),
                                       Entry("/c", "dir"))),
                          Layer("l1", (Entry("/a/b/g", "file", size=5000),))))


@pytest.mark.parametrize("change,own_path,own_kind", [
    # a directory of its own at the root
    ([("mkdir", "/n"), ("mkdir", "/n/m"), ("create", "/n/m/f")], "/n/m/f", "FileInode"),
    # the image's directory moved away, and one of its own made in its place
    ([("move", "/a", "/z"), ("mkdir", "/a"), ("mkdir", "/a/b"), ("create", "/a/b/f")], "/a/b/f", "FileInode"),
    # removed and made again, empty
    ([("remove_tree", "/a"), ("mkdir", "/a"), ("mkdir", "/a/b")], "/a/b/f", "NoneType"),
    # copied up below the root
    ([("chmod", "/a/b"), ("create", "/a/b/new")], "/a/b/new", "FileInode"),
])
def test_the_image_walk_memo_is_shared_only_while_a_container_has_no_directory_of_its_own(
        change, own_path: str, own_kind: str) -> None:
    """Container 0 changes directories after walking the image's; container 1, untouched,
    walks the same paths before and after.  Only the untouched container keeps the tree's
    memo (the changed one remembers its walks apart), and each container sees its own
    view: container 1 finds /a/b/f and /a/b/g in the image, and nothing of container 0's."""
    from simulator.namespace import image_dirs
    from simulator.trace import Op

    image = _shared_memo_image()
    tree = ImageTree.build(image)
    walks = [Op("read", "/a/b/g", offset=0, length=5000, container=c) for c in (0, 1)]
    ops = walks + [Op(kind, *args[:1], dst=args[1] if len(args) > 1 else "", mode=0o700 if kind == "chmod" else -1,
                      container=0) for kind, *args in change]
    after = [Op("stat", "/a/b/f", container=1), Op("read", "/a/b/g", offset=0, length=5000, container=1),
             Op("stat", "/n/m/f", container=1), Op("stat", "/a/b/new", container=1)]
    run = Run(make_driver("overlay"), image, 2, tree)
    run.replay(ops + after)
    shared = image_dirs(tree)
    image_b = tree.root.children["a"].children["b"]
    assert run.namespace(1)._dirs is shared and shared["/a/b"][1] is image_b  # the image's own directory
    assert run.namespace(0)._dirs is not shared
    assert run.failed == 2  # container 1: /n/m/f and /a/b/new are container 0's (or nobody's)
    assert run.namespace(1).read_bytes == 2 * 5000
    assert run.namespace(1).exists("/a/b/f") is image_b.children["f"]
    assert run.namespace(0).exists(own_path).__class__.__name__ == own_kind


@pytest.mark.parametrize("driver,options", DRIVERS, ids=IDS)
def test_containers_sharing_the_image_walk_memo_cost_what_fresh_walks_cost(driver: str, options: dict,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Four containers on one tree, interleaved: two only read and stat, two also change
    directories part-way through, on a tree whose memo an earlier run filled: every metric
    as with every path walked afresh."""
    image = load_image("synthetic:layers=5,files=400", 1)
    tree = ImageTree.build(image)
    reads = load_workload("read-startup:fraction=0.5,containers=4", tree, 0)
    changes = load_workload("mixed:scale=0.05", tree, 3)
    ops = [op for pair in zip(reads, changes) for op in (pair[0], pair[1]._replace(container=pair[1].container % 2))]
    warm = metrics(driver, options, image, reads, 4, True, monkeypatch, tree)  # fills the tree's memo
    fast = metrics(driver, options, image, ops, 4, True, monkeypatch, tree)
    fresh = metrics(driver, options, image, ops, 4, False, monkeypatch, tree)
    assert fast == fresh
    assert warm["failed_ops"] == 0 and fast["lookups"] == fresh["lookups"] > len(reads)
    assert any(op.kind in ("mkdir", "rename", "chmod") for op in changes[:len(reads)])
