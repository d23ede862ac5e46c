"""The order in which a partition's effects leave its node, relative to its persists in flight.

One :class:`Pipeline` per partition replica. The node's partition runtime
(``node/_partition.py``) and the simulated node (``sim/node.py``) both drive their replicas
through it, so the ordering the real node uses is the one the simulator checks under faults
(as FoundationDB runs its real code in simulation). Pure and deterministic: writing a stage's
persists and "run this at the end of the current turn" are ports given at construction.

Every input (client request, Append, AppendReply, config, tick) is stepped at once. What a
step asks for is executed in the order the protocol needs, without making later inputs wait
for the disk:

- a Ready without anything to persist, when nothing is being persisted, is executed at once;
- otherwise its persists join a *stage*, handed at once to the node's group committer
  (``submit``). Persists stepped before the committer starts the stage's write join it; a
  partition's stages are written in order (the committer's batches are), each batch with
  one fsync per log shared with every partition that reached the disk meanwhile (group
  commit), and a stage's effects (sends, client replies, ISR proposals) leave only after
  its persist is durable (``durable``). Effects of later steps without persists join the
  last stage, so **every effect follows every persist stepped before it**: an
  acknowledgement never precedes the durability of anything it depends on, whichever step
  produced it;
- exception: a primary's Appends leave without waiting for its persist when its epoch is
  already durable here (as a Raft leader sends while it writes): backups persist in
  parallel with the primary. Safe because a replica never leads an epoch it persisted, so
  no other entry can ever take the (epoch, index) of one sent early, and no acknowledgement
  of the primary leaves before its own persist. They leave at the end of the turn
  (``flush_soon``), each peer's merged into one (``merge_appends``): writes that arrived
  together cost a backup one message, one step and one reply. A later send to any peer
  flushes them first, so a partition's messages to a peer leave in step order.
  Their ``commit_index`` never covers an entry whose persist is still pending here: the
  primary counts itself toward a commit only with what its own disk holds (DESIGN §4 rule 1),
  or a backup could persist as committed an entry the primary then loses in a crash and
  truncate it when that same primary leads again (seed 632).

Stepping while a persist is in flight is the one liberty taken with the core's "execute each
Ready before the next input": the replica's memory runs ahead of its disk, but nothing
leaves the node before the disk caught up, which is all that rule protects (a crash loses
exactly what was not durable, and nothing was said about it).

A failed persist (full disk, I/O error) drops every pending effect (``drop``: nothing is
sent or acknowledged); the runtime then rebuilds the replica from what is on disk, as after
a crash.

Bug switch (``ReplicaSettings.bugs``): ``release-before-durable`` releases every effect at
once, its persists still written in order: the checks must catch acks of what no disk holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from planaria.core.messages import Append, AppendReply, Persist, ProposeIsr, Ready, Reply, Send
from planaria.core.replica import Replica, Role, merge_appends

__all__ = ["PIPELINE_BUGS", "Pipeline", "Stage", "latest_acks", "may_send_early"]

# The pipeline's known-bug switches (also in ``replica.BUGS``, where the settings check them).
RELEASE_BEFORE_DURABLE = "release-before-durable"
PIPELINE_BUGS = frozenset({RELEASE_BEFORE_DURABLE})


@dataclass(slots=True)
class Stage:
    """Persists written together, and the effects that wait for them."""

    effects: Ready  # its ``persist`` is what this stage writes
    started: bool = False  # the disk has it: only effects may join now
    dropped: bool = False  # the replica is being rebuilt: write nothing, say nothing

    def join(self, ready: Ready) -> None:
        self.effects.extend(ready)

    def start(self) -> list[Persist]:
        """The writer's part: the persists joined so far (no more may join); none once
        dropped."""
        self.started = True
        return [] if self.dropped else self.effects.persist


class Pipeline:
    """Orders one replica's effects after its persists. Ports:

    - ``submit(stage)``: hand the stage to the writer, which calls ``stage.start()`` when it
      writes and reports back with ``durable(stage)`` (or the runtime's failure path, which
      calls ``drop``). False when it cannot be taken (the runtime already broke): nothing of
      it may leave;
    - ``send``, ``reply``, ``propose``: the effects leaving;
    - ``flush_soon(fn)``: call ``fn`` at the end of the current turn.
    """

    def __init__(
        self,
        *,
        submit: Callable[[Stage], bool],
        send: Callable[[Send], None],
        reply: Callable[[Reply], None],
        propose: Callable[[ProposeIsr], None],
        flush_soon: Callable[[Callable[[], None]], None],
        batch_entries_max: int,
        bugs: frozenset[str] = frozenset(),
    ) -> None:
        self._submit = submit
        self._send = send
        self._reply = reply
        self._propose = propose
        self._flush_soon = flush_soon
        self._batch_entries_max = batch_entries_max
        self._release_at_once = RELEASE_BEFORE_DURABLE in bugs  # the bug
        self._stages: deque[Stage] = deque()
        self._held: dict[str, Append] = {}  # per peer, early Appends leaving at turn's end
        self._held_flush_due = False
        self.appends_merged = 0

    # ------------------------------------------------------------------ views

    @property
    def stages_pending(self) -> int:
        """Stages waiting for the disk (the one being written included)."""
        return len(self._stages)

    @property
    def replies_waiting(self) -> int:
        """Client replies waiting for the disk (the runtime's overload measure)."""
        return sum(len(stage.effects.replies) for stage in self._stages)

    def current(self, stage: Stage) -> bool:
        """Whether ``stage`` is the oldest pending one (not dropped by a rebuild meanwhile):
        the only one the writer's word may be about."""
        return not stage.dropped and bool(self._stages) and self._stages[0] is stage

    # ------------------------------------------------------------------ inputs

    def dispatch(self, ready: Ready, *, may_send_early: bool) -> None:
        """Execute ``ready`` now or stage it behind the persists in flight.
        ``may_send_early``: this replica is a primary whose epoch is durable here."""
        if ready.send and may_send_early:
            later: list[Send] = []
            for send in ready.send:
                if isinstance(send.message, Append):
                    self._hold(send.to, send.message)
                else:
                    later.append(send)
            ready.send = later
        if self._release_at_once:  # the bug: say it all before it is durable
            if ready.persist:
                self._stage(Ready(persist=ready.persist))
            ready.persist = []
            self._execute(ready)
            return
        if not self._stages and not ready.persist:
            self._execute(ready)
            return
        self._stage(ready)

    def _stage(self, ready: Ready) -> None:
        tail = self._stages[-1] if self._stages else None
        if tail is not None and not (ready.persist and tail.started):
            tail.join(ready)  # after every persist stepped before it
            return
        stage = Stage(ready)
        if self._submit(stage):
            self._stages.append(stage)

    def durable(self, stage: Stage) -> None:
        """The writer's word: ``stage`` (the current one) is durable; its effects leave."""
        if not self.current(stage):
            return
        self._stages.popleft()
        self._execute(stage.effects)

    def drop(self) -> None:
        """Forget every pending stage: nothing of them is written (if not yet) or said."""
        for stage in self._stages:
            stage.dropped = True
        self._stages.clear()

    # ------------------------------------------------------------------ effects

    def _hold(self, peer: str, append: Append) -> None:
        held = self._held.get(peer)
        if held is not None:
            merged = merge_appends(held, append, self._batch_entries_max)
            if merged is not None:
                self._held[peer] = merged
                self.appends_merged += 1
                return
            self._send_early(peer, held)
        self._held[peer] = append
        if not self._held_flush_due:
            self._held_flush_due = True
            self._flush_soon(self.flush_held)

    def flush_held(self) -> None:
        """Send the Appends held for the end of the turn."""
        self._held_flush_due = False
        held, self._held = self._held, {}
        for peer, append in held.items():
            self._send_early(peer, append)

    def _send_early(self, peer: str, append: Append) -> None:
        """Send an Append ahead of this replica's own persists, its commit held back to
        what they leave untouched."""
        bound = self._durable_bound()
        if bound is not None and append.commit_index > bound:
            append = replace(append, commit_index=bound)
        self._send(Send(peer, append))

    def _durable_bound(self) -> int | None:
        """The last index no pending persist writes or truncates (None: none would):
        entries up to it are on this node's disk."""
        bound: int | None = None
        for stage in self._stages:
            for persist in stage.effects.persist:
                if persist.truncate_after is not None:
                    untouched = persist.truncate_after
                elif persist.entries:
                    untouched = persist.entries[0].index - 1
                else:
                    continue
                bound = untouched if bound is None else min(bound, untouched)
        return bound

    def _execute(self, ready: Ready) -> None:
        if self._held and ready.send:
            self.flush_held()  # a partition's messages to a peer leave in step order
        sends = latest_acks(ready.send) if len(ready.send) > 1 else ready.send
        for send in sends:
            self._send(send)
        for reply in ready.replies:
            self._reply(reply)
        for proposal in ready.requests:
            self._propose(proposal)


def may_send_early(replica: Replica, durable_epoch: int) -> bool:
    """Whether ``replica``'s Appends may leave before its own persist: it is a primary and
    its epoch is durable here (``durable_epoch``, its log's; see the module docstring)."""
    return replica.role is Role.PRIMARY and replica.epoch <= durable_epoch


def latest_acks(sends: list[Send]) -> list[Send]:
    """Keep, per primary, only the successful AppendReply that says the most (highest
    epoch, then match index): fewer messages, same meaning (the others count as lost)."""
    best: dict[str, tuple[int, int, int]] = {}  # to -> (epoch, match, position)
    acks = 0
    for position, send in enumerate(sends):
        message = send.message
        if isinstance(message, AppendReply) and message.success:
            acks += 1
            key = (message.epoch, message.match_index, position)
            if send.to not in best or key >= best[send.to]:
                best[send.to] = key
    if acks == len(best):
        return sends
    keep = {position for _, _, position in best.values()}
    return [
        send
        for position, send in enumerate(sends)
        if position in keep or not (isinstance(send.message, AppendReply) and send.message.success)
    ]
