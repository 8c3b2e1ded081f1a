"""Recording real programs as traces: ``layerbench trace record`` and ``trace convert``.

``record`` imports ROOT as a one-layer image (``workloads.dirimport``: the state the shadow
replay starts from, and the image a replay of the trace should be given), runs the command
under ``strace`` with the working directory ROOT, and converts the log
(``workloads.strace_ops``).  ``convert`` does the same for an existing log; the image of
ROOT *before* the run is then ``--image`` (default: ROOT as it is now, which is only right if
the program left it unchanged; disagreements are reported as mismatches).

The strace options (strace(1)): ``-f`` follows forks and threads, ``-qq`` drops attach and
exit notices, ``-y`` prints descriptor paths, ``-X raw`` prints flags as numbers; the traced
classes are every call taking a path (``%file``) or a descriptor (``%desc``), process
creation (``%process``, for inherited descriptors) and ``umask``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from simulator.errors import BackendUnavailable, BadInput
from simulator.image import Image

from .strace_ops import DEFAULT_UMASK, Conversion, convert_calls
from .strace_parse import parse_log

STRACE_ARGS = ("-f", "-qq", "-y", "-X", "raw", "-e", "trace=%file,%desc,%process,umask")


@dataclass
class Recording:
    image: Image  # ROOT before the run
    conversion: Conversion
    returncode: int
    log: str  # path of the strace log (kept in the caller's directory, or removed)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _real_root(root: str | Path) -> str:
    path = Path(root)
    if not path.is_dir():
        raise BadInput(f"--root {root}: not a directory")
    return os.path.realpath(path)


def convert_log(log: str | Path, root: str | Path, image: Image | None = None, cwd: str | None = None,
                umask: int = DEFAULT_UMASK) -> Conversion:
    """The operations under ``root`` of an existing ``strace -f -y -X raw`` log."""
    log = Path(log)
    root_str = os.path.realpath(root) if Path(root).exists() else os.path.normpath(os.path.abspath(root))
    if image is None:
        from .dirimport import load_dir

        image = load_dir(Path(root_str)) if Path(root_str).is_dir() else _empty_image()
    try:
        with log.open(encoding="utf-8", errors="surrogateescape") as fh:
            return convert_calls(parse_log(fh, str(log)), root_str, image, cwd, umask)
    except FileNotFoundError:
        raise BadInput(f"{log}: no such strace log") from None
    except IsADirectoryError:
        raise BadInput(f"{log}: is a directory, not an strace log") from None


def _empty_image() -> Image:
    from simulator.image import image_from_dict

    return image_from_dict({"name": "empty", "layers": [{"id": "empty", "entries": []}]})


def record(command: Sequence[str], root: str | Path, log_path: str | Path | None = None,
           env: dict[str, str] | None = None) -> Recording:
    """Run ``command`` in ``root`` under strace and convert what it did under ``root``."""
    if not command:
        raise BadInput("trace record: give the command to run after '--'")
    strace = shutil.which("strace")
    if strace is None:
        raise BackendUnavailable("trace record needs strace (apt-get install strace)")
    root_str = _real_root(root)
    from .dirimport import load_dir

    image = load_dir(Path(root_str))
    umask = current_umask()
    tmp = None
    if log_path is None:
        fd, tmp = tempfile.mkstemp(prefix="layerbench-strace-", suffix=".log")
        os.close(fd)
        log_path = tmp
    try:
        try:
            proc = subprocess.run([strace, *STRACE_ARGS, "-o", str(log_path), "--", *command],
                                  cwd=root_str, env=env)
        except OSError as exc:
            raise BackendUnavailable(f"cannot run strace: {exc}") from None
        conversion = convert_log(log_path, root_str, image, root_str, umask)
    finally:
        if tmp is not None:
            os.unlink(tmp)
    return Recording(image, conversion, proc.returncode, str(log_path))


def summary(conversion: Conversion) -> str:
    """One line for stderr: what was converted, failed, dropped and disagreed."""
    dropped = ", ".join(f"{n} {why}" for why, n in conversion.dropped.most_common())
    return (f"{len(conversion.ops)} operations ({conversion.failed_ops} failing) from "
            f"{conversion.calls_in_root} calls under the root; dropped: {dropped or 'none'}; "
            f"model mismatches: {len(conversion.mismatches)}")
