"""The pipeline's ordering, driven by hand: a writer that reports durability when told, and a
"turn" that ends when told."""

from __future__ import annotations

from collections.abc import Callable

from planaria.core.messages import (
    Append,
    AppendReply,
    ClientReply,
    Entry,
    Persist,
    ProposeIsr,
    Ready,
    Reply,
    Send,
)
from planaria.core.pipeline import PIPELINE_BUGS, Pipeline, Stage, latest_acks
from planaria.core.replica import BUGS


class Harness:
    def __init__(self, *, bugs: frozenset[str] = frozenset(), refuse: bool = False) -> None:
        self.out: list[object] = []  # what left, in order
        self.submitted: list[Stage] = []
        self.turn_end: list[Callable[[], None]] = []
        self.refuse = refuse
        self.pipeline = Pipeline(
            submit=self._submit,
            send=self.out.append,
            reply=self.out.append,
            propose=self.out.append,
            flush_soon=self.turn_end.append,
            batch_entries_max=4,
            bugs=bugs,
        )

    def _submit(self, stage: Stage) -> bool:
        if self.refuse:
            return False
        self.submitted.append(stage)
        return True

    def write_and_sync(self, stage: Stage) -> list[Persist]:
        persists = stage.start()
        self.pipeline.durable(stage)
        return persists

    def end_turn(self) -> None:
        calls, self.turn_end[:] = list(self.turn_end), []
        for call in calls:
            call()


def persist(index: int) -> Persist:
    return Persist(0, None, (Entry(1, index),), epoch=1, commit_index=0)


def reply(n: int) -> Reply:
    return Reply("c", ClientReply(0, ("c", n)))


def append(prev: int, count: int, *, to: str = "n2", commit: int = 0) -> Send:
    entries = tuple(Entry(1, prev + 1 + i) for i in range(count))
    return Send(to, Append(0, 1, "n1", prev, 1 if prev else 0, entries, commit, 0.0))


def ack(match: int) -> Send:
    return Send("n1", AppendReply(0, 1, "n2", True, match, 0))


def test_without_persists_in_flight_effects_leave_at_once() -> None:
    h = Harness()
    h.pipeline.dispatch(Ready(replies=[reply(1)]), may_send_early=False)
    assert h.out == [reply(1)] and not h.submitted


def test_effects_wait_for_every_persist_stepped_before_them() -> None:
    h = Harness()
    h.pipeline.dispatch(Ready(persist=[persist(1)], replies=[reply(1)]), may_send_early=False)
    # Stepped while the first stage is unwritten: its persist joins it; a persist-free
    # Ready's effects wait behind it too.
    h.pipeline.dispatch(Ready(persist=[persist(2)], replies=[reply(2)]), may_send_early=False)
    h.pipeline.dispatch(Ready(replies=[reply(3)]), may_send_early=False)
    assert h.out == [] and len(h.submitted) == 1
    assert h.pipeline.replies_waiting == 3
    first = h.submitted[0]
    assert first.start() == [persist(1), persist(2)]
    # Started: a new persist opens the next stage; effects without one join the tail.
    h.pipeline.dispatch(Ready(persist=[persist(3)], replies=[reply(4)]), may_send_early=False)
    h.pipeline.dispatch(Ready(replies=[reply(5)]), may_send_early=False)
    assert len(h.submitted) == 2
    h.pipeline.durable(first)
    assert h.out == [reply(1), reply(2), reply(3)]
    h.write_and_sync(h.submitted[1])
    assert h.out[3:] == [reply(4), reply(5)]
    assert h.pipeline.stages_pending == 0


def test_a_dropped_stage_writes_nothing_and_says_nothing() -> None:
    h = Harness()
    h.pipeline.dispatch(Ready(persist=[persist(1)], replies=[reply(1)]), may_send_early=False)
    stage = h.submitted[0]
    h.pipeline.drop()
    assert not h.pipeline.current(stage)
    assert stage.start() == []
    h.pipeline.durable(stage)  # a late word about it changes nothing
    assert h.out == [] and h.pipeline.stages_pending == 0


