"""The built-in workloads: every one on every driver, deterministic, and doing what it says."""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache

import pytest

from drivers import driver_names, make_driver
from simulator.cli import main
from simulator.errors import BadInput
from simulator.harness import Run, check_workload, simulate
from simulator.imagetree import ImageDir, ImageFile, ImageSymlink, ImageTree
from simulator.inputs import load_image, load_workload
from simulator.runner import Cell, run_cell
from workloads.builtin import MAIN_WORKLOADS
from workloads.common import exists
from workloads.layout import DPKG_STATUS, DPKG_STATUS_BYTES
from workloads.packages import STATUS_STANZA_BYTES

ISSUE_WORKLOADS = ("append-log", "overwrite-random", "small-files", "chmod-tree", "delete-tree", "rename-dirs",
                   "package-install", "read-startup", "import-scan", "build", "mixed")
IMAGE = "synthetic:files=1500,layers=5"
SIM_ONLY = ("sim_seconds", "sim_peak_rss_bytes")


@lru_cache(maxsize=None)
def prepared(seed: int, spec: str = IMAGE):
    image = load_image(spec, seed)
    return image, ImageTree.build(image)


def replay(driver: str, workload: str, seed: int, containers: int = 1, spec: str = IMAGE):
    """(ops, metrics, run) of one workload on a fresh driver."""
    image, tree = prepared(seed, spec)
    ops = load_workload(workload, tree, seed)
    check_workload(ops, containers, workload)
    run = Run(make_driver(driver), image, containers, tree)
    for op in ops:
        run.apply(op)
    from simulator.costmodel import CostModel

    return ops, run.finish(CostModel()), run


def test_workloads_command_lists_every_workload(capsys) -> None:
    assert main(["workloads", "--json"]) == 0
    listed = {item["name"]: item for item in json.loads(capsys.readouterr().out)}
    assert set(ISSUE_WORKLOADS) <= set(listed)
    for name in listed:
        params = {p["name"]: p for p in listed[name]["params"]}
        assert params["containers"]["default"] == 1, name  # every workload takes containers
    assert set(MAIN_WORKLOADS) <= set(ISSUE_WORKLOADS)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("driver", driver_names())
@pytest.mark.parametrize("workload", ISSUE_WORKLOADS)
def test_every_workload_on_every_driver_is_deterministic(workload: str, driver: str, seed: int) -> None:
    ops_a, metrics_a, _ = replay(driver, workload, seed)
    ops_b, metrics_b, _ = replay(driver, workload, seed)
    assert ops_a == ops_b
    assert metrics_a == metrics_b
    assert metrics_a["ops"] == len(ops_a) > 0


def test_run_cell_metrics_differ_only_in_sim_keys() -> None:
    cell = Cell(driver="overlay", image=IMAGE, workload="mixed", seed=1)
    a, b = run_cell(cell)["metrics"], run_cell(cell)["metrics"]
    assert {k: v for k, v in a.items() if k not in SIM_ONLY} == {k: v for k, v in b.items() if k not in SIM_ONLY}


@pytest.mark.parametrize("workload", ISSUE_WORKLOADS)
def test_seeds_give_different_op_lists(workload: str) -> None:
    _, tree = prepared(0)
    spec = f"{workload}:entries=30" if workload in ("chmod-tree", "delete-tree") else workload  # many candidates
    assert load_workload(spec, tree, 0) != load_workload(spec, tree, 1)


@pytest.mark.parametrize("workload", ISSUE_WORKLOADS)
def test_containers_parameter_spreads_ops_over_every_container(workload: str) -> None:
    _, tree = prepared(0)
    ops = load_workload(f"{workload}:containers=3", tree, 0)
    per = Counter(op.container for op in ops)
    assert set(per) == {0, 1, 2}
    if workload not in ("mixed",):  # replicas run the same program: equal shares
        assert per[0] == per[1] == per[2]
    with pytest.raises(BadInput):
        check_workload(ops, 2, workload)  # --containers 2 cannot run container 2's ops
    _, metrics, _ = replay("overlay", f"{workload}:containers=3", 0, containers=3)
    assert metrics["ops"] == len(ops)


