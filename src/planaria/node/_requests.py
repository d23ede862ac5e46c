"""Client commands on a node (:class:`ClientRequests`): each command's items go to their
partition's replica, and the replies come back by token, gathered into one answer per
command; a redirect when another node leads, and UNKNOWN (writes) or TRYAGAIN (reads) for
items the replica dropped: it stepped down, the session was lost, or the write timed out."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Awaitable

from planaria.core.messages import ClientReply, ClientRequest, ErrorCode, Reply, RequestId
from planaria.core.slots import partition_of_slot
from planaria.net import resp
from planaria.net.commands import ClientOp, ConnectionState, error_reply, render_reply
from planaria.node._configs import ConfigFollower
from planaria.node._context import NodeContext
from planaria.node._memory import OOM_ERROR, MemoryGauge
from planaria.node._settings import monotonic_ms

__all__ = ["ClientRequests"]


class _Answer:
    """The replies to one client command's items (``op.ops``), gathered by callbacks as the
    partition answers them, and rendered once all are in: into ``future`` when the command
    had to wait, else kept in ``rendered`` (no future, no callback hop per item)."""

    __slots__ = (
        "future", "missing", "op", "partition", "protocol", "rendered", "replies", "unknown"
    )  # fmt: skip

    def __init__(self, op: ClientOp, partition: int, protocol: int = 2) -> None:
        self.op = op
        self.partition = partition
        self.protocol = protocol  # the connection's RESP version (HGETALL's map in RESP3)
        self.replies: list[ClientReply | None] = [None] * len(op.ops)
        self.missing = len(op.ops)
        self.unknown: str | None = None  # why an item left without an answer
        self.rendered: bytes | None = None
        self.future: asyncio.Future[bytes] | None = None

    @property
    def done(self) -> bool:
        return self.missing == 0 or self.unknown is not None


def _unknown(partition: int, why: str) -> bytes:
    return resp.error(
        f"UNKNOWN partition {partition}: {why}; the write may or may not have been applied"
    )


class ClientRequests:
    """The commands waiting for their partitions' replies. Routing reads ``cluster``'s
    partition count, configs and member addresses."""

    def __init__(
        self, context: NodeContext, *, cluster: ConfigFollower, memory: MemoryGauge
    ) -> None:
        self._node_id = context.node_id
        self._memory = memory
        self._settings = context.settings
        self._partitions = context.partitions
        self._cluster = cluster
        # token -> (the command's answer, the item's position in it, deadline in ms)
        self._waiting: dict[str, tuple[_Answer, int, float]] = {}
        self._tokens = itertools.count(1)
        # Request ids for plain Redis clients: one client id per node process (a boot nonce
        # makes it unique across restarts) and a node-wide sequence, assigned in the order
        # requests reach each partition, so every partition sees it increase. One id per
        # process, not per connection, keeps the replicated dedup table small.
        self._seq = itertools.count(1)
        self._client_id = f"{context.node_id}.{secrets.token_hex(4)}"

    @property
    def pending(self) -> int:
        """How many items wait for a reply."""
        return len(self._waiting)

    def client_op(self, state: ConnectionState, op: ClientOp) -> bytes | Awaitable[bytes]:
        count = self._cluster.partition_count
        if count is None:
            return resp.error("CLUSTERDOWN the cluster has no partitions yet")
        partition = partition_of_slot(op.slot, count)
        config = self._cluster.configs.get(partition)
        primary = config.primary if config is not None else None
        stale_ok = state.readonly and not op.is_write
        runtime = self._partitions.get(partition)
        if runtime is None or (primary != self._node_id and not stale_ok):
            return self._moved(op, partition, primary)
        if op.denied_when_full and self._memory.full:
            self._memory.refused += 1
            return resp.error(OOM_ERROR)
        if op.is_write and runtime.storage_failure is not None:
            return resp.error(
                f"CLUSTERDOWN partition {partition} cannot persist writes on this node: "
                f"{runtime.storage_failure}"
            )
        answer = _Answer(op, partition, state.protocol)
        tokens: list[str] = []
        deadline_ms = monotonic_ms() + self._settings.write_timeout_ms
        request_id: RequestId | None = getattr(op, "request_id", None)
        for position, item in enumerate(op.ops):
            rid = request_id if request_id is not None else (self._client_id, next(self._seq))
            token = f"c{next(self._tokens)}"
            request = ClientRequest(partition, token, rid, item, stale_ok=stale_ok)
            self._waiting[token] = (answer, position, deadline_ms)
            tokens.append(token)
            if not runtime.deliver(request):
                for done in tokens:  # so replies to earlier items never reach the answer
                    self._waiting.pop(done, None)
                if runtime.overloaded:
                    return resp.error(f"BUSY partition {partition} has too many queued requests")
                return resp.error(
                    f"TRYAGAIN partition {partition} is reopening its log on this node"
                )
        if answer.rendered is not None:
            return answer.rendered  # answered while stepping (reads, refusals)
        answer.future = asyncio.get_running_loop().create_future()
        return answer.future

    def _moved(self, op: ClientOp, partition: int, primary: str | None) -> bytes:
        address = self._cluster.addresses.get(primary) if primary is not None else None
        if address is not None and primary == self._node_id:
            return resp.error(f"TRYAGAIN partition {partition} is opening on this node")
        moved_to = None if address is None else str(address)
        return error_reply(
            ErrorCode.NOT_PRIMARY, slot=op.slot, partition=partition, moved_to=moved_to
        )

    def on_reply(self, reply: Reply) -> None:
        waiting = self._waiting.pop(reply.client, None)
        if waiting is None:
            return
        answer, position, _deadline_ms = waiting
        if answer.done:  # an earlier item left unanswered: the command already was
            return
        answer.replies[position] = reply.reply
        answer.missing -= 1
        if answer.missing == 0:
            self._finish(answer)

    def _unanswered(self, answer: _Answer, why: str) -> None:
        if not answer.done:
            answer.unknown = why
            self._finish(answer)

    def _finish(self, answer: _Answer) -> None:
        if answer.unknown is not None:
            if answer.op.is_write:
                rendered = _unknown(answer.partition, answer.unknown)
            else:
                rendered = resp.error(f"TRYAGAIN partition {answer.partition}: {answer.unknown}")
        else:
            replies = [r for r in answer.replies if r is not None]
            rendered = self._render(answer.op, replies, answer.protocol)
        if answer.future is None:
            answer.rendered = rendered
        elif not answer.future.done():
            answer.future.set_result(rendered)

    def _render(self, op: ClientOp, replies: list[ClientReply], protocol: int) -> bytes:
        hint = next((r.primary_hint for r in replies if r.error is not None), None)
        addresses = self._cluster.addresses
        address = addresses.get(hint) if hint is not None and hint != self._node_id else None
        moved_to = str(address) if address else None
        return render_reply(op, replies, moved_to=moved_to, protocol=protocol)

    def on_step_down(self, partition: int) -> None:
        self.fail_waiting(partition, "its primary stepped down before the write committed")

    def fail_waiting(self, partition: int | None, why: str) -> None:
        """Answer the items waiting on ``partition`` (None: every partition) unanswered."""
        for token, (answer, _position, _deadline) in list(self._waiting.items()):
            if partition is None or answer.partition == partition:
                del self._waiting[token]
                self._unanswered(answer, why)

    def expire_waiting(self, now_ms: float) -> None:
        why = f"not committed within {self._settings.write_timeout_ms:.0f} ms"
        for token, (answer, _position, deadline_ms) in list(self._waiting.items()):
            if now_ms >= deadline_ms:
                del self._waiting[token]
                self._unanswered(answer, why)
