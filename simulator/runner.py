"""One run end to end: inputs in, the SPEC section 6 result record out.

This is the layer that reads the clock and the process's memory (the model does neither):
``sim_seconds`` is the wall time of loading, replaying and accounting; ``sim_peak_rss_bytes``
is the process's peak resident set during the run (``peak_rss_bytes``), never below the
current RSS that psutil reports.
"""

from __future__ import annotations

import gc
import resource
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import psutil

from .costmodel import CostModel
from .harness import check_workload, simulate
from .image import Image
from .imagetree import ImageTree
from .inputs import is_file_spec, load_image, load_workload
from .namespace import Namespace
from .trace import Op

SCHEMA_VERSION = 1


@dataclass
class Cell:
    """What one run is: the axes of a campaign cell."""

    driver: str
    image: str
    workload: str
    options: dict[str, Any] = field(default_factory=dict)
    containers: int = 1
    seed: int = 0


@dataclass
class Prepared:
    """A cell's inputs, loaded and validated before any work starts."""

    driver: Any
    image: Image
    tree: ImageTree
    ops: list[Op]


# Built-in inputs a campaign worker keeps: its cells come workload by workload, each image and
# seed for every driver and container count (the default campaign: 480 cells, 40 image/seed
# pairs), and images and trees never change once built.
INPUT_CACHE_IMAGES = 4
_inputs: OrderedDict[tuple[str, int], tuple[Image, ImageTree, dict[str, list[Op]]]] = OrderedDict()


def _built_in_inputs(cell: Cell) -> tuple[Image, ImageTree, list[Op]]:
    key = (cell.image, cell.seed)
    entry = _inputs.get(key)
    if entry is None:
        image = load_image(cell.image, cell.seed)
        entry = _inputs[key] = (image, ImageTree.build(image), {})
        while len(_inputs) > INPUT_CACHE_IMAGES:
            _inputs.popitem(last=False)
    _inputs.move_to_end(key)
    image, tree, workloads = entry
    ops = workloads.get(cell.workload)
    if ops is None:
        ops = workloads[cell.workload] = load_workload(cell.workload, tree, cell.seed)
    return image, tree, ops


def prepare(cell: Cell, reuse_inputs: bool = False) -> Prepared:
    """A cell's driver and validated inputs.  ``reuse_inputs`` (campaign workers): built-in
    images, their trees and built-in workloads come from a small per-process cache."""
    from drivers import make_driver

    driver = make_driver(cell.driver, cell.options)
    if reuse_inputs and not is_file_spec(cell.image) and not is_file_spec(cell.workload):
        image, tree, ops = _built_in_inputs(cell)
    else:
        image = load_image(cell.image, cell.seed)
        tree = ImageTree.build(image)
        ops = load_workload(cell.workload, tree, cell.seed)
    check_workload(ops, cell.containers, cell.workload)
    limit = driver.layer_limit()
    if limit is not None and tree.depth > limit:
        from .errors import BadInput

        raise BadInput(f"{cell.image}: {tree.depth} layers exceed driver {cell.driver}'s limit of {limit}")
    return Prepared(driver, image, tree, ops)


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector for one run.

    A run allocates millions of small acyclic objects (tree nodes, inodes, range sets); the
    collector would rescan the whole image tree on every generation-2 pass, which cost 40%
    of replay time on a 100,000-file image (measured with cProfile).  A run makes only a few
    reference cycles (a mount and its namespace), so nothing piles up; the collector is
    restored afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def reset_peak_rss() -> None:
    """Start the process's peak resident set afresh from its current size (``5`` written to
    ``/proc/self/clear_refs``, Linux 4.0+, proc(5)), so that the next ``peak_rss_bytes`` is
    the peak of what ran since.  Without it the peak is the largest of the process's whole
    life: a campaign worker runs hundreds of cells, and every cell after the largest reported
    that one's peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak then covers the process's life so far


def peak_rss_bytes() -> int:
    """The process's peak resident bytes since ``reset_peak_rss`` (``VmHWM``), never below
    its RSS now.  Not ``getrusage``'s ``ru_maxrss``: that cannot be reset, and Linux carries
    it across ``execve`` (a spawned child reported its parent's 210 MiB as its own peak,
    measured here).  Where ``/proc`` has no ``VmHWM``, ``ru_maxrss`` is the fallback."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))  # kB
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return max(peak, psutil.Process().memory_info().rss)


def run_cell(cell: Cell, cost: CostModel | None = None, reuse_inputs: bool = False) -> dict[str, Any]:
    """Simulate one cell; the record ``layerbench run --json`` prints.  ``est_seconds`` uses
    ``cost``, by default the shipped calibration's parameters for the cell's driver.
    ``reuse_inputs``: see ``prepare`` (``sim_seconds`` then counts no input it reused)."""
    reset_peak_rss()
    start = time.perf_counter()
    if cost is None:
        from .calibration import cost_for

        cost = cost_for(cell.driver)
    with gc_paused():
        prepared = prepare(cell, reuse_inputs)
        metrics = simulate(prepared.driver, prepared.image, prepared.ops, cell.containers, cost, prepared.tree)
    metrics["sim_seconds"] = time.perf_counter() - start
    metrics["sim_peak_rss_bytes"] = peak_rss_bytes()
    return record(cell, prepared.driver.options, metrics, backend="sim")


def record(cell: Cell, options: Mapping[str, Any], metrics: dict[str, Any], backend: str) -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "driver": cell.driver, "options": dict(options), "image": cell.image,
            "workload": cell.workload, "containers": cell.containers, "seed": cell.seed,
            "backend": backend, "metrics": metrics}


def view_cell(cell: Cell, container: int = 0) -> dict[str, dict[str, Any]]:
    """The view of one container after the workload (``layerbench view``)."""
    from .harness import Run
    from .view import view_of

    prepared = prepare(cell)
    if not 0 <= container < cell.containers:
        from .errors import BadInput

        raise BadInput(f"--container {container}: only {cell.containers} container(s) run")
    run = Run(prepared.driver, prepared.image, cell.containers, prepared.tree)
    for op in prepared.ops:
        run.apply(op)
    ns: Namespace = run.namespace(container)
    return view_of(ns)