def test_a_stage_the_writer_refuses_is_never_pending() -> None:
    h = Harness(refuse=True)
    h.pipeline.dispatch(Ready(persist=[persist(1)], replies=[reply(1)]), may_send_early=False)
    assert h.pipeline.stages_pending == 0 and h.out == []


def test_early_appends_leave_at_turn_end_merged_per_peer() -> None:
    h = Harness()
    h.pipeline.dispatch(Ready(persist=[persist(1)], send=[append(0, 1)]), may_send_early=True)
    h.pipeline.dispatch(Ready(persist=[persist(2)], send=[append(1, 1)]), may_send_early=True)
    assert h.out == [] and len(h.turn_end) == 1  # before its own persist, but not yet
    h.end_turn()
    assert h.out == [append(0, 2)] and h.pipeline.appends_merged == 1


def test_early_appends_commit_only_what_the_primary_holds_durably() -> None:
    # Seed 632: the primary sent commit=35 while its own entry 35 was still unsynced, a
    # backup persisted it as committed, the primary crashed, lost 35 and led again without
    # it: the backup had to truncate an entry it had recorded as committed.
    h = Harness()
    h.pipeline.dispatch(Ready(persist=[persist(1)]), may_send_early=True)
    h.pipeline.dispatch(Ready(persist=[persist(2)]), may_send_early=True)
    h.submitted[0].start()
    h.pipeline.dispatch(Ready(persist=[persist(3)]), may_send_early=True)
    # The backup acked 1..3, so the core commits 3; only nothing of 1..3 is on this disk.
    h.pipeline.dispatch(Ready(send=[append(3, 0, commit=3)]), may_send_early=True)
    h.end_turn()
    assert h.out == [append(3, 0, commit=0)]
    h.write_and_sync(h.submitted[0])  # 1 and 2 durable; 3 still pending
    h.pipeline.dispatch(Ready(send=[append(3, 0, commit=3)]), may_send_early=True)
    h.end_turn()
    assert h.out[1:] == [append(3, 0, commit=2)]
    h.write_and_sync(h.submitted[1])
    h.pipeline.dispatch(Ready(send=[append(3, 0, commit=3)]), may_send_early=True)
    h.end_turn()
    assert h.out[2:] == [append(3, 0, commit=3)]


def test_held_appends_beyond_the_batch_limit_leave_unmerged() -> None:
    h = Harness()
    h.pipeline.dispatch(Ready(send=[append(0, 3)]), may_send_early=True)
    h.pipeline.dispatch(Ready(send=[append(3, 2)]), may_send_early=True)  # 5 > 4 entries
    assert h.out == [append(0, 3)]
    h.end_turn()
    assert h.out == [append(0, 3), append(3, 2)]


def test_a_later_send_flushes_the_held_appends_first() -> None:
    h = Harness()
    h.pipeline.dispatch(Ready(send=[append(0, 1)]), may_send_early=True)
    request = ProposeIsr(0, 1, 1, frozenset({"n1"}))
    h.pipeline.dispatch(Ready(send=[ack(5)], requests=[request]), may_send_early=False)
    assert h.out == [append(0, 1), ack(5), request]
    h.end_turn()  # nothing left to flush
    assert len(h.out) == 3


def test_only_the_latest_ack_per_primary_leaves() -> None:
    h = Harness()
    h.pipeline.dispatch(Ready(persist=[persist(1)], send=[ack(1)]), may_send_early=False)
    h.pipeline.dispatch(Ready(send=[ack(2)]), may_send_early=False)
    h.write_and_sync(h.submitted[0])
    assert h.out == [ack(2)]
    assert latest_acks([ack(1), ack(1)]) == [ack(1)]


def test_release_before_durable_lets_effects_leave_before_their_persist() -> None:
    assert PIPELINE_BUGS <= BUGS
    h = Harness(bugs=frozenset({"release-before-durable"}))
    h.pipeline.dispatch(Ready(persist=[persist(1)], replies=[reply(1)]), may_send_early=False)
    assert h.out == [reply(1)]  # what the ack monitor must catch
    assert h.submitted[0].start() == [persist(1)]  # still written, in order
