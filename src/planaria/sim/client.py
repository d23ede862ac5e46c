"""Simulated clients: a workload of get/set/cas/delete, routing, retries, and the history.

Each client runs one operation at a time. Writes carry a request id that every retry reuses
(the primary deduplicates them); every read attempt gets a fresh one. A client routes to the
primary of the config it last learned (from the coordinator, or a reply's ``primary_hint``),
retries refusals and attempt timeouts until the operation's deadline, and then records the
outcome as unknown (``info``): a timeout is never a failure.

History mapping (``planaria.check``'s kv model): Get -> ``get``, Set -> ``put``, Set with
``if_value`` -> ``cas [old new]``, Delete -> ``delete``. A cas the primary refused
(``applied=False``) certainly did not change anything: it is recorded as ``fail``, as Jepsen
does, because the kv model reads an acknowledged cas as "it swapped".
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from planaria.check.history import Event
from planaria.core.messages import (
    ClientReply,
    ClientRequest,
    Delete,
    ErrorCode,
    Get,
    Op,
    PartitionConfig,
    Set,
)
from planaria.core.slots import keyslot, partition_of_slot
from planaria.sim.network import Network
from planaria.sim.wire import ConfigRead, ConfigSnapshot
from planaria.sim.world import Process, World

__all__ = ["ClientSettings", "History", "SimClient", "Workload", "partition_of"]

COORDINATOR = "coord"


def partition_of(key: bytes, partitions: int) -> int:
    return partition_of_slot(keyslot(key), partitions)


@dataclass
class ClientSettings:
    attempt_timeout_ms: float = 40.0
    op_deadline_ms: float = 600.0
    backoff_min_ms: float = 2.0
    backoff_max_ms: float = 20.0
    think_max_ms: float = 2.0  # pause between operations


@dataclass
class Workload:
    """What the clients do, shared by all of them: ``ops_left`` counts down to zero."""

    ops_left: int
    keys: tuple[bytes, ...]  # the few keys every client reads, writes, swaps and deletes
    unique_share: float = 0.3  # share of operations that set a key written once (lost writes)
    started: int = 0
    info: int = 0


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
    request_id: tuple[str, int]
    deadline_ms: float
    attempts: int = 0
    target: str | None = None
    final_read: bool = False


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
    ) -> None:
        super().__init__(world, pid)
        self.network = network
        self.partitions = partitions
        self.workload = workload
        self.history = history
        self.settings = settings
        self.configs: dict[int, PartitionConfig] = {}
        self.hints: dict[int, str] = {}
        self.pending: _Pending | None = None
        self.seq = 0
        self.token = 0  # the current attempt; older timers see a different one
        self.written = 0
        self.seen: dict[bytes, bytes] = {}  # the last value seen per key (to guess a cas)
        self.final_keys: list[bytes] = []
        self.final_values: dict[str, Hashable] = {}
        self.final_unknown: list[str] = []
        self.completed = 0
        network.register(pid, self.on_message)

    # ------------------------------------------------------------------ driving

    def start(self) -> None:
        self.network.send(self.pid, COORDINATOR, ConfigRead())
        self.after_local(self.world.rng.uniform(0, self.settings.think_max_ms), self._next)

    def read_finally(self, keys: list[bytes]) -> None:
        """After the workload: read every key once more (the lost-write check's final reads)."""
        self.final_keys = list(reversed(keys))
        if self.pending is None:
            self._next(None)

    @property
    def idle(self) -> bool:
        return self.pending is None and not self.final_keys

    def _next(self, _: Any) -> None:
        if self.pending is not None:
            return
        if self.final_keys:
            key = self.final_keys.pop()
            self._begin(Get(key), final_read=True)
            return
        workload = self.workload
        if workload.ops_left <= 0:
            return
        workload.ops_left -= 1
        workload.started += 1
        self._begin(self._choose())

    def _choose(self) -> Op:
        rng, workload = self.world.rng, self.workload
        self.written += 1
        value = f"{self.pid}-{self.written}".encode()
        if rng.random() < workload.unique_share:
            return Set(b"u:" + value, value)
        key = workload.keys[rng.randrange(len(workload.keys))]
        roll = rng.random()
        if roll < 0.4:
            return Get(key)
        if roll < 0.7:
            return Set(key, value)
        if roll < 0.9:
            return Set(key, value, if_value=self.seen.get(key, b""))
        return Delete(key)

    def _begin(self, op: Op, *, final_read: bool = False) -> None:
        key = op.key.decode()
        value: Hashable = None
        if isinstance(op, Get):
            f = "get"
        elif isinstance(op, Delete):
            f = "delete"
        elif op.if_value is not None:
            f, value = "cas", (op.if_value.decode(), op.value.decode())
        else:
            f, value = "put", op.value.decode()
        self.seq += 1
        self.pending = _Pending(
            op,
            f,
            key,
            value,
            partition_of(op.key, self.partitions),
            (self.pid, self.seq),
            self.world.now_ms + self.settings.op_deadline_ms,
            final_read=final_read,
        )
        self.history.add(self.world.now_ms, self.pid, kind="invoke", f=f, key=key, value=value)
        self._attempt(self.token)

    def _attempt(self, token: int) -> None:
        """Try the pending operation again, unless ``token`` is from an older attempt."""
        pending = self.pending
        if pending is None or token != self.token:
            return
        self.token += 1
        token = self.token
        if self.world.now_ms >= pending.deadline_ms:
            self._finish("info", None)
            return
        if isinstance(pending.op, Get) and pending.attempts:
            self.seq += 1  # every read attempt is a new request
            pending.request_id = (self.pid, self.seq)
        pending.attempts += 1
        target = self.hints.pop(pending.partition, None)
        if target is None:
            config = self.configs.get(pending.partition)
            target = config.primary if config is not None else None
        if target is None:
            self.network.send(self.pid, COORDINATOR, ConfigRead())
            self._retry_later()
            return
        pending.target = target
        request = ClientRequest(pending.partition, self.pid, pending.request_id, pending.op)
        self.network.send(self.pid, target, request)
        self.after_local(self.settings.attempt_timeout_ms, self._timed_out, token)

    def _timed_out(self, token: int) -> None:
        if self.pending is None or token != self.token:
            return
        self.network.send(self.pid, COORDINATOR, ConfigRead())
        self._attempt(token)

    def _retry_later(self) -> None:
        rng, settings = self.world.rng, self.settings
        backoff = rng.uniform(settings.backoff_min_ms, settings.backoff_max_ms)
        self.after_local(backoff, self._attempt, self.token)

    def _finish(self, kind: str, value: Hashable) -> None:
        pending = self.pending
        assert pending is not None
        self.pending = None
        self.history.add(
            self.world.now_ms, self.pid, kind=kind, f=pending.f, key=pending.key, value=value
        )
        if kind == "info":
            self.workload.info += 1
        self.completed += 1
        if pending.final_read:
            if kind == "ok":
                self.final_values[pending.key] = value
            else:
                self.final_unknown.append(pending.key)
        self.after_local(self.world.rng.uniform(0, self.settings.think_max_ms), self._next)

    # ------------------------------------------------------------------ messages

    def on_message(self, src: str, message: object) -> None:
        if isinstance(message, ClientReply):
            self._on_reply(message)
        elif isinstance(message, ConfigSnapshot):
            for config in message.configs:
                known = self.configs.get(config.partition)
                if known is None or config.version > known.version:
                    self.configs[config.partition] = config

    def _on_reply(self, reply: ClientReply) -> None:
        pending = self.pending
        if pending is None or reply.request_id != pending.request_id:
            return  # a late or duplicated answer to something finished
        op = pending.op
        if reply.error is None:
            if isinstance(op, Get):
                if reply.stale:
                    return  # never asked for a stale read
                if reply.value is not None:
                    self.seen[op.key] = reply.value
                self._finish("ok", None if reply.value is None else reply.value.decode())
                return
            if isinstance(op, Set) and op.if_value is not None and not reply.applied:
                self._finish("fail", None)
                return
            if isinstance(op, Set):
                self.seen[op.key] = op.value
            self._finish("ok", pending.value)
            return
        if reply.error is ErrorCode.NOT_PRIMARY and reply.primary_hint not in (
            None,
            pending.target,
        ):
            assert reply.primary_hint is not None
            self.hints[pending.partition] = reply.primary_hint
            self._attempt(self.token)
            return
        self.network.send(self.pid, COORDINATOR, ConfigRead())
        self.token += 1  # the attempt is over: its timer must not retry again
        self._retry_later()
