"""``build`` (a Dockerfile's RUN steps, each committed as a layer) and ``mixed``.

``docker build`` runs each step in a container and commits its changes as a new layer, and
the next step runs on top (SPEC section 4, ``commit``).  What a step leaves behind decides
the image's growth: new files, files rewritten by ``sed -i`` (a temp file renamed over the
original: the whole file lands in the new layer), files deleted (a whiteout that frees
nothing below).

``mixed`` interleaves the read, write and metadata workloads at a fraction of their default
sizes, as a container running a real service mixes them.
"""

from __future__ import annotations

import numpy as np

from simulator.imagetree import ImageTree
from simulator.paths import join
from simulator.trace import Op

from .common import exists, interleave, per_container, sharing_index, tree_index
from .layout import lognormal_sizes


def _app_dir(tree: ImageTree) -> str:
    path, n = "/app", 1
    while exists(tree, path):
        n += 1
        path = f"/app{n}"
    return path


def build(rng: np.random.Generator, tree: ImageTree, steps: int, files: int, modify: int, delete: int,
          size_median: int, size_sigma: float, containers: int) -> list[Op]:
    """``steps`` Dockerfile steps on a fresh ``/app`` directory: each creates ``files`` files
    (half in its own ``/app/stepN`` directory, half in existing image directories, like a
    package manager or ``COPY``), rewrites ``modify`` image files with ``sed -i`` (temp file,
    then rename over the original), removes ``delete`` image files, and is committed as layer
    ``c<container>-step<N>``.  Files changed or removed are distinct across steps.  Every
    replica runs the same Dockerfile."""
    index = tree_index(tree)
    image_files = list(zip(index.files, index.sizes))
    image_dirs = index.dirs or ["/"]
    order = rng.permutation(len(image_files)).tolist()
    app = _app_dir(tree)
    plan = []
    cursor = 0
    for i in range(steps):
        step_dir = f"{app}/step{i}"
        sizes = lognormal_sizes(rng, size_median, size_sigma, files).tolist()
        own = rng.random(files) < 0.5
        dirs = rng.integers(len(image_dirs), size=files).tolist()
        created = [(join(step_dir if mine else image_dirs[d], f"built{i}-{j}.o"), s)
                   for j, (s, mine, d) in enumerate(zip(sizes, own.tolist(), dirs))]
        changed = [image_files[k] for k in order[cursor:cursor + modify]]
        cursor += len(changed)
        removed = [image_files[k][0] for k in order[cursor:cursor + delete]]
        cursor += len(removed)
        plan.append((step_dir, created, changed, removed))

    def one(c: int) -> list[Op]:
        ops = [Op("mkdir", app, container=c)]
        for i, (step_dir, created, changed, removed) in enumerate(plan):
            ops.append(Op("mkdir", step_dir, container=c))
            ops += [Op("create", p, container=c, size=s) for p, s in created]
            for p, s in changed:
                tmp = f"{p.rsplit('/', 1)[0] or ''}/sed{i}tmp"
                ops += [Op("create", tmp, container=c, size=s), Op("rename", tmp, p, container=c)]
            ops += [Op("unlink", p, container=c) for p in removed]
            ops.append(Op("commit", container=c, layer=f"c{c}-step{i}"))
        return ops

    return per_container(containers, one)


# Component workload -> the parameter that sets its size (scaled by ``mixed``'s ``scale``).
MIXED_COMPONENTS = (
    ("read-startup", "fraction"), ("import-scan", "modules"), ("append-log", "appends"),
    ("overwrite-random", "writes"), ("small-files", "files"), ("package-install", "files"),
    ("chmod-tree", "entries"),
)


def mixed(rng: np.random.Generator, tree: ImageTree, scale: float, containers: int) -> list[Op]:
    """A service's life in a container: start-up reads and imports, logging, database page
    writes, scratch files, a package install and a permission fix, each at ``scale`` times
    its default size, randomly interleaved (each keeps its own order).  Deletes and moves
    are left out so that no component pulls paths from under another."""
    from .builtin import WORKLOADS  # the registry holds the components' defaults

    streams = []
    with sharing_index(tree):
        for (name, size_param), child in zip(MIXED_COMPONENTS, rng.spawn(len(MIXED_COMPONENTS))):
            builtin = WORKLOADS[name]
            default = next(p.default for p in builtin.params if p.name == size_param)
            scaled = default * scale if isinstance(default, float) else max(1, int(round(default * scale)))
            params = builtin.parse_params({size_param: scaled, "containers": containers}, f"mixed ({name})")
            streams.append(builtin.build(child, tree, **params))
    return interleave(rng, streams)
