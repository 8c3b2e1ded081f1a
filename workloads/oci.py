"""Importing container images: OCI image layouts (directory or tar) and ``docker save`` tars.

Both formats are a small store of named blobs plus JSON that lists the layers bottom first:

- OCI image layout (image-spec ``image-layout.md``): an ``oci-layout`` file, ``index.json``
  naming manifests, and ``blobs/<alg>/<hex>``; a manifest lists its layers as descriptors.
  ``index.json`` may hold several manifests (tags, ``org.opencontainers.image.ref.name``) or
  nested indexes (multi-platform): a ``LAYOUT:TAG`` spec picks one by tag; otherwise there
  must be exactly one, or one for linux/amd64.
- ``docker save`` (moby ``image/tarexport``): ``manifest.json`` is a list of
  ``{"Config", "RepoTags", "Layers": ["<id>/layer.tar" | "blobs/sha256/<hex>", ...]}``.
  Docker 25 and later write an OCI layout inside the same tar; both shapes are read through
  ``manifest.json``.  Old docker links duplicate layers to one another with symlinks inside
  the outer tar; those are followed inside the tar only.

Blobs are never extracted: a layer inside a tar is read through ``tarfile``'s view of the
member, and every layer goes through ``workloads.oci_layer`` (streamed, hostile members
refused).  Blob digests are checked for shape (no path tricks) but the blob bytes are not
re-hashed.  Layer ids are ``L<index>-<first 12 hex digits of the blob digest>``.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import IO, Any

from simulator.errors import BadInput
from simulator.image import Image, image_from_dict

from .oci_layer import Budget, read_layer_tar

OCI_LAYOUT_FILE = "oci-layout"  # image-layout.md
DOCKER_MANIFEST = "manifest.json"  # moby image/tarexport
REF_NAME = "org.opencontainers.image.ref.name"  # annotations.md
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
DIGEST_RE = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")  # descriptor.md registered algorithms
MAX_JSON_BYTES = 64 << 20  # an index, manifest or docker manifest.json larger than this is not real
MAX_LINK_HOPS = 8  # symlinks followed inside a docker save tar
MAX_INDEX_DEPTH = 4  # nested indexes followed


class DirStore:
    """Blobs of an OCI layout directory."""

    def __init__(self, root: Path):
        self.root = root

    def open(self, name: str) -> IO[bytes]:
        path = self.root / name
        try:
            if path.is_symlink() or not path.is_file():
                raise BadInput(f"{self.root}: {name} is missing or not a regular file")
            return path.open("rb")
        except OSError as exc:
            raise BadInput(f"{self.root}: cannot read {name}: {exc.strerror}") from None

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()


class TarStore:
    """Members of a tar (docker save, or an OCI layout tar), read in place."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.tar = tarfile.open(path, "r:")  # image tars are never compressed as a whole
        except (tarfile.TarError, OSError) as exc:
            raise BadInput(f"{path}: not a readable tar archive: {exc}") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for m in self.tar:
                self.members[m.name.removeprefix("./").strip("/")] = m
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BadInput(f"{path}: damaged tar: {exc}") from None

    def _member(self, name: str) -> tarfile.TarInfo:
        for _ in range(MAX_LINK_HOPS):
            m = self.members.get(name)
            if m is None:
                raise BadInput(f"{self.path}: the archive has no member {name}")
            if not m.issym():
                if not m.isreg():
                    raise BadInput(f"{self.path}: member {name} is not a regular file")
                return m
            parts = name.split("/")[:-1]
            for part in m.linkname.split("/"):
                if part == "..":
                    if not parts:
                        raise BadInput(f"{self.path}: member {name} links outside the archive")
                    parts.pop()
                elif part not in ("", "."):
                    parts.append(part)
            if m.linkname.startswith("/"):
                raise BadInput(f"{self.path}: member {name} links to an absolute path")
            name = "/".join(parts)
        raise BadInput(f"{self.path}: too many symlinks resolving member {name}")

    def open(self, name: str) -> IO[bytes]:
        f = self.tar.extractfile(self._member(name))
        assert f is not None
        return f  # type: ignore[return-value]

    def has(self, name: str) -> bool:
        return name in self.members


Store = DirStore | TarStore


def _check_name(name: object, source: str) -> str:
    """A blob or layer name from JSON: relative, no '..' (the stores resolve nothing else)."""
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/") or "\0" in name:
        raise BadInput(f"{source}: bad blob name {name!r}")
    return name


def _read_json(store: Store, name: str, source: str) -> Any:
    with store.open(name) as fh:
        data = fh.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise BadInput(f"{source}: {name} is larger than {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{source}: {name} is not valid JSON: {exc}") from None


