"""An image layer laid down on a thin device (ext4 or xfs) the way ``simulator/real/thin.py``
lays it.

Where the kernel puts an inode depends on what the filesystem held when it was made: the
lowest free slot of its group, where a slot freed on an earlier mount is taken again
(``drivers.ext4alloc``), or the free inode nearest its directory's (``drivers.xfsalloc``).  So the layers are laid as ``simulator.real.btrfs.apply_layer``
does, step by step: first every whiteout's ``rm -rf`` and every opaque directory emptied,
then each entry in order, its missing parents made (``os.makedirs``), an existing entry of
another kind removed first, a file or link replacing whatever was there, an existing
directory kept (only its attributes change).  Each step allocates and frees what the real
one does, and dirties the metadata blocks it writes.

The merged view the steps need (``LaidView``: which inode each path holds) is handed from a
layer to the one built on it; a second layer on the same parent (two containers committed)
gets it by laying the parent's layers again (``view_of``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from simulator.image import Layer
from simulator.ranges import RangeSet
from simulator.units import round_up

from .fsgeometry import FS_BLOCK
from .thinlayout import FileRec
from .xfsalloc import NO_BLOCK, XFS_DIR_SF_HEADER, sf_entry_bytes

if TYPE_CHECKING:
    from .thinfs import ThinFs

FAST_SYMLINK_MAX = 59  # ext4_inode_is_fast_symlink: a target shorter than i_block's 60 bytes
XFS_LOCAL_SYMLINK_MAX = 336  # xfs_symlink: in the inode up to XFS_LITINO (512 - 176-byte v3 core)


@dataclass
class Inode:
    kind: str  # "dir", "file" or "symlink"
    names: int
    blocks: list[tuple[int, int]] = field(default_factory=list)  # (device offset, bytes)


@dataclass
class LaidView:
    """Path -> inode of everything laid so far, each directory's names in creation order and
    the bytes they would take in an xfs shortform directory."""

    inos: dict[str, int]
    kids: dict[str, dict[str, None]]
    inodes: dict[int, Inode]
    sizes: dict[str, int]

    @classmethod
    def empty(cls, root_ino: int, root_block: int) -> LaidView:
        blocks = [(root_block * FS_BLOCK, FS_BLOCK)] if root_block >= 0 else []
        return cls({"/": root_ino}, {"/": {}}, {root_ino: Inode("dir", 1, blocks)}, {"/": XFS_DIR_SF_HEADER})


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _name(path: str) -> str:
    return path.rsplit("/", 1)[1]


class _Laying:
    """One layer's steps on ``fs``, keeping ``view`` and the layer's ``Layout`` in step."""

    def __init__(self, fs: ThinFs, view: LaidView):
        self.fs, self.view, self.layout = fs, view, fs.layout
        # the files' data, written at the end of the layer in one device write (the union
        # is what the device sees either way; one write per file cost 2 s on 100,000 files)
        self.data = RangeSet()

    def is_dir(self, path: str) -> bool:
        ino = self.view.inos.get(path)
        return ino is not None and self.view.inodes[ino].kind == "dir"

    def _link(self, path: str, ino: int) -> None:
        view, parent = self.view, _parent(path)
        view.inos[path] = ino
        view.kids[parent][_name(path)] = None
        view.sizes[parent] += sf_entry_bytes(_name(path))
        self._reformat(parent)
        self.fs.dirty_block(self.dir_block(parent))

    def dir_block(self, path: str) -> int:
        blocks = self.view.inodes[self.view.inos[path]].blocks
        return blocks[0][0] // FS_BLOCK if blocks else NO_BLOCK

    def _reformat(self, path: str) -> None:
        """xfs: a directory's entries move to a block of their own when they outgrow the
        inode, and back when they fit again (``ThinFs.dir_format``)."""
        ino = self.view.inos[path]
        block = self.dir_block(path)
        new = self.fs.dir_format(ino, block, self.view.sizes[path])
        if new == block:
            return
        self.view.inodes[ino].blocks = [(new * FS_BLOCK, FS_BLOCK)] if new >= 0 else []
        loc = (ino, new)
        if path == "/":
            self.layout.root = loc
        else:
            self.layout.dirs[path] = loc

    def remove(self, path: str) -> None:
        """``_rm_rf``: a directory's contents first (shutil.rmtree), then the name."""
        view, fs = self.view, self.fs
        ino = view.inos.get(path)
        if ino is None:
            return
        inode = view.inodes[ino]
        if inode.kind == "dir":
            self.empty(path)
            del view.kids[path]
            del view.sizes[path]
            self.layout.dirs[path] = None
            fs.forget_block(self.dir_block(path))  # ext4_free_blocks(FORGET)
        del view.inos[path]
        del view.kids[_parent(path)][_name(path)]
        view.sizes[_parent(path)] -= sf_entry_bytes(_name(path))
        self._reformat(_parent(path))
        fs.dirty_block(self.dir_block(_parent(path)))
        fs.dirty_inode(ino)  # dtime, or the link count
        inode.names -= 1
        if inode.names == 0:
            del view.inodes[ino]
            fs.free_inode(ino, inode.kind == "dir")
            fs.free_extents(inode.blocks)

    def empty(self, path: str) -> None:
        """Remove everything in directory ``path`` (an opaque directory, ``rm -rf``)."""
        for name in list(self.view.kids[path]):
            self.remove(f"{path.rstrip('/')}/{name}")

    def mkdir(self, path: str) -> int:
        fs = self.fs
        parent = self.view.inos[_parent(path)]
        ino = fs.new_inode(parent, _name(path), True)
        block = fs.new_dir_block(ino)
        self.view.inodes[ino] = Inode("dir", 1, [(block * FS_BLOCK, FS_BLOCK)] if block >= 0 else [])
        self.view.kids[path] = {}
        self.view.sizes[path] = XFS_DIR_SF_HEADER
        self._link(path, ino)
        self.layout.dirs[path] = (ino, block)
        fs.dirty_inode(ino)
        fs.dirty_ialloc(ino)
        return ino

    def makedirs(self, path: str) -> None:
        if path != "/" and not self.is_dir(path):
            self.makedirs(_parent(path))
            self.mkdir(path)

    def new_file(self, path: str, size: int, kind: str = "file") -> int:
        fs = self.fs
        ino = fs.new_inode(self.view.inos[_parent(path)], _name(path), False)
        blocks = fs.alloc(round_up(size, FS_BLOCK), regular=kind == "file", near=ino) if size else []
        self.view.inodes[ino] = Inode(kind, 1, blocks)
        self._link(path, ino)
        fs.dirty_inode(ino)
        fs.dirty_ialloc(ino)
        if blocks:
            fs.dirty_alloc(blocks)
            for d, n in blocks:
                self.data.add(d, d + n)
        return ino


