"""The namespace skips ``closed`` for drivers whose ``closed`` does nothing (issue 7).

``BaseMount.notes_close`` is set per mount class from whether it overrides ``closed``; the
reference calls ``closed`` after every operation as before, on every driver.  Metrics and
cost counts must be equal, and the flag must be on exactly where a driver acts at close.
"""

from __future__ import annotations

import pytest

from drivers import REGISTRY, make_driver
from drivers.base import BaseMount
from test_writeruns import DRIVERS, IDS, metrics, random_write_case


def test_flag_follows_the_override() -> None:
    for name in REGISTRY:
        mount = make_driver(name).mount_class
        assert mount.notes_close == (mount.closed is not BaseMount.closed), name
    assert make_driver("devicemapper").mount_class.notes_close  # ext4 flushes at close
    assert not make_driver("overlay").mount_class.notes_close


@pytest.mark.parametrize("driver,options", DRIVERS, ids=IDS)
@pytest.mark.parametrize("seed", range(4))
def test_skipping_costs_what_calling_costs(driver: str, options: dict, seed: int,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    image, ops = random_write_case(500 + seed)

    def run(always: bool) -> dict:
        with monkeypatch.context() as patch:
            if always:
                patch.setattr(make_driver(driver, options).mount_class, "notes_close", True)
            return metrics(driver, options, image, ops, 1, False)

    skipped = run(False)
    assert skipped == run(True)
    assert skipped["written_bytes"] > 0
