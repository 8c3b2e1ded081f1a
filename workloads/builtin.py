"""The built-in images and workloads (more arrive with the workloads issue).

``demo`` is the small example shipped with the package (``workloads/examples/``): the
README's first command runs it.  ``random`` is the seeded generator of ``workloads.random``.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

from simulator.image import Image, image_from_dict
from simulator.imagetree import ImageTree
from simulator.trace import Op, parse_trace_lines

from .random import random_image, random_trace
from .registry import Builtin, Param

EXAMPLES = resources.files("workloads") / "examples"


def _demo_image(rng: np.random.Generator) -> Image:
    return image_from_dict(json.loads((EXAMPLES / "demo-image.json").read_text()), "demo-image.json")


def _demo_trace(rng: np.random.Generator, tree: ImageTree) -> list[Op]:
    return list(parse_trace_lines((EXAMPLES / "demo-trace.jsonl").read_text().splitlines(), "demo-trace.jsonl"))


def _random_image(rng: np.random.Generator, layers: int, entries: int) -> Image:
    return random_image(rng, layers=layers, entries=entries)


def _random_trace(rng: np.random.Generator, tree: ImageTree, ops: int, containers: int) -> list[Op]:
    paths = [p for p, _ in tree.walk()]
    paths.sort()
    return random_trace(rng, paths, ops=ops, containers=containers)


IMAGES: dict[str, Builtin] = {
    "demo": Builtin("demo", "the example image shipped with layerbench (3 layers, 9 files)", (), _demo_image),
    "random": Builtin("random", "a small random image (the differential tests' generator)", (
        Param("layers", 3, "number of layers", 1, 500),
        Param("entries", 12, "entries tried per layer", 0, 100_000),
    ), _random_image),
}

WORKLOADS: dict[str, Builtin] = {
    "demo": Builtin("demo", "the example trace shipped with layerbench (appends, a rename, a delete)", (),
                    _demo_trace),
    "random": Builtin("random", "random operations over the image's paths, failures included", (
        Param("ops", 40, "number of operations", 0, 10_000_000),
        Param("containers", 1, "containers the operations are spread over", 1, 100_000),
    ), _random_trace),
}
