"""docker-storage-benchmark's image and tests (``workloads.storage_benchmark``), worked out by hand.

A small instance, ``copies=1,small_files=3,tree_depth=2``: big files of 1, 8, 32 and 128 MiB
(169 MiB), three 512-byte files, and a tree of 7 directories with 4 leaves of 8 bytes.  The
kernel's side of the same scenarios is in ``tests/test_real_overlay.py``.
"""

from __future__ import annotations

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


def test_append_each_appends_ohai_to_every_file_in_sorted_order(small) -> None:
    _, tree = small
    ops = load_workload("append-each", tree, 0)
    assert [(op.kind, op.path, op.length) for op in ops] == [
        ("append", f"/test/big-files/{name}", 5) for name in ("128M-0.bin", "1M-0.bin", "32M-0.bin", "8M-0.bin")]
    tree_ops = load_workload("append-each:path=/test/tree-of-files", tree, 0)
    assert [op.path for op in tree_ops] == [f"/test/tree-of-files/{a}/{b}/oh-hi" for a in "01" for b in "01"]


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


def test_append_to_the_tree_copies_every_ancestor_directory_up(small) -> None:
    image, tree = small
    m = run("overlay", image, load_workload("append-each:path=/test/tree-of-files", tree, 0))
    assert m["copyup_count"] == 4 and m["copyup_bytes"] == 4 * 8
    # /test, the tree's root, its 2 children and their 4 children: 1 + 1 + 2 + 4.
    assert m["copyup_meta_count"] == 8
    assert m["container_alloc_bytes"] == 4 * PAGE  # 13 bytes each


@pytest.mark.parametrize("driver", driver_names())
def test_read_each_reads_every_small_file_whole(small, driver: str) -> None:
    image, tree = small
    ops = load_workload("read-each:path=/test/small-files", tree, 0)
    assert [(op.kind, op.path, op.length) for op in ops] == [("read", f"/test/small-files/{i}", 512)
                                                             for i in range(3)]
    m = run(driver, image, ops)
    assert m["read_bytes"] == 3 * 512 and m["page_cache_bytes"] == 3 * PAGE and m["written_bytes"] == 0


def test_two_containers_each_copy_up_on_their_own(small) -> None:
    image, tree = small
    ops = load_workload("append-each:containers=2", tree, 0)
    assert [op.container for op in ops] == [0, 1] * 4
    m = run("overlay", image, ops, containers=2)
    assert m["copyup_count"] == 8 and m["copyup_bytes"] == 2 * BIG_BYTES


@pytest.mark.parametrize("spec", ["append-each:path=/nowhere", "read-each:path=/test/big-files/1M-0.bin",
                                  "append-each:path=/"])
def test_a_path_that_is_not_an_image_directory_is_bad_input(small, spec: str) -> None:
    _, tree = small
    with pytest.raises(BadInput):
        load_workload(spec, tree, 0)


def test_an_empty_directory_gives_no_operations() -> None:
    tree = ImageTree.build(load_image("storage-benchmark:copies=0,small_files=0,tree_depth=0", 0))
    assert load_workload("append-each", tree, 0) == []
    assert isinstance(tree.resolve_dir("/test/big-files"), ImageDir)
    assert isinstance(tree.resolve_dir("/test/tree-of-files").children["oh-hi"], ImageFile)
