"""Backup and restore of a local cluster, side by side with Redis' RDB files.

planaria: a 3-node local cluster (``--partitions``) holding about ``--mb`` MB (values of
``--value-bytes``); ``planaria backup`` while it is idle, ``planaria backup --verify``, then
``planaria restore`` + ``planaria up --detach`` (until every partition serves). Redis: one
redis-server holding the same keys; ``redis-cli --rdb`` (a BGSAVE streamed to the client:
Redis' "backup"), then a new redis-server started on that RDB file until it answers PING
with the data loaded. Repeats alternate the two; medians and ratios. Usage::

    python benchmarks/backup_rate.py --mb 20 [--repeats 3]

The commands run as subprocesses, as an operator runs them (start-up included).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import planaria
from _common import write_results
from planaria.cluster import LocalCluster, free_base_port, resp_command

CLI = [sys.executable, "-m", "planaria.cli"]


def run(*argv: str) -> float:
    """Wall seconds of a command that must succeed."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fill_planaria(seeds: list[str], keys: int, value: bytes) -> None:
    def writer(first: int) -> None:
        with planaria.Client(seeds, timeout_s=30.0) as client:
            for i in range(first, keys, 4):
                client.set(f"key:{i}", value)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def start_redis(directory: Path, port: int, rdb: str | None = None) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(directory)]  # fmt: skip
    if rdb is not None:
        argv += ["--dbfilename", rdb]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            (info,) = resp_command(f"127.0.0.1:{port}", ("INFO", "persistence"), timeout_s=5)
            if b"loading:0" in info:
                return process
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("redis-server did not start")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--value-bytes", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: the anchor is missing")
    keys = int(args.mb * 1_000_000 / args.value_bytes)
    value = b"v" * args.value_bytes
    root = Path(tempfile.mkdtemp(prefix="planaria-backup-bench-"))
    samples: dict[str, list[float]] = {k: [] for k in (
        "planaria_backup_s", "planaria_verify_s", "planaria_restore_s", "planaria_up_s",
        "redis_rdb_s", "redis_load_s")}  # fmt: skip
    source = LocalCluster(root / "source", nodes=3, partitions=args.partitions,
                          base_port=free_base_port(3))  # fmt: skip
    redis_port = free_port()
    redis = start_redis(root / "redis", redis_port)
    backup_bytes = 0
    try:
        source.start(timeout_s=120)
        fill_planaria(list(source.addresses.values()), keys, value)
        for start in range(0, keys, 100):
            commands = [("SET", f"key:{i}", value) for i in range(start, min(keys, start + 100))]
            resp_command(f"127.0.0.1:{redis_port}", *commands, timeout_s=60)
        for repeat in range(args.repeats):
            backup = root / f"backup-{repeat}"
            samples["planaria_backup_s"].append(
                run(*CLI, "backup", str(backup), "--data", str(source.data_dir))
            )
            backup_bytes = sum(p.stat().st_size for p in backup.glob("p*.snap"))
            samples["planaria_verify_s"].append(run(*CLI, "backup", "--verify", str(backup)))
            rdb = root / f"dump-{repeat}.rdb"
            samples["redis_rdb_s"].append(
                run("redis-cli", "-p", str(redis_port), "--rdb", str(rdb))
            )
        source.stop()
        for repeat in range(args.repeats):
            restored = root / f"restored-{repeat}"
            samples["planaria_restore_s"].append(
                run(
                    *CLI,
                    "restore",
                    str(root / f"backup-{repeat}"),
                    "--data",
                    str(restored),
                    "--port",
                    str(free_base_port(3)),
                )
            )
            samples["planaria_up_s"].append(
                run(*CLI, "up", "--data", str(restored), "--detach", "--timeout", "300")
            )
            run(*CLI, "down", "--data", str(restored))
            started = time.perf_counter()
            loaded = start_redis(root, free_port(), rdb=f"dump-{repeat}.rdb")
            samples["redis_load_s"].append(time.perf_counter() - started)
            loaded.terminate()
            loaded.wait(30)
    finally:
        source.stop()
        redis.terminate()
        redis.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    mb = backup_bytes / 1e6
    results = {
        "keys": keys, "value_bytes": args.value_bytes, "partitions": args.partitions,
        "backup_mb": round(mb, 2), "samples": samples, "medians": medians,
        "backup_mb_per_s": round(mb / medians["planaria_backup_s"], 2),
        "ratio_backup_vs_rdb": round(medians["planaria_backup_s"] / medians["redis_rdb_s"], 2),
        "ratio_restore_and_up_vs_rdb_load": round(
            (medians["planaria_restore_s"] + medians["planaria_up_s"]) / medians["redis_load_s"],
            2),
    }  # fmt: skip
    for name, median in medians.items():
        print(f"{name:>22}: {median:.2f} s")
    ratio_load = results["ratio_restore_and_up_vs_rdb_load"]
    print(
        f"backup {mb:.1f} MB: {results['backup_mb_per_s']} MB/s; "
        f"backup / redis-cli --rdb = {results['ratio_backup_vs_rdb']}; "
        f"(restore + up) / redis load = {ratio_load}"
    )
    write_results("backup_rate", results)


if __name__ == "__main__":
    main()
