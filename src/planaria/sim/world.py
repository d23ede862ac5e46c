"""The simulated world: one seeded ``Random``, virtual time in ms, an event queue, processes.

Everything that happens in a run is an event on one heap, ordered by (time, sequence number),
so a seed replays the exact same run. A process can be *down* (crashed: its events are dropped,
its timers die with its incarnation) or *paused* (its events wait until it resumes; then it
handles what waited on each channel in order, the channels interleaved at random, as an event
loop that wakes with many sockets ready does).
Each process has a local clock ``offset + rate * true time`` (clock drift); timers are set in
local milliseconds.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from random import Random
from typing import Any

__all__ = ["Clock", "Event", "Process", "Trace", "TraceLine", "World"]

# An event: (time_ms, seq, process id, incarnation or -1 for "any", callback, argument,
# channel): the channel is the sender of a message (one connection), "" for the process's own
# timers; a paused process keeps each channel's order when it resumes.
Event = tuple[float, int, str, int, Callable[[Any], None], Any, str]
ANY_INCARNATION = -1
OWN_CHANNEL = ""


class Clock:
    """A drifting local clock: ``local = anchor_local + rate * (true - anchor_true)``."""

    __slots__ = ("_anchor_local", "_anchor_true", "rate")

    def __init__(self, offset_ms: float = 0.0, rate: float = 1.0) -> None:
        self._anchor_true = 0.0
        self._anchor_local = offset_ms
        self.rate = rate

    def local(self, true_ms: float) -> float:
        return self._anchor_local + self.rate * (true_ms - self._anchor_true)

    def set_rate(self, true_ms: float, rate: float) -> None:
        """Change the rate from now on; the local time stays continuous."""
        self._anchor_local = self.local(true_ms)
        self._anchor_true = true_ms
        self.rate = rate

    def reset(self, true_ms: float, local_ms: float, rate: float) -> None:
        """Set the local time (a clock that starts at some offset) and the rate."""
        self._anchor_true = true_ms
        self._anchor_local = local_ms
        self.rate = rate

    def true_delay(self, local_delay_ms: float) -> float:
        return local_delay_ms / self.rate


@dataclass(frozen=True, slots=True)
class TraceLine:
    time_ms: float
    process: str
    what: str
    detail: object = None

    def render(self, show: Callable[[object], str] = str) -> str:
        detail = "" if self.detail is None else f" {show(self.detail)}"
        return f"{self.time_ms:10.3f} {self.process:<8} {self.what}{detail}"


class Trace:
    """The run's events as (time, process, what, detail); ``keep`` bounds memory (None: all).

    Besides the last ``keep`` lines, the last ``keep`` *notable* lines (anything but a message
    delivery: faults, config changes, sessions, proposals) are kept, so a liveness failure
    seconds after its cause still shows the cause.
    """

    def __init__(self, keep: int | None = 3000, show: Callable[[object], str] = str) -> None:
        self.keep = keep
        self.show = show  # renders a line's detail (a message, a config, ...)
        self.lines: list[TraceLine] = []
        self.notable: list[TraceLine] = []
        self.count = 0

    def add(self, time_ms: float, process: str, what: str, detail: object = None) -> None:
        line = TraceLine(time_ms, process, what, detail)
        self.lines.append(line)
        self.count += 1
        keep = self.keep
        if not what.startswith("<-"):
            self.notable.append(line)
            if keep is not None and len(self.notable) > 2 * keep:
                del self.notable[: len(self.notable) - keep]
        if keep is not None and len(self.lines) > 2 * keep:
            del self.lines[: len(self.lines) - keep]

    def tail(self, lines: int, focus: str | None = None) -> list[str]:
        """The last ``lines`` lines; with ``focus`` (a partition, "p3"), the last lines that
        mention it, and faults."""
        if focus is None:
            return [line.render(self.show) for line in self.lines[-lines:]]
        pattern = focus + " "
        picked: dict[int, str] = {}
        for line in [*self.notable, *self.lines]:
            if id(line) in picked:
                continue
            text = line.render(self.show)
            if pattern in text + " " or line.process == "nemesis" or line.what.isupper():
                picked[id(line)] = text
        ordered = sorted(picked.values(), key=lambda text: float(text.split()[0]))
        return ordered[-lines:]

    def render_all(self) -> list[str]:
        return [line.render(self.show) for line in self.lines]


class Process:
    """Something that handles events: a node, the coordinator, a client."""

    def __init__(self, world: World, pid: str, clock: Clock | None = None) -> None:
        self.world = world
        self.pid = pid
        self.clock = clock or Clock()
        self.up = True
        self.paused = False
        self.incarnation = 0
        self.held: list[Event] = []
        self.held_total = 0  # events that waited for a resume, over the whole run
        world.add_process(self)

    def local_now(self) -> float:
        return self.clock.local(self.world.now_ms)

    def after_local(
        self, local_delay_ms: float, fn: Callable[[Any], None], arg: Any = None
    ) -> None:
        """A timer of this incarnation, ``local_delay_ms`` of this process's clock from now."""
        self.world.schedule(
            self.clock.true_delay(local_delay_ms), self.pid, fn, arg, self.incarnation
        )

    # Overridden by processes that keep state.
    def on_crash(self) -> None:
        """Everything in memory is lost."""

    def on_start(self) -> None:
        """A new incarnation starts (also the first)."""


