"""Finding and releasing what real runs that died left behind (``layerbench cleanup``; also
run at the start of every real run): the other half of ``simulator.real.scratch``, whose
docstring gives the protocol.  A state file is stale when its process is dead, or when the
cleaner that claimed it (``*.cleaning-<pid>-<start time>``) is.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .scratch import alive, loops_backed_by, mount_points, release, signals_blocked, start_time, state_dir


def stale_states(directory: str | None = None) -> list[str]:
    """State files whose process (or whose cleaner) is dead."""
    directory = directory or state_dir()
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        path = os.path.join(directory, name)
        if ".cleaning-" in name:
            claimer = name.rsplit(".cleaning-", 1)[1].split("-")
            if len(claimer) == 2 and claimer[0].isdigit() and \
                    alive(int(claimer[0]), int(claimer[1]) if claimer[1].isdigit() else None):
                continue
            out.append(path)
            continue
        if not name.endswith(".json"):
            continue
        try:
            with open(path) as f:
                state = json.load(f)
            pid, started = int(state["pid"]), state.get("start_time")
        except (OSError, ValueError, KeyError, TypeError):
            out.append(path)  # torn or foreign: judged below, when read again
            continue
        if not alive(pid, started):
            out.append(path)
    return out


def cleanup_stale(directory: str | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
    """Release what runs that died left behind; one report per state file handled."""
    reports = []
    me = f".cleaning-{os.getpid()}-{start_time(os.getpid())}"
    for path in stale_states(directory):
        claim = path.split(".cleaning-")[0] + me
        if dry_run:
            claim = path
        else:
            try:
                os.rename(path, claim)
            except FileNotFoundError:
                continue  # another cleaner took it
        try:
            with open(claim) as f:
                state = json.load(f)
        except (OSError, ValueError) as exc:
            reports.append({"state_file": path, "errors": [f"unreadable state file: {exc}"]})
            if not dry_run:
                os.unlink(claim)  # a torn file lists nothing; it can never be acted on
            continue
        held = {"state_file": path, "pid": state.get("pid"), "scratch": state.get("scratch"),
                "mounts": [m for m in state.get("mounts", []) if m in mount_points()],
                "loops": loops_backed_by(state.get("loop_files", []))}
        if dry_run:
            reports.append({**held, "errors": []})
            continue
        with signals_blocked():
            errors = release(state)
            if not errors:
                os.unlink(claim)
            else:
                os.rename(claim, path.split(".cleaning-")[0])  # left for another try
        reports.append({**held, "errors": [str(e) for e in errors]})
    return reports
