"""``extend_tree`` (one committed layer applied to an existing tree) equals a full
``ImageTree.build`` of the taller image, node by node, and leaves the base tree as it was."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import make_driver
from simulator.harness import Run
from simulator.image import Image
from simulator.imagetree import ImageDir, ImageFile, ImageSymlink, ImageTree
from simulator.inputs import load_image, load_workload
from simulator.treeextend import extend_tree
from workloads.random import random_image


def describe(tree: ImageTree) -> dict:
    """Everything a tree says: every visible path's node, the stacks and probe counts, the
    per-level totals, the hard-link index and the next inode number."""
    ino_of = {}
    out: dict = {"/": ("dir", tree.root.mode, tree.root.uid, tree.root.gid, tree.root.layer, tree.root.stack,
                       dict(sorted(tree.root.probes.items())))}
    for path, node in tree.walk():
        if node.__class__ is ImageDir:
            out[path] = ("dir", node.mode, node.uid, node.gid, node.layer, node.stack, dict(sorted(node.probes.items())),
                         node.path)
        elif node.__class__ is ImageFile:
            ino_of.setdefault(id(node), node.ino)
            out[path] = ("file", node.size, node.mode, node.uid, node.gid, node.layer, node.digest, node.nlink, node.ino)
        else:
            assert node.__class__ is ImageSymlink
            out[path] = ("symlink", node.target, node.uid, node.gid, node.layer)
    links = sorted(sorted(paths) for paths in tree.link_names.values())
    return {"nodes": out, "levels": tree.level_stats, "links": links, "next_ino": tree.next_ino,
            "depth": tree.depth}


def check_extension(image: Image) -> None:
    lower = Image(image.name, image.layers[:-1], image.source)
    base = ImageTree.build(lower)
    before = describe(base)
    assert describe(extend_tree(base, image)) == describe(ImageTree.build(image))
    assert describe(base) == before  # the base tree is shared: it must not change


@pytest.mark.parametrize("seed", range(60))
def test_random_images(seed: int) -> None:
    rng = np.random.default_rng(seed)
    check_extension(random_image(rng, layers=int(rng.integers(2, 6)), entries=int(rng.integers(4, 40))))


@pytest.mark.parametrize("spec", ["synthetic:layers=6,files=600", "dockerhub", "deep:layers=5,files=4"])
def test_builtin_images(spec: str) -> None:
    check_extension(load_image(spec, 4))


@pytest.mark.parametrize("driver", ["overlay", "vfs", "aufs"])
@pytest.mark.parametrize("seed", range(6))
def test_committed_layers(driver: str, seed: int) -> None:
    """The layers ``docker commit`` makes in the build and random workloads."""
    image = load_image("random:layers=3,entries=30", seed)
    tree = ImageTree.build(image)
    for workload in ("build:steps=3,files=20,modify=5,delete=5", "random:ops=300"):
        run = Run(make_driver(driver), image, 1, tree)
        ops = load_workload(workload, tree, seed)
        run.replay(ops)
        if workload.startswith("random"):
            from simulator.trace import Op

            run.replay([Op("commit")])
        for layer_id, taller in run.driver.images.items():
            if len(taller.layers) > len(image.layers):
                assert describe(run.driver.tree(layer_id)) == describe(ImageTree.build(taller))


@pytest.mark.parametrize("seed", range(100))
def test_random_images_without_hard_links_take_the_incremental_path(seed: int) -> None:
    """Without hard links nothing falls back to a full build: the path copying itself is
    what these compare (whiteouts, opaque dirs, replaced dirs and files, symlinks)."""
    from simulator.image import Layer
    from simulator.treeextend import _Extender

    rng = np.random.default_rng(1000 + seed)
    image = random_image(rng, layers=int(rng.integers(2, 7)), entries=int(rng.integers(4, 60)))
    layers = tuple(Layer(layer.id, tuple(e for e in layer.entries if e.type != "hardlink"))
                   for layer in image.layers)
    image = Image(image.name, layers, image.source)
    base = ImageTree.build(Image(image.name, layers[:-1], image.source))
    before = describe(base)
    assert describe(_Extender(base, image).extend()) == describe(ImageTree.build(image))
    assert describe(base) == before
