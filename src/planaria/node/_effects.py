"""What the replicas' runtimes ask of the node besides persisting and replying
(:class:`ReplicaEffects`): messages to peers over the bus (a backup's acks only under the
lease), peer messages in, snapshot chunks read from disk and sent in order, ISR proposals
applied to the coordinator, and a primary resigning after its disk failed."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from planaria.coord import (
    Conflict,
    CoordinatorUnavailable,
    SessionExpired,
    config_key,
    decode_config,
    encode_config,
)
from planaria.core.controller import Controller
from planaria.core.messages import Append, AppendReply, ProposeIsr, Send, SnapshotAck, SnapshotChunk
from planaria.core.transfer import ChunkRead, SnapshotReceiver, SnapshotSender
from planaria.node._context import NodeContext
from planaria.node._control import apply_proposal, sessions_from_members
from planaria.node._session import SessionKeeper
from planaria.node._settings import monotonic_ms
from planaria.node._transport import PeerBus
from planaria.storage import StorageError

__all__ = ["ReplicaEffects"]

log = logging.getLogger("planaria.node")


class ReplicaEffects:
    """The node's side of replication: it owns the peer ``bus`` and the snapshot
    transfers' ``sender`` and ``receiver``, and reads the lease from ``keeper``."""

    def __init__(
        self, context: NodeContext, *, keeper: SessionKeeper, executor: ThreadPoolExecutor
    ) -> None:
        self._context = context
        self._node_id = context.node_id
        self._partitions = context.partitions
        self._keeper = keeper
        self._executor = executor
        self.bus = PeerBus(context.node_id, self.on_peer_message)
        self.sender = SnapshotSender(context.settings.transfer)
        self.receiver = SnapshotReceiver(context.node_id, context.settings.replica.bugs)
        self._chunk_reads: asyncio.Task[None] | None = None  # reads in order, one at a time
        self.replies_unleased = 0  # AppendReplies not sent: no lease (see send)

    def send(self, send: Send) -> None:
        if send.to == self._node_id:
            self.on_peer_message(send.message)
        elif (
            isinstance(send.message, AppendReply) and monotonic_ms() >= self._keeper.lease_until_ms
        ):
            # Out of lease, our session may have expired and another process may hold our
            # node id now (a rescheduled pod): a primary would count our acks as its. The
            # lease rule makes us stop before the coordinator frees the id; the controller
            # drops a backup whose session expired from the ISR anyway.
            self.replies_unleased += 1
        else:
            self.bus.send(send.to, send.message)

    def on_peer_message(self, message: Append | AppendReply | Any) -> None:
        if isinstance(message, SnapshotAck):
            self.sender.on_ack(message, monotonic_ms())
            self.send_chunks(monotonic_ms())
            return
        if not isinstance(message, (Append, AppendReply, SnapshotChunk)):
            log.warning("dropping an unexpected peer message %s", type(message).__name__)
            return
        runtime = self._partitions.get(message.partition)
        if runtime is None:
            return
        if isinstance(message, SnapshotChunk):
            runtime.on_snapshot_chunk(message, self.receiver)
        else:
            runtime.deliver(message)

    def send_chunks(self, now_ms: float) -> None:
        """Send the chunks the sender lets go now, read from the snapshot files in the
        storage threads (one batch at a time, so they leave in order)."""
        if self._chunk_reads is not None and not self._chunk_reads.done():
            return  # the next tick or ack polls again
        reads = self.sender.poll(now_ms)
        if reads:
            self._chunk_reads = self._context.spawn(self._read_and_send(reads), "snapshot-chunks")

    async def _read_and_send(self, reads: list[ChunkRead]) -> None:
        logs = {read.partition: self._partitions[read.partition].log for read in reads
                if read.partition in self._partitions}  # fmt: skip

        def read_all() -> list[bytes | StorageError]:
            found: list[bytes | StorageError] = []
            for read in reads:
                log_ = logs.get(read.partition)
                try:
                    if log_ is None:
                        raise StorageError(f"p{read.partition} is closed")
                    found.append(
                        log_.read_snapshot_file(read.snapshot.index, read.offset, read.length)
                    )
                except StorageError as exc:
                    found.append(exc)
            return found

        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._executor, read_all)
        now = monotonic_ms()
        for read, data in zip(reads, found, strict=True):
            if isinstance(data, StorageError):  # replaced by a newer snapshot: start over
                log.info("p%d: snapshot transfer to %s: %s", read.partition, read.to, data)
                self.sender.file_gone(read.partition, read.to)
                continue
            self.bus.send(read.to, read.message(self._node_id, data, now))

    def propose(self, proposal: ProposeIsr) -> None:
        self._context.spawn(self._apply_proposal(proposal), f"propose-p{proposal.partition}")

    async def _apply_proposal(self, proposal: ProposeIsr) -> None:
        try:
            await self._context.coord(
                apply_proposal(self._context.coordinator, proposal, self._node_id)
            )
        except (CoordinatorUnavailable, SessionExpired) as exc:
            log.info("p%d: ISR proposal not applied (%s)", proposal.partition, exc)
        except Exception:
            log.exception("p%d: applying an ISR proposal failed", proposal.partition)

    def on_storage_failure(self, partition: int) -> None:
        self._context.spawn(self._resign(partition), f"resign-p{partition}")

    async def _resign(self, partition: int) -> None:
        """This primary's disk failed: its replica is rebuilt as a backup that may never
        lead this epoch again, so hand the partition to another in-sync replica now rather
        than leave it unavailable. The controller's own failover rule decides, seeing this
        node as dead for this partition (safe: this node no longer serves it), by CAS."""
        coordinator = self._context.coordinator
        coord = self._context.coord
        try:
            item = await coord(coordinator.get(config_key(partition)))
            if item is None:
                return
            config = decode_config(item.value)
            if config.primary != self._node_id:
                return
            members = await coord(coordinator.members())
            others = {node: reg for node, reg in members.items() if node != self._node_id}
            for change in Controller().decide([config], sessions_from_members(others), 0.0):
                await coord(
                    coordinator.set_if_version(
                        config_key(partition), encode_config(change.config), version=item.version
                    )
                )
                log.warning("p%d: resigned after a storage failure: %s", partition, change.reason)
        except (CoordinatorUnavailable, Conflict) as exc:
            log.warning("p%d: could not resign after a storage failure: %s", partition, exc)
