"""Driver options: declared once per driver, parsed from ``--opt k=v`` strings or a dict.

Booleans are written ``true``/``false``; ``on``/``off`` and ``1``/``0`` are accepted too
(SPEC section 2).  Unknown names and out-of-range values are ``BadInput`` (exit code 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from simulator.errors import BadInput

_TRUE = {"true", "on", "1", "yes"}
_FALSE = {"false", "off", "0", "no"}


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    doc: str
    minimum: int | None = None
    maximum: int | None = None
    multiple_of: int | None = None
    also: tuple[int, ...] = ()  # extra allowed values outside the step rule
    choices: tuple[str, ...] = ()
    power_of_two: bool = False

    @property
    def kind(self) -> type:
        return type(self.default)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.kind.__name__, "default": self.default, "doc": self.doc}
        for key in ("minimum", "maximum", "multiple_of"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.also:
            d["also"] = list(self.also)
        if self.choices:
            d["choices"] = list(self.choices)
        if self.power_of_two:
            d["power_of_two"] = True
        return d

    def parse(self, value: Any, where: str) -> Any:
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise BadInput(f"{where}: option '{self.name}' takes true or false, not {value!r}")
        if self.kind is int:
            if isinstance(value, bool):
                raise BadInput(f"{where}: option '{self.name}' takes an integer, not {value!r}")
            try:
                number = value if isinstance(value, int) else int(str(value).strip(), 10)
            except ValueError:
                raise BadInput(f"{where}: option '{self.name}' takes an integer, not {value!r}") from None
            self._check_range(number, where)
            return number
        text = str(value)
        if self.choices and text not in self.choices:
            raise BadInput(f"{where}: option '{self.name}' must be one of {', '.join(self.choices)}, not {text!r}")
        return text

    def _check_range(self, n: int, where: str) -> None:
        if n in self.also:
            return
        problems = []
        if self.minimum is not None and n < self.minimum:
            problems.append(f">= {self.minimum}")
        if self.maximum is not None and n > self.maximum:
            problems.append(f"<= {self.maximum}")
        if self.multiple_of and n % self.multiple_of:
            problems.append(f"a multiple of {self.multiple_of}")
        if self.power_of_two and (n <= 0 or n & (n - 1)):
            problems.append("a power of two")
        if problems:
            extra = f" (or one of {', '.join(map(str, self.also))})" if self.also else ""
            raise BadInput(f"{where}: option '{self.name}' = {n} must be {' and '.join(problems)}{extra}")


def parse_options(driver: str, declared: tuple[Option, ...], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``given``; every key checked against the declaration."""
    by_name = {o.name: o for o in declared}
    values = {o.name: o.default for o in declared}
    for key, value in (given or {}).items():
        option = by_name.get(key)
        if option is None:
            known = ", ".join(by_name) or "none"
            raise BadInput(f"driver {driver}: unknown option {key!r} (known: {known})")
        values[key] = option.parse(value, f"driver {driver}")
    return values


def parse_opt_strings(pairs: list[str] | None) -> dict[str, str]:
    """``['metacopy=on', 'index=off']`` -> ``{'metacopy': 'on', 'index': 'off'}``."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"--opt {pair!r}: expected key=value")
        if key in out:
            raise BadInput(f"--opt {key}: given twice")
        out[key] = value
    return out


def options_for(driver: str, given: dict[str, str]) -> dict[str, str]:
    """The options of ``driver`` among ``--opt`` pairs of a run naming several drivers:
    ``overlay.metacopy=true`` applies to overlay only, a plain ``key=value`` to every driver
    (option names never contain a dot)."""
    out: dict[str, str] = {}
    for key, value in given.items():
        scope, dot, name = key.partition(".")
        if not dot:
            out[key] = value
        elif scope == driver:
            out[name] = value
    return out
