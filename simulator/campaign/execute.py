"""Running a campaign's cells: a local process pool or Dask, atomic cell files, resume.

Crash safety comes from one rule: a cell is done exactly when ``cells/<digest>.parquet``
exists, and that file appears by ``rename(2)`` of a complete, fsynced temporary file.  A file
damaged after that (disk, copy, hand edit) is caught by the checksum of its row kept in its
metadata: every run checks every cell file first and recomputes the damaged ones.  So a
``kill -9`` at any moment loses only the cells in flight; a rerun lists ``cells/``, skips what
is there and computes the rest.  A cell that raises is appended to ``failures.jsonl`` and never
written to ``cells/``, so it is retried next time (benchopt once cached crashed runs as done).

Local pool workers write their own cell files; Dask workers return plain records that the
coordinator writes, which keeps them free of any shared-filesystem assumption.  Both compute a
cell with the same ``execute_cell``, so a cell's result is independent of the executor.

Why the local pool is shaped this way (issue 7: ``--jobs 2`` at >= 1.7x the throughput of
``--jobs 1``; measured on the 2-core machine, ``simulator.benchwall.bench_campaign``):

* Workers write their cells.  When the coordinator wrote them (parquet + fsync, ~2.5 ms a
  cell, 480 cells), every worker that finished waited for it before getting its next cell:
  2-3.5 s of the default campaign's ~28 s ran on one core whatever ``--jobs``.
* Workers send back the metrics they wrote, and the coordinator makes the same row
  (``results.row_table``) for ``results.consolidate`` instead of reading the file again:
  reading 480 cell files took 0.7-1 s at the end of the run; making the rows takes 0.2 s,
  while the workers compute.  (Sending the Arrow tables themselves cost 30 ms of pickling
  per 12-cell chunk, a worker waiting for the next chunk meanwhile.)
* Cells go out in chunks of one input group: same built-in image, workload and seed
  (``input_key``), i.e. the same cached image, tree and trace in ``simulator.runner``.  One
  cell at a time in grid order sent neighbouring cells of one group to both workers, so both
  built nearly every image, tree and trace (1.6 s of CPU to build each once); now 2-4 of the
  40 groups are built twice.  Chunks shrink as the queue
  drains (guided scheduling, ``CHUNKS_PER_WORKER``), so the heavy groups at the end of the
  grid (Docker Hub ``build``: 3 s for 12 cells) are split over the workers rather than
  leaving one of them idle at the end.
* Workers are forked (the ``fork`` start method is named, not left to the platform default,
  which Python 3.14 moves to ``forkserver``) after the coordinator imported everything a cell
  needs and froze its objects (``gc.freeze``): a worker pays no import, and its collector does
  not walk, hence copy, the pages it inherited.

Measured together (default campaign, no charts): ``--jobs 1`` 19.1-19.7 s, ``--jobs 2``
9.5-10.4 s (1.9-2.0x) in moments when no other process ran; the coordinator's CPU went from
3.6-4 s to 0.35 s.  Runs interleaved while other processes took 0.5-0.7 of a core: 1.35-1.6x, and
1.0-1.4x for the code before these changes (it was never measured on a quiet machine).

The pool keeps at most ``jobs`` chunks in flight and a worker runs its chunk in order,
writing each cell as it finishes, so a worker killed by the OOM killer leaves its finished
cells done, fails the one cell it was computing (retried next run; the first cell of the
chunk without a file, since a worker stops its chunk at a failed cell), and its other cells
go back to the queue of a rebuilt pool: at most ``jobs`` cells lost, as with one cell a task.
Workers ask the kernel to kill them when the coordinator dies (``PR_SET_PDEATHSIG``), so
``kill -9`` of the coordinator leaves no orphan computing into the void; a worker stopped
mid-write leaves a ``.tmp-*`` file that is never visible as done and is deleted later.  When
the coordinator stops early (Ctrl-C, an error), it tells the workers to stop after their
current cell (``_STOP``) instead of waiting for their whole chunk.  Cell files are the
truth: the manifest of an interrupted run counts only the cells whose chunks came back.
"""

from __future__ import annotations

