"""docker-storage-benchmark's image and tests (``workloads.storage_benchmark``), worked out by hand.

A small instance, ``copies=1,small_files=3,tree_depth=2``: big files of 1, 8, 32 and 128 MiB
(169 MiB), three 512-byte files, and a tree of 7 directories with 4 leaves of 8 bytes.  The
kernel's side of the same scenarios is in ``tests/test_real_overlay.py``.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from drivers import driver_names
from helpers import run
from simulator.errors import BadInput
from simulator.imagetree import ImageDir, ImageFile, ImageTree
from simulator.inputs import load_image, load_workload
from simulator.treelisting import DIR, FILE, listing

MiB = 1 << 20
PAGE = 4096
SMALL = "storage-benchmark:copies=1,small_files=3,tree_depth=2"
BIG_BYTES = (1 + 8 + 32 + 128) * MiB  # one file of each size: 177,209,344


@pytest.fixture(scope="module")
def small():
    image = load_image(SMALL, 0)
    return image, ImageTree.build(image)


def test_the_image_is_the_dockerfiles_test_tree(small) -> None:
    image, tree = small
    entries = listing(tree)
    test = {p: (k, s) for p, k, s in zip(entries.paths, entries.kind.tolist(), entries.size.tolist())
            if p.startswith("/test")}
    files = {p: s for p, (k, s) in test.items() if k == FILE}
    assert {p: s for p, s in files.items() if p.startswith("/test/big-files/")} == {
        "/test/big-files/1M-0.bin": MiB, "/test/big-files/8M-0.bin": 8 * MiB,
        "/test/big-files/32M-0.bin": 32 * MiB, "/test/big-files/128M-0.bin": 128 * MiB}
    assert {p: s for p, s in files.items() if p.startswith("/test/small-files/")} == {
        f"/test/small-files/{i}": 512 for i in range(3)}
    leaves = {f"/test/tree-of-files/{a}/{b}/oh-hi" for a in "01" for b in "01"}
    assert {p: s for p, s in files.items() if p.startswith("/test/tree-of-files/")} == dict.fromkeys(leaves, 8)
    # The tree: its root, 2 directories below it, 4 below those: 2^3 - 1 = 7.
    assert sum(1 for p, (k, _) in test.items() if k == DIR and p.startswith("/test/tree-of-files")) == 7
    assert sorted(p for p, (k, _) in test.items() if k == DIR and p.count("/") == 2) == [
        "/test/big-files", "/test/small-files", "/test/tree-of-files"]
    # Layers: the Debian stand-in, WORKDIR, mkdir -p, then the three RUN lines.
    assert len(image.layers) == 6
    assert tree.resolve_dir("/var/log") is not None  # the base ships the system files


def test_the_default_image_has_the_published_sizes() -> None:
    """40 big files of 1,690 MiB, 10,001 small ones, 16,384 leaves in 32,767 directories."""
    tree = ImageTree.build(load_image("storage-benchmark", 0))
    entries = listing(tree)
    paths, kind, size = entries.paths, entries.kind.tolist(), entries.size.tolist()
    big = [s for p, k, s in zip(paths, kind, size) if k == FILE and p.startswith("/test/big-files/")]
    assert len(big) == 40 and sum(big) == 10 * (1 + 8 + 32 + 128) * MiB == 1690 * MiB
    assert sum(1 for p, k in zip(paths, kind) if k == FILE and p.startswith("/test/small-files/")) == 10_001
    assert sum(1 for p, k in zip(paths, kind) if k == FILE and p.startswith("/test/tree-of-files/")) == 2 ** 14
    assert sum(1 for p, k in zip(paths, kind) if k == DIR and p.startswith("/test/tree-of-files")) == 2 ** 15 - 1


def test_append_each_opens_the_directory_then_appends_ohai_to_each_file_in_glob_order(small) -> None:
    _, tree = small
    ops = load_workload("append-each", tree, 0)
    assert [(op.kind, op.path, op.length) for op in ops] == [("open", "/test/big-files", 0)] + [
        ("append", f"/test/big-files/{name}", 5) for name in ("128M-0.bin", "1M-0.bin", "32M-0.bin", "8M-0.bin")]
    assert ops[0].access == "r"


def test_append_to_big_files_copies_each_whole_file_up_on_overlay(small) -> None:
    image, tree = small
    m = run("overlay", image, load_workload("append-each", tree, 0))
    assert m["copyup_count"] == 4 and m["copyup_bytes"] == BIG_BYTES
    assert m["written_bytes"] == 4 * 5
    # Each file grows by 5 bytes: k MiB + 5 bytes takes 256 k + 1 pages.
    assert m["container_data_bytes"] == BIG_BYTES + 20
    assert m["container_alloc_bytes"] == ((1 + 8 + 32 + 128) * 256 + 4) * PAGE
    assert m["copyup_meta_count"] == 2  # /test and /test/big-files


@pytest.mark.parametrize("driver", ["devicemapper", "btrfs", "zfs"])
def test_block_and_snapshot_drivers_copy_no_file_up(small, driver: str) -> None:
    image, tree = small
    m = run(driver, image, load_workload("append-each", tree, 0))
    assert m["copyup_count"] == 0 and m["written_bytes"] == 20 and m["failed_ops"] == 0


def test_tree_walk_is_bashs_pushd_test_and_popd(small) -> None:
    _, tree = small
    ops = load_workload("tree-walk", tree, 0)
    t = "/test/tree-of-files"

    def cd(path: str) -> list[tuple[str, str]]:  # a stat of every leading directory
        parts = path.strip("/").split("/")
        return [("stat", "/" + "/".join(parts[:i])) for i in range(1, len(parts) + 1)]

    def leaf(d: str) -> list[tuple[str, str]]:
        return cd(d) + [("stat", f"{d}/oh-hi"), ("append", f"{d}/oh-hi")] + cd(d.rsplit("/", 1)[0])

    def inner(d: str, back: str) -> list[tuple[str, str]]:
        return cd(d) + [("open", f"{d}/oh-hi")] + leaf(f"{d}/0") + leaf(f"{d}/1") + cd(back)

    expected = cd(t) + [("open", f"{t}/oh-hi")] + inner(f"{t}/0", t) + inner(f"{t}/1", t) + cd("/test")
    assert [(op.kind, op.path) for op in ops] == expected
    assert len(ops) == 2 + 1 + 2 * (3 + 1 + 2 * (4 + 2 + 3) + 2) + 1 == 52


def test_tree_walk_at_the_published_depth_counts() -> None:
    """Depth 14: a directory at level l is l + 2 components deep (/test, /test/tree-of-files,
    then l more); pushd stats its l + 2, popd its parent's l + 1 (the root's popd: /test,
    1 = 0 + 1).  Sum over l of 2^l (2 l + 3) = 2 (13 * 2^15 + 2) + 3 (2^15 - 1) = 950,273
    stats, plus a stat and an append per leaf (16,384) and a failing open per inner
    directory (16,383)."""
    tree = ImageTree.build(load_image("storage-benchmark:copies=0,small_files=0", 0))
    ops = load_workload("tree-walk", tree, 0)
    kinds = Counter(op.kind for op in ops)
    assert kinds == {"stat": 950_273 + 16_384, "append": 16_384, "open": 16_383}
    assert len(ops) == 999_424


def test_append_to_the_tree_copies_every_ancestor_directory_up(small) -> None:
    image, tree = small
    ops = load_workload("tree-walk", tree, 0)
    m = run("overlay", image, ops)
    assert m["copyup_count"] == 4 and m["copyup_bytes"] == 4 * 8
    # /test, the tree's root, its 2 children and their 4 children: 1 + 1 + 2 + 4.
    assert m["copyup_meta_count"] == 8
    assert m["container_alloc_bytes"] == 4 * PAGE  # 13 bytes each
    assert m["failed_ops"] == 3  # the [ -f oh-hi ] of the 3 inner directories


def test_read_walk_reads_each_leaf_whole(small) -> None:
    image, tree = small
    ops = load_workload("tree-walk:action=read,cwd=/", tree, 0)
    assert [op.length for op in ops if op.kind == "read"] == [8] * 4
    # The last popd, from the tree back to /, stats nothing; the one before, from 1 back to
    # the tree, stats /test and the tree.
    assert [(op.kind, op.path) for op in ops[-3:]] == [
        ("stat", "/test/tree-of-files/1"), ("stat", "/test"), ("stat", "/test/tree-of-files")]
    m = run("overlay", image, ops)
    assert m["read_bytes"] == 32 and m["copyup_count"] == 0 and m["failed_ops"] == 3


@pytest.mark.parametrize("driver", driver_names())
def test_read_each_reads_every_small_file_whole(small, driver: str) -> None:
    image, tree = small
    ops = load_workload("read-each:path=/test/small-files", tree, 0)
    assert [(op.kind, op.path, op.length) for op in ops] == [("open", "/test/small-files", 0)] + [
        ("read", f"/test/small-files/{i}", 512) for i in range(3)]
    m = run(driver, image, ops)
    assert m["read_bytes"] == 3 * 512 and m["page_cache_bytes"] == 3 * PAGE and m["written_bytes"] == 0


def test_two_containers_each_copy_up_on_their_own(small) -> None:
    image, tree = small
    ops = load_workload("append-each:containers=2", tree, 0)
    assert [op.container for op in ops] == [0, 1] * 5
    m = run("overlay", image, ops, containers=2)
    assert m["copyup_count"] == 8 and m["copyup_bytes"] == 2 * BIG_BYTES


@pytest.mark.parametrize("spec", ["append-each:path=/nowhere", "read-each:path=/test/big-files/1M-0.bin",
                                  "append-each:path=/", "tree-walk:action=delete", "tree-walk:leaf=a/b",
                                  "tree-walk:cwd=/nowhere", "tree-walk:path=/test/tree-of-files/0/0/oh-hi"])
def test_a_path_that_is_not_an_image_directory_is_bad_input(small, spec: str) -> None:
    _, tree = small
    with pytest.raises(BadInput):
        load_workload(spec, tree, 0)


def test_an_empty_directory_gives_only_the_globs_open() -> None:
    tree = ImageTree.build(load_image("storage-benchmark:copies=0,small_files=0,tree_depth=0", 0))
    assert [op.kind for op in load_workload("append-each", tree, 0)] == ["open"]
    assert isinstance(tree.resolve_dir("/test/big-files"), ImageDir)
    assert isinstance(tree.resolve_dir("/test/tree-of-files").children["oh-hi"], ImageFile)


# -- the generators against the benchmark's shell loops, recorded under strace ----------------
# The loops below do what docker-storage-benchmark's test scripts do, written here: the glob
# loops of the big- and small-file tests and the recursive pushd/popd walk of the tree tests.
SCRIPTS = {
    "append-each:path=/test/big-files": 'for f in {root}/test/big-files/*; do echo ohai >> "$f"; done',
    "read-each:path=/test/small-files": 'for f in {root}/test/small-files/*; do cat "$f" > /dev/null; done',
    "tree-walk:cwd=/": ('walk() {{ pushd "$1"; if [ -f oh-hi ]; then echo ohai >> oh-hi; else walk 0; walk 1; fi; '
                        'popd; }}; exec > /dev/null; walk {root}/test/tree-of-files'),
    "tree-walk:cwd=/,action=read": ('walk() {{ pushd "$1"; if [ -f oh-hi ]; then cat oh-hi; else walk 0; walk 1; '
                                    'fi; popd; }}; exec > /dev/null; walk {root}/test/tree-of-files'),
}


def _lay_out(root: Path, depth: int) -> None:
    """The image's /test tree on disk, small: 4 big files (a few bytes each: contents do
    not matter), 3 small ones, a binary tree ``depth`` levels deep with ``oh-hi`` leaves."""
    (root / "test" / "big-files").mkdir(parents=True)
    (root / "test" / "small-files").mkdir()
    for label in ("1M", "8M", "32M", "128M"):
        (root / "test" / "big-files" / f"{label}-0.bin").write_bytes(b"x" * 3)
    for i in range(3):
        (root / "test" / "small-files" / str(i)).write_bytes(b"y" * 512)
    leaves = [root / "test" / "tree-of-files"]
    for _ in range(depth):
        leaves = [d / bit for d in leaves for bit in "01"]
    for leaf in leaves:
        leaf.mkdir(parents=True)
        (leaf / "oh-hi").write_text("oh, hi!\n")


@pytest.mark.skipif(shutil.which("strace") is None or shutil.which("bash") is None,
                    reason="strace and bash are needed to record the loops (apt-get install strace)")
@pytest.mark.parametrize("workload", sorted(SCRIPTS))
def test_generator_gives_what_the_recorded_shell_loop_did(tmp_path, workload: str) -> None:
    from workloads.strace import record

    root = tmp_path / "root"
    root.mkdir()
    _lay_out(root, depth=2)
    rec = record(["bash", "-c", SCRIPTS[workload].format(root=root)], root, env={**os.environ, "LC_ALL": "C"})
    assert rec.returncode == 0 and rec.conversion.mismatches == []
    generated = load_workload(workload, ImageTree.build(rec.image), 0)
    assert generated == rec.conversion.ops
    assert sum(rec.conversion.failing) == (3 if workload.startswith("tree-walk") else 0)
