"""Snapshot transfer: refilling a backup that needs entries its primary compacted away.

Two pure state machines, shared by the node and the simulator (docs/operations.md,
"Snapshot transfer"):

- :class:`SnapshotSender`, one per node: for every (partition, peer) that its primary
  replica reports in ``Replica.peers_needing_snapshot``, it streams the primary's latest
  durable snapshot *file* in chunks. It never holds the bytes: it says which byte range to
  send (:class:`ChunkRead`), the runtime reads it from the file (bounded memory: one chunk
  per read, at most ``window_chunks`` in flight per transfer) and sends a
  :class:`~planaria.core.messages.SnapshotChunk`. A node-wide token bucket throttles all
  transfers to ``bytes_per_s`` so client traffic keeps its latency. A transfer resumes from
  the receiver's acknowledged offset after a timeout (backing off), restarts when the
  receiver lost its state, and is aborted when the replica stops being primary of the epoch
  it started in (a new primary starts its own).
- :class:`SnapshotReceiver`, one per node: takes chunks in order (anything else is
  answered with the offset it wants next), refuses a snapshot of a stale epoch or one not
  newer than its commit index, checks the CRC32 of the whole before it says
  :attr:`Receipt.complete`. The runtime writes the chunks to a temporary file, installs the
  snapshot atomically (``PartitionLog.install_snapshot``), rebuilds the replica from it and
  sends :meth:`SnapshotReceiver.installed`. The primary then probes it at its log's base and
  resumes normal Appends; it rejoins the ISR only through the usual catch-up (ProposeIsr).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from planaria.core.messages import NodeId, PartitionId, SnapshotAck, SnapshotChunk
from planaria.errors import UsageError

__all__ = [
    "ChunkRead",
    "Receipt",
    "SnapshotFile",
    "SnapshotReceiver",
    "SnapshotSender",
    "TransferSettings",
    "body_checksum",
]

CHECKSUM_BYTES = 4  # the snapshot file's own CRC32 trailer, which the checksum covers up to


def body_checksum(data: bytes, total_bytes: int, offset: int, crc: int) -> int:
    """``crc`` extended by the bytes of ``data`` (at ``offset``) that lie before the file's
    checksum trailer."""
    end = max(min(len(data), total_bytes - CHECKSUM_BYTES - offset), 0)
    return zlib.crc32(memoryview(data)[:end], crc)


@dataclass(frozen=True, slots=True)
class TransferSettings:
    """- ``chunk_bytes``: bytes per SnapshotChunk (well under the bus's frame limit);
    - ``window_chunks``: chunks in flight per transfer before an acknowledgement;
    - ``bytes_per_s``: all outgoing transfers of the node together (a token bucket holding
      at most one window of chunks);
    - ``retry_ms``: without progress for this long, resend from the acknowledged offset;
      doubling on every retry up to ``retry_max_ms``;
    - ``transfers_max``: outgoing transfers at once per node (the others wait their turn)."""

    chunk_bytes: int = 256 * 1024
    window_chunks: int = 4
    bytes_per_s: float = 64 * 1024 * 1024
    retry_ms: float = 200.0
    retry_max_ms: float = 5_000.0
    transfers_max: int = 4

    def __post_init__(self) -> None:
        if min(self.chunk_bytes, self.window_chunks, self.transfers_max) < 1:
            raise UsageError("chunk_bytes, window_chunks and transfers_max must be >= 1")
        if not (self.bytes_per_s > 0 and 0 < self.retry_ms <= self.retry_max_ms):
            raise UsageError(
                "need bytes_per_s > 0 and 0 < retry_ms <= retry_max_ms, got "
                f"{self.bytes_per_s}, {self.retry_ms}, {self.retry_max_ms}"
            )


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """The primary's latest durable snapshot file, as the runtime sees it on disk."""

    index: int
    epoch: int
    total_bytes: int
    checksum: int  # CRC32 of all but the last 4 bytes (the file's trailer)

    def __post_init__(self) -> None:
        if self.total_bytes <= CHECKSUM_BYTES or self.index < 0:
            raise UsageError(f"not a snapshot file: {self}")


@dataclass(frozen=True, slots=True)
class ChunkRead:
    """Read ``length`` bytes at ``offset`` of the snapshot file ``snapshot`` of
    ``partition`` and send them to ``to`` with :meth:`message`."""

    to: NodeId
    partition: PartitionId
    epoch: int
    snapshot: SnapshotFile
    offset: int
    length: int

    def message(self, sender: NodeId, data: bytes, now_ms: float) -> SnapshotChunk:
        if len(data) != self.length:
            raise UsageError(f"read {len(data)} bytes of a {self.length}-byte chunk")
        return SnapshotChunk(
            partition=self.partition,
            epoch=self.epoch,
            sender=sender,
            snapshot_index=self.snapshot.index,
            snapshot_epoch=self.snapshot.epoch,
            offset=self.offset,
            total_bytes=self.snapshot.total_bytes,
            checksum=self.snapshot.checksum,
            data=data,
            sent_ms=now_ms,
        )


@dataclass(slots=True)
class _Outgoing:
    epoch: int
    snapshot: SnapshotFile
    started_ms: float
    acked: int = 0  # the receiver has every byte before this
    sent: int = 0  # the next byte to send
    last_progress_ms: float = 0.0
    backoff_ms: float = 0.0
    rewound_ms: float = float("-inf")  # acks of chunks sent before this cannot rewind
    newest_echo_ms: float = float("-inf")  # the newest chunk acknowledged (reordered acks)
    resume_ms: float = float("-inf")  # refused: nothing is sent before this
    installed_ms: float | None = None  # the receiver said it holds the snapshot
    resends: int = 0


@dataclass(slots=True)
class SnapshotSender:
    """The outgoing transfers of one node. Drive it with :meth:`want` (every tick, per
    partition this node is primary of), :meth:`on_ack` and :meth:`poll`."""

    settings: TransferSettings = field(default_factory=TransferSettings)
    _transfers: dict[tuple[PartitionId, NodeId], _Outgoing] = field(default_factory=dict)
    _tokens: float = -1.0
    _tokens_ms: float = float("-inf")
    started: int = 0  # totals, for status
    completed: int = 0
    aborted: int = 0
    bytes_sent: int = 0
    resends: int = 0  # resumed from the receiver's offset after no progress (a cut)
    superseded: int = 0  # aborted: the replica stopped being primary of their epoch

    def want(
        self,
        partition: PartitionId,
        epoch: int,
        peers: frozenset[NodeId],
        snapshot: SnapshotFile | None,
        now_ms: float,
    ) -> None:
        """The partition's replica here is primary of ``epoch`` and ``peers`` need a snapshot
        (``snapshot``: its latest durable one, None if it has none). A transfer to a peer
        that needs none any more, or of another epoch, ends; a new one starts with the
        latest snapshot. One under way keeps its snapshot while its file lasts, unless it has
        not started yet or the peer installed it and still needs more (the primary compacted
        past it meanwhile): then it goes on with the newer one."""
        for key in [k for k in self._transfers if k[0] == partition]:
            transfer = self._transfers[key]
            if (
                key[1] not in peers
                or transfer.epoch != epoch
                or (
                    snapshot is not None
                    and snapshot.index > transfer.snapshot.index
                    and (transfer.installed_ms is not None or transfer.acked == 0)
                )
            ):
                if transfer.epoch != epoch and transfer.installed_ms is None:
                    self.superseded += 1
                self._end(key, transfer)
        if snapshot is None:
            return
        for peer in sorted(peers):
            key = (partition, peer)
            if key not in self._transfers and len(self._transfers) < self.settings.transfers_max:
                self._transfers[key] = _Outgoing(
                    epoch,
                    snapshot,
                    now_ms,
                    last_progress_ms=now_ms,
                    backoff_ms=self.settings.retry_ms,
                    rewound_ms=now_ms,
                )
                self.started += 1

    def stop(self, partition: PartitionId) -> None:
        """This node is not primary of ``partition`` any more: abort its transfers."""
        self.want(partition, -1, frozenset(), None, 0.0)

    def file_gone(self, partition: PartitionId, peer: NodeId) -> None:
        """The snapshot file of a transfer was replaced (compacted away): the next
        :meth:`want` starts over with the latest one."""
        transfer = self._transfers.pop((partition, peer), None)
        if transfer is not None:
            self.aborted += 1

    def _end(self, key: tuple[PartitionId, NodeId], transfer: _Outgoing) -> None:
        del self._transfers[key]
        if transfer.installed_ms is not None:
            self.completed += 1
        else:
            self.aborted += 1

    def on_ack(self, ack: SnapshotAck, now_ms: float) -> None:
        key = (ack.partition, ack.sender)
        transfer = self._transfers.get(key)
        if transfer is None or ack.snapshot_index != transfer.snapshot.index:
            return
        if ack.refused:
            # A stale epoch (the replica learns it from the peer's AppendReplies and steps
            # down) or nothing to do: stop sending, try again after the longest backoff.
            transfer.sent = transfer.acked = 0
            transfer.last_progress_ms = transfer.rewound_ms = now_ms
            transfer.resume_ms = now_ms + self.settings.retry_max_ms
            return
        if ack.installed:
            if transfer.installed_ms is None:
                transfer.installed_ms = now_ms
            transfer.acked = transfer.sent = transfer.snapshot.total_bytes
            return
        newest = transfer.newest_echo_ms
        transfer.newest_echo_ms = max(newest, ack.echo_sent_ms)
        if ack.next_offset > transfer.acked:
            transfer.acked = min(ack.next_offset, transfer.snapshot.total_bytes)
            transfer.sent = max(transfer.sent, transfer.acked)
            transfer.last_progress_ms = now_ms
            transfer.backoff_ms = self.settings.retry_ms
        elif ack.next_offset < transfer.acked and ack.echo_sent_ms >= max(
            transfer.rewound_ms, newest
        ):
            # The receiver lost what it had (it restarted, or the data failed its check).
            transfer.acked = transfer.sent = ack.next_offset
            transfer.rewound_ms = now_ms
            transfer.last_progress_ms = now_ms

    def poll(self, now_ms: float) -> list[ChunkRead]:
        """The chunks to send now (throttled), resends after a timeout included."""
        settings = self.settings
        burst = float(settings.chunk_bytes * settings.window_chunks)
        if self._tokens < 0:
            self._tokens = burst
        elif now_ms > self._tokens_ms:
            refill = (now_ms - self._tokens_ms) * settings.bytes_per_s / 1000.0
            self._tokens = min(burst, self._tokens + refill)
        self._tokens_ms = now_ms
        reads: list[ChunkRead] = []
        for key in sorted(self._transfers):
            transfer = self._transfers[key]
            total = transfer.snapshot.total_bytes
            if now_ms < transfer.resume_ms:
                continue
            if transfer.installed_ms is not None:
                if now_ms - transfer.installed_ms < settings.retry_max_ms:
                    continue  # the replica's probe finds it refilled before long
                transfer.installed_ms = None  # still needed: send it again
                transfer.acked = transfer.sent = 0
            if now_ms - transfer.last_progress_ms >= transfer.backoff_ms and (
                transfer.sent > transfer.acked or transfer.acked >= total
            ):
                # No progress: resend from what it acknowledged (its last chunk when it has
                # them all but did not say it installed: it may have crashed installing).
                last_chunk = ((total - 1) // settings.chunk_bytes) * settings.chunk_bytes
                transfer.sent = min(transfer.acked, last_chunk)
                transfer.last_progress_ms = now_ms
                transfer.rewound_ms = now_ms
                transfer.backoff_ms = min(2 * transfer.backoff_ms, settings.retry_max_ms)
                transfer.resends += 1
                self.resends += 1
            window_end = transfer.acked + settings.chunk_bytes * settings.window_chunks
            while transfer.sent < min(total, window_end):
                length = min(settings.chunk_bytes, total - transfer.sent)
                if self._tokens < length:
                    return reads
                self._tokens -= length
                reads.append(
                    ChunkRead(
                        key[1], key[0], transfer.epoch, transfer.snapshot, transfer.sent, length
                    )
                )
                transfer.sent += length
                self.bytes_sent += length
        return reads

    @property
    def transfers(self) -> dict[tuple[PartitionId, NodeId], tuple[int, int]]:
        """Per (partition, peer) under way: (bytes acknowledged, total bytes)."""
        return {
            key: (transfer.acked, transfer.snapshot.total_bytes)
            for key, transfer in sorted(self._transfers.items())
        }


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a runtime does with one chunk, in order: ``restart`` (empty the partition's
    temporary file), ``write`` (``data`` at ``offset`` of it), then if ``complete`` install
    the file (verified) and send :meth:`SnapshotReceiver.installed`; else send ``ack``."""

    ack: SnapshotAck
    restart: bool = False
    write: bool = False
    complete: bool = False


@dataclass(slots=True)
class _Incoming:
    sender: NodeId
    epoch: int
    snapshot_index: int
    snapshot_epoch: int
    total_bytes: int
    checksum: int
    next_offset: int = 0
    crc: int = 0


@dataclass(slots=True)
class SnapshotReceiver:
    """The incoming transfers of one node (one per partition at most)."""

    node: NodeId
    bugs: frozenset[str] = frozenset()
    _incoming: dict[PartitionId, _Incoming] = field(default_factory=dict)
    refused: int = 0  # totals, for status and tests
    checksum_failures: int = 0
    stale_refused: int = 0  # chunks of an epoch older than the replica's or the transfer's
    stale_taken: int = 0  # ...taken anyway (only with the bug install-without-epoch-check)

    def on_chunk(self, chunk: SnapshotChunk, epoch: int, commit_index: int) -> Receipt:
        """One chunk for the partition whose replica here is at ``epoch`` with
        ``commit_index``."""

        def ack(next_offset: int, *, refused: bool = False, installed: bool = False) -> SnapshotAck:
            return SnapshotAck(
                partition=chunk.partition,
                epoch=max(epoch, chunk.epoch),
                sender=self.node,
                snapshot_index=chunk.snapshot_index,
                next_offset=next_offset,
                installed=installed,
                refused=refused,
                echo_sent_ms=chunk.sent_ms,
            )

        current = self._incoming.get(chunk.partition)
        stale = chunk.epoch < epoch or (current is not None and chunk.epoch < current.epoch)
        if stale and "install-without-epoch-check" not in self.bugs:
            self.refused += 1
            self.stale_refused += 1
            return Receipt(ack(0, refused=True))
        self.stale_taken += stale
        if chunk.snapshot_index <= commit_index:
            # It holds that state already: the primary's probe at its base will succeed.
            self._incoming.pop(chunk.partition, None)
            return Receipt(ack(chunk.total_bytes, installed=True))
        end = chunk.offset + len(chunk.data)
        if chunk.total_bytes <= CHECKSUM_BYTES or end > chunk.total_bytes or chunk.offset < 0:
            self.refused += 1
            return Receipt(ack(0, refused=True))
        same = current is not None and (
            current.sender,
            current.epoch,
            current.snapshot_index,
            current.total_bytes,
            current.checksum,
        ) == (chunk.sender, chunk.epoch, chunk.snapshot_index, chunk.total_bytes, chunk.checksum)
        restart = False
        if not same:
            if chunk.offset != 0:
                return Receipt(ack(0))  # a transfer it knows nothing of: from the start
            current = self._incoming[chunk.partition] = _Incoming(
                chunk.sender,
                chunk.epoch,
                chunk.snapshot_index,
                chunk.snapshot_epoch,
                chunk.total_bytes,
                chunk.checksum,
            )
            restart = True
        assert current is not None
        if chunk.offset != current.next_offset:
            return Receipt(ack(current.next_offset))  # a gap or a duplicate: resend from here
        current.crc = body_checksum(chunk.data, chunk.total_bytes, chunk.offset, current.crc)
        current.next_offset = end
        if end < chunk.total_bytes:
            return Receipt(ack(end), restart=restart, write=True)
        del self._incoming[chunk.partition]
        if current.crc != chunk.checksum:
            self.checksum_failures += 1
            return Receipt(ack(0), restart=restart)  # corrupt: start over, nothing installed
        return Receipt(ack(end), restart=restart, write=True, complete=True)

    def installed(self, chunk: SnapshotChunk, epoch: int) -> SnapshotAck:
        """The answer once the snapshot ``chunk`` completed is durably installed."""
        return SnapshotAck(
            partition=chunk.partition,
            epoch=max(epoch, chunk.epoch),
            sender=self.node,
            snapshot_index=chunk.snapshot_index,
            next_offset=chunk.total_bytes,
            installed=True,
            echo_sent_ms=chunk.sent_ms,
        )

    def drop(self, partition: PartitionId) -> None:
        """Forget a partition's transfer (its replica was rebuilt, or it is no longer hosted)."""
        self._incoming.pop(partition, None)

    @property
    def receiving(self) -> dict[PartitionId, tuple[int, int]]:
        """Per partition being received: (bytes received in order, total bytes)."""
        return {p: (t.next_offset, t.total_bytes) for p, t in sorted(self._incoming.items())}
