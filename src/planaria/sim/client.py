"""Simulated clients: a workload of get/set/cas/delete (and incr on counter keys), routing,
retries, and the history.

Each client keeps ``lanes`` operations in flight at once under its one client id, as an
application sharing one ``planaria.Client`` does. Writes carry a request id (the client id
and a sequence number of the client's writes) that every retry reuses (the primary
deduplicates them); every read attempt gets a fresh id of its own (``<client>:r``). The
sequence numbers of a client's unanswered writes to one partition never spread wider than
``write_window``.

Routing is what a user's client does, stale view included: a client sends to the primary
of the config it last learned (from the coordinator, or a refusal's ``primary_hint``). A
timeout does not refresh that view unless it is older than ``view_max_age_ms``; a refusal
does. So for a while a client keeps asking a primary that may have been deposed. A share of
the reads (``stale_read_share``) ask for a stale read (``stale_ok``) from a random replica
of the partition.

Outcomes: a read that times out until its deadline is ``info``. A write that does is
*parked*: the lane moves on (under a new history process, as Jepsen does for a crashed
process), and the write stays pending in the history; it is retried with its request id
when the write window is full and, after the faults heal, until it is answered
(:meth:`SimClient.resolve`). Its answer completes it in the history; a write still
unanswered at the end stays of unknown outcome (the run reports ``unresolved``).

History mapping (``planaria.check``'s kv model): Get -> ``get``, a stale Get ->
``stale-read``, Set -> ``put``, Set with ``if_value`` -> ``cas [old new]``, Delete ->
``delete``. A cas the primary refused (``applied=False``) certainly did not change anything:
it is recorded as ``fail``, as Jepsen does, because the kv model reads an acknowledged cas as
"it swapped". History processes are ``<client>.<n>``: one per lane, a new one whenever a
lane parks a write.

Counters (``Workload.counter_keys``, none unless asked for): a share of the operations is
``IncrBy(key, 1)`` on a counter key. Those, and the final reads of counter keys, go to a
history of their own (``counter_history``: ``incr`` completes ``ok`` with the new value),
which the run checks for increments lost or applied twice (the register model does not
read counters).

TTL keys (``Workload.ttl_keys``, none unless asked for): a share of the operations sets one
with a relative expiry (``Set`` with ``px``, 20 to 300 ms, made absolute by the primary),
gives it a new one (``Expire``), removes it (``ClearExpiry``) or reads it. Their events go to
``ttl_history`` (keys vanish there: the register model does not read them); the monitor
checks their reads (``expired-read``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from planaria.check.history import Event
from planaria.check.models import STALE_READ
from planaria.core.messages import (
    DEDUP_WINDOW,
    ClearExpiry,
    ClientReply,
    ClientRequest,
    Delete,
    ErrorCode,
    Expire,
    Get,
    IncrBy,
    Op,
    PartitionConfig,
    RequestId,
    Set,
)
from planaria.core.slots import keyslot, partition_of_slot
from planaria.errors import InternalError
from planaria.sim.network import Network
from planaria.sim.wire import ConfigRead, ConfigSnapshot
from planaria.sim.world import Process, World

__all__ = ["ClientSettings", "History", "SimClient", "Workload", "partition_of"]

COORDINATOR = "coord"
# How far apart the sequence numbers of a client's unanswered writes to one partition may
# be: the replicas' dedup window, as planaria.Client keeps it (docs/operations.md).
WRITE_WINDOW = DEDUP_WINDOW


def partition_of(key: bytes, partitions: int) -> int:
    return partition_of_slot(keyslot(key), partitions)


@dataclass(frozen=True)
class ClientSettings:
    attempt_timeout_ms: float = 40.0
    op_deadline_ms: float = 600.0
    backoff_min_ms: float = 2.0
    backoff_max_ms: float = 20.0
    think_max_ms: float = 20.0  # pause between operations of one lane
    lanes: int = 3  # operations in flight at once under the client's one id
    write_window: int = WRITE_WINDOW
    # A timeout re-reads the configs only when the view is older than this (per client: a
    # random share of twice this, so the clients' patience differs).
    view_max_age_ms: float = 300.0
    stale_read_share: float = 0.15  # of the reads: stale reads from any replica


@dataclass
class Workload:
    """What the clients do, shared by all of them: ``ops_left`` counts down to zero."""

    ops_left: int
    keys: tuple[bytes, ...]  # the keys every client reads, writes, swaps and deletes
    unique_share: float = 0.3  # share of operations that set a key written once (lost writes)
    counter_keys: tuple[bytes, ...] = ()  # keys only ever incremented (none: no counters)
    counter_share: float = 0.3  # with counter keys: share of operations that increment one
    ttl_keys: tuple[bytes, ...] = ()  # keys set with an expiry (none: no TTLs)
    ttl_share: float = 0.3  # with TTL keys: share of operations on one
    started: int = 0
    info: int = 0
    parked: int = 0


@dataclass
class History:
    events: list[Event] = field(default_factory=list)

    def add(
        self, time_ms: float, process: str, *, kind: str, f: str, key: str, value: Hashable
    ) -> None:
        self.events.append(Event(process, kind, f, key, value, time_ms))  # type: ignore[arg-type]


@dataclass
class _Pending:
    op: Op
    f: str
    key: str
    value: Hashable
    partition: int
    request_id: RequestId
    process: str  # its history process
    deadline_ms: float
    lane: int | None  # the lane retrying it; None while parked
    attempts: int = 0
    target: str | None = None
    token: int = 0  # the current attempt; older timers see a different one
    final_read: bool = False

    @property
    def write_seq(self) -> int | None:
        return None if isinstance(self.op, Get) else self.request_id[1]


class SimClient(Process):
    def __init__(
        self,
        world: World,
        network: Network,
        pid: str,
        *,
        partitions: int,
        workload: Workload,
        history: History,
        settings: ClientSettings,
        counter_history: History | None = None,
        ttl_history: History | None = None,
    ) -> None:
        super().__init__(world, pid)
        self.counter_history = counter_history if counter_history is not None else History()
        self.ttl_history = ttl_history if ttl_history is not None else History()
        self.network = network
        self.partitions = partitions
        self.workload = workload
        self.history = history
        self.settings = settings
        self.configs: dict[int, PartitionConfig] = {}
        # Primaries named by refusals: part of the view until a newer config arrives.
        self.hints: dict[int, str] = {}
        # How old the view may grow before a timeout re-reads it: each client its own, so
        # some learn of a failover at once and some keep asking the old primary for a while.
        self.view_max_age_ms = world.rng.uniform(0.0, 2 * settings.view_max_age_ms)
        self.view_read_ms = float("-inf")
        self.lanes: list[_Pending | None] = [None] * settings.lanes
        self.lane_process = [""] * settings.lanes
        self.processes = 0
        for lane in range(settings.lanes):
            self._new_process(lane)
        self.chosen: list[tuple[Op, bool] | None] = [None] * settings.lanes
        self.waiting: list[int] = []  # lanes waiting for room in the write window
        self.by_request: dict[RequestId, _Pending] = {}
        self.parked: list[_Pending] = []  # writes that ran out of time, oldest first
        self.resolving = False
        self.resolved = False
        self.write_seq = 0
        self.read_seq = 0
        self.written = 0
        self.seen: dict[bytes, bytes] = {}  # the last value seen per key (to guess a cas)
        self.final_keys: list[bytes] = []
        self.final_values: dict[str, Hashable] = {}
        self.final_unknown: list[str] = []
        self.completed = 0
        network.register(pid, self.on_message)

    # ------------------------------------------------------------------ driving

    def start(self) -> None:
        self._read_view()
        for lane in range(self.settings.lanes):
            self._think(lane)

    def resolve(self) -> None:
        """After healing: retry every parked write (same request id) until it is answered."""
        self.resolving = True
        for lane in range(self.settings.lanes):
            if self.lanes[lane] is None:
                self._next(lane)

    def stop_resolving(self) -> None:
        """The resolution phase is over: writes still unanswered stay parked."""
        self.resolving = False
        self.resolved = True  # parked writes are not retried any more
        for pending in self.lanes:
            if pending is not None and pending.write_seq is not None:
                self._park(pending)

    def read_finally(self, keys: list[bytes]) -> None:
        """After the workload: read every key once more (the lost-write check's final reads)."""
        self.final_keys = list(reversed(keys))
        for lane in range(self.settings.lanes):
            if self.lanes[lane] is None:
                self._next(lane)

    @property
    def idle(self) -> bool:
        """No operation in flight and no final read left (parked writes may remain)."""
        return all(p is None for p in self.lanes) and not self.final_keys

    @property
    def unresolved(self) -> list[_Pending]:
        """Writes still without an answer: parked, or being retried."""
        busy = [p for p in self.lanes if p is not None and p.write_seq is not None]
        return [*self.parked, *busy]

    def _new_process(self, lane: int) -> None:
        self.lane_process[lane] = f"{self.pid}.{self.processes}"
        self.processes += 1

    def _think(self, lane: int) -> None:
        self.after_local(self.world.rng.uniform(0, self.settings.think_max_ms), self._next, lane)

    def _next(self, lane: int) -> None:
        if self.lanes[lane] is not None:
            return
        if self.final_keys:
            self._begin(lane, Get(self.final_keys.pop()), final_read=True)
            return
        if self.parked and self.resolving:
            self._resume(lane, self.parked.pop(0))
            return
        workload = self.workload
        if workload.ops_left <= 0 or self.resolving:
            return
        if self.chosen[lane] is None:
            self.chosen[lane] = self._choose()
        op, stale = self.chosen[lane]  # type: ignore[misc]
        if not isinstance(op, Get):
            partition = partition_of(op.key, self.partitions)
            if self._window_full(partition):
                # No room for another write there: retry a parked one of that partition
                # meanwhile, or wait for one to end.
                parked = [p for p in self.parked if p.partition == partition]
                if parked and not self.resolved:
                    self.parked.remove(parked[0])
                    self._resume(lane, parked[0])
                else:
                    self.waiting.append(lane)
                return
        self.chosen[lane] = None
        workload.ops_left -= 1
        workload.started += 1
        self._begin(lane, op, stale=stale)

    def _window_full(self, partition: int) -> bool:
        """Whether a new write to ``partition`` would spread the sequence numbers of the
        client's unanswered writes there wider than the write window (the replicas of a
        partition deduplicate a client's writes by sequence number)."""
        seqs = [p.request_id[1] for p in self.unresolved if p.partition == partition]
        return bool(seqs) and self.write_seq + 1 - min(seqs) >= self.settings.write_window

    def _choose(self) -> tuple[Op, bool]:
        rng, workload = self.world.rng, self.workload
        self.written += 1
        counters = workload.counter_keys
        if counters and rng.random() < workload.counter_share:
            return IncrBy(counters[rng.randrange(len(counters))], 1), False
        value = f"{self.pid}-{self.written}".encode()
        ttl_keys = workload.ttl_keys
        if ttl_keys and rng.random() < workload.ttl_share:
            return self._choose_ttl(ttl_keys[rng.randrange(len(ttl_keys))], value), False
        if rng.random() < workload.unique_share:
            return Set(b"u:" + value, value), False
        key = workload.keys[rng.randrange(len(workload.keys))]
        roll = rng.random()
        if roll < 0.4:
            return Get(key), rng.random() < self.settings.stale_read_share
        if roll < 0.7:
            return Set(key, value), False
        if roll < 0.9:
            return Set(key, value, if_value=self.seen.get(key, b"")), False
        return Delete(key), False

    def _choose_ttl(self, key: bytes, value: bytes) -> Op:
        rng = self.world.rng
        roll = rng.random()
        if roll < 0.4:
            return Get(key)
        delay_ms = rng.randint(20, 300)
        if roll < 0.75:
            return Set(key, value, expire_ms=delay_ms, relative=True)
        if roll < 0.9:
            return Expire(key, delay_ms, relative=True)
        if roll < 0.95:
            return ClearExpiry(key)
        return Set(key, value)

    def _begin(self, lane: int, op: Op, *, stale: bool = False, final_read: bool = False) -> None:
        key = op.key.decode()
        value: Hashable = None
        if isinstance(op, Get):
            f = STALE_READ if stale else "get"
            self.read_seq += 1
            request_id = (f"{self.pid}:r", self.read_seq)
        else:
            if isinstance(op, Delete):
                f = "delete"
            elif isinstance(op, IncrBy):
                f = "incr"
            elif isinstance(op, Expire):
                f, value = "expire", op.expire_ms
            elif isinstance(op, ClearExpiry):
                f = "persist"
            elif not isinstance(op, Set):
                raise InternalError(f"the register workload sends no {type(op).__name__}")
            elif op.if_value is not None:
                f, value = "cas", (op.if_value.decode(), op.value.decode())
            else:
                f, value = "put", op.value.decode()
            self.write_seq += 1
            request_id = (self.pid, self.write_seq)
        pending = _Pending(
            op,
            f,
            key,
            value,
            partition_of(op.key, self.partitions),
            request_id,
            self.lane_process[lane],
            self.world.now_ms + self.settings.op_deadline_ms,
            lane,
            final_read=final_read,
        )
        self.lanes[lane] = pending
        self.by_request[request_id] = pending
        now = self.world.now_ms
        self._history(op).add(now, pending.process, kind="invoke", f=f, key=key, value=value)
        self._attempt(pending, pending.token)

    def _history(self, op: Op) -> History:
        """Where ``op``'s events go: counter and TTL keys have histories of their own."""
        if op.key in self.workload.counter_keys:
            return self.counter_history
        if op.key in self.workload.ttl_keys:
            return self.ttl_history
        return self.history

    def _resume(self, lane: int, pending: _Pending) -> None:
        """Retry a parked write on ``lane`` (its history process stays its own)."""
        pending.lane = lane
        pending.deadline_ms = self.world.now_ms + self.settings.op_deadline_ms
        if self.resolving:
            pending.deadline_ms = float("inf")  # the run bounds the resolution phase
        self.lanes[lane] = pending
        self._attempt(pending, pending.token)

    def _attempt(self, pending: _Pending, token: int) -> None:
        """Try ``pending`` again, unless ``token`` is from an older attempt."""
        if pending.lane is None or token != pending.token:
            return
        pending.token += 1
        token = pending.token
        if self.world.now_ms >= pending.deadline_ms:
            self._timed_out_for_good(pending)
            return
        if isinstance(pending.op, Get) and pending.attempts:
            del self.by_request[pending.request_id]
            self.read_seq += 1  # every read attempt is a new request
            pending.request_id = (f"{self.pid}:r", self.read_seq)
            self.by_request[pending.request_id] = pending
        pending.attempts += 1
        target = self._target(pending)
        if target is None:
            self._read_view()
            self._retry_later(pending)
            return
        pending.target = target
        request = ClientRequest(
            pending.partition,
            self.pid,
            pending.request_id,
            pending.op,
            stale_ok=pending.f == STALE_READ,
        )
        self.network.send(self.pid, target, request)
        self.after_local(self.settings.attempt_timeout_ms, self._timed_out, (pending, token))

    def _target(self, pending: _Pending) -> str | None:
        config = self.configs.get(pending.partition)
        if pending.f == STALE_READ and config is not None and config.replicas:
            replicas = sorted(config.replicas)
            return replicas[self.world.rng.randrange(len(replicas))]
        hint = self.hints.get(pending.partition)
        if hint is not None:
            return hint
        return config.primary if config is not None else None

    def _read_view(self) -> None:
        self.view_read_ms = self.world.now_ms
        self.hints.clear()  # the coordinator's answer is the view from now on
        self.network.send(self.pid, COORDINATOR, ConfigRead())

    def _timed_out(self, what: tuple[_Pending, int]) -> None:
        pending, token = what
        if pending.lane is None or token != pending.token:
            return
        # A stale view is kept for a while: a timeout alone refreshes it only when it is old.
        if self.world.now_ms - self.view_read_ms >= self.view_max_age_ms:
            self._read_view()
        self._attempt(pending, token)

    def _retry_later(self, pending: _Pending) -> None:
        rng, settings = self.world.rng, self.settings
        backoff = rng.uniform(settings.backoff_min_ms, settings.backoff_max_ms)
        self.after_local(backoff, self._attempt_later, (pending, pending.token))

    def _attempt_later(self, what: tuple[_Pending, int]) -> None:
        self._attempt(*what)

    def _timed_out_for_good(self, pending: _Pending) -> None:
        lane = pending.lane
        assert lane is not None
        if pending.write_seq is None:
            self._finish(pending, "info", None)
            return
        self._park(pending)

    def _park(self, pending: _Pending) -> None:
        """A write out of time: pending in the history, retried later with its request id."""
        lane = pending.lane
        assert lane is not None
        pending.lane = None
        pending.token += 1
        self.lanes[lane] = None
        self.parked.append(pending)
        self.parked.sort(key=lambda p: p.request_id[1])
        self.workload.parked += 1
        if pending.process == self.lane_process[lane]:
            self._new_process(lane)
        self._lane_free(lane)

    def _finish(self, pending: _Pending, kind: str, value: Hashable) -> None:
        lane = pending.lane
        assert lane is not None
        self.lanes[lane] = None
        pending.lane = None
        pending.token += 1
        del self.by_request[pending.request_id]
        self._history(pending.op).add(
            self.world.now_ms, pending.process, kind=kind, f=pending.f, key=pending.key, value=value
        )
        if kind == "info":
            self.workload.info += 1
        self.completed += 1
        if pending.final_read:
            if kind == "ok":
                self.final_values[pending.key] = value
            else:
                self.final_unknown.append(pending.key)
        self._lane_free(lane)

    def _lane_free(self, lane: int) -> None:
        """``lane`` may start another operation; so may the lanes waiting for room in the
        write window (a write ended, or was parked and may be resumed)."""
        self._think(lane)
        waiting, self.waiting = self.waiting, []
        for other in waiting:
            self._think(other)

    # ------------------------------------------------------------------ messages

    def on_message(self, src: str, message: object) -> None:
        if isinstance(message, ClientReply):
            self._on_reply(message)
        elif isinstance(message, ConfigSnapshot):
            for config in message.configs:
                known = self.configs.get(config.partition)
                if known is None or config.version > known.version:
                    self.configs[config.partition] = config
                    self.hints.pop(config.partition, None)

    def _on_reply(self, reply: ClientReply) -> None:
        pending = self.by_request.get(reply.request_id)
        if pending is None or pending.lane is None:
            return  # a late or duplicated answer to something finished (or parked)
        op = pending.op
        if reply.error is None:
            if isinstance(op, Get):
                if reply.stale and pending.f != STALE_READ:
                    return  # never asked for a stale read
                if reply.value is not None:
                    self.seen[op.key] = reply.value
                self._finish(pending, "ok", None if reply.value is None else reply.value.decode())
                return
            if isinstance(op, IncrBy):
                if reply.failure is not None:  # certainly not applied
                    self._finish(pending, "fail", reply.failure)
                else:
                    self._finish(pending, "ok", reply.result)
                return
            if isinstance(op, Set) and op.if_value is not None and not reply.applied:
                self._finish(pending, "fail", None)
                return
            if isinstance(op, Set):
                self.seen[op.key] = op.value
            self._finish(pending, "ok", pending.value)
            return
        if reply.error is ErrorCode.NOT_PRIMARY and reply.primary_hint not in (
            None,
            pending.target,
        ):
            assert reply.primary_hint is not None
            self.hints[pending.partition] = reply.primary_hint
            self._attempt(pending, pending.token)
            return
        self._read_view()
        pending.token += 1  # the attempt is over: its timer must not retry again
        self._retry_later(pending)
