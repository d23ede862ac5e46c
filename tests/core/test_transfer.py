"""Snapshot transfer's pure state machines: chunking within a window and a byte rate,
resuming after a lost chunk or a receiver that lost its state, the checksum, refusals
(stale epoch, nothing newer than the commit index) and aborting on a primary change."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable

import pytest

from planaria.core.messages import SnapshotAck, SnapshotChunk
from planaria.core.transfer import (
    ChunkRead,
    SnapshotFile,
    SnapshotReceiver,
    SnapshotSender,
    TransferSettings,
)
from planaria.errors import UsageError

BODY = bytes(range(256)) * 9 + b"tail"  # 2308 bytes of body
DATA = BODY + zlib.crc32(BODY).to_bytes(4, "little")  # a file ends with its body's CRC32
FILE = SnapshotFile(index=40, epoch=3, total_bytes=len(DATA), checksum=zlib.crc32(BODY))
FAST = TransferSettings(chunk_bytes=500, window_chunks=2, bytes_per_s=1e9, retry_ms=50)


def chunk_of(read: ChunkRead, now: float, data: bytes = DATA) -> SnapshotChunk:
    return read.message("a", data[read.offset : read.offset + read.length], now)


class Link:
    """A primary's sender and a backup's receiver joined by a lossy link; the backup's
    replica is at ``epoch`` with ``commit_index``; ``received`` is its incoming file."""

    def __init__(self, settings: TransferSettings = FAST, *, bugs: frozenset[str] = frozenset()):
        self.sender = SnapshotSender(settings)
        self.receiver = SnapshotReceiver("b", bugs)
        self.now = 0.0
        self.epoch, self.commit_index = 3, 10
        self.received = bytearray()
        self.installed: list[SnapshotChunk] = []
        self.chunks_sent = 0
        self.sender.want(7, 3, frozenset({"b"}), FILE, self.now)

    def step(
        self,
        lose: Callable[[SnapshotChunk], bool] = lambda _: False,
        alter: Callable[[SnapshotChunk], SnapshotChunk] = lambda c: c,
    ) -> None:
        for read in self.sender.poll(self.now):
            self.chunks_sent += 1
            chunk = alter(chunk_of(read, self.now))
            if lose(chunk):
                continue
            receipt = self.receiver.on_chunk(chunk, self.epoch, self.commit_index)
            if receipt.restart:
                self.received.clear()
            if receipt.write:
                assert len(self.received) == chunk.offset
                self.received += chunk.data
            ack = receipt.ack
            if receipt.complete:
                self.installed.append(chunk)
                ack = self.receiver.installed(chunk, self.epoch)
            self.sender.on_ack(ack, self.now)

    def run(self, until_ms: float, **kwargs: Callable[[SnapshotChunk], object]) -> None:
        while self.now < until_ms and not self.installed:
            self.step(**kwargs)  # type: ignore[arg-type]
            self.now += 10


def test_a_snapshot_goes_over_in_window_sized_chunks_and_is_installed_once() -> None:
    link = Link()
    reads = link.sender.poll(0.0)
    assert [(r.offset, r.length) for r in reads] == [(0, 500), (500, 500)]  # one window
    assert link.sender.poll(0.0) == []  # nothing more before an ack
    link = Link()
    link.run(1000)
    assert bytes(link.received) == DATA and len(link.installed) == 1
    assert link.chunks_sent == 5  # 2312 bytes in 500-byte chunks, nothing resent
    assert link.sender.transfers == {(7, "b"): (len(DATA), len(DATA))}
    link.sender.want(7, 3, frozenset(), FILE, link.now)  # its probe succeeded: done
    assert link.sender.transfers == {} and link.sender.completed == 1


def test_the_sender_keeps_to_its_byte_rate() -> None:
    slow = TransferSettings(chunk_bytes=100, window_chunks=2, bytes_per_s=1_000, retry_ms=50)
    link = Link(slow)
    for _ in range(100):  # 1 s
        link.step()
        link.now += 10
    # At most one window of burst plus 1 kB/s, never more.
    assert 1_000 <= link.sender.bytes_sent <= 1_000 + 200
    assert link.installed == []
    with pytest.raises(UsageError):
        TransferSettings(bytes_per_s=0)


def test_a_lost_chunk_is_resent_from_the_receivers_offset() -> None:
    lost: list[int] = []

    def lose_second_once(chunk: SnapshotChunk) -> bool:
        if chunk.offset == 500 and not lost:
            lost.append(chunk.offset)
            return True
        return False

    link = Link()
    link.run(2000, lose=lose_second_once)
    assert lost == [500]
    assert bytes(link.received) == DATA and len(link.installed) == 1
    assert link.receiver.checksum_failures == 0


def test_a_receiver_that_lost_its_state_gets_the_snapshot_from_the_start() -> None:
    link = Link()
    link.step()  # chunks 0 and 1 arrive
    link.now += 10
    link.receiver = SnapshotReceiver("b")  # it restarted: memory and file gone
    link.received.clear()
    link.run(2000)
    assert bytes(link.received) == DATA and len(link.installed) == 1


def test_a_corrupted_snapshot_is_refused_and_sent_again() -> None:
    corrupted: list[int] = []

    def flip_once(chunk: SnapshotChunk) -> SnapshotChunk:
        if chunk.offset == 1000 and not corrupted:
            corrupted.append(1)
            data = bytes([chunk.data[0] ^ 1]) + chunk.data[1:]
            return dataclasses.replace(chunk, data=data)
        return chunk

    link = Link()
    link.run(5000, alter=flip_once)
    assert link.receiver.checksum_failures == 1  # the first pass was not installed
    assert bytes(link.received) == DATA and len(link.installed) == 1


@pytest.mark.parametrize("bug", [False, True])
def test_a_snapshot_from_a_stale_epoch_is_refused(bug: bool) -> None:
    """A deposed primary (epoch 3) still sending to a backup that moved on to epoch 5:
    installing would replace a log the new primary counts on. Only the bug installs it."""
    link = Link(bugs=frozenset({"install-without-epoch-check"}) if bug else frozenset())
    link.epoch = 5
    link.run(2000)
    if bug:
        assert len(link.installed) == 1
    else:
        assert link.installed == [] and link.received == bytearray()
        assert link.receiver.refused >= 1
        assert link.sender.bytes_sent <= 2 * 500  # refused: it backs off


def test_a_snapshot_not_newer_than_the_commit_index_is_not_installed() -> None:
    link = Link()
    link.commit_index = FILE.index
    [first, _] = link.sender.poll(0.0)
    receipt = link.receiver.on_chunk(chunk_of(first, 0.0), link.epoch, link.commit_index)
    assert receipt.ack.installed and not receipt.write and not receipt.complete


def test_a_primary_change_aborts_the_transfer_and_the_new_one_starts_over() -> None:
    link = Link()
    link.step()
    assert link.sender.transfers[(7, "b")][0] == 1000
    link.sender.stop(7)  # stepped down
    assert link.sender.transfers == {} and link.sender.aborted == 1
    # The new primary (epoch 4) starts its own; the receiver drops the half-received one.
    other = SnapshotSender(FAST)
    newer = SnapshotFile(index=41, epoch=4, total_bytes=len(DATA), checksum=FILE.checksum)
    other.want(7, 4, frozenset({"b"}), newer, 0.0)
    read = other.poll(0.0)[0]
    receipt = link.receiver.on_chunk(chunk_of(read, 0.0), 4, 10)
    assert receipt.restart and receipt.write and receipt.ack.next_offset == 500
    # A late chunk of the old transfer is refused now (an older epoch than the current one).
    late = SnapshotChunk(7, 3, "a", 40, 3, 1000, len(DATA), FILE.checksum, DATA[1000:1500])
    assert link.receiver.on_chunk(late, 4, 10).ack.refused
    # An epoch change in the wanted set ends the old transfer too.
    link.sender.want(7, 3, frozenset({"b"}), FILE, 0.0)
    link.sender.want(7, 4, frozenset({"b"}), FILE, 0.0)
    assert link.sender.aborted == 2 and link.sender.transfers == {(7, "b"): (0, len(DATA))}


def test_transfers_at_once_are_limited() -> None:
    sender = SnapshotSender(TransferSettings(transfers_max=2))
    sender.want(1, 1, frozenset({"b", "c", "d"}), FILE, 0.0)
    assert set(sender.transfers) == {(1, "b"), (1, "c")}
    sender.want(1, 1, frozenset({"c", "d"}), FILE, 0.0)  # b refilled: d's turn
    assert set(sender.transfers) == {(1, "c"), (1, "d")}


def test_an_ack_from_the_past_does_not_rewind() -> None:
    link = Link()
    link.step()
    old = SnapshotAck(7, 3, "b", 40, 500, echo_sent_ms=-1.0)
    link.sender.on_ack(old, 0.0)
    assert link.sender.transfers[(7, "b")][0] == 1000


def test_a_peer_still_behind_after_an_install_gets_the_newer_snapshot_at_once() -> None:
    link = Link()
    link.run(1000)
    assert len(link.installed) == 1
    newer = SnapshotFile(index=60, epoch=3, total_bytes=len(DATA), checksum=FILE.checksum)
    link.sender.want(7, 3, frozenset({"b"}), FILE, link.now)  # nothing newer: it waits
    assert link.sender.poll(link.now) == []
    link.sender.want(7, 3, frozenset({"b"}), newer, link.now)  # compacted past it meanwhile
    [read, _] = link.sender.poll(link.now)
    assert read.snapshot == newer and read.offset == 0