class World:
    """The event loop of one run."""

    def __init__(self, seed: int, *, trace_keep: int | None = 3000) -> None:
        self.seed = seed
        self.rng = Random(seed)
        self.now_ms = 0.0
        self.processes: dict[str, Process] = {}
        self.trace = Trace(trace_keep)
        self.events = 0
        self._queue: list[Event] = []
        self._seq = 0
        # Called after every event handled by a process (the invariant checks hook in here).
        self.after_event: Callable[[str], None] | None = None

    def add_process(self, process: Process) -> None:
        if process.pid in self.processes:
            raise ValueError(f"duplicate process id {process.pid!r}")
        self.processes[process.pid] = process

    def schedule(
        self,
        delay_ms: float,
        pid: str,
        fn: Callable[[Any], None],
        arg: Any = None,
        incarnation: int = ANY_INCARNATION,
        *,
        channel: str = OWN_CHANNEL,
    ) -> None:
        self._seq += 1
        event = (self.now_ms + delay_ms, self._seq, pid, incarnation, fn, arg, channel)
        heapq.heappush(self._queue, event)

    def at(self, time_ms: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """A world event (the nemesis, the driver): never paused, never dropped."""
        self._seq += 1
        event = (max(time_ms, self.now_ms), self._seq, "", -1, fn, arg, OWN_CHANNEL)
        heapq.heappush(self._queue, event)

    def run_until(self, end_ms: float, stop: Callable[[], bool] | None = None) -> None:
        """Handle events up to ``end_ms`` (or until ``stop()`` is true after an event)."""
        queue, processes = self._queue, self.processes
        while queue and queue[0][0] <= end_ms:
            event = heapq.heappop(queue)
            time_ms, _, pid, incarnation, fn, arg, _ = event
            self.now_ms = time_ms
            if pid:
                process = processes[pid]
                if not process.up or (incarnation >= 0 and incarnation != process.incarnation):
                    continue
                if process.paused:
                    process.held.append(event)
                    continue
                self.events += 1
                fn(arg)
                if self.after_event is not None:
                    self.after_event(pid)
            else:
                fn(arg)
            if stop is not None and stop():
                return
        self.now_ms = max(self.now_ms, end_ms)

    # ------------------------------------------------------------------ faults

    def crash(self, pid: str) -> None:
        process = self.processes[pid]
        if not process.up:
            return
        process.up = False
        process.paused = False
        process.held.clear()
        self.trace.add(self.now_ms, pid, "CRASH")
        process.on_crash()

    def restart(self, pid: str) -> None:
        process = self.processes[pid]
        if process.up:
            return
        process.up = True
        process.incarnation += 1
        self.trace.add(self.now_ms, pid, "RESTART", f"incarnation {process.incarnation}")
        process.on_start()
        if self.after_event is not None:
            self.after_event(pid)

    def pause(self, pid: str) -> None:
        process = self.processes[pid]
        if process.up and not process.paused:
            process.paused = True
            self.trace.add(self.now_ms, pid, "PAUSE")

    def resume(self, pid: str) -> None:
        process = self.processes[pid]
        if not process.paused:
            return
        process.paused = False
        self.trace.add(self.now_ms, pid, "RESUME", f"{len(process.held)} held events")
        held, process.held = process.held, []
        process.held_total += len(held)
        for _, _, _, incarnation, fn, arg, channel in self._interleave(held):
            self.schedule(0.0, pid, fn, arg, incarnation, channel=channel)

    def _interleave(self, held: list[Event]) -> list[Event]:
        """``held`` in an order that keeps each channel's (a connection delivers in order)
        and interleaves the channels at random: a process that wakes up from a long pause
        with many connections ready reads them in no particular order, so a client's request
        may be handled before a config change that arrived earlier on another connection."""
        channels: dict[str, list[Event]] = {}
        for event in held:
            channels.setdefault(event[6], []).append(event)
        queues = [list(reversed(events)) for events in channels.values()]
        left = len(held)
        order: list[Event] = []
        while left:
            # A uniformly random interleaving: the next event comes from a channel with
            # probability proportional to what it has left.
            pick = self.rng.randrange(left)
            for queue in queues:
                if pick < len(queue):
                    order.append(queue.pop())
                    break
                pick -= len(queue)
            left -= 1
        return order