def _blob_name(desc: object, source: str) -> str:
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        raise BadInput(f"{source}: a descriptor needs a 'digest' string")
    digest = desc["digest"]
    if not DIGEST_RE.match(digest):
        raise BadInput(f"{source}: bad digest {digest!r}")
    alg, hexpart = digest.split(":")
    return f"blobs/{alg}/{hexpart}"


def _pick_manifest(store: Store, index: Any, tag: str | None, source: str, depth: int = 0) -> dict[str, Any]:
    if depth > MAX_INDEX_DEPTH or not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise BadInput(f"{source}: index.json has no 'manifests' list")
    found = index["manifests"]
    if tag is not None and depth == 0:
        found = [m for m in found if isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME) == tag]
        if not found:
            raise BadInput(f"{source}: no manifest is tagged {tag!r}")
    if len(found) > 1:
        amd64 = [m for m in found if isinstance(m, dict)
                 and (m.get("platform") or {}).get("architecture") == "amd64"
                 and (m.get("platform") or {}).get("os") == "linux"]
        if len(amd64) != 1:
            tags = sorted(str((m.get("annotations") or {}).get(REF_NAME)) for m in found if isinstance(m, dict))
            raise BadInput(f"{source}: {len(found)} manifests (tags {', '.join(tags)}); name one as LAYOUT:TAG")
        found = amd64
    if not found:
        raise BadInput(f"{source}: the index lists no manifest")
    desc = found[0]
    doc = _read_json(store, _blob_name(desc, source), source)
    if desc.get("mediaType") in INDEX_TYPES or (isinstance(doc, dict) and "manifests" in doc):
        return _pick_manifest(store, doc, None, source, depth + 1)
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        raise BadInput(f"{source}: manifest {desc['digest']} has no 'layers' list")
    return doc


def _layers_to_image(store: Store, names: list[str], ids: list[str], name: str, source: str,
                     digests: bool) -> Image:
    if not names:
        raise BadInput(f"{source}: the image has no layers")
    budget = Budget(source)
    layers = []
    for i, (blob, layer_id) in enumerate(zip(names, ids)):
        where = f"{source}: layer {i} ({blob})"
        with store.open(blob) as fh:
            entries = read_layer_tar(fh, where, budget, digests)
        layers.append({"id": layer_id, "entries": entries})
    return image_from_dict({"name": name, "layers": layers}, source)


def _layer_id(i: int, blob: str) -> str:
    return f"L{i}-{blob.rsplit('/', 1)[-1].removesuffix('.tar').replace('/', '')[:12]}"


def _from_oci(store: Store, tag: str | None, name: str, source: str, digests: bool) -> Image:
    layout = _read_json(store, OCI_LAYOUT_FILE, source)
    if not isinstance(layout, dict) or not isinstance(layout.get("imageLayoutVersion"), str):
        raise BadInput(f"{source}: oci-layout has no 'imageLayoutVersion'")
    manifest = _pick_manifest(store, _read_json(store, "index.json", source), tag, source)
    blobs = [_blob_name(d, source) for d in manifest["layers"]]
    return _layers_to_image(store, blobs, [_layer_id(i, b) for i, b in enumerate(blobs)], name, source, digests)


def _from_docker_save(store: TarStore, source: str, digests: bool) -> Image:
    doc = _read_json(store, DOCKER_MANIFEST, source)
    if not isinstance(doc, list) or len(doc) != 1 or not isinstance(doc[0], dict):
        count = len(doc) if isinstance(doc, list) else 0
        raise BadInput(f"{source}: manifest.json must list exactly one image (it lists {count})")
    layers = doc[0].get("Layers")
    if not isinstance(layers, list):
        raise BadInput(f"{source}: manifest.json has no 'Layers' list")
    names = [_check_name(n, source) for n in layers]
    tags = doc[0].get("RepoTags") or []
    name = tags[0] if tags and isinstance(tags[0], str) else Path(source).stem
    return _layers_to_image(store, names, [_layer_id(i, n.removesuffix("/layer.tar")) for i, n in enumerate(names)],
                            name, source, digests)


def load_oci_dir(path: Path, tag: str | None = None, digests: bool = False) -> Image:
    """An OCI image layout directory (optionally the manifest tagged ``tag``)."""
    name = f"{path.name}:{tag}" if tag else path.name
    return _from_oci(DirStore(path), tag, name, str(path), digests)


def load_image_tar(path: Path, digests: bool = False) -> Image:
    """A ``docker save`` tar, or an OCI image layout packed in a tar."""
    store = TarStore(path)
    try:
        if store.has(DOCKER_MANIFEST):
            return _from_docker_save(store, str(path), digests)
        if store.has(OCI_LAYOUT_FILE):
            return _from_oci(store, None, path.stem, str(path), digests)
        raise BadInput(f"{path}: neither a docker save tar (no manifest.json) nor an OCI layout (no oci-layout)")
    finally:
        store.tar.close()
