"""Durable appends: planaria's partition log + group commit vs SQLite (WAL, synchronous=FULL).

    .venv/bin/python benchmarks/bench_storage.py [--case-s 2] [--repeats 3] [--records 1000000]

The anchor is what a Python developer would reach for to make small writes durable: stdlib
sqlite3 in WAL mode with ``synchronous=FULL``, one transaction per write. With W concurrent
writers SQLite runs W threads, each with its own connection (``busy_timeout`` so writers
queue on the WAL lock instead of failing); planaria runs W asyncio tasks awaiting
``GroupCommitter.append`` with fsync policy ``always``. Both acknowledge a write only after
fsync. Values are 100 bytes. Every case runs for a fixed time; planaria and SQLite alternate
within each repeat; medians are reported. Also measured: recovery (open) time of a log with
1M records and bytes on disk per record for both.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _common import write_results

from planaria.storage import GroupCommitter, OsFS, PartitionLog

VALUE = b"v" * 100
WRITER_COUNTS = (1, 16, 64)


def planaria_appends_per_s(directory: Path, writers: int, case_s: float) -> float:
    log = PartitionLog.open(OsFS(), str(directory))
    log.set_epoch(1)

    async def main() -> int:
        done = 0
        async with GroupCommitter(log) as committer:
            stop_at = time.perf_counter() + case_s

            async def writer() -> None:
                nonlocal done
                while time.perf_counter() < stop_at:
                    await committer.append(1, VALUE)
                    done += 1

            await asyncio.gather(*(writer() for _ in range(writers)))
        return done

    start = time.perf_counter()
    done = asyncio.run(main())
    elapsed = time.perf_counter() - start
    log.close()
    return done / elapsed


def sqlite_connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return connection


def sqlite_appends_per_s(directory: Path, writers: int, case_s: float) -> float:
    path = directory / "bench.sqlite"
    setup = sqlite_connect(path)
    setup.execute("CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, value BLOB)")
    setup.close()
    counts = [0] * writers
    start_gate = threading.Barrier(writers + 1)
    stop_at = 0.0

    def writer(slot: int) -> None:
        connection = sqlite_connect(path)
        start_gate.wait()
        while time.perf_counter() < stop_at:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO log (value) VALUES (?)", (VALUE,))
            connection.execute("COMMIT")
            counts[slot] += 1
        connection.close()

    threads = [threading.Thread(target=writer, args=(slot,)) for slot in range(writers)]
    for thread in threads:
        thread.start()
    stop_at = time.perf_counter() + case_s
    start = time.perf_counter()
    start_gate.wait()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def fresh_dir(root: Path, name: str) -> Path:
    directory = root / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    return directory


def throughput(root: Path, case_s: float, repeats: int) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    for writers in WRITER_COUNTS:
        samples: dict[str, list[float]] = {"planaria": [], "sqlite": []}
        for repeat in range(repeats):
            order = ["planaria", "sqlite"] if repeat % 2 == 0 else ["sqlite", "planaria"]
            for system in order:
                directory = fresh_dir(root, system)
                measure = planaria_appends_per_s if system == "planaria" else sqlite_appends_per_s
                samples[system].append(measure(directory, writers, case_s))
        planaria = statistics.median(samples["planaria"])
        sqlite = statistics.median(samples["sqlite"])
        results[f"writers_{writers}"] = {
            "planaria_appends_per_s": round(planaria),
            "sqlite_appends_per_s": round(sqlite),
            "ratio": round(planaria / sqlite, 2),
            "samples": {k: [round(v) for v in vs] for k, vs in samples.items()},
        }
        print(
            f"{writers:>3} writers   planaria {planaria:>9,.0f}/s   sqlite {sqlite:>8,.0f}/s"
            f"   ratio {planaria / sqlite:5.2f}x",
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
            "anchor": "sqlite3 WAL synchronous=FULL, one transaction per write, "
            "one thread + connection per writer",
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    write_results("storage", results)


if __name__ == "__main__":
    main()
