"""Campaign files (SPEC section 8): parse, validate, and expand into a grid of cells.

A campaign is images x drivers x workloads x containers x seeds; a list value inside an
image's or workload's ``params`` or a driver's ``options`` is one more axis.  Everything is
checked here, before any work starts or any file is written: a mistake is one ``BadInput``
line naming the file, the line and the key (``default.toml:14: drivers[2].options.metacopy:
...``), because a typo found an hour into a campaign wastes the hour.

Cell identity (benchopt style, readable and deterministic)::

    overlay[metacopy=true]|synthetic[files=200,layers=4]|append-log[files=10]|c1|s0

``driver[options that differ from the driver's defaults]|image|workload|containers|seed``;
file inputs appear as the path written in the campaign file.  Labels are display names and
take no part in the identity, so renaming a label recomputes nothing.  A cell's file name is
the first 16 hex digits of the SHA-256 of its id (ids hold ``/`` and ``|``).

A built-in workload that spreads its operations over containers (it declares a
``containers`` parameter) gets the cell's container count unless the campaign fixes it: the
``containers`` axis means "N containers run this workload", not "N containers, one busy".

The seed handed to the simulator is derived from the cell's *inputs* -- image, workload and
the seed axis value -- and deliberately not from the driver or the container count: every
driver and every container count then replays the very same generated image and trace
(common random numbers), so differences between drivers are the drivers', not the dice's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import BadInput

TOP_KEYS = {"name", "description", "seeds", "containers", "images", "drivers", "workloads"}
DRIVER_KEYS = {"name", "label", "options"}
INPUT_KEYS = {"images": {"name", "label", "params", "file"}, "workloads": {"name", "label", "params", "trace"}}
FILE_KEY = {"images": "file", "workloads": "trace"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
SEED_BITS = 63  # derived seeds fit a signed 64-bit parquet column


@dataclass(frozen=True)
class Variant:
    """One value of an axis: a driver variant, or an image or workload instance."""

    name: str  # driver name / built-in name / the file path as written
    label: str  # what charts and tables show
    values: tuple[tuple[str, Any], ...] = ()  # options (non-default) or params, sorted by key
    path: str | None = None  # resolved file for file inputs
    columns: tuple[tuple[str, Any], ...] = field(default=(), compare=False)  # as written, for result columns
    per_container: bool = field(default=False, compare=False)  # a built-in workload taking `containers`

    def spec_for(self, containers: int) -> str:
        """The spec, with the cell's container count where the workload spreads over containers."""
        if not self.per_container:
            return self.spec
        values = tuple(sorted(self.values + (("containers", containers),)))
        return self.name + ":" + ",".join(f"{k}={_text(v)}" for k, v in values)

    @property
    def key(self) -> str:
        inner = ",".join(f"{k}={_text(v)}" for k, v in self.values)
        return f"{self.name}[{inner}]" if inner else self.name

    @property
    def spec(self) -> str:
        """The ``NAME[:k=v,...]`` string (or path) that ``simulator.inputs`` loads."""
        if self.path is not None:
            return self.path
        inner = ",".join(f"{k}={_text(v)}" for k, v in self.values)
        return f"{self.name}:{inner}" if inner else self.name


@dataclass(frozen=True)
class CampaignCell:
    driver: Variant
    image: Variant
    workload: Variant
    containers: int
    seed: int

    @property
    def id(self) -> str:
        return f"{self.driver.key}|{self.image.key}|{self.workload.key}|c{self.containers}|s{self.seed}"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.id.encode()).hexdigest()[:16]

    @property
    def run_seed(self) -> int:
        """The simulator's seed: from the inputs and the seed value only (module docstring)."""
        text = f"{self.image.key}|{self.workload.key}|{self.seed}"
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> (64 - SEED_BITS)

    def runner_cell(self):
        from ..runner import Cell

        return Cell(driver=self.driver.name, image=self.image.spec, workload=self.workload.spec_for(self.containers),
                    options=dict(self.driver.values), containers=self.containers, seed=self.run_seed)

    def axes(self) -> dict[str, Any]:
        """The cell's axes as flat columns (``opt.*``, ``image.*``, ``workload.*`` for params)."""
        row: dict[str, Any] = {
            "cell_id": self.id, "driver": self.driver.label, "driver_name": self.driver.name,
            "options": json.dumps(dict(self.driver.values), sort_keys=True),
            "image": self.image.label, "workload": self.workload.label,
            "containers": self.containers, "seed": self.seed, "run_seed": self.run_seed,
        }
        for prefix, variant in (("opt", self.driver), ("image", self.image), ("workload", self.workload)):
            row.update({f"{prefix}.{k}": v for k, v in variant.columns})
        return row


