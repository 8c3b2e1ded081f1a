"""``simulator.treelisting`` lists exactly what ``ImageTree.walk`` yields, in its order,
whether directories were opened or not, and on trees a commit extended; and it leaves
unopened directories unopened."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.image import Image
from simulator.imagetree import ImageDir, ImageFile, ImageTree
from simulator.inputs import load_image
from simulator.treeextend import extend_tree
from simulator.treelisting import DIR, FILE, SYMLINK, link_names, listing
from simulator.treestore import _Lazy
from workloads.random import random_image


def walked(tree: ImageTree) -> list[tuple[str, int, int, int]]:
    out = []
    for path, node in tree.walk():
        if node.__class__ is ImageFile:
            out.append((path, FILE, node.size, node.nlink))
        else:
            out.append((path, DIR if node.__class__ is ImageDir else SYMLINK, 0, 0))
    return out


def listed(tree: ImageTree) -> list[tuple[str, int, int, int]]:
    entries = listing(tree)
    return list(zip(entries.paths, entries.kind.tolist(), entries.size.tolist(), entries.nlink.tolist()))


@pytest.mark.parametrize("seed", range(20))
def test_listing_is_walk_on_random_images(seed: int) -> None:
    image = random_image(np.random.default_rng(seed), layers=4, entries=25)
    fresh = ImageTree.build(image)
    expected = walked(ImageTree.build(image))
    assert listed(fresh) == expected
    fresh.resolve_dir("/a")  # open a few directories, then list again: the same
    fresh.resolve_dir("/b/c")
    assert listed(fresh) == expected
    names = {}
    for path, node in ImageTree.build(image).walk():
        if node.__class__ is ImageFile and node.nlink > 1:
            names.setdefault(node.ino, []).append(path)
    assert sorted(sorted(v) for v in names.values()) == \
        sorted(sorted(v) for v in link_names(ImageTree.build(image)).values())


@pytest.mark.parametrize("seed", range(10))
def test_listing_is_walk_on_extended_trees(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    image = random_image(rng, layers=4, entries=25)
    base = ImageTree.build(Image(image.source, image.layers[:-1]))
    extended = extend_tree(base, image)
    assert listed(extended) == walked(ImageTree.build(image))


def test_listing_opens_no_directory() -> None:
    tree = ImageTree.build(load_image("synthetic:layers=4,files=3000", 0))
    entries = listing(tree)
    assert len(entries) == sum(1 for _ in ImageTree.build(load_image("synthetic:layers=4,files=3000", 0)).walk())
    assert int((entries.kind == DIR).sum()) > 100
    root_children = tree.root.children
    assert root_children.__class__ is _Lazy and root_children.value is None  # the root itself is still closed
