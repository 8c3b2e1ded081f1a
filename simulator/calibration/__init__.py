"""Calibration files: the cost model's parameters as measured on a machine, per driver.

``layerbench calibrate`` (``simulator.fidelity.calibrate``) measures the real costs on this
machine and writes such a file; ``default.json`` beside this module is one measured on the
project's machine kind and is what ``est_seconds`` uses unless ``--calibration FILE`` says
otherwise.  Format (schema 1)::

    {"schema": 1,
     "params": {"syscall_seconds": ..., ...},          # every driver (CostModel field names)
     "drivers": {"btrfs": {"mount_seconds": ...}},      # per-driver overrides of "params"
     "machine": {...}, "fit": {...}}                    # provenance and fit report (not read)

Per-driver sections exist because the same event costs differently on each real store: a
btrfs container start is a subvolume snapshot, an overlay one a mount; a btrfs write
allocates extents and CoWs tree blocks, a tmpfs upper copies pages.  Parameters a file
does not name keep the ``CostModel`` defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from simulator.costmodel import CostModel
from simulator.errors import BadInput

CALIBRATION_SCHEMA = 1
DEFAULT_NAME = "default.json"
TOP_KEYS = {"schema", "params", "drivers", "machine", "fit"}


@dataclass(frozen=True)
class Calibration:
    """Parameters for every driver, with per-driver overrides."""

    params: dict[str, float] = field(default_factory=dict)
    drivers: dict[str, dict[str, float]] = field(default_factory=dict)
    source: str = "defaults"

    def for_driver(self, driver: str) -> CostModel:
        merged = {**self.params, **self.drivers.get(driver, {})}
        return CostModel.from_mapping(merged, f"{self.source} ({driver})")

    def as_dict(self) -> dict[str, Any]:
        return {"schema": CALIBRATION_SCHEMA, "params": dict(self.params),
                "drivers": {k: dict(v) for k, v in self.drivers.items()}}


def parse_calibration(raw: Any, source: str) -> Calibration:
    """Validate a decoded calibration file: every problem is BadInput naming the key."""
    if not isinstance(raw, dict):
        raise BadInput(f"{source}: a calibration file is a JSON object")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise BadInput(f"{source}: unknown key(s): {', '.join(sorted(unknown))}")
    if raw.get("schema") != CALIBRATION_SCHEMA:
        raise BadInput(f"{source}: 'schema' must be {CALIBRATION_SCHEMA}")
    params = raw.get("params", {})
    drivers = raw.get("drivers", {})
    if not isinstance(params, dict) or not isinstance(drivers, dict):
        raise BadInput(f"{source}: 'params' and 'drivers' must be objects")
    CostModel.from_mapping(params, f"{source} params")  # checks names and values
    for name, section in drivers.items():
        if not isinstance(section, dict):
            raise BadInput(f"{source}: drivers.{name} must be an object")
        CostModel.from_mapping({**params, **section}, f"{source} drivers.{name}")
    return Calibration({k: float(v) for k, v in params.items()},
                       {d: {k: float(v) for k, v in s.items()} for d, s in drivers.items()}, source)


def load_calibration(path: str | Path | None = None) -> Calibration:
    """A calibration file, or the shipped default when ``path`` is None."""
    if path is None:
        return default_calibration()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{path}: cannot read calibration file: {exc.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not JSON: {exc.msg} (line {exc.lineno})") from None
    return parse_calibration(raw, str(path))


@lru_cache(maxsize=1)
def default_calibration() -> Calibration:
    text = (resources.files("simulator.calibration") / DEFAULT_NAME).read_text(encoding="utf-8")
    return parse_calibration(json.loads(text), f"simulator/calibration/{DEFAULT_NAME}")


def cost_for(driver: str, calibration: Calibration | None = None) -> CostModel:
    """The cost model ``est_seconds`` uses for ``driver`` (the shipped default if None)."""
    return (calibration or default_calibration()).for_driver(driver)


def uncalibrated_note(drivers: list[str], calibration: Calibration | None = None) -> str:
    """One line saying which of ``drivers`` get ``est_seconds`` from the cost model's defaults,
    with no section of their own in the calibration (the shipped one if None), or "" when
    none does.  Their defaults are partly measured, partly *uncalibrated* constants
    (``simulator.costmodel``): a reader comparing ``est_seconds`` across drivers needs to
    know which figures were fitted against a real store and which were not."""
    calibration = calibration or default_calibration()
    missing = [d for d in dict.fromkeys(drivers) if d not in calibration.drivers]
    if not missing:
        return ""
    fitted = ", ".join(calibration.drivers) or "none"
    return (f"est_seconds of {', '.join(missing)}: the cost model's default parameters, not fitted "
            f"against a real store ({calibration.source} fits {fitted})")


def write_calibration(path: str | Path, calibration: Calibration, extra: Mapping[str, Any]) -> Path:
    """Write atomically; ``extra`` carries the provenance (``machine``) and ``fit`` report."""
    path = Path(path)
    data = {**calibration.as_dict(), **{k: v for k, v in extra.items() if k in ("machine", "fit")}}
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
