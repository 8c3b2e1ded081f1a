"""Runs of stats answered together: the replay's fast path for import storms (issue 7).

A Python interpreter starting up, a linker, a shell's ``PATH`` search: each stats
thousands of names, mostly missing, a few per directory (``import-scan``: 125,618 stats in
runs of about 670).  Replayed one by one, every stat is an ``Op`` dispatch, a ``resolve``,
a cold-lookup note and a driver ``lookup`` call, about 1.5 us.  A stat changes nothing in
the view, and its only driver hook is ``lookup``; so ``stat_run`` walks a run of
consecutive stats of one container in one loop and hands the driver their lookups at the
end (``StorageHooks.lookup_many``, in order, and ``tabled_lookups``).

What keeps it exact, against ``op_stat`` for each (``tests/test_statruns.py`` compares every
metric and count on every driver):

* each path is walked as ``Namespace.resolve`` walks it: from the remembered walks, else
  through ``Namespace._walk`` (``walks.walk_dirs``, ``walks.resolve_links``), refusing what
  it refuses (a refused stat counts no lookup, as ``resolve`` raising counts none);
* a stretch of paths in one directory that is remembered, was looked up before, and whose
  children are one dict (an image directory; a private one with no name of its own) takes
  ``_walk``'s common case for each name, a trailing slash included (the name "", missing,
  as ``_walk`` finds it);
* the cold lookups are noted per stat, in order (``CostCounts.note_cold`` depends on it: a
  directory's layers count when it is first reached as an ancestor).  In such a stretch
  ``note_cold`` only adds the path to ``looked_up`` and counts it if new; those keys are
  held back and added together, counted by how much the set grew, before anything asks
  the set whether a directory is in it (``looked_up`` only grows: a directory found in it
  stays; one not found is asked again once they are in) and before any stat goes the slow
  way (``tests/test_statruns.py``: a directory looked up as a stat's name, then walked);
* positive walks are remembered as ``resolve`` remembers them;
* the driver sees the same ``lookup`` calls in the same order, with nothing else between
  them, as it would one by one (``lookup_many``, in groups of names in one directory),
  but for those it answers from a table: where ``lookup`` in a directory is a dict's
  ``get`` and the rest of what it does commutes with every other lookup (overlay and aufs,
  in a directory wholly below: its probe counts; aufs adds sums and remembered permission
  walks), the loop takes each depth from the table and the driver does the rest once for
  the run (``lookup_table``, ``tabled_lookups``; ``tests/test_statruns.py`` holds them
  equal to ``lookup`` on every driver).  The tables hold for the run: a stat changes
  neither the view nor the driver's tables.

A run shorter than ``STRETCH_RUN`` takes no stretches: its stats go one at a time
(``_few``), their lookups still in one ``lookup_many`` call.
"""

from __future__ import annotations

from collections import Counter
from operator import sub
from typing import Callable

from .imagetree import ImageDir, ImageFile
from .namespace import RESOLVE_CACHE_ENTRIES, Namespace
from .nodes import Dir, DirNode, Node
from .treestore import loaded
from .walks import FsError, Resolved

# Shortest run taken in stretches: below it, qualifying directories, fetching tables and
# holding keys back cost more than they save.  Most runs outside import storms are one
# stat (mixed:scale=4: 4,875 stats in 4,540 runs, 4,229 of them alone); a lone stat costs
# 4.1 us in stretches, 2.1 one by one (``_few``), on overlay, side by side.
STRETCH_RUN = 16