import ctypes
import gc
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from collections import deque
from pathlib import Path
from typing import Any, Generator, Hashable, Iterator, TextIO

from ..errors import BadInput, LayerbenchError
from .spec import CampaignCell

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Guided scheduling: a chunk is at most 1/(CHUNKS_PER_WORKER * jobs) of the cells left (and
# never more than one input group).  Replaying the default campaign's measured per-cell and
# per-input CPU through this scheduler (2 workers) gave 8.78 s for 4, 8.64 s for 2 or 3, 8.89
# s for 1 (whole groups: the 3 s Docker Hub `build` group last leaves one worker idle) and
# 9.2 s for 16 (66 input builds instead of 40): 2 splits only the last ~4 groups.
CHUNKS_PER_WORKER = 2
DIED = "a worker process died (killed, or out of memory) with this cell in flight"
_STOP: Any = None  # a worker's copy of the pool's stop event (set by _worker_init)


def execute_cell(payload: tuple[str, Any]) -> dict[str, Any]:
    """Run one cell in a worker; never raises, so one bad cell cannot stop a campaign."""
    digest, cell = payload
    try:
        from ..runner import run_cell

        return {"digest": digest, "ok": True, "metrics": run_cell(cell, reuse_inputs=True)["metrics"]}
    except BaseException as exc:  # noqa: BLE001 -- MemoryError, RecursionError... all are cell failures
        return {"digest": digest, "ok": False, "error_type": type(exc).__name__, "error": str(exc),
                "traceback": traceback.format_exc(limit=20)}


def _worker_init(stop: Any = None) -> None:
    global _STOP
    _STOP = stop
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: orphans finish their one cell and exit when the pool's pipe closes
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle


def _died(digest: str, why: str) -> dict[str, Any]:
    return {"digest": digest, "ok": False, "error_type": "WorkerDied", "error": why, "traceback": ""}


def input_key(cell: CampaignCell) -> Hashable:
    """What ``simulator.runner``'s per-process input cache keys a cell's image on: cells of one
    key share their image and tree (and, for the same container count, their trace)."""
    return cell.image.spec, cell.run_seed


def order_by_inputs(cells: list[CampaignCell]) -> list[CampaignCell]:
    """``cells`` with each input group's cells together, groups in order of first appearance."""
    groups: dict[Hashable, list[CampaignCell]] = {}
    for cell in cells:
        groups.setdefault(input_key(cell), []).append(cell)
    return [cell for group in groups.values() for cell in group]


def next_chunk(queue: deque[CampaignCell], jobs: int) -> list[CampaignCell]:
    """The next task: the front of ``queue``, within one input group, guided-size."""
    size = max(1, -(-len(queue) // (CHUNKS_PER_WORKER * jobs)))
    key = input_key(queue[0])
    chunk = [queue.popleft()]
    while queue and len(chunk) < size and input_key(queue[0]) == key:
        chunk.append(queue.popleft())
    return chunk


def execute_chunk(cells_dir: str, chunk: list[CampaignCell]) -> list[dict[str, Any]]:
    """Run ``chunk`` in a pool worker, in order, writing each finished cell's file (its metrics
    come back too, so that consolidating needs not read the file again).  Stops at the
    first failed cell (and when the coordinator says stop): the cells not run come back as
    ``{"digest": ..., "ran": False}`` to be queued again, so that after a worker's death the
    first cell of its chunk without a file is exactly the one it was computing."""
    out: list[dict[str, Any]] = []
    stopped = False
    for cell in chunk:
        stopped = stopped or bool(out) and (not out[-1]["ok"] or (_STOP is not None and _STOP.is_set()))
        if stopped:
            out.append({"digest": cell.digest, "ran": False})
            continue
        outcome = execute_cell((cell.digest, cell.runner_cell()))
        if outcome["ok"]:
            try:
                write_cell(Path(cells_dir), cell, outcome["metrics"])
                outcome["written"] = True
            except Exception as exc:  # noqa: BLE001 -- a full disk fails the cell, retried next run
                outcome = {"digest": cell.digest, "ok": False, "error_type": type(exc).__name__,
                           "error": f"writing the cell file: {exc}", "traceback": traceback.format_exc(limit=20)}
        out.append(outcome)
    return out


def _preload() -> None:
    """Import and load in the coordinator what every cell needs, so that forked workers inherit
    it instead of each paying for it."""
    import pyarrow.parquet  # noqa: F401 -- write_cell's, in the workers

    from ..calibration import default_calibration
    from ..runner import run_cell  # noqa: F401
    from .results import row_table  # noqa: F401

    default_calibration()


def _fork_context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def pool_outcomes(cells: list[CampaignCell], jobs: int, cells_dir: Path) -> Iterator[dict[str, Any]]:
    """Outcomes of ``cells`` as their chunks finish, at most ``jobs`` chunks in flight; a cell
    whose outcome says ``written`` has its file in ``cells_dir`` already (and, unless salvaged
    from a dead worker, its ``metrics``)."""
    queue = deque(order_by_inputs(cells))
    context = _fork_context()
    _preload()
    stop = context.Event()
    while queue:
        lost: list[list[CampaignCell]] = []
        gc.freeze()  # before the fork: see the module docstring
        try:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init,
                                     initargs=(stop,)) as pool:
                try:
                    lost = yield from _drive(pool, queue, jobs, cells_dir)
                except BaseException:
                    stop.set()  # leaving early: workers end at their cell, not their chunk
                    raise
        finally:
            gc.unfreeze()
        # The pool is shut down: no worker is left to finish a file behind our back.
        for chunk in lost:
            yield from _salvage(chunk, cells_dir, queue)


def _drive(pool: ProcessPoolExecutor, queue: deque[CampaignCell], jobs: int,
           cells_dir: Path) -> Generator[dict[str, Any], None, list[list[CampaignCell]]]:
    """Keep ``jobs`` chunks in flight on ``pool`` and yield their outcomes until ``queue`` is
    done or the pool breaks; return the chunks a broken pool lost (``_salvage`` them once the
    pool is shut down)."""
    flight: dict[Any, list[CampaignCell]] = {}
    lost: list[list[CampaignCell]] = []
    broken = False
    while (queue or flight) and not lost and not broken:
        while queue and len(flight) < jobs and not broken:
            chunk = next_chunk(queue, jobs)
            try:
                flight[pool.submit(execute_chunk, str(cells_dir), chunk)] = chunk
            except BrokenProcessPool:  # a worker died idle: a new pool runs the chunk
                queue.extendleft(reversed(chunk))
                broken = True
        finished, _ = wait(flight, return_when=FIRST_COMPLETED)
        for fut in finished:
            chunk = flight.pop(fut)
            try:
                outcomes = fut.result()
            except BrokenProcessPool:
                lost.append(chunk)
                continue
            queue.extendleft(c for c in reversed(chunk) if _not_run(c, outcomes))
            yield from (o for o in outcomes if o.get("ran", True))
    return lost + (list(flight.values()) if lost or broken else [])


def _not_run(cell: CampaignCell, outcomes: list[dict[str, Any]]) -> bool:
    return any(o["digest"] == cell.digest and not o.get("ran", True) for o in outcomes)


def _salvage(chunk: list[CampaignCell], cells_dir: Path, queue: deque[CampaignCell]) -> Iterator[dict[str, Any]]:
    """A chunk whose worker died: cells with a file are done, the first one without is the one
    in flight (failed), the others go back to the front of ``queue``."""
    rest: list[CampaignCell] = []
    died = False
    for cell in chunk:
        if (cells_dir / f"{cell.digest}.parquet").exists():
            yield {"digest": cell.digest, "ok": True, "written": True}
        elif not died:
            died = True
            yield _died(cell.digest, DIED)
        else:
            rest.append(cell)
    queue.extendleft(reversed(rest))


def dask_outcomes(tasks: list[tuple[str, Any]], client: Any) -> Iterator[dict[str, Any]]:
    """Outcomes on a Dask cluster, as they finish; a lost worker fails only its cells."""
    from distributed import as_completed

    futures = {client.submit(execute_cell, task, pure=False): task[0] for task in tasks}
    for fut in as_completed(list(futures)):
        try:
            yield fut.result()
        except Exception as exc:  # noqa: BLE001 -- KilledWorker, CancelledError: the cell failed
            yield {"digest": futures[fut], "ok": False, "error_type": type(exc).__name__, "error": str(exc),
                   "traceback": ""}


def dask_client(address: str, jobs: int | None) -> Any:
    """A client for ``address`` (``tcp://host:port``) or a fresh ``LocalCluster`` (``local``)."""
    try:
        import logging

        from distributed import Client, LocalCluster
    except ImportError:
        raise BadInput("--dask needs dask.distributed: pip install 'layerbench[dask]'") from None
    if address == "local":
        cluster = LocalCluster(n_workers=jobs or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        return Client(cluster)
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise LayerbenchError(f"--dask {address}: cannot reach the scheduler: {exc}") from None


class Progress:
    """One stderr line: cells done, failed, and an ETA from this run's pace."""

    def __init__(self, name: str, total: int, already: int, stream: TextIO | None = sys.stderr):
        self.name, self.total, self.already, self.stream = name, total, already, stream
        self.done = self.failed = 0
        self.start = time.monotonic()
        self.tty = bool(stream and stream.isatty())
        self.step = max(1, (total - already) // 10)

    def update(self, ok: bool) -> None:
        self.done += ok
        self.failed += not ok
        ran = self.done + self.failed
        if self.stream and (self.tty or ran % self.step == 0 or ran == self.total - self.already):
            self.stream.write(("\r" if self.tty else "") + self.line() + ("" if self.tty else "\n"))
            self.stream.flush()

    def line(self) -> str:
        ran = self.done + self.failed
        left = self.total - self.already - ran
        eta = (time.monotonic() - self.start) / ran * left if ran else 0.0
        return (f"{self.name}: {self.already + self.done}/{self.total} cells done, {self.failed} failed, "
                f"ETA {int(eta // 60)}:{int(eta % 60):02d}")

    def close(self) -> None:
        if self.stream and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def done_digests(cells_dir: Path, verify: bool = False, log: TextIO | None = sys.stderr) -> set[str]:
    """Cells whose file exists; with ``verify``, a damaged file (truncated, checksum mismatch,
    another cell's row: ``results.check_cell_file``) is deleted, said on ``log``, and not done."""
    from .results import check_cell_file

    done = set()
    for p in cells_dir.glob("*.parquet"):
        if p.name.startswith("."):
            continue
        problem = check_cell_file(p, p.stem) if verify else None
        if problem is None:
            done.add(p.stem)
            continue
        p.unlink(missing_ok=True)
        if log is not None:
            log.write(f"layerbench: {p} is damaged ({problem}); it will be recomputed\n")
    return done


def clean_temporaries(cells_dir: Path) -> None:
    """Half-written files of a run that was killed: never visible as done, safe to delete."""
    for p in cells_dir.glob(".tmp-*"):
        p.unlink(missing_ok=True)


def write_cell(cells_dir: Path, cell: CampaignCell, metrics: dict[str, Any]) -> Any:
    """``cells/<digest>.parquet`` via an fsynced temporary file and ``rename(2)``; returns the
    one-row Arrow table written (``results.row_table``)."""
    import pyarrow.parquet as pq

    from .results import row_table

    table = row_table(cell, metrics)
    final = cells_dir / f"{cell.digest}.parquet"
    tmp = cells_dir / f".tmp-{cell.digest}-{os.getpid()}.parquet"
    pq.write_table(table, tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    return table


def append_failure(path: Path, cell: CampaignCell, outcome: dict[str, Any], attempt: int) -> None:
    """One JSON line per failed cell, in one ``write`` (a reader skips a torn last line)."""
    line = json.dumps({"cell_id": cell.id, "digest": cell.digest, "driver": cell.driver.label,
                       "image": cell.image.label, "workload": cell.workload.label, "containers": cell.containers,
                       "seed": cell.seed, "run_seed": cell.run_seed, "attempt": attempt,
                       "error_type": outcome.get("error_type"), "error": outcome.get("error"),
                       "traceback": outcome.get("traceback"), "time": time.time()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_failures(path: Path) -> list[dict[str, Any]]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # torn by a kill -9 mid-write
    return out
