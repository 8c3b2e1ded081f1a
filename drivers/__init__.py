"""The driver registry: names to factories, and the one place a driver is chosen.

Each driver is one module; registering it here is all it takes to appear in
``layerbench drivers``, in campaigns and in the conformance suite.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from simulator.errors import BadInput

from .aufs import AufsDriver
from .base import BaseDriver, BaseMount, GraphDriver
from .devicemapper import DevicemapperDriver
from .btrfs import BtrfsDriver
from .overlay import OverlayDriver
from .vfs import VfsDriver
from .zfs import ZfsDriver

REGISTRY: dict[str, type[BaseDriver]] = {
    "aufs": AufsDriver,
    "devicemapper": DevicemapperDriver,
    "btrfs": BtrfsDriver,
    "overlay": OverlayDriver,
    "vfs": VfsDriver,
    "zfs": ZfsDriver,
}


def register(cls: type[BaseDriver]) -> type[BaseDriver]:
    """Add a driver class under its ``name`` (usable as a decorator)."""
    REGISTRY[cls.name] = cls
    return cls


def driver_names() -> list[str]:
    return sorted(REGISTRY)


def make_driver(name: str, options: Mapping[str, Any] | None = None) -> BaseDriver:
    """A fresh driver instance; unknown names and options are ``BadInput``."""
    factory: Callable[..., BaseDriver] | None = REGISTRY.get(name)
    if factory is None:
        raise BadInput(f"unknown driver {name!r} (known: {', '.join(driver_names())})")
    return factory(options)


def describe_drivers() -> list[dict[str, Any]]:
    return [REGISTRY[name].describe() for name in driver_names()]


__all__ = ["BaseDriver", "BaseMount", "GraphDriver", "REGISTRY", "describe_drivers", "driver_names",
           "make_driver", "register"]
