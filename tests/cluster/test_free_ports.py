"""free_base_port: two launchers searching before either binds get different ports."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from planaria.cluster import _processes, free_base_port


class _SameStart(random.Random):
    """Every search starts at the same port: the race of two test workers, made certain."""

    def randrange(self, *args: object, **kwargs: object) -> int:
        return 0


def test_ports_given_are_not_given_again_before_they_are_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_processes._PortNotes, "_PATH", tmp_path / "given")
    monkeypatch.setattr(random, "Random", _SameStart)
    first = free_base_port(3)
    second = free_base_port(3)  # nothing bound the first's ports yet
    ports = {
        base: {port for port, _ in _processes._cluster_ports(base, 3, base - 1)}
        for base in (first, second)
    }
    assert not ports[first] & ports[second]
    # Noted for a while only: later, the same ports may be given again.
    monkeypatch.setattr(_processes, "_NOTED_S", 0.0)
    assert free_base_port(3) == first
    assert len((tmp_path / "given").read_text().splitlines()) <= 2 * 7
