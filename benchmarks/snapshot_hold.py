"""How long a snapshot's rename and seal hold a node's write batches off (issue 17): in
the disk thread, between batches, ``PartitionLog.save_snapshot(prewritten=True,
seal=False)`` then ``seal_and_compact()``, timed on the real disk, with the node's journal,
after 10,240 journaled records (40 batches of 256, as a node's group commit under load) and
a 3 MB snapshot file written beside them, 25 rounds (the first 3 left out).

    .venv/bin/python benchmarks/snapshot_hold.py [--no-write-behind] [--rounds N]
        [--busy-loop] [--switch-interval-ms MS]

``--no-write-behind``: skip what the node does first in a storage thread (the active
segment's pages written out with an ``fdatasync`` of their own). To compare two builds,
run each (``PYTHONPATH=<other tree>/src``) in turn, a few times.

``--busy-loop``: the storage work runs in a thread of its own, as the node's disk thread,
beside a main thread that keeps running Python code, as a busy event loop does: every
call that released the interpreter's lock (fsync, rename, write) waits to get it back for
up to the switch interval (``--switch-interval-ms``; Python's own is 5, a node's 0.5).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

from planaria.storage import Journal, OsFS, PartitionLog, Snapshot


def percentile(values: list[float], share: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * share))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write-behind", dest="write_behind", action="store_false")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--busy-loop", action="store_true")
    parser.add_argument("--switch-interval-ms", type=float, default=None)
    args = parser.parse_args()
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    if not args.busy_loop:
        hold(args)
        return
    done = threading.Event()
    worker = threading.Thread(target=lambda: (hold(args), done.set()))
    worker.start()
    spins = 0
    while not done.is_set():  # the busy loop: Python code, never waiting
        spins += sum(range(1000)) > 0
    worker.join()


def hold(args: argparse.Namespace) -> None:
    root = tempfile.mkdtemp(prefix="snapshot-hold-")
    fs = OsFS()
    journal = Journal.open(fs, f"{root}/journal")
    journal.recover(lambda partition, unsynced_after: None)
    log = PartitionLog.open(fs, f"{root}/p0")
    log.attach_journal(journal, 0)
    log.set_epoch(1)
    renames: list[float] = []
    seals: list[float] = []
    state = os.urandom(3_000_000)
    try:
        for _ in range(args.rounds):
            for _ in range(40):
                log.append_many([(1, b"x" * 180) for _ in range(256)])
                log.sync()
            log.set_commit_index(log.last_index)
            snapshot = Snapshot(log.last_index, 1, state)
            log.write_snapshot_file(snapshot)
            path = log.active_segment_path if args.write_behind else None
            if path is not None:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            started = time.perf_counter()
            log.save_snapshot(snapshot, prewritten=True, seal=False)
            renamed = time.perf_counter()
            log.seal_and_compact()
            sealed = time.perf_counter()
            renames.append((renamed - started) * 1000)
            seals.append((sealed - renamed) * 1000)
    finally:
        log.close()
        journal.close()
        shutil.rmtree(root)
    renames, seals = renames[3:], seals[3:]
    print(
        f"rename: median {statistics.median(renames):.1f} ms, p90 {percentile(renames, 0.9):.1f};"
        f" seal: median {statistics.median(seals):.1f} ms, p90 {percentile(seals, 0.9):.1f};"
        f" switch interval {sys.getswitchinterval() * 1000:g} ms,"
        f" {'beside a busy loop' if args.busy_loop else 'alone'};"
        f" load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