@pytest.mark.parametrize("spec", ["append-log:appends=-1", "append-log:length=x", "append-log:bogus=1",
                                  "read-startup:fraction=1.5", "chmod-tree:path=/no/such/dir",
                                  "chmod-tree:path=relative", "delete-tree:trees=0", "mixed:scale=-1",
                                  "build:steps=0", "small-files:existing=2", "append-log:containers=0"])
def test_bad_parameters_are_bad_input(spec: str) -> None:
    _, tree = prepared(0)
    with pytest.raises(BadInput):
        load_workload(spec, tree, 0)


# -- what each workload promises ----------------------------------------------------------------


def test_read_startup_reads_the_slacker_fraction_exactly() -> None:
    _, tree = prepared(0)
    for seed in (0, 1, 2):
        _, metrics, _ = replay("vfs", "read-startup", seed)
        target = int(0.064 * prepared(seed)[1].stats.file_bytes)  # 6.4% of the image's file bytes
        largest = max(n.size for _, n in prepared(seed)[1].walk() if isinstance(n, ImageFile))
        assert metrics["read_bytes"] == target
        assert abs(metrics["read_bytes"] - target) <= largest
        assert metrics["failed_ops"] == 0


def test_read_startup_replicas_share_the_page_cache_on_overlay_only() -> None:
    _, one, _ = replay("overlay", "read-startup", 0)
    _, three, _ = replay("overlay", "read-startup:containers=3", 0, containers=3)
    assert three["read_bytes"] == 3 * one["read_bytes"]
    assert three["page_cache_bytes"] == one["page_cache_bytes"]  # one lower inode for all three
    _, vfs3, _ = replay("vfs", "read-startup:containers=3", 0, containers=3)
    assert vfs3["page_cache_bytes"] == 3 * one["page_cache_bytes"]


@pytest.mark.parametrize("driver", driver_names())
def test_import_scan_failed_ops_are_exactly_the_negative_lookups(driver: str) -> None:
    ops, metrics, _ = replay(driver, "import-scan", 0)
    tree = prepared(0)[1]
    stats = [op for op in ops if op.kind == "stat"]
    negative = sum(not exists(tree, op.path) for op in stats)  # the workload writes nothing
    assert metrics["failed_ops"] == negative
    assert negative > 0.8 * len(stats)  # dominated by negative lookups
    assert all(op.kind in ("stat", "read") for op in ops)


def test_import_scan_probes_every_suffix_of_a_missing_module_in_every_directory() -> None:
    _, tree = prepared(0)
    ops = load_workload("import-scan:modules=1,missing=1,path_dirs=4", tree, 0)
    assert len(ops) == 4 * 5  # 4 search directories x (package dir + .so, module.so, .py, .pyc)
    assert {op.path.rsplit("/", 1)[1] for op in ops} == {"missing_mod0", "missing_mod0.so", "missing_mod0module.so",
                                                         "missing_mod0.py", "missing_mod0.pyc"}


@pytest.mark.parametrize("driver", driver_names())
def test_build_commits_once_per_step(driver: str) -> None:
    ops, metrics, run = replay(driver, "build:steps=4", 0)
    assert sum(op.kind == "commit" for op in ops) == 4
    assert run.driver.tally.commits == 4
    assert metrics["failed_ops"] == 0
    assert metrics["commit_bytes"] > 0
    assert run.namespace(0).tree.depth == len(prepared(0)[0].layers) + 4


def test_append_log_copies_each_log_up_once_on_overlay() -> None:
    ops, metrics, _ = replay("overlay", "append-log:files=5,appends=300,length=100", 0)
    tree = prepared(0)[1]
    logs = {op.path for op in ops}
    assert all(p.endswith(".log") for p in logs) and len(logs) == 5
    assert metrics["written_bytes"] == 300 * 100
    assert metrics["copyup_count"] == 5
    sizes = {p: n.size for p, n in tree.walk() if p in logs}
    assert metrics["copyup_bytes"] == sum(sizes.values())  # whole files, once each