@dataclass
class Campaign:
    name: str
    description: str
    source: str  # the campaign file, or "<dict>"
    text: str  # the TOML text (provenance), or the dict as JSON
    seeds: list[int]
    containers: list[int]
    drivers: list[Variant]
    images: list[Variant]
    workloads: list[Variant]
    cells: list[CampaignCell] = field(default_factory=list)

    def grid(self) -> Iterator[CampaignCell]:
        for image, workload, driver, containers, seed in itertools.product(
                self.images, self.workloads, self.drivers, self.containers, self.seeds):
            yield CampaignCell(driver, image, workload, containers, seed)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Locator:
    """Finds the line of a key path in TOML text, for error messages (tomllib keeps none)."""

    def __init__(self, text: str):
        self.lines = text.splitlines()

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        if not self.lines:
            return None
        table, index, rest = (path[0], path[1], path[2:]) if len(path) > 1 and isinstance(path[1], int) \
            else (None, None, path)
        start, end = 0, len(self.lines)
        if table is not None:
            headers = [i for i, line in enumerate(self.lines) if re.match(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]", line)]
            if index >= len(headers):
                return headers[-1] + 1 if headers else None
            start = headers[index]
            end = next((i for i in range(start + 1, len(self.lines)) if re.match(r"^\s*\[", self.lines[i])), end)
        found = start + 1 if table is not None else None
        for key in rest:
            if isinstance(key, int):
                continue
            pattern = re.compile(rf"(^|[{{,\s.]){re.escape(str(key))}\s*=")
            hit = next((i for i in range(found - 1 if found else start, end) if pattern.search(self.lines[i])), None)
            if hit is None:
                break
            found = hit + 1
        return found


class _Checker:
    def __init__(self, source: str, text: str):
        self.source, self.locator = source, _Locator(text)

    def fail(self, path: tuple[Any, ...], message: str) -> BadInput:
        key = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))
        line = self.locator.line_of(path) if path else None
        where = f"{self.source}:{line}" if line else self.source
        return BadInput(f"{where}: {key}: {message}" if key else f"{where}: {message}")


def load_campaign(source: str | Path | Mapping[str, Any], base_dir: Path | None = None) -> Campaign:
    """A validated campaign from a TOML file, a built-in name (``default``), or a dict."""
    if isinstance(source, Mapping):
        raw, text, where = dict(source), json.dumps(source, indent=1, default=str), "<campaign>"
        base = Path(base_dir or Path.cwd())
    else:
        path = Path(source)
        if not path.exists() and not path.suffix:
            path = builtin_campaign_path(str(source))
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"{source}: cannot read campaign file: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise BadInput(f"{source}: not UTF-8 text: {exc.reason}") from None
        where, base = str(source) if path == Path(source) else str(path), Path(base_dir or path.parent)
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
            line = m.group(1) if m else str(len(text.splitlines()) or 1)
            msg = re.sub(r"\s*\(at .*\)$", "", str(exc))
            raise BadInput(f"{where}:{line}: invalid TOML: {msg}") from None
    return _build(raw, text, where, base, _Checker(where, text))


def builtin_campaign_path(name: str) -> Path:
    from importlib import resources

    folder = Path(str(resources.files("simulator") / "campaigns"))
    path = folder / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.toml")))
        raise BadInput(f"{name}: no such campaign file, and no built-in campaign of that name (built-in: {known})")
    return path


