"""``layerbench validate``: the simulator measured against every real counterpart here.

Each case runs once on the simulator and once on each real backend of its driver
(``backends``); every metric that backend observes gives one row::

    {"driver", "options", "backend", "image", "workload", "metric", "sim", "real",
     "abs_error", "rel_error", "sim_seconds", "real_seconds"}

``abs_error = |sim - real|`` and ``rel_error = abs_error / |real|`` (null when real is 0 and
sim is not; 0 when both are 0).  ``sim_seconds`` and ``real_seconds`` are the wall times of
the whole simulated and real runs of the case (the real one includes laying the image down
and measuring).  The ``view`` metric compares each container's file tree: ``sim`` and
``real`` are the entries of the views, ``abs_error`` the paths whose entry differs or that
one side lacks.  ``est_seconds`` is set against the backend's ``real_seconds`` (the
container start plus the operations: see ``backends``).  A backend that is unavailable
here (not root, missing tool) is skipped and named in ``skipped``; a case that fails on a
backend is recorded in ``failures`` rather than stopping the suite.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from simulator.calibration import Calibration, cost_for
from simulator.errors import BackendUnavailable, LayerbenchError
from simulator.runner import Cell, prepare

from .backends import BACKENDS, Side, backends_for, simulate_case
from .suites import Case

ROW_KEYS = ("driver", "options", "backend", "image", "workload", "metric", "sim", "real", "abs_error",
            "rel_error", "sim_seconds", "real_seconds")
REAL_NAME = {"est_seconds": "real_seconds"}  # the model's prediction vs what was timed
TIME_METRICS = ("est_seconds",)


@dataclass
class Validation:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> why unavailable
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(ROW_KEYS))


def view_difference(sim: dict[str, Any], real: dict[str, Any]) -> int:
    """Paths whose entry (type, size, mode) differs between two views, or that one lacks."""
    return sum(1 for p in set(sim) | set(real) if sim.get(p) != real.get(p))


def errors(sim: float, real: float) -> tuple[float, float | None]:
    diff = abs(sim - real)
    if real == 0:
        return diff, 0.0 if diff == 0 else None
    return diff, diff / abs(real)


def compare(case: Case, backend: str, metrics: Iterable[str], sim: Side, real: Side) -> list[dict[str, Any]]:
    """The rows of one case on one backend: only metrics both sides observed."""
    base = {"driver": case.driver, "options": dict(case.options), "backend": backend, "image": case.image,
            "workload": case.workload, "sim_seconds": sim.seconds, "real_seconds": real.seconds}
    rows = []
    for metric in metrics:
        s, r = sim.metrics.get(metric), real.metrics.get(REAL_NAME.get(metric, metric))
        if s is None or r is None:
            continue  # not observable on one side: left out, never reported as zero
        abs_error, rel_error = errors(s, r)
        rows.append({**base, "metric": metric, "sim": s, "real": r, "abs_error": abs_error, "rel_error": rel_error})
    if sim.views is not None and real.views is not None and set(real.views) == set(sim.views):
        entries_sim = sum(len(v) for v in sim.views.values())
        entries_real = sum(len(v) for v in real.views.values())
        diff = sum(view_difference(sim.views[c], real.views[c]) for c in sim.views)
        rows.append({**base, "metric": "view", "sim": entries_sim, "real": entries_real, "abs_error": diff,
                     "rel_error": diff / entries_real if entries_real else float(diff > 0)})
    return [{k: row[k] for k in ROW_KEYS} for row in rows]


def run_case(case: Case, result: Validation, calibration: Calibration | None = None,
             only: Iterable[str] | None = None) -> None:
    """Simulate ``case`` and run it on each of its available backends; rows into ``result``."""
    cell = Cell(case.driver, case.image, case.workload, dict(case.options), case.containers, case.seed)
    start = time.perf_counter()
    prepared = prepare(cell)  # bad input: BadInput before any real work
    # the options the user gave, as the driver parsed them ("true" -> True)
    case = replace(case, options={k: prepared.driver.options[k] for k in case.options})
    chosen = [b for b in backends_for(case.driver, case.options)
              if (case.backends is None or b.name in case.backends) and (only is None or b.name in only)]
    chosen = [b for b in chosen if b.name not in result.skipped]
    if not chosen:
        return
    sim = simulate_case(prepared, case.containers, cost_for(case.driver, calibration))
    sim.seconds = time.perf_counter() - start  # loading the inputs included, as sim_seconds does
    for backend in chosen:
        try:
            backend.check()
        except (BackendUnavailable, ImportError) as exc:
            result.skipped[backend.name] = str(exc) or type(exc).__name__
            continue
        try:
            real = backend.run(prepare(cell), case.containers, sim)  # a fresh driver: prepare is cheap
        except LayerbenchError as exc:
            result.failures.append({"case": case.__dict__, "backend": backend.name, "error": str(exc)})
            continue
        result.rows += compare(case, backend.name, backend.metrics, sim, real)


def validate(cases: Iterable[Case], calibration: Calibration | None = None,
             backends: Iterable[str] | None = None, progress=None) -> Validation:
    """Run every case; ``backends`` restricts to those backend names."""
    only = None
    if backends is not None:
        only = set(backends)
        unknown = only - set(BACKENDS)
        if unknown:
            from simulator.errors import BadInput

            raise BadInput(f"--backend {', '.join(sorted(unknown))}: unknown (known: {', '.join(BACKENDS)})")
    result = Validation()
    start = time.perf_counter()
    cases = list(cases)
    for i, case in enumerate(cases, 1):
        run_case(case, result, calibration, only)
        if progress is not None:
            progress(i, len(cases), case)
    result.seconds = time.perf_counter() - start
    return result


def summary(df) -> Any:
    """Per backend, option set and metric: cases, exact agreements, max and mean rel. error."""
    if df.empty:
        return df
    frame = df.assign(options=df["options"].map(lambda o: json.dumps(o, sort_keys=True)),
                      exact=df["abs_error"] == 0)
    return (frame.groupby(["driver", "options", "backend", "metric"], sort=True)
            .agg(cases=("metric", "size"), exact=("exact", "sum"), max_rel_error=("rel_error", "max"),
                 mean_rel_error=("rel_error", "mean"), max_abs_error=("abs_error", "max"))
            .reset_index())


def write_outputs(result: Validation, out: str | Path) -> dict[str, Path]:
    """``fidelity.parquet``, ``fidelity.json``, ``charts/fidelity-errors.png`` and
    ``fidelity.html`` under ``out``."""
    from .report import write_fidelity_page

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = result.frame()
    table = df.assign(options=df["options"].map(lambda o: json.dumps(o, sort_keys=True)))
    paths = {"parquet": out / "fidelity.parquet", "json": out / "fidelity.json"}
    table.to_parquet(paths["parquet"], index=False)
    paths["json"].write_text(json.dumps({"rows": result.rows, "skipped": result.skipped,
                                         "failures": result.failures, "seconds": result.seconds},
                                        indent=1, default=str) + "\n", encoding="utf-8")
    paths.update(write_fidelity_page(result, out))
    return paths