def test_overwrite_random_writes_aligned_pages_inside_the_largest_files() -> None:
    ops, metrics, _ = replay("vfs", "overwrite-random:files=3,writes=500,page=4096,fsync_every=100", 0)
    tree = prepared(0)[1]
    sizes = sorted((n.size for _, n in tree.walk() if isinstance(n, ImageFile)), reverse=True)
    by_path = {p: n.size for p, n in tree.walk() if isinstance(n, ImageFile)}
    writes = [op for op in ops if op.kind == "write"]
    assert len(writes) == 500 and sum(op.kind == "fsync" for op in ops) == 5
    assert sorted({by_path[op.path] for op in writes}, reverse=True) == sizes[:3]
    assert all(op.offset % 4096 == 0 and op.offset + 4096 <= max(by_path[op.path], 4096) for op in writes)
    assert metrics["written_bytes"] == 500 * 4096


def test_small_files_creates_every_file_as_a_new_private_file() -> None:
    ops, metrics, _ = replay("overlay", "small-files:files=400,dirs=6", 0)
    kinds = Counter(op.kind for op in ops)
    assert kinds == {"create": 400, "mkdir": 6}
    assert metrics["container_files"] == 400 and metrics["copyup_count"] == 0
    assert metrics["written_bytes"] == sum(op.size for op in ops if op.kind == "create")
    assert metrics["failed_ops"] == 0


def test_chmod_tree_visits_every_non_link_entry_of_the_subtree() -> None:
    _, tree = prepared(0)
    ops, metrics, run = replay("overlay", "chmod-tree:path=/usr,mode=448", 0)
    below = [(p, n) for p, n in tree.walk(tree.resolve_dir("/usr"), "/usr")]
    assert [op.path for op in ops] == ["/usr"] + sorted(p for p, n in below if not isinstance(n, ImageSymlink))
    assert all(op.mode == 0o700 for op in ops)
    files = {id(n) for _, n in below if isinstance(n, ImageFile)}
    assert metrics["copyup_count"] == len(files)  # overlay without metacopy: data copy-up per file
    assert run.namespace(0).exists("/usr").mode == 0o700


def test_subtree_paths_are_the_sorted_walk_without_symbolic_links() -> None:
    """For every directory of a random image, and of one whose names sort around "/"
    (``/a.d``, ``/a-x``, ``/a0`` next to ``/a``): what chmod -R visits, read from the
    index's columns, is the walk of that subtree sorted, links left out."""
    from helpers import d, f, image
    from workloads.common import TreeIndex
    from workloads.namespace_ops import subtree_paths

    hand = image([d("/a"), f("/a/f"), d("/a/b"), f("/a/b/g"), {"path": "/a/l", "type": "symlink", "target": "f"},
                  d("/a.d"), f("/a.d/x"), f("/a-x"), d("/a0"), f("/a0/y"), d("/a/b.c"), f("/a/b.c/z")])
    checked = 0
    for img in (hand, load_image("synthetic:layers=3,files=300", 4)):
        tree = ImageTree.build(img)
        index = TreeIndex(tree)
        for root in index.dirs:
            walked = sorted(p for p, n in tree.walk(tree.resolve_dir(root), root) if not isinstance(n, ImageSymlink))
            assert subtree_paths(index, root) == walked, root
            checked += bool(walked)
    assert checked > 20


def test_a_composite_workload_indexes_the_tree_once_and_keeps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """mixed's seven components share one TreeIndex while it builds (nested scopes too),
    and none is left once it returns; the components choose what they chose alone."""
    import workloads.common as common

    _, tree = prepared(0)
    made = []
    original = common.TreeIndex.__init__

    def counting(self, t):
        made.append(t)
        original(self, t)

    with monkeypatch.context() as patch:
        patch.setattr(common.TreeIndex, "__init__", counting)
        with common.sharing_index(tree):
            with common.sharing_index(tree):
                assert common.tree_index(tree) is common.tree_index(tree)
        assert len(made) == 1 and not common._SHARED
        assert common.tree_index(tree) is not common.tree_index(tree)  # outside: each its own
        made.clear()
        ops = load_workload("mixed:scale=0.5", tree, 2)
        assert len(made) == 1 and not common._SHARED
    with monkeypatch.context() as patch:
        patch.setitem(common._SHARED, id(tree), None)  # tree_index: a new index per component, as before
        unshared = load_workload("mixed:scale=0.5", tree, 2)
    assert ops == unshared and len(ops) > 500