def _int_list(raw: Mapping[str, Any], key: str, default: list[int], minimum: int, ck: _Checker) -> list[int]:
    value = raw.get(key, default)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ck.fail((key,), "must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ck.fail((key,), f"takes integers >= {minimum}, not {v!r}")
    if len(set(values)) != len(values):
        raise ck.fail((key,), f"repeats a value: {values}")
    return values


def _expand(values: Mapping[str, Any], path: tuple[Any, ...], ck: _Checker) -> list[tuple[tuple[str, Any], ...]]:
    """``{a = [1, 2], b = 3}`` -> ``[(('a', 1), ('b', 3)), (('a', 2), ('b', 3))]`` (keys sorted)."""
    if not isinstance(values, Mapping):
        raise ck.fail(path, f"must be a table of key = value, not {values!r}")
    keys = sorted(values)
    axes = []
    for k in keys:
        v = values[k]
        v = v if isinstance(v, list) else [v]
        if not v:
            raise ck.fail(path + (k,), "an empty list makes an empty grid")
        for item in v:
            if not isinstance(item, (bool, int, float, str)):
                raise ck.fail(path + (k,), f"takes numbers, strings or booleans, not {item!r}")
        if len(set(map(_text, v))) != len(v):
            raise ck.fail(path + (k,), f"repeats a value: {v}")
        axes.append(v)
    return [tuple(zip(keys, combo)) for combo in itertools.product(*axes)]


def _label(base: str, values: tuple[tuple[str, Any], ...], swept: set[str]) -> str:
    shown = [f"{k}={_text(v)}" for k, v in values if k in swept]
    return f"{base}[{','.join(shown)}]" if shown else base


def _swept(entry: Mapping[str, Any], key: str) -> set[str]:
    table = entry.get(key) or {}
    return {k for k, v in table.items() if isinstance(v, list)} if isinstance(table, Mapping) else set()


def _entries(raw: Mapping[str, Any], section: str, ck: _Checker) -> list[Mapping[str, Any]]:
    entries = raw.get(section)
    if entries is None:
        raise ck.fail((), f"missing [[{section}]]: a campaign needs at least one")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, Mapping) for e in entries):
        raise ck.fail((section,), f"must be an array of tables ([[{section}]])")
    return entries


def _drivers(raw: Mapping[str, Any], ck: _Checker) -> list[Variant]:
    from drivers import REGISTRY, driver_names

    out: list[Variant] = []
    for i, entry in enumerate(_entries(raw, "drivers", ck)):
        where = ("drivers", i)
        for key in set(entry) - DRIVER_KEYS:
            raise ck.fail(where + (key,), f"unknown key (known: {', '.join(sorted(DRIVER_KEYS))})")
        name = entry.get("name")
        if name not in REGISTRY:
            raise ck.fail(where + ("name",), f"unknown driver {name!r} (known: {', '.join(driver_names())})")
        label = entry.get("label", name)
        if not isinstance(label, str) or not label:
            raise ck.fail(where + ("label",), "must be a non-empty string")
        defaults = REGISTRY[name](None).options
        for combo in _expand(entry.get("options", {}), where + ("options",), ck):
            try:
                resolved = REGISTRY[name](dict(combo)).options
            except BadInput as exc:
                bad = next((k for k, _ in combo if f"'{k}'" in str(exc)), None)
                raise ck.fail(where + (("options", bad) if bad else ("options",)), str(exc)) from None
            values = tuple(sorted((k, v) for k, v in resolved.items() if defaults.get(k) != v))
            shown = tuple((k, resolved[k]) for k, _ in combo)
            out.append(Variant(name, _label(label, combo, _swept(entry, "options")), values, columns=shown))
    return out


