"""``run_campaign``: validate, compute the missing cells, consolidate, report.

The order matters for the promises of SPEC section 8: everything that can be wrong with the
input is found before the output directory is touched; cells are computed and written one by
one (see ``execute``); ``results.parquet``, the manifest and the report are rebuilt from the
cell files at the end, so they always agree with ``cells/``.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, TextIO

from ..errors import BadInput, LayerbenchError
from .execute import (Progress, append_failure, clean_temporaries, dask_client, dask_outcomes, done_digests,
                      pool_outcomes, read_failures, write_cell)
from .results import RESULTS_SCHEMA, consolidate, provenance, read_manifest, row_table, write_manifest
from .spec import Campaign, load_campaign


LOCK_FILE = ".lock"
# Rows of this run's cells kept for consolidating (``results.consolidate``): about 10 KB each,
# so at most ~100 MB; cells beyond are read back from their files.
ROWS_KEPT = 10_000


class CampaignLocked(LayerbenchError):
    """Another process is running a campaign in the same directory (exit code 1: nothing is
    wrong with the input; the directory is busy)."""


@contextmanager
def directory_lock(out: Path) -> Iterator[None]:
    """Exclusive use of ``out`` for this process, as a POSIX record lock on ``out/.lock``.

    ``lockf`` (fcntl F_SETLK), not ``flock``: a record lock belongs to the process, so the pool
    workers forked from it do not inherit it, and the kernel drops it the moment the process
    dies, ``kill -9`` included, so a lock file left behind never blocks anyone.  The file is
    deleted (while still locked) at the end, so the directory holds only SPEC section 8's
    files; a process that locked a file just deleted sees another inode at the path and tries
    again."""
    import fcntl

    fresh = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CampaignLocked(f"{out}: another campaign process (pid {holder}) is using this directory; "
                                 f"wait for it to finish or choose another --out") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file its holder had just deleted: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        if fresh and not any(out.iterdir()):
            out.rmdir()  # refused before writing anything: leave no trace
        os.close(fd)  # releases the lock


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_campaign(source: str | Path | Mapping[str, Any] | Campaign, out: str | Path | None = None, *,
                 jobs: int | None = None, dask: str | None = None, resume: bool = False, report: bool = True,
                 progress: TextIO | None = sys.stderr) -> Path:
    """Run a campaign (file, built-in name, dict or ``Campaign``); return its output directory.

    Cells already in ``out/cells/`` are not recomputed.  ``jobs`` is the local pool's size
    (default: all cores); ``dask`` is a scheduler address or ``"local"`` for a
    ``LocalCluster``.  A directory made by a different version of the campaign is refused
    unless ``resume`` is true, so edited campaigns never silently mix with old cells.
    """
    campaign = source if isinstance(source, Campaign) else load_campaign(source)
    out = Path(out) if out is not None else Path("results") / campaign.name
    if jobs is not None and jobs < 1:
        raise BadInput(f"--jobs {jobs}: must be at least 1")
    jobs = jobs or os.cpu_count() or 1
    with directory_lock(out):
        return _run_locked(campaign, out, jobs, dask, resume, report, progress)


def _run_locked(campaign: Campaign, out: Path, jobs: int, dask: str | None, resume: bool, report: bool,
                progress: TextIO | None) -> Path:
    previous = read_manifest(out)
    if previous and previous.get("campaign", {}).get("text") != campaign.text and not resume:
        raise BadInput(f"{out}: holds results of a different campaign file; pass --resume to keep its finished "
                       f"cells that are still in the grid, or choose another --out")
    client = dask_client(dask, jobs) if dask else None
    try:
        return _run(campaign, out, jobs, client, dask, previous, report, progress)
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None and dask == "local":
                cluster.close()


def _run(campaign: Campaign, out: Path, jobs: int, client: Any, dask: str | None, previous: dict | None,
         report: bool, progress: TextIO | None) -> Path:
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    clean_temporaries(cells_dir)
    failures_path = out / "failures.jsonl"
    attempts = {f["digest"]: int(f.get("attempt", 1)) for f in read_failures(failures_path)}
    failures_path.write_text("")  # this run's failures only; earlier ones are retried below
    done = done_digests(cells_dir, verify=True, log=progress)
    todo = [c for c in campaign.cells if c.digest not in done]
    executor = f"dask {dask}" if dask else f"local pool, {jobs} processes"
    run_entry = {"started": _now(), "finished": None, "executor": executor, "computed": 0, "failed": 0}
    manifest = {"schema": RESULTS_SCHEMA, "name": campaign.name, "description": campaign.description,
                "campaign": {"source": campaign.source, "text": campaign.text},
                "provenance": provenance(), "status": "running",
                "runs": (previous or {}).get("runs", []) + [run_entry],
                "cells": {"total": len(campaign.cells), "done": len(campaign.cells) - len(todo), "failed": 0}}
    write_manifest(out, manifest)
    by_digest = {c.digest: c for c in todo}
    bar = Progress(campaign.name, len(campaign.cells), len(campaign.cells) - len(todo), progress)
    if client is not None:
        outcomes = dask_outcomes([(c.digest, c.runner_cell()) for c in todo], client)
    else:
        outcomes = pool_outcomes(todo, jobs, cells_dir)  # its workers write their cells
    rows: dict[str, Any] = {}
    try:
        for outcome in outcomes:
            cell = by_digest[outcome["digest"]]
            if outcome["ok"]:
                if not outcome.get("written"):
                    rows[cell.digest] = write_cell(cells_dir, cell, outcome["metrics"])
                elif "metrics" in outcome:  # the row its worker wrote (not one salvaged from a dead worker)
                    rows[cell.digest] = row_table(cell, outcome["metrics"])
                if len(rows) > ROWS_KEPT:
                    rows.pop(cell.digest, None)
                run_entry["computed"] += 1
            else:
                append_failure(failures_path, cell, outcome, attempts.get(cell.digest, 0) + 1)
                run_entry["failed"] += 1
            bar.update(outcome["ok"])
    except BaseException:
        manifest["status"] = "interrupted"
        run_entry["finished"] = _now()
        write_manifest(out, manifest)
        raise
    finally:
        outcomes.close()  # stops the workers now if we are leaving early
        bar.close()
    clean_temporaries(cells_dir)  # of a worker killed mid-write in a broken pool
    consolidate(campaign, out, rows)
    done = done_digests(cells_dir) & {c.digest for c in campaign.cells}
    run_entry["finished"] = _now()
    manifest["cells"] = {"total": len(campaign.cells), "done": len(done), "failed": run_entry["failed"]}
    manifest["status"] = "complete" if len(done) == len(campaign.cells) else "incomplete"
    write_manifest(out, manifest)
    if report:
        from ..report import write_report

        write_report(out)
    return out
