"""``scripts/fuzz.py`` (docs/fidelity.md's differential fuzz) runs, finds nothing exact off
on seeds CI does not otherwise run, and says so in its last line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simulator.errors import BackendUnavailable

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fuzz.py"


def fuzz(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_the_fast_replay_equals_one_operation_at_a_time():
    assert fuzz("replay", "--first", "7", "--count", "1") == ["replay: seeds 7-7, 0 with an exact figure off"]


@pytest.mark.kernel
@pytest.mark.parametrize("target, module, seed", [("overlay", "overlay", "50007"), ("btrfs", "btrfs", "70007"),
                                                  ("thin", "thin", "90007"), ("thin-xfs", "thin", "95007")])
def test_the_real_backends_agree_on_a_fresh_seed(target, module, seed):
    check = __import__(f"simulator.real.{module}", fromlist=["check_available"]).check_available
    try:
        check()
    except BackendUnavailable as exc:
        pytest.skip(f"real {target} unavailable: {exc}")
    last = fuzz(target, "--first", seed, "--count", "1")[-1]
    assert last.startswith(f"{target}: seeds {seed}-{seed}, 0 with an exact figure off")
