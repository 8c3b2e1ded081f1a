"""Campaign results on disk: cell rows, ``results.parquet``, ``manifest.json``, loading.

A row is flat (pyperf and benchopt agree): the axes as columns, then every SPEC section 5
metric, in ``METRIC_KEYS`` order.  Parameters and options become ``image.<k>``,
``workload.<k>`` and ``opt.<k>`` columns so a notebook can pivot on any swept axis.
Types are fixed here, not guessed per cell: integer metrics are ``int64`` (nullable in
pandas, since a metric may mean nothing for a driver), ratios and times ``float64``.

Schema history (``RESULTS_SCHEMA`` in the manifest and in every row):
  1 -- first version.  Cell files carry ``layerbench.checksum`` in their parquet metadata
       (added later, compatibly: files without it are still read).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from ..metrics import METRIC_KEYS
from .spec import Campaign, CampaignCell

RESULTS_SCHEMA = 1
CHECKSUM_KEY = "layerbench.checksum"  # cell file metadata: see table_checksum
FLOAT_METRICS = frozenset({"space_amplification", "write_amplification", "lookup_depth_mean", "est_seconds",
                           "sim_seconds"})
NONDETERMINISTIC = ("sim_seconds", "sim_peak_rss_bytes")  # the simulator's own wall time and memory
AXIS_TYPES = {"cell_id": pa.string(), "driver": pa.string(), "driver_name": pa.string(), "options": pa.string(),
              "image": pa.string(), "workload": pa.string(), "containers": pa.int64(), "seed": pa.int64(),
              "run_seed": pa.int64()}
VERSIONED_PACKAGES = ("layerbench", "numpy", "pandas", "pyarrow", "matplotlib", "psutil", "dask", "distributed")


def _arrow_type(value: Any) -> pa.DataType:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def metric_type(key: str, value: Any) -> pa.DataType:
    return pa.float64() if key in FLOAT_METRICS or isinstance(value, float) else pa.int64()


def row_table(cell: CampaignCell, metrics: dict[str, Any]) -> pa.Table:
    """One cell as a one-row table with explicit types (a null metric keeps its type)."""
    axes = cell.axes()
    names, arrays = [], []
    for key, value in axes.items():
        names.append(key)
        arrays.append(pa.array([value], type=AXIS_TYPES.get(key) or _arrow_type(value)))
    extra = [k for k in metrics if k not in METRIC_KEYS]  # metrics newer than this module
    for key in list(METRIC_KEYS) + sorted(extra):
        value = metrics.get(key)
        names.append(key)
        arrays.append(pa.array([value], type=metric_type(key, value)))
    names.append("results_schema")
    arrays.append(pa.array([RESULTS_SCHEMA], type=pa.int32()))
    table = pa.Table.from_arrays(arrays, names=names)
    return table.replace_schema_metadata({CHECKSUM_KEY: table_checksum(table)})


def table_checksum(table: pa.Table) -> str:
    """SHA-256 of a table's schema (types, without metadata) and values, as stored in the
    cell file's metadata: a cell file whose bytes were damaged, yet still parse, is caught."""
    body = json.dumps([str(table.schema.remove_metadata()), table.to_pylist()], sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def check_cell_file(path: Path, digest: str) -> str | None:
    """Why the cell file at ``path`` cannot be trusted as cell ``digest``, or None if it can.

    Truncated files fail to parse; damaged values fail the checksum; a file of another cell
    fails its id.  Files from before checksums (no ``CHECKSUM_KEY``) are judged by parsing."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 -- ArrowInvalid, OSError...: all mean unreadable
        return f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
    if table.num_rows != 1 or "cell_id" not in table.column_names:
        return f"{table.num_rows} rows, not one cell"
    stored = (table.schema.metadata or {}).get(CHECKSUM_KEY.encode())
    if stored is not None and stored.decode(errors="replace") != table_checksum(table):
        return "checksum mismatch"
    cell_id = table.column("cell_id")[0].as_py()
    if hashlib.sha256(str(cell_id).encode()).hexdigest()[:16] != digest:
        return f"holds cell {cell_id!r}, not {digest}"
    return None


CONSOLIDATE_READERS = 4  # threads reading cell files: parquet decoding releases the GIL


def consolidate(campaign: Campaign, out: Path, rows: Mapping[str, pa.Table] | None = None) -> Path:
    """``results.parquet`` from the cell files of this campaign's grid, in grid order.

    ``rows`` are the tables of cell files this run wrote (``row_table``, by digest): they are
    used instead of reading those files back; a cell has a row only if its file exists.  The
    other files are read by a few threads; all are joined as Arrow tables, then converted to
    pandas once.  Reading 480 one-row files and converting each to pandas before
    ``pd.concat`` took 3.5 s, all on one core at the end of every run (issue 7's ``--jobs``
    scaling); this takes about 0.1 s after a full run, 0.5-1 s reading every file.  Cell files
    whose columns disagree in type (a parameter that is an integer in one cell and text in
    another) cannot be joined by Arrow; they take the per-file pandas way, which gives the
    same frame in the cases both handle (``tests/test_campaign_run.py``)."""
    import pyarrow.parquet as pq
    from concurrent.futures import ThreadPoolExecutor

    cells_dir = out / "cells"
    rows = rows or {}
    paths = [p for p in (cells_dir / f"{cell.digest}.parquet" for cell in campaign.cells) if p.exists()]
    with ThreadPoolExecutor(CONSOLIDATE_READERS) as pool:
        tables = list(pool.map(lambda p: rows[p.stem] if p.stem in rows else pq.read_table(p), paths))
    frame = _order_columns(_tidy(_concat(tables)))
    target = out / "results.parquet"
    tmp = out / ".tmp-results.parquet"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, target)
    return target


def _concat(tables: list[pa.Table]):
    """One pandas frame of the rows of ``tables``, as ``pd.concat`` of each converted alone."""
    import pandas as pd

    if not tables:
        return pd.DataFrame(columns=list(AXIS_TYPES))
    try:
        joined = pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.concat([t.to_pandas(types_mapper=_nullable) for t in tables], ignore_index=True)
    return joined.to_pandas(types_mapper=_nullable)


def _nullable(arrow_type: pa.DataType):
    import pandas as pd

    return {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(), pa.bool_(): pd.BooleanDtype(),
            pa.string(): pd.StringDtype(), pa.float64(): pd.Float64Dtype()}.get(arrow_type)


def _tidy(frame):
    """One dtype per column: mixed int/float params become float, anything else mixed becomes text."""
    import pandas as pd

    for col in frame.columns:
        if frame[col].dtype == object:
            values = frame[col].dropna()
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                frame[col] = frame[col].astype("Float64")
            else:
                frame[col] = frame[col].map(lambda v: v if v is None or (isinstance(v, float) and v != v)
                                            else str(v)).astype(pd.StringDtype())
    return frame


def _order_columns(frame):
    metrics = [k for k in METRIC_KEYS if k in frame.columns]
    axes = [k for k in AXIS_TYPES if k in frame.columns]
    params = sorted(c for c in frame.columns if c.startswith(("opt.", "image.", "workload.")))
    rest = [c for c in frame.columns if c not in set(axes + params + metrics) and c != "results_schema"]
    tail = ["results_schema"] if "results_schema" in frame.columns else []
    return frame[axes + params + metrics + rest + tail]


def load_results(directory: str | Path):
    """A campaign's results as a tidy DataFrame: one row per cell, typed columns.

    Axis labels are ordered categoricals (in campaign order), counts and bytes nullable
    integers, ratios and times floats.  Reads ``results.parquet``; a campaign that was
    interrupted before consolidating is read from its cell files.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    directory = Path(directory)
    path = directory / "results.parquet"
    if path.exists():
        frame = pq.read_table(path).to_pandas(types_mapper=_nullable)
    else:
        files = sorted((directory / "cells").glob("[!.]*.parquet"))
        if not files:
            from ..errors import BadInput

            raise BadInput(f"{directory}: no results.parquet and no cell files: not a campaign directory")
        frame = _order_columns(_tidy(pd.concat([pq.read_table(f).to_pandas(types_mapper=_nullable)
                                                for f in files], ignore_index=True)))
    for col in ("driver", "image", "workload"):
        if col in frame.columns:
            order = list(dict.fromkeys(frame[col].dropna()))
            frame[col] = pd.Categorical(frame[col], categories=order, ordered=True)
    return frame


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    """What produced the numbers: versions, interpreter, kernel, CPU, source commit."""
    return {"packages": {p: v for p in VERSIONED_PACKAGES if (v := _version(p))},
            "python": sys.version.split()[0], "python_implementation": platform.python_implementation(),
            "kernel": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
            "cpu": _cpu(), "cpu_count": os.cpu_count(), "git_commit": _git_commit()}


def read_manifest(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    tmp = out / ".tmp-manifest.json"
    tmp.write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    os.replace(tmp, out / "manifest.json")
