"""The in-run monitor's epoch rule, checked on its own: a replica's epoch in memory may run
ahead of its disk and be lost with a crash (the pipeline keeps it inside the node), but it
never falls below an epoch its log made durable."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from planaria.sim.monitor import Monitor, Violation


def _node(log_epoch: int) -> Any:
    return SimpleNamespace(pid="n1", logs={0: SimpleNamespace(epoch=log_epoch)})


def _monitor() -> Monitor:
    return Monitor({}, lambda partition: cast(Any, None))


def test_an_epoch_lost_with_the_memory_is_no_violation() -> None:
    monitor = _monitor()
    key = ("n1", 0, 0)
    monitor._check_epoch(_node(log_epoch=3), 0, key, epoch=4)  # ahead of the disk
    monitor._check_epoch(_node(log_epoch=3), 0, key, epoch=3)  # crashed before the fsync


def test_running_below_a_durable_epoch_is_caught() -> None:
    monitor = _monitor()
    key = ("n1", 0, 0)
    monitor._check_epoch(_node(log_epoch=4), 0, key, epoch=4)
    with pytest.raises(Violation) as caught:
        monitor._check_epoch(_node(log_epoch=4), 0, key, epoch=3)
    assert caught.value.check == "epoch-decreased"
    # A lost log starts a new generation (another key): its epochs start over.
    monitor._check_epoch(_node(log_epoch=0), 0, ("n1", 0, 1), epoch=1)
