"""Namespace workloads: recursive chmod, recursive delete, directory moves, import storms.

These change no file data but stress what copy-on-write drivers do about metadata: overlay
copies up every file whose mode changes (whole files, unless ``metacopy``), leaves a
whiteout per deleted image entry, refuses to rename lower directories without
``redirect_dir`` (so ``mv`` copies the tree), and probes every layer on a negative lookup.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from simulator.imagetree import ImageTree
from simulator.paths import join
from simulator.trace import Op

from .common import TreeIndex, below, exists, replicated, sample, tree_index

# Python 2's import search order in one sys.path entry (Python/import.c find_module): the
# package directory, then imp.get_suffixes() in order.
IMPORT_SUFFIXES = ("", ".so", "module.so", ".py", ".pyc")


def _subtree_roots(index: TreeIndex, rng: np.random.Generator, path: str, entries: int, count: int,
                   where: str) -> list[str]:
    if path:
        index.require_dir(path, where)
        return [path]
    return index.pick_subtrees(rng, entries, count)


def subtree_paths(index: TreeIndex, root: str) -> list[str]:
    """Every regular file and directory below the image directory ``root``, sorted by path
    (``chmod -R``'s targets: it skips symbolic links).  Read from the index's sorted
    columns: walking the tree would open every directory below ``root`` and leave their
    node objects on the image for good (issue 7's bytes per file entry)."""
    return sorted(index.files[below(index.files, root)] + index.dirs[below(index.dirs, root)])


def chmod_tree(rng: np.random.Generator, tree: ImageTree, path: str, entries: int, mode: int,
               containers: int) -> Sequence[Op]:
    """``chmod -R MODE DIR`` over an image subtree, as Dockerfiles do to fix permissions
    (``RUN chmod -R 755 /app``): one ``chmod`` per directory and file, the root first,
    symbolic links skipped (chmod -R does not follow or change them).  ``path`` "" picks a
    directory whose subtree holds about ``entries`` entries.  On overlay without metacopy
    each file is copied up whole: the classic surprise of a permission fix doubling an image."""
    index = tree_index(tree)
    root = _subtree_roots(index, rng, path, entries, 1, "chmod-tree")
    targets = root + [p for r in root for p in subtree_paths(index, r)]
    return replicated(containers, [Op("chmod", p, mode=mode) for p in targets])


def delete_tree(rng: np.random.Generator, tree: ImageTree, path: str, entries: int, trees: int,
                containers: int) -> Sequence[Op]:
    """``rm -rf`` of ``trees`` image subtrees (a cleanup step: ``rm -rf /usr/share/doc``,
    caches, build dependencies), each of about ``entries`` entries (or ``path``).  Nothing
    is freed in the image: overlay records a whiteout per removed name."""
    index = tree_index(tree)
    roots = _subtree_roots(index, rng, path, entries, trees, "delete-tree")
    return replicated(containers, [Op("remove_tree", r) for r in roots])


def _free_name(tree: ImageTree, path: str, suffix: str) -> str:
    candidate, n = f"{path}{suffix}", 1
    while exists(tree, candidate):
        n += 1
        candidate = f"{path}{suffix}{n}"
    return candidate


def rename_dirs(rng: np.random.Generator, tree: ImageTree, dirs: int, entries: int, containers: int) -> Sequence[Op]:
    """``mv DIR DIR.old`` of ``dirs`` disjoint image directories of about ``entries``
    entries each (an installer moving the old version aside).  ``mv`` renames, and when the
    kernel answers EXDEV (overlay without ``redirect_dir``: lower directories cannot be
    renamed) copies the tree and removes the source: the ``move`` op does both."""
    index = tree_index(tree)
    roots = index.pick_subtrees(rng, entries, dirs)
    moves = [(r, _free_name(tree, r, ".old")) for r in roots]
    return replicated(containers, [Op("move", s, d) for s, d in moves])


def _import_ops(tree: ImageTree, search: list[str], stem: str, found: tuple[int, str, int] | None) -> list[Op]:
    """The stats one ``import stem`` makes: every candidate in every search directory before
    the one holding it (all of them for a missing module), then the hit, then its read."""
    ops = []
    last = found[0] if found is not None else len(search)
    for d in search[:last]:
        ops.extend(Op("stat", join(d, stem + s)) for s in IMPORT_SUFFIXES)
    if found is not None:
        k, path, size = found
        package_probe = join(search[k], stem)
        if package_probe != path:
            ops.append(Op("stat", package_probe))
        ops.append(Op("stat", path))
        ops.append(Op("read", path, offset=0, length=size))
    return ops


def import_scan(rng: np.random.Generator, tree: ImageTree, modules: int, path_dirs: int, missing: float,
                containers: int) -> Sequence[Op]:
    """A Python 2 style import storm (also what ``ld.so`` does over a long library path):
    ``modules`` imports, each searching ``path_dirs`` image directories (the ``sys.path``)
    in order, ``stat``-ing the package directory and every suffix (``.so``, ``module.so``,
    ``.py``, ``.pyc``) in each directory until one holds the module.  Modules are image
    files in the search directories; a fraction ``missing`` are names no directory holds
    (``try: import x except ImportError``).  Most stats are negative lookups, which overlay
    pays on every layer of the directory's stack.  Every replica imports the same modules."""
    index = tree_index(tree)
    with_files: dict[str, list[tuple[str, int]]] = {}
    for p, size in zip(index.files, index.sizes):
        with_files.setdefault(p.rsplit("/", 1)[0] or "/", []).append((p, size))
    candidates = sorted(with_files)  # each the directory a listed file is in (no symlink on the way)
    search = [candidates[i] for i in rng.permutation(len(candidates))[:path_dirs].tolist()]
    position = {d: k for k, d in enumerate(search)}
    pool = [(position[p.rsplit("/", 1)[0] or "/"], p, size) for d in sorted(search) for p, size in with_files[d]]
    n_missing = int(round(missing * modules))
    present = sample(rng, pool, modules - n_missing)
    plan: list[tuple[str, tuple[int, str, int] | None]] = []
    for k, p, size in present:
        name = p.rsplit("/", 1)[1]
        stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
        plan.append((stem, (k, p, size)))
    plan.extend((f"missing_mod{i}", None) for i in range(n_missing))
    order = rng.permutation(len(plan)).tolist()
    plan = [plan[i] for i in order]
    return replicated(containers, [op for stem, found in plan for op in _import_ops(tree, search, stem, found)])
