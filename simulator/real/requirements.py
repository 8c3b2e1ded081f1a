"""What a real backend needs from this machine, each check raising ``BackendUnavailable``
(exit code 3) with the reason and what to do about it.  Every backend's ``check_available``
is a few calls to these."""

from __future__ import annotations

import os
import shutil
from typing import Callable, Iterable

from simulator.errors import BackendUnavailable


def require_root(backend: str, why: str, geteuid: Callable[[], int] | None = None) -> None:
    if (geteuid or os.geteuid)() != 0:  # looked up per call, so tests can stand in for os.geteuid
        raise BackendUnavailable(f"the real {backend} backend needs root ({why}); run as root or use --backend sim")


def require_filesystems(names: Iterable[str], filesystems: str = "/proc/filesystems") -> None:
    """Each of ``names`` is a file system type the kernel knows (``/proc/filesystems``)."""
    try:
        with open(filesystems) as f:
            known = {line.split()[-1] for line in f if line.strip()}
    except OSError as exc:
        raise BackendUnavailable(f"cannot read {filesystems}: {exc.strerror}") from None
    for fs in names:
        if fs not in known:
            raise BackendUnavailable(f"the kernel has no {fs} file system ({filesystems}); try 'modprobe {fs}'")


def require_tools(tools: Iterable[str], install: str) -> None:
    """Each of ``tools`` is on PATH; ``install`` names the packages that bring them."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise BackendUnavailable(f"{tool} not found: install {install}")
