"""One OCI layer tar (or a plain directory) as the SPEC section 3 entries of one layer.

Layer tars are read as a stream, header by header: nothing is extracted, and a member's data
is never held in memory (it is skipped, or hashed in chunks when digests are asked for), so a
layer that declares a 1 TiB file costs one header.  The OCI layer rules
(image-spec ``layer.md``) map onto entries as follows:

====================================  ==================================================
tar member                            entry
====================================  ==================================================
regular file (``0``, ``\\0``, ``7``)    ``file`` with the header's size, mode, uid, gid
directory (``5``)                      ``dir``
symlink (``2``)                        ``symlink`` (target kept as written)
hard link (``1``)                      ``hardlink`` to an earlier file of the same layer
``DIR/.wh..wh..opq``                   ``DIR`` becomes an opaque ``dir``
``DIR/.wh.NAME``                       ``whiteout`` of ``DIR/NAME``
``.wh..wh.*`` other than ``.opq``      skipped (AUFS bookkeeping such as ``.wh..wh.plnk``)
whiteout and entry for one path        the entry (OCI: a whiteout hides lower layers only);
                                       a directory so replaced becomes opaque
====================================  ==================================================

Refused with ``BadInput`` (exit code 2), before any image exists: absolute member names or
link names, ``..`` components, a relative symlink whose target climbs above the root from its
directory (absolute targets are fine: a container resolves them from its own root), hard
links to anything but an earlier regular file of the same layer, character and block
devices, FIFOs, two members for one path, a member declaring more than ``MAX_FILE_SIZE``
bytes or more data than the archive holds, and images past the bounds below.
"""

from __future__ import annotations

import hashlib
import stat
import tarfile
from dataclasses import dataclass, field
from typing import IO, Any

from zlib import error as zlib_error

from simulator.errors import BadInput
from simulator.image import MAX_FILE_SIZE

MAX_ENTRIES = 2_000_000  # bound on members per image: Debian's full archive tree has ~1.5M files
MAX_DECLARED_BYTES = 2**50  # 1 PiB of declared file data per image: far above any real image
OPAQUE_MARKER = ".wh..wh..opq"  # OCI image-spec layer.md, "Opaque Whiteout"
WHITEOUT_PREFIX = ".wh."  # OCI image-spec layer.md, "Whiteouts"
GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # RFC 8878 frame magic
HASH_CHUNK = 1 << 20  # bytes read at a time when hashing content


@dataclass
class Budget:
    """Bounds shared by every layer of one image (entries and declared bytes)."""

    source: str
    entries: int = 0
    declared_bytes: int = 0

    def charge(self, size: int, where: str) -> None:
        self.entries += 1
        self.declared_bytes += size
        if self.entries > MAX_ENTRIES:
            raise BadInput(f"{where}: more than {MAX_ENTRIES:,} entries in one image")
        if self.declared_bytes > MAX_DECLARED_BYTES:
            raise BadInput(f"{where}: declared file sizes add up to more than {MAX_DECLARED_BYTES:,} bytes")


def clean_name(name: str, where: str) -> str | None:
    """``./usr//bin/`` -> ``/usr/bin``; None for the root itself; BadInput if it escapes."""
    if name.startswith("/"):
        raise BadInput(f"{where}: member {name!r} has an absolute name")
    if "\0" in name:
        raise BadInput(f"{where}: member {name!r} contains a NUL byte")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(f"{where}: member {name!r} has a '..' component")
    if any(p.startswith(WHITEOUT_PREFIX) for p in parts[:-1]):
        raise BadInput(f"{where}: member {name!r} lies below a name starting with '{WHITEOUT_PREFIX}', "
                       f"which is reserved for whiteouts")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{where}: member name {name!r} is not UTF-8") from None
    return "/" + "/".join(parts) if parts else None


def check_symlink(path: str, target: str, where: str) -> None:
    """Refuse a relative target that climbs above the root from ``path``'s directory."""
    if not target:
        raise BadInput(f"{where}: symlink {path} has an empty target")
    if target.startswith("/"):
        return
    depth = path.count("/") - 1  # directories between the root and the link
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise BadInput(f"{where}: symlink {path} -> {target} points outside the image root")
        elif part not in ("", "."):
            depth += 1


@dataclass
class LayerBuilder:
    """Collects one layer's entries and applies the whiteout rules when done."""

    where: str
    budget: Budget
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    whiteouts: set[str] = field(default_factory=set)
    opaque: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)

    def add(self, path: str, entry: dict[str, Any]) -> None:
        self.budget.charge(entry.get("size", 0), self.where)
        if path in self.entries:
            raise BadInput(f"{self.where}: two members for {path}")
        if entry["type"] == "hardlink":
            if entry["target"] not in self.files:
                raise BadInput(f"{self.where}: hard link {path} -> {entry['target']}: the target must be a "
                               f"regular file earlier in the same layer")
            self.files.add(path)
        elif entry["type"] == "file":
            self.files.add(path)
        self.entries[path] = {"path": path, **entry}

    def add_marker(self, path: str) -> bool:
        """Handle ``.wh.`` names; True when ``path`` was one."""
        parent, _, name = path.rpartition("/")
        if not name.startswith(WHITEOUT_PREFIX):
            return False
        self.budget.charge(0, self.where)
        if name == OPAQUE_MARKER:
            if not parent:
                raise BadInput(f"{self.where}: an opaque marker at the root is not supported")
            if parent in self.opaque:
                raise BadInput(f"{self.where}: two opaque markers for {parent}")
            self.opaque.add(parent)
        elif name.startswith(WHITEOUT_PREFIX * 2):
            pass  # AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content
        else:
            hidden = f"{parent}/{name[len(WHITEOUT_PREFIX):]}"
            if hidden in self.whiteouts:
                raise BadInput(f"{self.where}: two whiteouts for {hidden}")
            self.whiteouts.add(hidden)
        return True

    def finish(self) -> list[dict[str, Any]]:
        out = dict(self.entries)
        for path in self.opaque:
            d = out.get(path)
            if d is None:
                out[path] = {"path": path, "type": "dir", "opaque": True}
            elif d["type"] != "dir":
                raise BadInput(f"{self.where}: opaque marker inside {path}, which this layer makes a {d['type']}")
            else:
                d["opaque"] = True
        for path in self.whiteouts:
            d = out.get(path)
            if d is None:
                out[path] = {"path": path, "type": "whiteout"}
            elif d["type"] == "dir":
                d["opaque"] = True  # the lower directory is gone: nothing below shows through
        return list(out.values())


