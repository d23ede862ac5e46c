"""Memory and reopen time of one partition's replica + log, with and without compaction.

Writes SETs (100-byte values over a fixed set of keys) through a Replica (a lone primary,
min_insync 1: an entry commits once it is in the primary's log) into a PartitionLog on the
real file system (fsync ``never`` for the log; snapshot files are fsynced as always),
snapshotting with the node's policy when ``--compact``; then reports the Python heap the
replica and log hold (tracemalloc), the data directory's size, and how long reopening the
log and rebuilding the replica takes. The data directory is removed at the end.

Requests go in groups of ``--batch`` (256): each is stepped through the replica, then the
group's persists are written by one ``write_persists``, as the node's group committer writes
a stage of persists gathered while the disk was busy (``--batch 1``: a write per request).
The policy is asked after each group, as the node asks after its steps, and the garbage
collector is frozen every ``--gc-freeze-ms`` (1000) as the node's freeze loop does (full
collections would otherwise rescan every key's objects). Usage::

    python benchmarks/compaction_memory.py --writes 200000 --keys 1000 [--compact]

The issue's storage-layer run (every million SETs: RSS, data directory bytes, log entries
in memory, snapshots taken, SETs/s of wall and of CPU time, load average; no
tracemalloc), best with the compiled build (``python hatch_build.py``)::

    python benchmarks/compaction_memory.py --writes 100000000 --keys 100000 --compact \
        --no-heap --report-every 1000000
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
import tracemalloc

from planaria.core.compaction import SnapshotPolicy
from planaria.core.messages import ClientRequest, PartitionConfig, Persist, Set
from planaria.core.replica import Replica, ReplicaSettings
from planaria.storage import FsyncPolicy, OsFS, PartitionLog
from planaria.storage.persist import recovered_state, save_state, write_persists

NODE = "n1"


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))


def lone_primary(settings: ReplicaSettings, replica: Replica, log: PartitionLog) -> None:
    config = PartitionConfig(0, 1, NODE, (NODE,), frozenset({NODE}), 1)
    ready = replica.on_config(config, 0.0)
    ready.extend(replica.tick(0.0, float("inf")))
    write_persists(log, ready.persist)


def rss_mib() -> float:
    """This process's resident set size (Linux /proc), MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def run(
    writes: int,
    keys: int,
    compact: bool,
    policy: SnapshotPolicy,
    *,
    report_every: int = 0,
    heap: bool = True,
    batch: int = 256,
    gc_freeze_ms: float = 1000.0,
) -> dict[str, float]:
    path = tempfile.mkdtemp(prefix="planaria-compaction-")
    settings = ReplicaSettings(min_insync=1)
    gc.collect()
    if heap:
        tracemalloc.start()
    log = PartitionLog.open(OsFS(), path, policy=FsyncPolicy("never"))
    replica = Replica(NODE, 0, settings)
    lone_primary(settings, replica, log)
    value = b"v" * 100
    copy_ms_max = 0.0
    snapshots = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    done = 0
    frozen_at = started
    while done < writes:
        # One group commit's worth: the requests arriving while the log is written are
        # stepped one by one, then their persists go to the log in one write_persists
        # (the node's committer does the same with a stage's persists under load).
        step = min(batch, writes - done)
        if report_every:
            step = min(step, report_every - done % report_every)
        persists: list[Persist] = []
        for seq in range(done + 1, done + step + 1):
            request = ClientRequest(0, "c", ("c", seq), Set(b"key-%d" % (seq % keys), value))
            persists += replica.on_message(request, 0.0).persist
        write_persists(log, persists)
        done += step
        if compact and policy.due(
            replica.applied_index, log.snapshot_index, log.bytes_after(log.snapshot_index)
        ):
            copy_started = time.perf_counter()
            view = replica.snapshot()
            copy_ms_max = max(copy_ms_max, (time.perf_counter() - copy_started) * 1000)
            keep = policy.keep_after(replica, view.index)
            save_state(log, view, keep_after=keep)
            replica.compact(keep)
            snapshots += 1
        if gc_freeze_ms > 0 and (time.perf_counter() - frozen_at) * 1000 >= gc_freeze_ms:
            gc.freeze()  # as the node's freeze loop: survivors leave later collections
            frozen_at = time.perf_counter()
        if report_every and done % report_every == 0:
            elapsed_s = time.perf_counter() - started
            cpu_s = time.process_time() - cpu_started
            print(
                f"  {done:,} SETs: RSS {rss_mib():.1f} MiB, data directory "
                f"{directory_bytes(path) / 2**20:.1f} MiB, log entries in memory "
                f"{replica.log_entries}, snapshots {snapshots}, "
                f"{done / elapsed_s:,.0f} SETs/s ({done / cpu_s:,.0f} per CPU second), "
                f"{elapsed_s:.0f} s, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    write_s = time.perf_counter() - started
    log.sync()
    gc.collect()
    heap_mib = tracemalloc.get_traced_memory()[0] / 2**20 if heap else float("nan")
    if heap:
        tracemalloc.stop()
    rss_end_mib = rss_mib()
    log.close()
    disk_mib = directory_bytes(path) / 2**20
    del replica, log
    gc.collect()
    started = time.perf_counter()
    log = PartitionLog.open(OsFS(), path, policy=FsyncPolicy("never"))
    snapshot, entries = recovered_state(log)
    Replica(
        NODE,
        0,
        settings,
        snapshot=snapshot,
        log=entries,
        epoch=log.epoch,
        commit_index=log.commit_index,
    )
    reopen_s = time.perf_counter() - started
    log.close()
    shutil.rmtree(path)
    return {
        "heap_mib": heap_mib,
        "rss_mib": rss_end_mib,
        "disk_mib": disk_mib,
        "reopen_s": reopen_s,
        "write_s": write_s,
        "snapshots": snapshots,
        "snapshot_copy_ms_max": copy_ms_max,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--compact", action="store_true")
    parser.add_argument("--snapshot-entries", type=int, default=SnapshotPolicy().entries)
    parser.add_argument(
        "--report-every", type=int, default=0, help="print RSS and disk every N SETs"
    )
    parser.add_argument(
        "--no-heap", dest="heap", action="store_false",
        help="skip tracemalloc (it slows every allocation): RSS only",
    )  # fmt: skip
    parser.add_argument(
        "--batch", type=int, default=256,
        help="client requests stepped before one write of their persists (default 256)",
    )  # fmt: skip
    parser.add_argument(
        "--gc-freeze-ms", type=float, default=1000.0,
        help="gc.freeze() this often, as the node does (NodeSettings.gc_freeze_interval_ms); "
        "0: never",
    )  # fmt: skip
    args = parser.parse_args()
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    policy = SnapshotPolicy(entries=args.snapshot_entries)
    result = run(
        args.writes, args.keys, args.compact, policy,
        report_every=args.report_every, heap=args.heap, batch=args.batch,
        gc_freeze_ms=args.gc_freeze_ms,
    )  # fmt: skip
    label = "compaction" if args.compact else "no compaction"
    print(
        f"{args.writes} SETs over {args.keys} keys, {label}: "
        + ", ".join(f"{name}={value:.2f}" for name, value in result.items())
    )


if __name__ == "__main__":
    main()
