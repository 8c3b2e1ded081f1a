"""Reading what the user points at: image and workload specifications (SPEC section 6).

``IMAGE`` is an image JSON file, an OCI image layout directory, a ``docker save`` tar, a
plain directory (one layer), or a built-in ``NAME[:k=v,...]``; ``WORKLOAD`` is a trace
file (``.jsonl``) or a built-in.  This is the I/O layer between the command line (or a
notebook) and the pure model: it reads files and turns every problem into ``BadInput``
naming the file, line or key at fault.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import BadInput
from .image import Image, image_from_dict
from .imagetree import ImageTree
from .trace import Op, parse_trace_lines

IMAGE_STREAM, WORKLOAD_STREAM = 0, 1  # independent random streams of one seed


def rng_for(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def load_image_json(path: str | Path) -> Image:
    """Read and validate an image JSON file (SPEC section 3)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: no such image file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read: {exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    return image_from_dict(raw, str(path))


def load_trace(path: str | Path) -> list[Op]:
    """Read and validate a whole JSONL trace file (SPEC section 4): columnar when
    ``trace_columns`` is sure of the file, else line by line (which words any error)."""
    from .trace_columns import load_trace_columns  # pyarrow: 0.25 s and ~60 MiB, only for trace files

    path = Path(path)
    try:
        data = path.read_bytes()  # once: a pipe or /dev/stdin cannot be read again
        ops = load_trace_columns(data)
        if ops is not None:
            return ops
        with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8") as fh:  # as open(): universal newlines
            return list(parse_trace_lines(fh, str(path)))
    except FileNotFoundError:
        raise BadInput(f"{path}: no such trace file") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text: {exc.reason}") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, not a trace file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from None


def is_file_spec(spec: str) -> bool:
    """True when ``spec`` names a file or directory rather than a built-in generator."""
    return _looks_like_file(spec)


def _looks_like_file(spec: str) -> bool:
    name, sep, _ = spec.partition(":")
    if sep and "/" not in name and not Path(spec).exists():
        from workloads.builtin import IMAGES, WORKLOADS

        if name in IMAGES or name in WORKLOADS:
            return False  # a built-in NAME:k=v,..., even when a value is a path (chmod-tree:path=/usr)
    return "/" in spec or spec.endswith((".json", ".jsonl", ".tar")) or Path(spec).exists()


def _import_image(spec: str) -> Image | None:
    """Directories and tars: an OCI layout (``DIR`` or ``DIR:TAG``), a plain directory (one
    layer), a ``docker save`` or OCI layout tar.  None for anything else (an image JSON)."""
    path = Path(spec)
    tag = None
    if not path.exists() and ":" in spec:
        head, _, tail = spec.rpartition(":")
        if Path(head).is_dir() and (Path(head) / "oci-layout").is_file():
            path, tag = Path(head), tail
    if path.is_dir():
        from workloads.oci import OCI_LAYOUT_FILE, load_oci_dir

        if (path / OCI_LAYOUT_FILE).is_file():
            return load_oci_dir(path, tag)
        from workloads.dirimport import load_dir

        return load_dir(path)
    if path.suffix == ".tar":
        if not path.is_file():
            raise BadInput(f"{spec}: no such image tar")
        from workloads.oci import load_image_tar

        return load_image_tar(path)
    return None


def load_image(spec: str, seed: int = 0) -> Image:
    """An image from a file or a built-in generator spec."""
    if _looks_like_file(spec):
        imported = _import_image(spec)
        return imported if imported is not None else load_image_json(spec)
    from workloads.builtin import IMAGES
    from workloads.registry import parse_spec

    name, params = parse_spec(spec)
    builtin = IMAGES.get(name)
    if builtin is None:
        raise BadInput(f"unknown image {spec!r}: not a file, and no built-in image is called {name!r} "
                       f"(built-in: {', '.join(sorted(IMAGES))})")
    values = builtin.parse_params(params, f"image {spec!r}")
    return builtin.build(rng_for(seed, IMAGE_STREAM), **values)


def load_workload(spec: str, tree: ImageTree, seed: int = 0) -> Sequence[Op]:
    """Operations from a trace file or a built-in workload spec (run against ``tree``)."""
    if _looks_like_file(spec):
        return load_trace(spec)
    from workloads.builtin import WORKLOADS
    from workloads.registry import parse_spec

    name, params = parse_spec(spec)
    builtin = WORKLOADS.get(name)
    if builtin is None:
        raise BadInput(f"unknown workload {spec!r}: not a file, and no built-in workload is called "
                       f"{name!r} (built-in: {', '.join(sorted(WORKLOADS))})")
    values = builtin.parse_params(params, f"workload {spec!r}")
    return builtin.build(rng_for(seed, WORKLOAD_STREAM), tree, **values)
