"""The benchmarks of ``layerbench bench`` timed in wall seconds: the simulator against the
real overlay backend (``--vs-real``), and campaigns over processes (``--jobs``).

Kept apart from ``simulator.bench`` (CPU-time benchmarks of the model itself) because these
measure the machine as much as the code: the kernel's work, and cores shared with whatever
else runs, which ``bench_campaign`` records next to its figures.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from .bench import TARGET_CAMPAIGN_JOBS_RATIO, TARGET_CAMPAIGN_SECONDS, Result, Sizes
from .harness import simulate
from .runner import gc_paused


# The simulator's side of ``bench_real`` is a few milliseconds: one preempted round, or a
# frequency step, moved its best of 3 by 2x between runs (3.3 ms, then 6.1 ms).  Like
# pytest-benchmark's ``max_time``, it repeats until its rounds add up to this much wall time.
REAL_SIM_SECONDS = 1.0
REAL_SIM_MAX_ROUNDS = 1000


def bench_real(sizes: Sizes) -> list[Result]:
    """The simulator against the real overlay backend on each of ``sizes.real_cells``, two
    ways, in wall seconds: the operations alone and end to end.

    *Operations*: ``simulate`` against the backend's ``real_seconds`` (its mount and the
    operations, timed in the replaying child).  Both sides start from an image in memory:
    the kernel's lower directories were laid down moments before (their dentries and pages
    cached), so the simulator's inputs are loaded and its merged tree built once, and one
    untimed run makes its directory objects (``simulator.treestore`` builds them on first
    use); each timed round is then a fresh driver, the replay and the metrics, and the
    rounds go on until they add up to ``REAL_SIM_SECONDS`` (the best one counts).  *End to
    end*: ``run_cell`` against ``run_real``, cold: inputs loaded, the image laid down (on
    tmpfs for the kernel), replayed, measured.

    The kernel's side is the best of ``rounds`` runs too, as the simulator's: on this
    machine the page-writes trace (723 MB copied up into tmpfs) took 0.36 s in one run and
    2.03 s in the next, and a single slow run flattered the ratio by 5x."""
    from drivers import make_driver

    from .real import run_real
    from .runner import Cell, prepare, run_cell

    out = []
    for label, image, workload, target in sizes.real_cells:
        cell = Cell("overlay", image, workload)
        prepared = prepare(cell)
        sim, whole = [], []
        for warm in range(REAL_SIM_MAX_ROUNDS + 1):
            driver = make_driver(cell.driver, cell.options)
            with gc_paused():
                start = time.perf_counter()
                simulate(driver, prepared.image, prepared.ops, 1, None, prepared.tree)
                if warm:
                    sim.append(time.perf_counter() - start)
            if len(sim) >= sizes.rounds and sum(sim) >= REAL_SIM_SECONDS:
                break
        for _ in range(sizes.rounds):
            start = time.perf_counter()
            run_cell(cell)
            whole.append(time.perf_counter() - start)
        real_rounds, real_wholes = [], []
        for _ in range(sizes.rounds):
            start = time.perf_counter()
            real_rounds.append(run_real(cell)["metrics"]["real_seconds"])
            real_wholes.append(time.perf_counter() - start)
        real, real_whole = min(real_rounds), min(real_wholes)
        r = Result("real", f"vs-real[overlay-{label}]", {"label": label, "image": image, "workload": workload}, sim)
        r.extra.update(ops=len(prepared.ops), real_seconds=real, real_rounds_seconds=real_rounds,
                       sim_seconds=min(sim),
                       real_ratio=round(real / min(sim), 1), real_end_to_end_seconds=real_whole,
                       sim_end_to_end_seconds=min(whole), real_ratio_end_to_end=round(real_whole / min(whole), 1),
                       target_ratio=target)
        out.append(r)
    return out


CAMPAIGN_FULL = "default"  # the built-in campaign issue 7 names
CAMPAIGN_QUICK: dict[str, Any] = {  # 48 cells, a few seconds: one image, three drivers
    "name": "bench-quick", "seeds": [0, 1], "containers": [1, 4],
    "images": [{"name": "synthetic", "params": {"layers": 8, "files": 2000}}],
    "drivers": [{"name": d} for d in ("overlay", "devicemapper", "vfs")],
    "workloads": [{"name": w} for w in ("append-log", "small-files", "package-install", "read-startup")]}
CAMPAIGN_JOBS = (1, 2)
CAMPAIGN_ROUNDS = 2  # each round runs the campaign once per CAMPAIGN_JOBS value (~45 s in all)


def _busy_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used (not idle, not waiting for I/O)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _cpu_bound_seconds(extra: dict[str, Any]) -> float:
    """A run's wall time if each of its processes had a core: the coordinator's CPU plus an
    even share of its workers' (an underestimate by the imbalance between workers)."""
    return extra["parent_cpu_seconds"] + extra["workers_cpu_seconds"] / CAMPAIGN_JOBS[-1]