class _EofGuard:
    """A decompressed stream that raises EOFError when read again after its end.

    tarfile skips a member of a stream by reading and discarding its declared size, and
    keeps calling ``read`` after the end of the data; a member that declares 1 TiB in a
    small layer would spin for hours.  The second empty read ends that."""

    def __init__(self, raw: IO[bytes]):
        self.raw, self.ended = raw, False

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if not data and size != 0:
            if self.ended:
                raise EOFError("the layer ends before the data its members declare")
            self.ended = True
        return data


def _open_layer_stream(fileobj: IO[bytes], where: str) -> tuple[tarfile.TarFile, bool]:
    """A tar reader over ``fileobj`` (seekable for plain tars, streaming for compressed ones),
    and whether it decompresses."""
    head = fileobj.read(4)
    fileobj.seek(0)
    try:
        if head.startswith(GZIP_MAGIC):
            import gzip

            return tarfile.open(fileobj=_EofGuard(gzip.GzipFile(fileobj=fileobj)), mode="r|"), True
        if head.startswith(ZSTD_MAGIC):
            try:
                import zstandard  # type: ignore[import-not-found]
            except ImportError:
                raise BadInput(f"{where}: zstd-compressed layer, but the 'zstandard' Python package is not "
                               f"installed (pip install zstandard)") from None
            stream = zstandard.ZstdDecompressor().stream_reader(fileobj)
            return tarfile.open(fileobj=_EofGuard(stream), mode="r|"), True
        return tarfile.open(fileobj=fileobj, mode="r:"), False
    except (tarfile.TarError, EOFError, OSError, zlib_error) as exc:  # EOFError: a cut gzip header (fuzzing)
        raise BadInput(f"{where}: not a tar archive: {exc}") from None


def _archive_length(fileobj: IO[bytes]) -> int | None:
    try:
        pos = fileobj.tell()
        end = fileobj.seek(0, 2)
        fileobj.seek(pos)
        return end
    except (OSError, AttributeError, ValueError):
        return None


def _digest(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    h = hashlib.sha256()
    src = tar.extractfile(member)
    assert src is not None
    while chunk := src.read(HASH_CHUNK):
        h.update(chunk)
    return "sha256:" + h.hexdigest()


def read_layer_tar(fileobj: IO[bytes], where: str, budget: Budget, digests: bool = False) -> list[dict[str, Any]]:
    """The entries of one layer tar (plain, gzip or zstd), streamed header by header."""
    length = _archive_length(fileobj)
    layer = LayerBuilder(where, budget)
    tar, compressed = _open_layer_stream(fileobj, where)
    try:
        for member in tar:
            _add_member(tar, member, layer, length if not compressed else None, digests)
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib_error) as exc:
        raise BadInput(f"{where}: damaged tar: {exc}") from None
    finally:
        tar.close()
    return layer.finish()


def _add_member(tar: tarfile.TarFile, m: tarfile.TarInfo, layer: LayerBuilder, length: int | None,
                digests: bool) -> None:
    where = layer.where
    path = clean_name(m.name, where)
    if m.size < 0 or m.size > MAX_FILE_SIZE:
        raise BadInput(f"{where}: member {m.name!r} declares {m.size} bytes (maximum {MAX_FILE_SIZE})")
    if m.isreg() and not m.issparse() and length is not None and m.offset_data + m.size > length:
        raise BadInput(f"{where}: member {m.name!r} declares {m.size:,} bytes but the archive ends "
                       f"{length - m.offset_data:,} bytes after its header")
    if path is None:
        return  # the root directory itself: its attributes are the container's, not the layer's
    if layer.add_marker(path):
        return
    owner = {"uid": m.uid, "gid": m.gid} if (m.uid or m.gid) else {}
    mode = stat.S_IMODE(m.mode)
    if m.isreg():
        entry: dict[str, Any] = {"type": "file", "size": m.size, "mode": mode, **owner}
        if digests:
            entry["digest"] = _digest(tar, m)
    elif m.isdir():
        entry = {"type": "dir", "mode": mode, **owner}
    elif m.issym():
        check_symlink(path, m.linkname, where)
        entry = {"type": "symlink", "target": m.linkname, **owner}
    elif m.islnk():
        target = clean_name(m.linkname, where)
        if target is None:
            raise BadInput(f"{where}: hard link {path} points at the root directory")
        entry = {"type": "hardlink", "target": target}
    elif m.ischr() or m.isblk():
        raise BadInput(f"{where}: member {m.name!r} is a device node, which an image layer may not carry here")
    elif m.isfifo():
        raise BadInput(f"{where}: member {m.name!r} is a FIFO, which an image layer may not carry here")
    else:
        raise BadInput(f"{where}: member {m.name!r} has unsupported tar type {m.type!r}")
    layer.add(path, entry)
