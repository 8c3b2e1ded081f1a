"""Runs of stats answered together: the replay's fast path for import storms (issue 7).

A Python interpreter starting up, a linker, a shell's ``PATH`` search: each stats
thousands of names, mostly missing, a few per directory (``import-scan``: 125,618 stats in a
row).  Replayed one by one, every stat is an ``Op`` dispatch, a ``resolve``, a cold-lookup
note and a driver ``lookup`` call, about 1.5 us.  A stat changes nothing in the view, and
its only driver hook is ``lookup``; so ``stat_run`` walks a run of consecutive stats of one
container in one loop and hands the driver their lookups in one call
(``StorageHooks.lookup_many``), in order.

What keeps it exact, against ``op_stat`` for each (``tests/test_statruns.py`` compares every
metric and count on every driver):

* each path is walked as ``Namespace.resolve`` walks it: from the remembered walks, else
  through ``Namespace._walk`` (``walks.walk_dirs``, ``walks.resolve_links``), refusing what
  it refuses (a refused stat counts no lookup, as ``resolve`` raising counts none);
* the cold lookups are noted per stat, in order (``CostCounts.note_cold`` depends on it: a
  directory's layers count when it is first reached as an ancestor);
* positive walks are remembered as ``resolve`` remembers them;
* the driver sees the same ``lookup`` calls in the same order, with nothing else between
  them, as it would one by one (``lookup_many``).
"""

from __future__ import annotations

from .imagetree import ImageFile
from .namespace import RESOLVE_CACHE_ENTRIES, Namespace
from .nodes import Dir
from .walks import FsError, Resolved


def stat_run(ns: Namespace, paths: list[str]) -> int:
    """``op_stat`` for each of ``paths`` in order, in ``ns``; return how many failed."""
    dirs, seen, promoted = ns._dirs, ns.cost.looked_up, ns.promoted
    root_known = ([], ns.root, "")
    parents: list = []
    names: list[str] = []
    add_parent, add_name = parents.append, names.append
    failed = cold = 0
    # Consecutive paths mostly share a directory (an import probes a few names in each): its
    # remembered walk, and whether it was looked up, are fetched once for the stretch.  A run
    # changes neither, but for note_cold and the slow walk, which refresh them below.
    last_dir, known, dir_seen = None, None, False
    for path in paths:
        dir_path, _, name = path.rpartition("/")
        if dir_path != last_dir:
            known = dirs.get(dir_path) if dir_path else root_known
            last_dir, dir_seen = dir_path, not dir_path or dir_path in seen
        if known is None or not name:
            failed += _stat_walked(ns, path, parents, names)
            last_dir = None  # the walk may have remembered the directory, and looked it up
            continue
        # Namespace._walk's common case, inlined (a remembered walk of ``path`` leads to the
        # same node: both are forgotten on the same changes)
        d = known[1]
        if d.__class__ is Dir:
            own = d.own  # type: ignore[union-attr]
            if name in own:
                node = own[name]
            else:
                base = d.base  # type: ignore[union-attr]
                node = base.children.get(name) if base is not None else None
        else:
            node = d.children.get(name)  # type: ignore[union-attr]
        if node.__class__ is ImageFile and promoted:
            node = promoted.get(node, node)  # type: ignore[arg-type]
        if path not in seen:  # note_cold, its common case inlined: the directory is known
            if dir_seen:
                seen.add(path)
                cold += 1
            else:
                ns.cost.note_cold(ns, Resolved(known[0], d, name, node, path, dir_path))
                dir_seen = True  # note_cold looked the directory up too
        if node is None:
            failed += 1
        else:
            _remember(ns, path, Resolved(known[0], d, name, node, path, dir_path))
        add_parent(d)
        add_name(name)
    ns.cost.cold_lookups += cold
    ns.lookups += len(parents)
    if parents:
        ns.hooks.lookup_many(parents, names, ns.depth_hist)
    return failed


def _stat_walked(ns: Namespace, path: str, parents: list, names: list[str]) -> int:
    """One stat the way ``Namespace.resolve`` walks it (a remembered walk, peek's leftover, a
    directory not walked yet, a symbolic link on the way), its lookup queued; 1 if it fails."""
    r = ns._walked[False].get(path)
    if r is None:
        try:
            peeked = ns._peeked
            if peeked is not None and peeked[1] == path and not peeked[0]:
                r = peeked[2]
            else:
                r = ns._walk(path, False)
        except FsError:
            return 1  # refused before any lookup, as resolve raising counts none
        ns.cost.note_cold(ns, r)
        if r.node is not None:
            _remember(ns, path, r)
    if r.parent is None:  # the root: no driver lookup (never a stat's operand: SPEC paths)
        ns.lookups += 1
        ns.depth_hist[1] += 1
    else:
        parents.append(r.parent)
        names.append(r.name)
    return r.node is None


def _remember(ns: Namespace, path: str, r: Resolved) -> None:
    walked = ns._walked[False]
    if path not in walked:
        if len(walked) >= RESOLVE_CACHE_ENTRIES:
            walked.clear()
        walked[path] = r
