"""Running a campaign's cells: a local process pool or Dask, atomic cell files, resume.

Crash safety comes from one rule: a cell is done exactly when ``cells/<digest>.parquet``
exists, and that file appears by ``rename(2)`` of a complete, fsynced temporary file.  A file
damaged after that (disk, copy, hand edit) is caught by the checksum of its row kept in its
metadata: every run checks every cell file first and recomputes the damaged ones.  So a
``kill -9`` at any moment loses only the cells in flight; a rerun lists ``cells/``, skips what
is there and computes the rest.  A cell that raises is appended to ``failures.jsonl`` and never
written to ``cells/``, so it is retried next time (benchopt once cached crashed runs as done).

Only the coordinating process writes files; workers (local or Dask) return plain records.
That keeps Dask workers free of any shared-filesystem assumption, and makes the result of a
cell independent of the executor: both call the same ``execute_cell``.

The local pool keeps at most ``jobs`` cells in flight, so a worker killed by the OOM killer
costs at most ``jobs`` cells (marked failed, retried next run) and the pool is rebuilt.
Workers ask the kernel to kill them when the coordinator dies (``PR_SET_PDEATHSIG``), so
``kill -9`` of the coordinator leaves no orphan computing into the void.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Iterator, TextIO

from ..errors import BadInput, LayerbenchError
from .spec import CampaignCell

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def execute_cell(payload: tuple[str, Any]) -> dict[str, Any]:
    """Run one cell in a worker; never raises, so one bad cell cannot stop a campaign."""
    digest, cell = payload
    try:
        from ..runner import run_cell

        return {"digest": digest, "ok": True, "metrics": run_cell(cell, reuse_inputs=True)["metrics"]}
    except BaseException as exc:  # noqa: BLE001 -- MemoryError, RecursionError... all are cell failures
        return {"digest": digest, "ok": False, "error_type": type(exc).__name__, "error": str(exc),
                "traceback": traceback.format_exc(limit=20)}


def _worker_init() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: orphans finish their one cell and exit when the pool's pipe closes
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle


def _died(digest: str, why: str) -> dict[str, Any]:
    return {"digest": digest, "ok": False, "error_type": "WorkerDied", "error": why, "traceback": ""}


def pool_outcomes(tasks: list[tuple[str, Any]], jobs: int) -> Iterator[dict[str, Any]]:
    """Outcomes of ``tasks`` as they finish, at most ``jobs`` in flight."""
    queue = list(reversed(tasks))
    while queue:
        with ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init) as pool:
            flight: dict[Any, str] = {}
            broken = False
            while (queue or flight) and not broken:
                while queue and len(flight) < jobs:
                    task = queue.pop()
                    flight[pool.submit(execute_cell, task)] = task[0]
                finished, _ = wait(flight, return_when=FIRST_COMPLETED)
                for fut in finished:
                    digest = flight.pop(fut)
                    try:
                        yield fut.result()
                    except BrokenProcessPool:
                        broken = True
                        yield _died(digest, "a worker process died (killed, or out of memory) with this cell in flight")
            if broken:
                for digest in flight.values():
                    yield _died(digest, "a worker process died (killed, or out of memory) with this cell in flight")


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


def write_cell(cells_dir: Path, cell: CampaignCell, metrics: dict[str, Any]) -> Path:
    """``cells/<digest>.parquet`` via an fsynced temporary file and ``rename(2)``."""
    import pyarrow.parquet as pq

    from .results import row_table

    final = cells_dir / f"{cell.digest}.parquet"
    tmp = cells_dir / f".tmp-{cell.digest}-{os.getpid()}.parquet"
    pq.write_table(row_table(cell, metrics), tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    return final


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
