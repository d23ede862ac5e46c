"""Durable appends: planaria's partition log + group commit vs SQLite (WAL, synchronous=FULL).

    .venv/bin/python benchmarks/bench_storage.py [--case-s 2] [--repeats 3] [--records 1000000]

The anchor is what a Python developer would reach for to make small writes durable: stdlib
sqlite3 in WAL mode with ``synchronous=FULL``, one transaction per write. With W concurrent
writers SQLite runs W threads, either each with its own connection (``timeout`` so writers
queue on the WAL lock instead of failing) or sharing one connection behind a lock; the ratio
is taken against the faster of the two. planaria runs the node's own persist path: W asyncio
tasks each hand a ``Persist`` of one SET entry (``storage.persist.write_persists``, the code a
node runs for every Ready) to the node's ``GroupCommitter`` with fsync policy ``always``.
Both acknowledge a write only after fsync. Values are 100 bytes. Every case runs for a fixed
time; planaria and SQLite alternate within each repeat; medians are reported. Also measured:
recovery (open) time of a log with 1M records and bytes on disk per record for both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _common import write_results
from planaria.core.messages import Entry, Persist, Set
from planaria.storage import GroupCommitter, OsFS, PartitionLog
from planaria.storage.persist import write_persists

VALUE = b"v" * 100
WRITER_COUNTS = (1, 16, 64)


def planaria_appends_per_s(
    directory: Path, writers: int, case_s: float, *, inline_when_idle: bool = True
) -> float:
    log = PartitionLog.open(OsFS(), str(directory))
    log.set_epoch(1)
    next_index = 1  # indexes are given out in submission order, as a primary does

    async def main() -> int:
        nonlocal next_index
        done = 0
        async with GroupCommitter(inline_when_idle=inline_when_idle) as committer:
            stop_at = time.perf_counter() + case_s

            async def writer(client: int) -> None:
                nonlocal done, next_index
                while time.perf_counter() < stop_at:
                    index, next_index = next_index, next_index + 1
                    entry = Entry(1, index, (f"c{client}", index), Set(b"key", VALUE))
                    persist = Persist(0, None, (entry,), epoch=1, commit_index=index - 1)
                    await committer.write(log, lambda log_, p=persist: write_persists(log_, [p]))
                    done += 1

            await asyncio.gather(*(writer(n) for n in range(writers)))
        return done

    start = time.perf_counter()
    done = asyncio.run(main())
    elapsed = time.perf_counter() - start
    log.close()
    return done / elapsed


def planaria_threaded_appends_per_s(directory: Path, writers: int, case_s: float) -> float:
    """Diagnostic, 1 writer only: every fsync handed to the disk thread (no inline path)."""
    return planaria_appends_per_s(directory, writers, case_s, inline_when_idle=False)


def sqlite_connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return connection


def sqlite_appends_per_s(
    directory: Path, writers: int, case_s: float, *, shared: bool = False
) -> float:
    """W threads, each committing one INSERT per transaction. ``shared``: one connection
    behind a lock (writers queue in Python) instead of one connection per thread (writers
    queue on SQLite's WAL lock through its busy handler, which sleeps)."""
    path = directory / "bench.sqlite"
    setup = sqlite_connect(path)
    setup.execute("CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, value BLOB)")
    shared_lock = threading.Lock()
    counts = [0] * writers
    start_gate = threading.Barrier(writers + 1)
    stop_at = 0.0

    def writer(slot: int) -> None:
        connection = setup if shared else sqlite_connect(path)
        start_gate.wait()
        while time.perf_counter() < stop_at:
            with shared_lock if shared else contextlib.nullcontext():
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("INSERT INTO log (value) VALUES (?)", (VALUE,))
                connection.execute("COMMIT")
            counts[slot] += 1
        if not shared:
            connection.close()

    threads = [threading.Thread(target=writer, args=(slot,)) for slot in range(writers)]
    for thread in threads:
        thread.start()
    stop_at = time.perf_counter() + case_s
    start = time.perf_counter()
    start_gate.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    setup.close()
    return sum(counts) / elapsed


def sqlite_shared_appends_per_s(directory: Path, writers: int, case_s: float) -> float:
    return sqlite_appends_per_s(directory, writers, case_s, shared=True)


SYSTEMS = {
    "planaria": planaria_appends_per_s,
    "sqlite_conn_per_thread": sqlite_appends_per_s,
    "sqlite_shared_conn": sqlite_shared_appends_per_s,
}


def fresh_dir(root: Path, name: str) -> Path:
    directory = root / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    return directory


def throughput(root: Path, case_s: float, repeats: int) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    for writers in WRITER_COUNTS:
        names = list(SYSTEMS) + (["planaria_threaded"] if writers == 1 else [])
        samples: dict[str, list[float]] = {name: [] for name in names}
        for repeat in range(repeats):
            # Rotate the order so no system always runs first (or right after another).
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                measure = SYSTEMS.get(name, planaria_threaded_appends_per_s)
                samples[name].append(measure(fresh_dir(root, name), writers, case_s))
        medians = {name: statistics.median(values) for name, values in samples.items()}
        planaria = medians["planaria"]
        best_sqlite_name = max(
            (n for n in names if n.startswith("sqlite")), key=lambda n: medians[n]
        )
        best_sqlite = medians[best_sqlite_name]
        results[f"writers_{writers}"] = {
            **{f"{name}_per_s": round(value) for name, value in medians.items()},
            "anchor": best_sqlite_name,
            "ratio_vs_best_sqlite": round(planaria / best_sqlite, 2),
            "samples_per_s": {k: [round(v) for v in vs] for k, vs in samples.items()},
        }
        print(
            f"{writers:>3} writers  planaria {planaria:>8,.0f}/s  "
            f"sqlite conn/thread {medians['sqlite_conn_per_thread']:>7,.0f}/s  "
            f"sqlite shared {medians['sqlite_shared_conn']:>7,.0f}/s  "
            f"ratio vs best sqlite {planaria / best_sqlite:6.2f}x",
            flush=True,
        )
        if "planaria_threaded" in medians:
            threaded = medians["planaria_threaded"]
            print(
                f"    diagnostic: every fsync handed to the disk thread "
                f"{threaded:>8,.0f}/s = {threaded / best_sqlite:.2f}x best sqlite",
                flush=True,
            )
    return results


def recovery(root: Path, records: int, repeats: int) -> dict[str, object]:
    directory = fresh_dir(root, "recovery")
    log = PartitionLog.open(OsFS(), str(directory))
    log.set_epoch(1)
    batch = [(1, VALUE)] * 1000
    for _ in range(records // len(batch)):
        log.append_many(batch)
    log.close()
    planaria_bytes = sum(f.stat().st_size for f in directory.iterdir())
    open_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        log = PartitionLog.open(OsFS(), str(directory))
        open_times.append(time.perf_counter() - start)
        assert log.last_index == records, log.last_index
        log.close()
    sqlite_dir = fresh_dir(root, "recovery-sqlite")
    connection = sqlite_connect(sqlite_dir / "bench.sqlite")
    connection.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, value BLOB)")
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO log (value) VALUES (?)", ((VALUE,) for _ in range(records)))
    connection.execute("COMMIT")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    sqlite_bytes = sum(f.stat().st_size for f in sqlite_dir.iterdir())
    recovery_s = statistics.median(open_times)
    print(
        f"recovery of {records:,} records: {recovery_s:.2f} s "
        f"({records / recovery_s / 1e6:.2f} M records/s, every checksum checked)\n"
        f"bytes on disk per {len(VALUE)}-byte record: planaria {planaria_bytes / records:.1f}, "
        f"sqlite {sqlite_bytes / records:.1f}",
        flush=True,
    )
    return {
        "records": records,
        "planaria_open_s": round(recovery_s, 3),
        "planaria_open_samples_s": [round(t, 3) for t in open_times],
        "planaria_bytes_per_record": round(planaria_bytes / records, 1),
        "sqlite_bytes_per_record": round(sqlite_bytes / records, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case-s", type=float, default=2.0, help="seconds per measured case")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None, help="where to write (default: a dir in /tmp)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="planaria-bench-storage-", dir=args.dir))
    try:
        print(f"data in {root} (real disk); {args.case_s} s per case, {args.repeats} repeats")
        results = {
            "throughput": throughput(root, args.case_s, args.repeats),
            "recovery": recovery(root, args.records, args.repeats),
            "value_bytes": len(VALUE),
            "case_s": args.case_s,
            "repeats": args.repeats,
            "anchor": "sqlite3 WAL synchronous=FULL, one transaction per write, one thread "
            "per writer; ratio against the faster of connection-per-thread and shared "
            "connection behind a lock",
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    write_results("storage", results)


if __name__ == "__main__":
    main()