def stat_run(ns: Namespace, paths: list[str]) -> int:
    """``op_stat`` for each of ``paths`` in order, in ``ns``; return how many failed."""
    if len(paths) < STRETCH_RUN:
        return _few(ns, paths)
    dirs, seen, promoted, walked = ns._dirs, ns.cost.looked_up, ns.promoted, ns._walked[False]
    hooks = ns.hooks
    parents: list = []  # lookups for the driver's ``lookup_many``: a group of names per parent
    groups: list[list[str]] = []
    add_parent, add_group = parents.append, groups.append
    # Lookups answered from the driver's tables (``lookup_table``): their depths, and for
    # ``tabled_lookups`` each stretch's directory, where its depths start, the nodes found.
    table_parents: list = []
    table_starts: list[int] = []
    table_depths: list[int] = []
    found: list = []
    add_table_parent, add_table_start, add_depth = table_parents.append, table_starts.append, table_depths.append
    # Cold keys in a directory looked up already: note_cold would add each to ``seen`` and
    # count it if new.  They go in together (``_flush``) before anything asks ``seen`` a
    # question they could change the answer of: a directory not in it, a stat the slow way.
    pending: list[str] = []
    add_pending = pending.append
    # Failures: of the stats gone the slow way (``slow`` of them), and every other stat
    # that found nothing (all but ``found_fast``).
    failed = slow = found_fast = 0
    root_known = ([], ns.root, "")
    qualified: dict[str, tuple] = {}  # directories whose stretches take the loop below
    last_dir = get = table = add_name = d = known = None
    default = 0
    for path in paths:
        dir_path, _, name = path.rpartition("/")
        if dir_path != last_dir:
            # A stretch of paths in one directory (an import probes five names in each):
            # its walk, children, cold state and lookup table are fetched once, if the
            # directory is remembered, looked up before, and its children one dict (the
            # image's, or a private one's over the image's with no name of its own).  Else
            # each of its stats goes the slow way.  Once a directory qualifies it does for
            # the rest of the run: nothing in it changes a name or the driver's tables, and
            # ``seen`` only grows (``dirs`` may be emptied by a slow walk, but what it
            # remembered still leads where it did).
            fast = qualified.get(dir_path)
            if fast is None:
                known = dirs.get(dir_path) if dir_path else root_known
                get = _children_get(known[1]) if known is not None else None
                if get is None or not (not dir_path or dir_path in seen
                                       or pending and _flush(ns, pending) and dir_path in seen):
                    last_dir = None
                    failed += _stat_one(ns, path, dir_path, name, known, parents, groups, pending)
                    slow += 1
                    continue
                d = known[1]  # type: ignore[index]
                tabled = hooks.lookup_table(d)
                fast = qualified[dir_path] = (known, d, get, *(tabled or (None, 0)))
            known, d, get, table, default = fast
            last_dir = dir_path
            if table is None:
                group = []
                add_parent(d)
                add_group(group)
                add_name = group.append
            else:
                add_table_parent(d)
                add_table_start(len(table_depths))
        # Namespace._walk's common case and note_cold's (the directory looked up), inlined
        node = get(name)
        if table is None:
            add_name(name)
        else:
            add_depth(table(name, default))
        add_pending(path)
        if node is not None:
            found_fast += 1
            if table is not None:
                found.append(node)
            if path not in walked:  # remembered as resolve remembers it
                if node.__class__ is ImageFile and promoted:
                    node = promoted.get(node, node)  # type: ignore[arg-type]
                if len(walked) >= RESOLVE_CACHE_ENTRIES:
                    walked.clear()
                walked[path] = Resolved(known[0], d, name, node, path, dir_path)  # type: ignore[index]
    if pending:
        _flush(ns, pending)
    if parents:
        ns.lookups += sum(map(len, groups))
        hooks.lookup_many(parents, groups, ns.depth_hist)
    if table_parents:
        ns.lookups += len(table_depths)
        ends = table_starts[1:]
        ends.append(len(table_depths))
        depths = Counter(table_depths)
        ns.depth_hist.update(depths)
        hooks.tabled_lookups(table_parents, list(map(sub, ends, table_starts)), depths, found)
    return failed + len(paths) - slow - found_fast


def _few(ns: Namespace, paths: list[str]) -> int:
    """``stat_run`` of a few stats: one by one (``_stat_one``), their lookups in one call."""
    dirs, root_known = ns._dirs, ([], ns.root, "")
    parents: list = []
    groups: list[list[str]] = []
    failed = 0
    for path in paths:
        dir_path, _, name = path.rpartition("/")
        known = dirs.get(dir_path) if dir_path else root_known
        failed += _stat_one(ns, path, dir_path, name, known, parents, groups, _NO_KEYS)
    if parents:
        ns.lookups += sum(map(len, groups))
        ns.hooks.lookup_many(parents, groups, ns.depth_hist)
    return failed


_NO_KEYS: list[str] = []  # (``_few`` holds no cold keys back)


def _children_get(d: DirNode) -> Callable[[str], Node | None] | None:
    """``Namespace.child`` of directory ``d`` as one dict's ``get``, where it is one: an
    image directory's children, a private directory's image children while it has no name
    of its own.  (Promotion maps a found image file to its private inode, which changes no
    lookup and no cold key: ``stat_run`` maps the few it remembers.)"""
    if d.__class__ is ImageDir:
        return loaded(d.children).get  # type: ignore[union-attr]
    if d.__class__ is Dir and not d.own:  # type: ignore[union-attr]
        base = d.base  # type: ignore[union-attr]
        return loaded(base.children).get if base is not None else _NOTHING.get
    return None


_NOTHING: dict[str, Node] = {}


def _flush(ns: Namespace, pending: list[str]) -> bool:
    """Add the pending cold keys to ``looked_up``, counting the new ones, as note_cold would
    one by one (a key twice in the run counts once: the second found the first)."""
    seen = ns.cost.looked_up
    before = len(seen)
    seen.update(pending)
    ns.cost.cold_lookups += len(seen) - before
    pending.clear()
    return True


def _stat_one(ns: Namespace, path: str, dir_path: str, name: str, known: tuple | None,
              parents: list, groups: list, pending: list[str]) -> int:
    """One stat the way ``op_stat`` does it, its lookup queued; 1 if it fails."""
    if pending:
        _flush(ns, pending)
    if known is None or not name:
        return _stat_walked(ns, path, parents, groups)
    d = known[1]
    node = ns.child(d, name)
    cost = ns.cost
    if path not in cost.looked_up:  # note_cold, its common case inlined: the directory known
        if not dir_path or dir_path in cost.looked_up:
            cost.looked_up.add(path)
            cost.cold_lookups += 1
        else:
            cost.note_cold(ns, Resolved(known[0], d, name, node, path, dir_path))
    if node is not None:
        _remember(ns, path, Resolved(known[0], d, name, node, path, dir_path))
    if parents and parents[-1] is d:
        groups[-1].append(name)
    else:
        parents.append(d)
        groups.append([name])
    return node is None


def _stat_walked(ns: Namespace, path: str, parents: list, groups: list) -> int:
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
        groups.append([r.name])
    return r.node is None


def _remember(ns: Namespace, path: str, r: Resolved) -> None:
    walked = ns._walked[False]
    if path not in walked:
        if len(walked) >= RESOLVE_CACHE_ENTRIES:
            walked.clear()
        walked[path] = r