def build_laid_layer(fs: ThinFs, layer: Layer, view: LaidView) -> LaidView:
    """Untar ``layer`` into its fresh snapshot ``fs`` (mount, the steps, sync, unmount) and
    return the merged view after it."""
    fs.mount()
    lay = _Laying(fs, view)
    layout, state = fs.layout, fs.state
    layout.first_ino = state.next_image_ino
    for e in layer.entries:
        if e.type == "whiteout":
            lay.remove(e.path)
        elif e.type == "dir" and e.opaque and lay.is_dir(e.path):
            lay.empty(e.path)
    for e in layer.entries:
        lay.makedirs(_parent(e.path))
        if e.type == "whiteout":
            continue
        if e.type == "dir":
            if not lay.is_dir(e.path):
                lay.remove(e.path)
                lay.mkdir(e.path)
            fs.dirty_inode(view.inos[e.path])  # chown, chmod
            continue
        lay.remove(e.path)
        if e.type == "file":
            ino = lay.new_file(e.path, e.size)
            layout.files[state.next_image_ino] = FileRec(ino, tuple(view.inodes[ino].blocks))
            state.next_image_ino += 1
        elif e.type == "hardlink":
            ino = view.inos.get(str(e.target))
            if ino is None or view.inodes[ino].kind != "file":
                continue  # nothing to link to (an image that never validated)
            view.inodes[ino].names += 1
            lay._link(e.path, ino)
            fs.dirty_inode(ino)
        else:
            target = len(str(e.target).encode("utf-8", "surrogateescape"))
            inline = FAST_SYMLINK_MAX if fs.ext4 else XFS_LOCAL_SYMLINK_MAX
            layout.links[e.path] = lay.new_file(e.path, FS_BLOCK if target > inline else 0, "symlink")
    fs.write(lay.data)
    fs.commit()
    return view


def lay_image_layer(origin: ThinFs, fs: ThinFs, layers: Sequence[Layer], base: ThinFs) -> None:
    """Lay the last of ``layers`` on ``fs``, a fresh snapshot of ``origin`` (which holds the
    others), on the view below, which passes to ``fs``; where another layer took it already,
    the layers below are laid again from ``base`` to find it (``view_of``)."""
    view, origin.view = origin.view, None
    if view is None:
        view = view_of(base, list(layers[:-1]))
    fs.view = build_laid_layer(fs, layers[-1], view)


def view_of(fs_at_mkfs: ThinFs, layers: list[Layer]) -> LaidView:
    """The view after ``layers``, laid again on a scratch copy of the base device."""
    fs = fs_at_mkfs.snapshot("scratch")
    view = LaidView.empty(*fs.layout.root)
    for layer in layers:
        fs = fs.snapshot("scratch")
        view = build_laid_layer(fs, layer, view)
    return view
