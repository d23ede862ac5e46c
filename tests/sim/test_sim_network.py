"""The simulated network: delivery, loss, duplication, reordering, cuts."""

from __future__ import annotations

from typing import Any

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
