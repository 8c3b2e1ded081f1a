"""Exporting images and container diffs as OCI: layer tars with AUFS whiteouts, image layouts.

The reverse of ``workloads.oci`` / ``workloads.oci_layer``, so a third-party OCI tool
(``umoci unpack``, ``skopeo``, a container runtime) can check what the model says a layer
holds.  Layers are written the way Docker's aufs driver exported them (moby
``pkg/archive``, AUFS whiteout format, which is also the OCI form of image-spec
``layer.md``):

==========================  ===========================================================
entry                       tar member(s)
==========================  ===========================================================
``file``                    regular file: the entry's size of deterministic non-zero bytes
``dir``                     directory; an opaque one is followed by ``DIR/.wh..wh..opq``
``symlink``                 symlink (target as written)
``hardlink``                hard link to the earlier member (the target file of the layer)
``whiteout``                empty regular file ``DIR/.wh.NAME`` (never a 0/0 char device)
==========================  ===========================================================

Members follow the layer's entry order, so a directory precedes its contents and a hard
link its target, and an opaque marker comes right after its directory, before the layer
adds anything inside it (where Docker's lexical walk of ``diff/<ctr>`` put it too; OCI
applies it first whatever the order).  A parent directory the layer does not list and
that no lower layer left visible is written as a ``0755`` root-owned directory before its
first child: the model makes such parents ``0755`` (``simulator.imagetree``) as Docker
does (``pkg/archive`` ``UnpackLayer``: ``MkdirAllAndChownNew(parent, 0755)``), while
``umoci`` would make them ``0777 & ~umask``, so the layer says it explicitly.

Content: the model keeps sizes only (a digest, when an entry has one, cannot be turned back
into bytes), so a file gets bytes derived from its path, streamed in chunks; exports past
``MAX_EXPORT_BYTES`` of file data are refused.  Names, modes, owners and the layer tars are
deterministic (mtime 0), so one image always exports to the same digests.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from simulator.errors import BadInput
from simulator.image import DEFAULT_DIR_MODE, Image, Layer

from .oci import OCI_LAYOUT_FILE, REF_NAME
from .oci_layer import OPAQUE_MARKER, WHITEOUT_PREFIX

OCI_LAYOUT_VERSION = "1.0.0"  # image-spec image-layout.md
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"  # image-spec media-types.md
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"  # uncompressed: digest == diff_id
MAX_EXPORT_BYTES = 1 << 30  # file data one export writes: sizes are symbolic, exported bytes are real
CHUNK = 1 << 16  # bytes of file content generated at a time
HASH_CHUNK = 1 << 20


class _Content:
    """A file's content: its path's SHA-256 with every byte's low bit set, repeated."""

    def __init__(self, path: str, size: int):
        seed = bytes(b | 1 for b in hashlib.sha256(path.encode()).digest())
        self.block = seed * (CHUNK // len(seed))
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        out = (self.block * (n // CHUNK + 1))[:n] if n > CHUNK else self.block[:n]
        self.left -= n
        return out


class _Visible:
    """The directories visible after the layers applied so far (a tree of dicts), so an
    export can tell a parent inherited from below from one it must write itself."""

    def __init__(self) -> None:
        self.root: dict[str, dict | None] = {}

    def _parent(self, path: str, create: bool) -> dict | None:
        node: dict | None = self.root
        for name in path.strip("/").split("/")[:-1]:
            child = node.get(name)
            if child is None:
                if not create:
                    return None
                child = node[name] = {}
            node = child
        return node

    def is_dir(self, path: str) -> bool:
        parent = self._parent(path, create=False)
        return parent is not None and isinstance(parent.get(path.rsplit("/", 1)[1]), dict)

    def apply(self, layer: Layer) -> None:
        """The OCI rules, reduced to what decides which directories exist."""
        self.clear_opaque(layer)
        self.apply_entries(layer)

    def clear_opaque(self, layer: Layer) -> None:
        """First step of a layer: its opaque directories lose their lower contents."""
        for e in layer.entries:
            if e.type == "dir" and e.opaque and self.is_dir(e.path):
                self._parent(e.path, create=False)[e.path.rsplit("/", 1)[1]] = {}  # type: ignore[index]

    def apply_entries(self, layer: Layer) -> None:
        for e in layer.entries:
            parent, name = self._parent(e.path, create=True), e.path.rsplit("/", 1)[1]
            assert parent is not None
            if e.type == "whiteout":
                parent.pop(name, None)
            elif e.type == "dir":
                if not isinstance(parent.get(name), dict):
                    parent[name] = {}
            else:
                parent[name] = None


def _info(name: str, kind: bytes, mode: int = 0, uid: int = 0, gid: int = 0, size: int = 0,
          linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.size, info.linkname = kind, mode, uid, gid, size, linkname
    info.mtime = 0
    return info


def _member_name(path: str) -> str:
    return path.lstrip("/")


def write_layer_tar(layer: Layer, out: IO[bytes], below: _Visible | None = None) -> int:
    """Write ``layer`` as an uncompressed OCI layer tar to ``out``; return the member count.
    ``below`` is the state the lower layers leave (None: the layer is the bottom one); it
    is advanced past ``layer``."""
    below = below if below is not None else _Visible()
    below.clear_opaque(layer)
    members = 0
    written: set[str] = set()  # parent directories this layer has (listed or added)
    written.update(e.path for e in layer.entries if e.type == "dir")
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for e in layer.entries:
            parts = e.path.strip("/").split("/")
            for i in range(1, len(parts)):
                parent = "/" + "/".join(parts[:i])
                if parent not in written and not below.is_dir(parent):
                    tar.addfile(_info(_member_name(parent) + "/", tarfile.DIRTYPE, DEFAULT_DIR_MODE))
                    written.add(parent)
                    members += 1
            name = _member_name(e.path)
            if e.type == "file":
                tar.addfile(_info(name, tarfile.REGTYPE, e.mode, e.uid, e.gid, e.size), _Content(e.path, e.size))
            elif e.type == "dir":
                tar.addfile(_info(name + "/", tarfile.DIRTYPE, e.mode, e.uid, e.gid))
                if e.opaque:
                    tar.addfile(_info(f"{name}/{OPAQUE_MARKER}", tarfile.REGTYPE, 0o644))
                    members += 1
            elif e.type == "symlink":
                tar.addfile(_info(name, tarfile.SYMTYPE, 0o777, e.uid, e.gid, linkname=e.target or ""))
            elif e.type == "hardlink":
                tar.addfile(_info(name, tarfile.LNKTYPE, linkname=_member_name(e.target or "")))
            else:  # whiteout: an empty regular file, as Docker's AUFS-format export writes it
                head, _, base = name.rpartition("/")
                tar.addfile(_info(f"{head}/{WHITEOUT_PREFIX}{base}" if head else f"{WHITEOUT_PREFIX}{base}",
                                  tarfile.REGTYPE, 0o644))
            members += 1
    below.apply_entries(layer)
    return members


@dataclass(frozen=True)
class Blob:
    digest: str  # "sha256:<hex>"
    size: int


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _check_size(layers: tuple[Layer, ...], what: str) -> None:
    total = sum(e.size for layer in layers for e in layer.entries if e.type == "file")
    if total > MAX_EXPORT_BYTES:
        raise BadInput(f"{what}: {total:,} bytes of file data to export, more than the {MAX_EXPORT_BYTES:,} "
                       f"an export writes (sizes are symbolic in the model, exported bytes are real)")


def export_layer(image: Image, layer: Layer, path: str | Path) -> tuple[Blob, int]:
    """Write ``layer`` (a layer on top of ``image``, e.g. a container's diff) as a layer tar
    at ``path``; return its blob descriptor and member count."""
    _check_size((layer,), str(path))
    below = _Visible()
    for lower in image.layers:
        below.apply(lower)
    path = Path(path)
    try:
        fh = path.open("wb")
    except OSError as exc:
        raise BadInput(f"{path}: cannot write: {exc.strerror}") from None
    try:
        with fh:
            members = write_layer_tar(layer, fh, below)
    except BaseException:
        path.unlink(missing_ok=True)  # no half-written layer left behind
        raise
    return Blob(_file_digest(path), path.stat().st_size), members


def _put_blob(blobs: Path, data: bytes) -> Blob:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return Blob(f"sha256:{digest}", len(data))


def _descriptor(media: str, blob: Blob, **extra: object) -> dict[str, object]:
    return {"mediaType": media, "digest": blob.digest, "size": blob.size, **extra}


def export_layout(image: Image, path: str | Path, tag: str = "latest") -> list[Blob]:
    """Write ``image`` as an OCI image layout directory (created, or added to as one more
    tagged manifest if it is already a layout); return the layer blobs, bottom first."""
    _check_size(image.layers, image.source)
    root = Path(path)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (root / OCI_LAYOUT_FILE).write_text(json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    layers: list[Blob] = []
    below = _Visible()
    for k, layer in enumerate(image.layers):
        tmp = blobs / f".layer-{os.getpid()}-{k}.tmp"
        with tmp.open("wb") as fh:
            write_layer_tar(layer, fh, below)
        blob = Blob(_file_digest(tmp), tmp.stat().st_size)
        tmp.replace(blobs / blob.digest.split(":", 1)[1])
        layers.append(blob)
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]}}
    config_blob = _put_blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                "config": _descriptor(MEDIA_CONFIG, config_blob),
                "layers": [_descriptor(MEDIA_LAYER, b) for b in layers]}
    manifest_blob = _put_blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    index_path = root / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else \
        {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []}
    index["manifests"] = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != tag]
    index["manifests"].append(_descriptor(MEDIA_MANIFEST, manifest_blob, annotations={REF_NAME: tag}))
    index_path.write_text(json.dumps(index, sort_keys=True))
    return layers


def diff_cell(cell, container: int, output: str | Path) -> dict[str, object]:
    """``layerbench diff``: replay ``cell`` (a ``simulator.runner.Cell``) and write container
    ``container``'s changes, the driver's ``diff``, as a layer tar over its image."""
    from simulator.harness import Run
    from simulator.runner import prepare

    if not 0 <= container < cell.containers:
        raise BadInput(f"--container {container}: only {cell.containers} container(s) run")
    prepared = prepare(cell)
    run = Run(prepared.driver, prepared.image, cell.containers, prepared.tree)
    for op in prepared.ops:
        run.apply(op)
    mount = run.mounts[container]
    layer = run.driver.diff(mount.id)
    blob, members = export_layer(mount.ns.tree.image, layer, output)
    return {"output": str(output), "mediaType": MEDIA_LAYER, "digest": blob.digest, "size": blob.size,
            "entries": len(layer.entries), "members": members, "diff_bytes": run.driver.diff_size(mount.id)}
