"""What a btrfs subvolume owns: a container's once the workload is done (the figures ``btrfs
filesystem du`` and the qgroups report; ``drivers/btrfs.py`` says what was measured), and a
layer's.

Kept apart from the mount's hooks because nothing here runs during the replay: it reads the
container's files and the image's tree layout once, at the end (``BtrfsMount.space``), and
for the fidelity check's qgroup figure (``simulator.fidelity.backends``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.metrics import Space
from simulator.nodes import Dir, FileInode
from simulator.units import ceil_div

from .btrfs_cow import container_changes, cow_nodes
from .btrfs_layout import (FILE_EXTENT_BYTES, ITEM_HEADER_BYTES, LEAF_HEADER_BYTES, inline_item_bytes, live_inodes,
                           object_item_bytes)

if TYPE_CHECKING:
    from .btrfs import BtrfsDriver, BtrfsMount


def _private_bytes(mount: BtrfsMount, name: str, node, seen: set[int]) -> int:
    first = id(node) not in seen
    seen.add(id(node))
    out = object_item_bytes(len(name), first)
    if first and node.__class__ is FileInode:
        out += _extent_bytes(mount, node)
    elif first and node.__class__ is not FileInode:
        out += inline_item_bytes(len(node.target))
    return out


def _extent_bytes(mount: BtrfsMount, inode: FileInode) -> int:
    """Leaf bytes of a private file's extent items: its inline data, or one item per
    run of sectors still shared with the image or in one of its own extents."""
    st = mount.file_state(inode)
    if st.inline:
        return inline_item_bytes(st.size)
    return (ITEM_HEADER_BYTES + FILE_EXTENT_BYTES) * (len(st.shared) + sum(len(r.refs) for r in st.runs))


def metadata_nodes(mount: BtrfsMount) -> int:
    """Tree blocks of the container's fs tree not shared with the image's: the leaves
    its changes rewrote or added and the nodes above them (``drivers.btrfs_cow``)."""
    layout = mount.driver.layout(mount.ns.tree)  # type: ignore[attr-defined]
    seen: set[int] = set()

    def new_object_bytes(name: str, node) -> int:
        if node.__class__ is Dir:
            return object_item_bytes(len(name))
        return _private_bytes(mount, name, node, seen)

    changes = container_changes(mount.ns, layout, mount.touched, new_object_bytes)
    changes.appended += mount.xattr_bytes
    changes.last_leaf |= mount.made_objects
    for directory, name, added in mount.entries:  # what became of them, the final diff above says
        item_at, index_at = layout.entry_offsets(directory, name)
        start, end = layout.object_span(directory)  # type: ignore[misc]
        changes.touched.update((start, item_at, end if added else index_at))  # a new index is the highest
    extent_bytes = mount.driver.extent_item_bytes  # type: ignore[attr-defined]
    for inode in live_inodes(mount.ns):  # rewritten image files: their extent items changed
        at = layout.object_start(inode.origin)
        if at is not None and inode.drv is not None:
            grown = _extent_bytes(mount, inode) - extent_bytes(inode.origin.size)
            changes.added[at] = changes.added.get(at, 0) + grown
    return cow_nodes(layout, changes)


def usage(mount: BtrfsMount) -> dict[str, int]:
    """What the real file system reports for this container's subvolume:
    ``fi_du_exclusive`` (referenced private sectors), ``data_extent_bytes`` (whole
    private extents) and ``qgroup_exclusive`` (data extents + metadata nodes once)."""
    mount.flush_pending()
    sector = mount.sector
    files = referenced = whole = data = 0
    for inode in live_inodes(mount.ns):
        st = mount.file_state(inode)
        private = st.private()
        n = private.total()
        referenced += n
        whole += sum(run.live_sectors() for run in st.runs)
        if n:
            tail = ceil_div(st.size, sector) - 1
            data += n * sector - (tail * sector + sector - st.size if private.covers(tail, tail + 1) else 0)
        if st.inline == "private":
            data += st.size
        files += bool(n or st.inline == "private" or inode.origin is None)
    nodes = metadata_nodes(mount)
    node = int(mount.driver.options["node_size"])
    return {"files": files, "data_bytes": data, "fi_du_exclusive": referenced * sector,
            "data_extent_bytes": whole * sector, "metadata_nodes": nodes,
            "qgroup_exclusive": whole * sector + nodes * node}


def space(mount: BtrfsMount) -> Space:
    """The SPEC metrics of ``usage``: ``fi du`` for the allocated bytes, whole extents and
    metadata nodes (twice where DUP) for the physical ones."""
    u = usage(mount)
    dup = 2 if mount.driver.options["metadata_dup"] else 1
    node = int(mount.driver.options["node_size"])
    return Space(whiteouts=None, opaque_dirs=None, container_files=u["files"],
                 container_data_bytes=u["data_bytes"], container_alloc_bytes=u["fi_du_exclusive"],
                 image_physical_bytes=0,
                 container_physical_bytes=u["data_extent_bytes"] + u["metadata_nodes"] * node * dup,
                 page_cache_bytes=0, cow_blocks=u["data_extent_bytes"] // mount.sector)


def _entries_cost(driver: BtrfsDriver, layer) -> tuple[int, int]:
    """(data bytes, leaf item bytes) of a layer's entries (its ``derived`` value)."""
    sector = driver.block_size
    data = items = 0
    for e in layer.entries:
        items += object_item_bytes(len(e.path.rsplit("/", 1)[1]))
        if e.type == "file":
            items += driver.extent_item_bytes(e.size)
            if not 0 < e.size <= min(int(driver.options["max_inline"]), sector - 1):
                data += ceil_div(e.size, sector) * sector
    return data, items


def layer_bytes(driver: BtrfsDriver, layer) -> int:
    """A layer subvolume owns its own files' extents and the leaves its entries fill (at
    least the snapshot's root), metadata doubled on disk when DUP."""
    sector = driver.block_size
    node = int(driver.options["node_size"])
    key = ("btrfs", sector, driver.options["max_inline"])
    data, items = layer.derived(key, lambda top: _entries_cost(driver, top))
    nodes = max(1, ceil_div(items, node - LEAF_HEADER_BYTES))
    return data + nodes * node * (2 if driver.options["metadata_dup"] else 1)
