"""Small builders shared by the tests: images and traces written inline, run in one call."""

from __future__ import annotations

from typing import Any

from drivers import make_driver
from simulator.costmodel import CostModel
from simulator.harness import Run
from simulator.image import Image, image_from_dict
from simulator.trace import Op, op_from_dict
from simulator.view import view_of


def image(*layers: list[dict[str, Any]], name: str = "test") -> Image:
    """``image([entries of layer 0], [entries of layer 1], ...)``."""
    return image_from_dict({"name": name, "layers": [{"id": f"l{i}", "entries": entries}
                                                      for i, entries in enumerate(layers)]})


def ops(*raw: dict[str, Any]) -> list[Op]:
    return [op_from_dict(r, f"op {i}") for i, r in enumerate(raw)]


def run(driver: str, img: Image, trace: list[Op], containers: int = 1, **options: Any) -> dict[str, Any]:
    """Every metric of one simulated run."""
    r = Run(make_driver(driver, options), img, containers)
    for op in trace:
        r.apply(op)
    return r.finish(CostModel())


def view(driver: str, img: Image, trace: list[Op], container: int = 0, containers: int = 1,
         **options: Any) -> dict[str, dict[str, Any]]:
    r = Run(make_driver(driver, options), img, containers)
    for op in trace:
        r.apply(op)
    return view_of(r.namespace(container))


def f(path: str, size: int = 0, mode: int = 0o644, **kw: Any) -> dict[str, Any]:
    return {"path": path, "type": "file", "size": size, "mode": mode, **kw}


def d(path: str, mode: int = 0o755, **kw: Any) -> dict[str, Any]:
    return {"path": path, "type": "dir", "mode": mode, **kw}


def kernel_inode_numbers(img: Image, options: dict[str, Any]) -> dict[str, int]:
    """Path -> inode number of every entry of ``img`` as the real thin backend lays it
    (``simulator/real/thin.py``; root), ext4's lost+found left out."""
    import os

    from simulator.real.thin import thin_session

    found: dict[str, int] = {}
    with thin_session(img, make_driver("devicemapper", options).options) as s:
        with s.mounted(s.top) as (root, _):
            found["/"] = os.lstat(root).st_ino
            for top, dirs, files in os.walk(root):
                for name in dirs + files:
                    path = os.path.join(top, name)
                    if path != os.path.join(root, "lost+found"):
                        found[path[len(root):]] = os.lstat(path).st_ino
    return found


def why_unavailable(check_available) -> str:
    """Why a real backend cannot run here ("" when it can): its ``check_available`` raising
    ``BackendUnavailable``, for a kernel test module's skip."""
    from simulator.errors import BackendUnavailable

    try:
        check_available()
    except BackendUnavailable as exc:
        return str(exc)
    return ""