def test_delete_tree_removes_the_subtree_from_the_view() -> None:
    for driver in driver_names():
        ops, metrics, run = replay(driver, "delete-tree:trees=2,entries=50", 1)
        assert [op.kind for op in ops] == ["remove_tree", "remove_tree"]
        assert metrics["failed_ops"] == 0
        for op in ops:
            assert run.namespace(0).exists(op.path) is None
            assert exists(prepared(1)[1], op.path)


def test_rename_dirs_copies_on_overlay_and_renames_on_vfs() -> None:
    tree = prepared(0)[1]
    ops, overlay, run = replay("overlay", "rename-dirs:dirs=3,entries=40", 0)
    assert [op.kind for op in ops] == ["move"] * 3
    moved_bytes = 0
    for op in ops:
        assert op.dst == op.path + ".old"
        seen: set[int] = set()
        for _, n in tree.walk(tree.resolve_dir(op.path), op.path):
            if isinstance(n, ImageFile) and id(n) not in seen:
                seen.add(id(n))
                moved_bytes += n.size
        assert run.namespace(0).exists(op.path) is None
        assert isinstance(run.namespace(0).exists(op.dst), (ImageDir,)) or run.namespace(0).exists(op.dst) is not None
    # overlay refuses rename(2) of a lower directory (EXDEV): mv copies every byte, then deletes
    assert overlay["read_bytes"] == overlay["written_bytes"] == moved_bytes
    _, vfs, _ = replay("vfs", "rename-dirs:dirs=3,entries=40", 0)
    assert vfs["written_bytes"] == 0 and vfs["failed_ops"] == 0


def test_package_install_leaves_packages_in_place_and_the_status_grown() -> None:
    ops, metrics, run = replay("overlay", "package-install:packages=3,files=20,replace=0.25", 0)
    ns = run.namespace(0)
    assert metrics["failed_ops"] == 0
    assert ns.exists(DPKG_STATUS).size == DPKG_STATUS_BYTES + 3 * STATUS_STANZA_BYTES
    assert ns.exists(DPKG_STATUS + "-old") is not None
    renamed = [op for op in ops if op.kind == "rename" and op.dst != DPKG_STATUS]
    assert len(renamed) == 3 * 20
    for op in renamed:
        assert ns.exists(op.dst).size == next(o.size for o in ops if o.kind == "create" and o.path == op.path)
        assert ns.exists(op.path) is None
        assert ns.exists(op.dst + ".dpkg-tmp") is None
    replaced = [op for op in renamed if exists(prepared(0)[1], op.dst)]
    assert len(replaced) == 3 * 5  # 25% of 20 files per package replace image files


def test_mixed_combines_several_kinds_of_work() -> None:
    ops, metrics, _ = replay("overlay", "mixed", 2)
    kinds = Counter(op.kind for op in ops)
    assert {"read", "stat", "append", "write", "create", "rename", "chmod"} <= set(kinds)
    assert metrics["written_bytes"] > 0 and metrics["read_bytes"] > 0


def test_workloads_run_on_other_image_builders() -> None:
    for spec in ("deep:layers=6,files=3", "dockerhub:layers=4,files=800", "demo", "random:layers=3,entries=20"):
        image = load_image(spec, 0)
        tree = ImageTree.build(image)
        for name in ISSUE_WORKLOADS:
            ops = load_workload(name, tree, 0)
            metrics = simulate(make_driver("overlay"), image, ops, 1, tree=tree)
            assert metrics["ops"] == len(ops), (spec, name)
