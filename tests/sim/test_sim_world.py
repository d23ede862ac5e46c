"""The world's event loop, processes and clocks, as scenarios."""

from __future__ import annotations

from typing import Any

import pytest

from planaria.sim.world import Clock, Process, World


class Recorder(Process):
    def __init__(self, world: World, pid: str, clock: Clock | None = None) -> None:
        super().__init__(world, pid, clock)
        self.seen: list[tuple[float, Any]] = []
        self.starts = 0
        self.crashes = 0

    def note(self, what: Any) -> None:
        self.seen.append((self.world.now_ms, what))

    def on_start(self) -> None:
        self.starts += 1

    def on_crash(self) -> None:
        self.crashes += 1


def test_events_run_in_time_order_and_ties_in_scheduling_order() -> None:
    world = World(1)
    p = Recorder(world, "p")
    world.schedule(5.0, "p", p.note, "late")
    world.schedule(1.0, "p", p.note, "first")
    world.schedule(1.0, "p", p.note, "second")
    world.run_until(10.0)
    assert p.seen == [(1.0, "first"), (1.0, "second"), (5.0, "late")]
    assert world.now_ms == 10.0


def test_run_until_stops_at_the_end_time_and_keeps_later_events() -> None:
    world = World(1)
    p = Recorder(world, "p")
    world.schedule(20.0, "p", p.note, "later")
    world.run_until(10.0)
    assert p.seen == []
    world.run_until(30.0)
    assert p.seen == [(20.0, "later")]


def test_a_paused_process_handles_nothing_until_it_resumes_then_everything_in_order() -> None:
    world = World(1)
    p = Recorder(world, "p")
    world.schedule(1.0, "p", p.note, "a")
    world.schedule(2.0, "p", p.note, "b")
    world.at(0.5, lambda _: world.pause("p"))
    world.at(7.0, lambda _: world.resume("p"))
    world.run_until(10.0)
    assert p.seen == [(7.0, "a"), (7.0, "b")]
    assert p.held_total == 2


def test_a_crash_drops_the_incarnations_timers_but_messages_reach_the_next_one() -> None:
    world = World(1)
    p = Recorder(world, "p")
    p.after_local(5.0, p.note, "timer of incarnation 0")
    world.schedule(6.0, "p", p.note, "message")  # any incarnation
    world.at(1.0, lambda _: world.crash("p"))
    world.at(2.0, lambda _: world.restart("p"))
    world.run_until(10.0)
    assert p.seen == [(6.0, "message")]
    assert (p.crashes, p.starts, p.incarnation) == (1, 1, 1)


def test_messages_to_a_down_process_are_dropped() -> None:
    world = World(1)
    p = Recorder(world, "p")
    world.at(1.0, lambda _: world.crash("p"))
    world.schedule(2.0, "p", p.note, "lost")
    world.run_until(10.0)
    assert p.seen == []


@pytest.mark.parametrize(
    ("offset_ms", "rate", "true_ms", "local_ms"),
    [(0.0, 1.0, 100.0, 100.0), (-50.0, 1.0, 100.0, 50.0), (0.0, 1.01, 100.0, 101.0)],
)
def test_a_clock_is_offset_plus_rate_times_true_time(
    offset_ms: float, rate: float, true_ms: float, local_ms: float
) -> None:
    assert Clock(offset_ms, rate).local(true_ms) == pytest.approx(local_ms)


def test_a_rate_change_keeps_local_time_continuous_and_timers_use_local_time() -> None:
    clock = Clock(0.0, 1.0)
    clock.set_rate(100.0, 0.5)
    assert clock.local(100.0) == pytest.approx(100.0)
    assert clock.local(120.0) == pytest.approx(110.0)
    world = World(1)
    p = Recorder(world, "p", Clock(0.0, 0.5))
    p.after_local(10.0, p.note, "ten local ms")
    world.run_until(100.0)
    assert p.seen == [(20.0, "ten local ms")]


def test_the_trace_keeps_notable_lines_longer_than_message_lines() -> None:
    world = World(1, trace_keep=3)
    world.trace.add(0.0, "n1", "CRASH")
    for i in range(20):
        world.trace.add(float(i + 1), "n1", "<- n2", f"message {i}")
    assert len(world.trace.lines) <= 6
    assert any("CRASH" in line for line in world.trace.tail(5, focus="p9"))


def _resume_after_three_messages_on_each_of_two_channels(seed: int) -> list[str]:
    world = World(seed)
    p = Recorder(world, "p")
    world.at(0.5, lambda _: world.pause("p"))
    for i in range(3):
        world.schedule(1.0 + i, "p", p.note, f"a{i}", channel="a")
        world.schedule(1.5 + i, "p", p.note, f"b{i}", channel="b")
    world.at(10.0, lambda _: world.resume("p"))
    world.run_until(20.0)
    return [what for _, what in p.seen]


def test_a_resumed_process_keeps_each_channels_order_and_interleaves_the_channels() -> None:
    """An event loop waking from a long pause reads its ready connections in no particular
    order, each one in order: a message may overtake one that arrived earlier elsewhere."""
    orders = set()
    for seed in range(20):
        seen = _resume_after_three_messages_on_each_of_two_channels(seed)
        assert [w for w in seen if w.startswith("a")] == ["a0", "a1", "a2"]
        assert [w for w in seen if w.startswith("b")] == ["b0", "b1", "b2"]
        orders.add(tuple(seen))
    assert len(orders) > 2
    assert any(order[0] == "b0" for order in orders)  # b0 overtook a0, which came first
