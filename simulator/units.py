"""Byte units and the integer arithmetic every driver uses for allocation units."""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

PAGE_SIZE = 4 * KiB
"""x86_64 page size: the unit of the page cache and of tmpfs allocation."""


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling of a / b for a >= 0, b > 0."""
    return -(-a // b)


def round_up(n: int, unit: int) -> int:
    """n rounded up to a multiple of unit."""
    return ceil_div(n, unit) * unit


def format_bytes(n: float) -> str:
    """Human-readable binary size: 1536 -> '1.5 KiB'."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, name in ((TiB, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit:
            value = n / unit
            return f"{sign}{value:.3g} {name}" if value < 1000 else f"{sign}{value:.0f} {name}"
    return f"{sign}{int(n)} B"