def _inputs(raw: Mapping[str, Any], section: str, base: Path, ck: _Checker) -> list[Variant]:
    from workloads.builtin import IMAGES, WORKLOADS

    table = IMAGES if section == "images" else WORKLOADS
    file_key, keys = FILE_KEY[section], INPUT_KEYS[section]
    out: list[Variant] = []
    for i, entry in enumerate(_entries(raw, section, ck)):
        where = (section, i)
        for key in set(entry) - keys:
            raise ck.fail(where + (key,), f"unknown key (known: {', '.join(sorted(keys))})")
        if (file_key in entry) == ("name" in entry):
            raise ck.fail(where, f"give either name (a built-in) or {file_key} (a file path)")
        if file_key in entry:
            written = entry[file_key]
            if "params" in entry:
                raise ck.fail(where + ("params",), f"params apply to built-ins, not to a {file_key} file")
            resolved = (base / str(written)).resolve()
            if not isinstance(written, str) or not resolved.is_file():
                raise ck.fail(where + (file_key,), f"no such file: {resolved}")
            _check_file_input(section, resolved, where + (file_key,), ck)
            label = entry.get("label", Path(written).stem)
            out.append(Variant(written, str(label), (), str(resolved)))
            continue
        name = entry["name"]
        builtin = table.get(name) if isinstance(name, str) else None
        if builtin is None:
            raise ck.fail(where + ("name",), f"no built-in {section[:-1]} {name!r} (built-in: {', '.join(sorted(table))})")
        label = entry.get("label", name)
        for combo in _expand(entry.get("params", {}), where + ("params",), ck):
            try:
                builtin.parse_params({k: _text(v) for k, v in combo}, f"{section[:-1]} {name}")
            except BadInput as exc:
                bad = next((k for k, _ in combo if f"'{k}'" in str(exc) or k in str(exc)), None)
                raise ck.fail(where + (("params", bad) if bad else ("params",)), str(exc)) from None
            per_container = section == "workloads" and "containers" not in dict(combo) and \
                any(p.name == "containers" for p in builtin.params)
            out.append(Variant(name, _label(str(label), combo, _swept(entry, "params")), combo, columns=combo,
                               per_container=per_container))
    return out


def _check_file_input(section: str, path: Path, where: tuple[Any, ...], ck: _Checker) -> None:
    """Parse an image or trace file now, so a bad one is refused before any cell runs
    (SPEC section 7) instead of failing every cell that uses it."""
    from ..inputs import load_image, load_trace

    try:
        load_image(str(path)) if section == "images" else load_trace(path)
    except BadInput as exc:
        raise ck.fail(where, str(exc)) from None


def _unique(variants: list[Variant], section: str, ck: _Checker) -> None:
    seen_keys: dict[str, int] = {}
    seen_labels: dict[str, str] = {}
    for i, v in enumerate(variants):
        if v.key in seen_keys:
            raise ck.fail((section,), f"{v.key} is listed twice (give it once; labels do not make a new variant)")
        if seen_labels.get(v.label, v.key) != v.key:
            raise ck.fail((section,), f"label {v.label!r} names two different variants: {seen_labels[v.label]} "
                                      f"and {v.key}; give each its own label")
        seen_keys[v.key], seen_labels[v.label] = i, v.key


def _build(raw: Mapping[str, Any], text: str, where: str, base: Path, ck: _Checker) -> Campaign:
    for key in raw:
        if key not in TOP_KEYS:
            raise ck.fail((key,), f"unknown key (known: {', '.join(sorted(TOP_KEYS))})")
    name = raw.get("name", Path(where).stem if where != "<campaign>" else None)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ck.fail(("name",), f"a campaign needs a name of letters, digits, '.', '_', '+', '-', not {name!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ck.fail(("description",), "must be a string")
    campaign = Campaign(
        name=name, description=description, source=where, text=text,
        seeds=_int_list(raw, "seeds", [0], 0, ck), containers=_int_list(raw, "containers", [1], 1, ck),
        drivers=_drivers(raw, ck), images=_inputs(raw, "images", base, ck),
        workloads=_inputs(raw, "workloads", base, ck))
    for section in ("drivers", "images", "workloads"):
        _unique(getattr(campaign, section), section, ck)
    campaign.cells = list(campaign.grid())
    return campaign
