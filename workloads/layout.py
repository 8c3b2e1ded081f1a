"""Shared machinery of the image builders: a directory tree, file placement, later-layer churn.

Builders describe an image as arrays (which layer and which directory each file lands in,
its size) and ``assemble`` turns them into layer columns in one pass, so a 100,000-file
image costs one Python loop over the files and no per-file validation: everything built
here is consistent by construction (unique names, parents that are directories, whiteouts
only of paths a lower layer holds, each churned file changed once and only above the layer
that made it).

Every image also gets the few "system" files the built-in workloads look for, at the paths
a Debian-based image has them: log files in ``/var/log`` (``append-log``) and dpkg's status
database (``package-install``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.image import DEFAULT_FILE_MODE, Image
from simulator.layercols import ColumnsBuilder
from simulator.units import KiB

# Top-level directories of a Filesystem Hierarchy Standard 3.0 root: where the tree starts.
FHS_TOP = ("bin", "etc", "lib", "opt", "srv", "usr", "var")
# Directories the system files need (added whatever the depth limit).
SYSTEM_DIRS = ("/var", "/var/log", "/var/lib", "/var/lib/dpkg")
LOG_NAMES = ("syslog", "messages", "auth", "kern", "daemon", "dpkg", "alternatives", "app")
# Assumed, not measured: ~100 installed packages x ~1 KiB of status stanza each.
DPKG_STATUS_BYTES = 100 * KiB
DPKG_STATUS = "/var/lib/dpkg/status"
# File name extensions, cycled by file index: cosmetic, but they give import-scan module stems.
EXTENSIONS = (".so", ".py", ".txt", ".conf", "", ".h", ".gz", ".json", ".pyc", ".html")
EXECUTABLE_EXTENSIONS = frozenset({".so", ""})


def lognormal_sizes(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    """``n`` integer sizes from a lognormal with the given median (bytes) and sigma."""
    if n == 0 or median <= 0:
        return np.zeros(n, dtype=np.int64)
    return np.floor(rng.lognormal(np.log(median), sigma, size=n)).astype(np.int64)


def make_dirs(rng: np.random.Generator, count: int, depth: int) -> list[str]:
    """``count`` directory paths: the FHS top level, then ``d<i>`` directories each under a
    uniformly chosen earlier directory no deeper than ``depth - 1`` (so none exceeds
    ``depth``), plus the system directories.  Sorted, so later sampling is deterministic."""
    paths = [f"/{name}" for name in FHS_TOP[: max(1, min(count, len(FHS_TOP)))]]
    eligible = list(paths) if depth > 1 else []
    levels = {p: 1 for p in paths}
    draws = rng.random(max(0, count - len(paths)))
    for i, u in enumerate(draws.tolist()):
        if not eligible:
            parent, level = "", 1
        else:
            parent = eligible[int(u * len(eligible))]
            level = levels[parent] + 1
        path = f"{parent}/d{i}"
        paths.append(path)
        levels[path] = level
        if level < depth:
            eligible.append(path)
    paths.extend(d for d in SYSTEM_DIRS if d not in levels)
    paths.sort()
    return paths


@dataclass
class Plan:
    """An image as arrays, before it becomes entries.

    ``layer``, ``dir``, ``size``: per regular file, the layer that creates it, its directory
    (index into ``dirs``) and size.  ``churn_layer``/``churn_kind``: per file, the later layer
    that overwrites (1) or deletes (2) it, or -1/0 when no layer does.
    """

    name: str
    layers: int
    dirs: list[str]
    layer: np.ndarray
    dir: np.ndarray
    size: np.ndarray
    churn_layer: np.ndarray
    churn_kind: np.ndarray
    churn_size: np.ndarray
    symlinks: int = 0
    logs: int = 0
    layer_prefix: str = "layer"


def churn(rng: np.random.Generator, layer: np.ndarray, layers: int, overwrite: float, delete: float,
          ) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``overwrite`` and ``delete`` fractions of all files (disjoint sets, drawn from the
    files below the top layer) and, for each, a later layer that makes the change."""
    n = len(layer)
    kind = np.zeros(n, dtype=np.int8)
    when = np.full(n, -1, dtype=np.int64)
    eligible = np.flatnonzero(layer < layers - 1)
    n_over = min(len(eligible), int(round(overwrite * n)))
    n_del = min(len(eligible) - n_over, int(round(delete * n)))
    picked = rng.permutation(eligible)[: n_over + n_del]
    kind[picked[:n_over]] = 1
    kind[picked[n_over:]] = 2
    if len(picked):
        when[picked] = rng.integers(layer[picked] + 1, layers)
    return when, kind


def assemble(rng: np.random.Generator, plan: Plan) -> Image:
    """The ``Image`` of a plan: all directories in the bottom layer, files in theirs, the
    churn above, symlinks to random files, and the system files in the bottom layer.  Its
    layers are columns (``simulator.layercols``): a 1,000,000-file image as ``Entry``
    objects was 370 B a file, issue 7 allows 200 for the image and its tree together."""
    n = len(plan.layer)
    out = ColumnsBuilder(plan.layers, plan.dirs)
    add = out.add
    for d in plan.dirs:
        add(0, d, "dir", mode=0o755)
    exts = EXTENSIONS
    n_ext = len(exts)
    dirs = plan.dirs
    paths: list[str] = []
    for i, (k, d, size) in enumerate(zip(plan.layer.tolist(), plan.dir.tolist(), plan.size.tolist())):
        ext = exts[i % n_ext]
        path = f"{dirs[d]}/f{i}{ext}"
        paths.append(path)
        add(k, path, "file", size, 0o755 if ext in EXECUTABLE_EXTENSIONS else 0o644)
    changed = np.flatnonzero(plan.churn_kind)
    for i, k, kind, size in zip(changed.tolist(), plan.churn_layer[changed].tolist(),
                                plan.churn_kind[changed].tolist(), plan.churn_size[changed].tolist()):
        if kind == 1:
            add(k, paths[i], "file", size, 0o644)
        else:
            add(k, paths[i], "whiteout", mode=DEFAULT_FILE_MODE)  # as the loader sets it
    if plan.symlinks and n:
        where = rng.integers(len(dirs), size=plan.symlinks).tolist()
        targets = rng.integers(n, size=plan.symlinks).tolist()
        layers = rng.integers(plan.layers, size=plan.symlinks).tolist()
        for j, (d, t, k) in enumerate(zip(where, targets, layers)):
            add(k, f"{dirs[d]}/link{j}", "symlink", mode=0o777, target=paths[t])
    add_system_files(out, rng, plan.logs)
    del paths
    return Image(plan.name, out.layers(plan.layer_prefix))


def add_system_files(out: ColumnsBuilder, rng: np.random.Generator, logs: int) -> None:
    """The system files, in the bottom layer (whose ``SYSTEM_DIRS`` the caller adds): ``logs``
    log files of lognormal sizes around 64 KiB, and dpkg's status database."""
    log_sizes = lognormal_sizes(rng, 64 * KiB, 1.0, logs).tolist()
    for j, size in enumerate(log_sizes):
        suffix = "" if j < len(LOG_NAMES) else str(j // len(LOG_NAMES))
        out.add(0, f"/var/log/{LOG_NAMES[j % len(LOG_NAMES)]}{suffix}.log", "file", size, 0o640)
    out.add(0, DPKG_STATUS, "file", DPKG_STATUS_BYTES, 0o644)