def bench_campaign(campaign: str | dict[str, Any], rounds: int = CAMPAIGN_ROUNDS) -> list[Result]:
    """A campaign end to end (``run_campaign``, no charts) at each of ``CAMPAIGN_JOBS``, one run of
    each per round, in a fresh directory every time; times are wall seconds.

    ``extra`` says where the time went: ``cpu_seconds`` of this process and of its workers
    (``RUSAGE_CHILDREN``: the pool's workers are reaped before ``run_campaign`` returns),
    ``others_cpu_seconds`` used meanwhile by every other process on the machine, and the
    1-minute load average before each run.  The last result carries the ratio of
    throughputs, best round over best round and round by round (the two runs of a round saw
    about the same load), and ``cpu_bound_ratio``: the ratio if every process had a core of
    its own (``--jobs 1``'s CPU over the coordinator's CPU plus an even share of the workers'
    at ``--jobs 2``), the figure an idle machine's wall ratio approaches (less the imbalance
    between workers) where other processes took cores away."""
    import resource

    from .campaign import load_campaign
    from .campaign.run import run_campaign

    spec = load_campaign(campaign)
    cells = len(spec.cells)
    runs: dict[int, list[dict[str, float]]] = {jobs: [] for jobs in CAMPAIGN_JOBS}
    for _ in range(rounds):
        for jobs in CAMPAIGN_JOBS:
            with tempfile.TemporaryDirectory(prefix="layerbench-bench-") as tmp:
                load = os.getloadavg()[0]
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                busy, cpu, start = _busy_cpu_seconds(), time.process_time(), time.perf_counter()
                run_campaign(spec, Path(tmp) / "out", jobs=jobs, report=False, progress=None)
                wall = time.perf_counter() - start
                parent = time.process_time() - cpu
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                workers = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
                others = max(0.0, _busy_cpu_seconds() - busy - parent - workers)
            runs[jobs].append({"seconds": wall, "parent_cpu": parent, "workers_cpu": workers, "others_cpu": others,
                               "load": load})
    out = []
    for jobs, rs in runs.items():
        best = min(rs, key=lambda r: r["seconds"])
        r = Result("campaign", f"campaign[{spec.name}-jobs{jobs}]", {"campaign": spec.name, "jobs": jobs},
                   [x["seconds"] for x in rs])
        r.extra.update(cells=cells, cells_per_second=round(cells / best["seconds"], 2), timer="time.perf_counter",
                       cpu_seconds=round(best["parent_cpu"] + best["workers_cpu"], 2),
                       parent_cpu_seconds=round(best["parent_cpu"], 2),
                       workers_cpu_seconds=round(best["workers_cpu"], 2),
                       others_cpu_seconds=round(best["others_cpu"], 2),
                       rounds_cpu_seconds=[round(x["parent_cpu"] + x["workers_cpu"], 2) for x in rs],
                       rounds_others_cpu_seconds=[round(x["others_cpu"], 2) for x in rs],
                       load_average=[round(x["load"], 2) for x in rs], target_seconds=TARGET_CAMPAIGN_SECONDS)
        out.append(r)
    one, many = out[0], out[-1]
    by_round = [a["seconds"] / b["seconds"] for a, b in zip(runs[CAMPAIGN_JOBS[0]], runs[CAMPAIGN_JOBS[-1]])]
    many.extra.update(jobs_ratio=round(min(one.times) / min(many.times), 3),
                      jobs_ratio_rounds=[round(x, 3) for x in by_round],
                      cpu_ratio=round(many.extra["cpu_seconds"] / one.extra["cpu_seconds"], 3),
                      cpu_bound_ratio=round(one.extra["cpu_seconds"] / _cpu_bound_seconds(many.extra), 3),
                      target_jobs_ratio=TARGET_CAMPAIGN_JOBS_RATIO)
    return out
