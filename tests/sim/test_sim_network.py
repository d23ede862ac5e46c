"""The simulated network: delivery, loss, duplication, reordering, cuts."""

from __future__ import annotations

from typing import Any

import pytest

from planaria.errors import UsageError
from planaria.sim.nemesis import Nemesis, NemesisSettings
from planaria.sim.network import Network, NetworkSettings
from planaria.sim.world import Process, World


def _world(settings: NetworkSettings) -> tuple[World, Network, list[tuple[str, Any]]]:
    world = World(3)
    network = Network(world, settings)
    got: list[tuple[str, Any]] = []
    for pid in ("a", "b", "c"):
        Process(world, pid)
        network.register(pid, lambda src, message: got.append((src, message)))
    return world, network, got


def test_a_calm_network_delivers_everything_once_after_the_minimum_delay() -> None:
    world, network, got = _world(NetworkSettings(delay_min_ms=1.0, delay_mean_ms=0.5))
    for i in range(50):
        network.send("a", "b", i)
    world.run_until(0.99)
    assert got == []
    world.run_until(1000.0)
    assert sorted(message for _, message in got) == list(range(50))


def test_random_delays_reorder_messages_between_the_same_two_processes() -> None:
    world, network, got = _world(NetworkSettings(delay_min_ms=0.1, delay_mean_ms=5.0))
    for i in range(50):
        network.send("a", "b", i)
    world.run_until(1000.0)
    order = [message for _, message in got]
    assert order != sorted(order)


def test_loss_and_duplication_happen_at_about_their_rates() -> None:
    world, network, got = _world(NetworkSettings(loss=0.3, duplication=0.2))
    for i in range(1000):
        network.send("a", "b", i)
    world.run_until(10_000.0)
    assert 230 < network.stats.lost < 370
    assert network.stats.duplicated > 100
    assert len(got) == 1000 - network.stats.lost + network.stats.duplicated


def test_a_one_way_cut_drops_one_direction_only_until_healed() -> None:
    world, network, got = _world(NetworkSettings())
    network.cut([("a", "b")])
    network.send("a", "b", "dropped")
    network.send("b", "a", "delivered")
    world.run_until(100.0)
    assert got == [("b", "delivered")]
    network.heal()
    network.send("a", "b", "after heal")
    world.run_until(200.0)
    assert got[-1] == ("a", "after heal")


def test_a_split_cuts_both_ways_between_the_sides_only() -> None:
    world, network, got = _world(NetworkSettings())
    network.split(["a"], ["b", "c"])
    for src, dst in (("a", "b"), ("c", "a"), ("b", "c")):
        network.send(src, dst, f"{src}->{dst}")
    world.run_until(100.0)
    assert got == [("b", "b->c")]


class _OnePrimary:
    """Just enough of a cluster for the nemesis to cut: n1 leads a partition."""

    def node_ids(self) -> list[str]:
        return ["n1", "n2", "n3"]

    def primary_of_some_partition(self) -> str | None:
        return "n1"


def test_a_primary_on_the_small_side_of_a_split_keeps_some_clients_cut_off_with_it() -> None:
    """minority-primary: the clients on the primary's side reach it and nothing else (not
    the coordinator: their view stays stale); the others reach everything but it."""
    world = World(3)
    network = Network(world, NetworkSettings())
    for pid in ("n1", "n2", "n3", "coord", "c1", "c2", "c3", "c4", "c5", "c6"):
        Process(world, pid)
    nemesis = Nemesis(
        world,
        network,
        _OnePrimary(),  # type: ignore[arg-type]
        frozenset({"partition"}),
        NemesisSettings(),
        hosts=["n1", "n2", "n3", "coord"],
        coordinator="coord",
    )
    nemesis.partition("minority-primary", 100.0)
    clients = [f"c{i}" for i in range(1, 7)]
    with_primary = [c for c in clients if ("n1", c) not in network.cuts]
    others = [c for c in clients if c not in with_primary]
    assert with_primary and others
    for client in with_primary:
        assert (client, "n1") not in network.cuts
        assert {(client, "coord"), (client, "n2"), ("coord", client)} <= network.cuts
    for client in others:
        assert {(client, "n1"), ("n1", client)} <= network.cuts
        assert not {(client, "coord"), (client, "n2")} & network.cuts
    assert {("n1", "coord"), ("n1", "n2"), ("n2", "n1")} <= network.cuts
    with pytest.raises(UsageError, match="unknown partition shape"):
        nemesis.partition("everything", 100.0)
