"""``layerbench bench``'s fleet: 1,000 containers starting up on one image, per driver.

Issue 7 asks that 1,000 containers on a 100,000-file image fit in 1 GiB.  Containers that
were only started hold almost nothing (``bench.bench_containers``); a fleet that *starts*
reads its image: ``read-startup``, each container reading the same 6.4 % of the image's
bytes (6,210 files on the bench image), as 1,000 replicas of one service do.  What each
container keeps then is what it looked up and read (cold-lookup keys, image files first
read, relatime state, and its own page cache where the driver shares none), so this is
the figure that shows whether a fleet fits.  The metrics at the end count too: they are
part of every run, and on devicemapper the final sync writes every container's dirty
inode blocks, whose written ranges the thin device keeps.

Each driver's fleet runs in a process of its own, so that its peak resident size (the
kernel's high-water mark: image, tree, operations and every container, whatever the
allocator did) is its alone; two run at a time, one per core.  The per-container figures
are the RSS the replay added, and the replay with the metrics, over the containers: RSS,
not tracemalloc, because part of a container's state lives in C (``pyroaring`` bitmaps,
numpy arrays) where tracemalloc does not look.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from .bench import TARGET_CONTAINERS_BYTES, Result, Sizes, _rss
from .costmodel import CostModel
from .harness import Run
from .imagetree import ImageTree
from .inputs import load_image, load_workload
from .runner import gc_paused, peak_rss_bytes

FLEET_PROCESSES = 2  # one per core of the 2-core machine issue 7 names


def bench_fleet(sizes: Sizes, drivers: list[str]) -> list[Result]:
    """``sizes.fleet_containers`` containers running ``sizes.fleet_workload`` on
    ``sizes.container_image``, per driver, each driver in a fresh process."""
    spec = f"{sizes.fleet_workload}{',' if ':' in sizes.fleet_workload else ':'}containers={sizes.fleet_containers}"
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(FLEET_PROCESSES, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {d: pool.submit(fleet_run, d, sizes.container_image, spec, sizes.fleet_containers) for d in drivers}
        measured = {d: f.result() for d, f in futures.items()}
    out = []
    for driver, m in measured.items():
        r = Result("fleet", f"fleet[{driver}]", {"driver": driver, "image": sizes.container_image, "workload": spec},
                   [m["seconds"]])
        r.extra.update(m, target_bytes=TARGET_CONTAINERS_BYTES)
        out.append(r)
    return out


def fleet_run(driver: str, image_spec: str, workload: str, containers: int) -> dict[str, Any]:
    """One fleet in this process, replayed and measured as ``simulate`` does: its resident
    sizes (after the replay, and after the metrics) and the replay's CPU seconds."""
    from drivers import make_driver

    with gc_paused():
        image = load_image(image_spec, 0)
        tree = ImageTree.build(image)
        ops = load_workload(workload, tree, 0)
        before = _rss()  # the image, its tree and the operations: the input
        start = time.process_time()
        run = Run(make_driver(driver), image, containers, tree)
        run.replay(ops)
        seconds = time.process_time() - start
        replayed = _rss()
        run.finish(CostModel())  # the metrics, as every run computes them (devicemapper's sync
        after = _rss()  # writes each container's dirty inode blocks: ~43 KiB of written ranges)
    return {"containers": containers, "ops": len(ops), "seconds": seconds, "ops_per_second": round(len(ops) / seconds),
            "input_rss_bytes": before, "replayed_rss_bytes": replayed, "rss_bytes": after,
            "peak_rss_bytes": peak_rss_bytes(),  # never below the RSS now, so never below ``after``
            "bytes_per_container": round((replayed - before) / containers),
            "finished_bytes_per_container": round((after - before) / containers)}
