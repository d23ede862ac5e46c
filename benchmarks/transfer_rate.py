"""Snapshot transfer rate on loopback: one snapshot file (about ``--mb`` MB of state) goes
from a primary's log to an empty backup log over two real peer buses (msgpack frames on
TCP), driven by the same SnapshotSender / SnapshotReceiver and storage helpers as the node
(chunks read in a storage thread, written in another, installed atomically at the end).
Reports MB/s from the first chunk to the install. Usage::

    python benchmarks/transfer_rate.py --mb 50 [--bytes-per-s 0 (unthrottled)]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from planaria.core.codec import encode_state
from planaria.core.messages import ReplicaSnapshot, SnapshotAck, SnapshotChunk, Version
from planaria.core.transfer import ChunkRead, SnapshotReceiver, SnapshotSender, TransferSettings
from planaria.node._transport import PeerBus, PeerMessage
from planaria.storage import OsFS, PartitionLog
from planaria.storage.format import Snapshot
from planaria.storage.persist import install_received, receive_chunk, snapshot_file

VALUE_BYTES = 1000


def source_log(path: str, megabytes: float) -> PartitionLog:
    log = PartitionLog.open(OsFS(), path)
    log.set_epoch(1)
    log.append(1, b"")  # the barrier the snapshot covers
    keys = int(megabytes * 1_000_000 / (VALUE_BYTES + 30))
    kv = {b"key-%09d" % i: (bytes([i % 251]) * VALUE_BYTES, Version(1, 1)) for i in range(keys)}
    state = ReplicaSnapshot(partition=0, index=1, epoch=1, kv=kv, dedup={})
    log.save_snapshot(Snapshot(1, 1, encode_state(state)))
    return log


async def transfer(megabytes: float, bytes_per_s: float) -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory() as source_dir, tempfile.TemporaryDirectory() as dest_dir:
        source = source_log(source_dir, megabytes)
        dest = PartitionLog.open(OsFS(), dest_dir)
        stored = snapshot_file(source)
        assert stored is not None
        settings = TransferSettings()
        if bytes_per_s > 0:
            settings = replace(settings, bytes_per_s=bytes_per_s)
        else:
            settings = replace(settings, bytes_per_s=1e15)
        sender, receiver = SnapshotSender(settings), SnapshotReceiver("b")
        reader, writer = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        reading: list[asyncio.Task[None]] = []

        async def send(reads: list[ChunkRead]) -> None:
            def read_all() -> list[bytes]:
                return [
                    source.read_snapshot_file(r.snapshot.index, r.offset, r.length) for r in reads
                ]

            for read, data in zip(reads, await loop.run_in_executor(reader, read_all), strict=True):
                bus_a.send("b", read.message("a", data, time.monotonic() * 1000))

        def pump() -> None:
            if reading and not reading[-1].done():
                return
            reads = sender.poll(time.monotonic() * 1000)
            if reads:
                reading.append(asyncio.ensure_future(send(reads)))

        async def on_chunk(chunk: SnapshotChunk) -> None:
            receipt = receiver.on_chunk(chunk, 1, 0)
            if receipt.write:
                await loop.run_in_executor(
                    writer, lambda: receive_chunk(dest, chunk, restart=receipt.restart)
                )
            if receipt.complete:
                received.append(time.perf_counter())
                await loop.run_in_executor(writer, install_received, dest, chunk)
                bus_b.send("a", receiver.installed(chunk, 1))
                done.set()
            else:
                bus_b.send("a", receipt.ack)

        writes: list[asyncio.Task[None]] = []
        received: list[float] = []

        def deliver_a(message: PeerMessage) -> None:
            if isinstance(message, SnapshotAck):
                sender.on_ack(message, time.monotonic() * 1000)
                pump()

        def deliver_b(message: PeerMessage) -> None:
            if isinstance(message, SnapshotChunk):
                writes.append(asyncio.ensure_future(on_chunk(message)))

        bus_a, bus_b = PeerBus("a", deliver_a), PeerBus("b", deliver_b)
        port_a, port_b = await bus_a.listen("127.0.0.1", 0), await bus_b.listen("127.0.0.1", 0)
        bus_a.set_address("b", f"127.0.0.1:{port_b}")
        bus_b.set_address("a", f"127.0.0.1:{port_a}")
        started = time.perf_counter()
        sender.want(0, 1, frozenset({"b"}), stored, time.monotonic() * 1000)
        while not done.is_set():
            pump()
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        assert dest.snapshot_index == 1 and dest.snapshot is not None
        await bus_a.close()
        await bus_b.close()
        reader.shutdown()
        writer.shutdown()
        source.close()
        dest.close()
        return stored.total_bytes, elapsed, received[0] - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0)
    parser.add_argument("--bytes-per-s", type=float, default=0.0, help="0: unthrottled")
    args = parser.parse_args()
    total, elapsed, wire = asyncio.run(transfer(args.mb, args.bytes_per_s))
    rate = "unthrottled" if args.bytes_per_s <= 0 else f"throttled to {args.bytes_per_s:.0f} B/s"
    print(
        f"snapshot of {total / 1e6:.1f} MB sent, verified and installed in {elapsed:.2f} s: "
        f"{total / 1e6 / elapsed:.1f} MB/s ({rate}); the chunks alone (received and "
        f"written, checksum verified) {wire:.2f} s: {total / 1e6 / wire:.1f} MB/s"
    )


if __name__ == "__main__":
    main()
