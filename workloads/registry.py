"""Built-in image builders and workloads, addressed as ``NAME[:k=v,...]``.

Every builder declares its parameters with defaults and bounds, so ``layerbench images``
and ``layerbench workloads`` can list them and a typo is refused with exit code 2.  Every
builder receives an explicit ``numpy.random.Generator``; seeds never come from global state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from simulator.errors import BadInput


@dataclass(frozen=True)
class Param:
    name: str
    default: int | float | str
    doc: str
    minimum: float | None = None
    maximum: float | None = None

    def parse(self, text: Any, where: str) -> int | float | str:
        kind = type(self.default)
        try:
            value = kind(text) if not isinstance(text, kind) or isinstance(text, bool) else text
        except (TypeError, ValueError):
            noun = {int: "an integer", float: "a number"}.get(kind, "a string")
            raise BadInput(f"{where}: parameter '{self.name}' takes {noun}, not {text!r}") from None
        if isinstance(value, (int, float)):
            if self.minimum is not None and value < self.minimum:
                raise BadInput(f"{where}: parameter '{self.name}' = {value} must be >= {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise BadInput(f"{where}: parameter '{self.name}' = {value} must be <= {self.maximum}")
        return value

    def describe(self) -> dict[str, Any]:
        d = {"name": self.name, "default": self.default, "type": type(self.default).__name__, "doc": self.doc}
        if self.minimum is not None:
            d["minimum"] = self.minimum
        if self.maximum is not None:
            d["maximum"] = self.maximum
        return d


@dataclass(frozen=True)
class Builtin:
    name: str
    summary: str
    params: tuple[Param, ...]
    build: Callable[..., Any]

    def parse_params(self, given: dict[str, Any], where: str) -> dict[str, Any]:
        declared = {p.name: p for p in self.params}
        unknown = set(given) - set(declared)
        if unknown:
            known = ", ".join(declared) or "none"
            raise BadInput(f"{where}: unknown parameter(s) {', '.join(sorted(unknown))} (known: {known})")
        values = {p.name: p.default for p in self.params}
        for key, value in given.items():
            values[key] = declared[key].parse(value, where)
        return values

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "params": [p.describe() for p in self.params]}


def parse_spec(text: str) -> tuple[str, dict[str, str]]:
    """``'random:layers=4,entries=10'`` -> ``('random', {'layers': '4', 'entries': '10'})``."""
    name, _, rest = text.partition(":")
    params: dict[str, str] = {}
    for pair in filter(None, rest.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"{text}: parameters are written key=value, separated by commas")
        params[key.strip()] = value.strip()
    return name, params
