"""``planaria node``: run one node process until SIGTERM / SIGINT (then stop cleanly)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

__all__ = ["add_arguments", "run"]

DEFAULT_INTERVAL_MS = 10  # for a bare ``--fsync interval``
PROBE_TIMEOUT_S = 30.0  # how long to look for a zk:// or etcd:// backend at start
# A node's disk and storage threads give the interpreter's lock up for every fsync, rename
# and write, and each time they want it back a busy event loop keeps it up to the switch
# interval: at Python's 5 ms, a snapshot's rename and seal (a dozen such calls, holding the
# partition's writes off) took 18-40 and 44-100 ms beside a busy thread instead of about 2
# each, at 0.5 ms 3.5-6 and 4.5-11 (docs/BENCHMARKS.md, "The hold beside a busy event loop").
GIL_SWITCH_INTERVAL_MS = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", required=True, dest="node_id", help="this node's id (e.g. n1)")
    parser.add_argument(
        "--listen",
        required=True,
        metavar="HOST:PORT",
        help="RESP address for clients; the replication bus listens on PORT + 10000",
    )
    parser.add_argument(
        "--coordinator",
        default="planaria://127.0.0.1:7000",
        metavar="URL",
        help="coordinator URL (default planaria://127.0.0.1:7000)",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="this node's data directory")
    parser.add_argument("--zone", default=None, help="failure zone (replicas avoid sharing one)")
    parser.add_argument("--weight", type=float, default=1.0, help="relative capacity (default 1)")
    parser.add_argument(
        "--fsync",
        default="always",
        metavar="always|interval[:MS]|never",
        help="when log writes are fsynced (default always: before every acknowledgement; "
        f"interval alone means interval:{DEFAULT_INTERVAL_MS})",
    )
    parser.add_argument(
        "--bus", default=None, metavar="HOST:PORT", help="bus address (default: PORT + 10000)"
    )
    parser.add_argument(
        "--advertise",
        default=None,
        metavar="HOST:PORT",
        help="the RESP address clients and peers are told, when not --listen (a proxy, NAT)",
    )
    parser.add_argument(
        "--bus-advertise",
        default=None,
        metavar="HOST:PORT",
        help="the bus address peers are told, when not --bus (a proxy, NAT)",
    )
    parser.add_argument(
        "--metrics-listen",
        default=None,
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (a bare PORT: "
        "on loopback, 127.0.0.1; port 0: any free port, shown by INFO's metrics_address "
        "and planaria status); default: no metrics served",
    )
    parser.add_argument(
        "--session-ttl-ms",
        type=float,
        default=None,
        metavar="MS",
        help="coordinator session TTL: how long a silent node keeps its partitions "
        "(default 300, or on zk:// and etcd:// the nearest TTL the backend grants: "
        "ZooKeeper clamps to 2..20 ticks, etcd grants whole seconds, at least 1.5 election "
        "timeouts)",
    )
    parser.add_argument(
        "--lease-ms",
        type=float,
        default=None,
        metavar="MS",
        help="primary lease (default 200, or the longest the session TTL allows: "
        "(session TTL / 1.05 - 20) * 0.95)",
    )
    parser.add_argument(
        "--loop-stall-max-ms",
        type=float,
        default=None,
        metavar="MS",
        help="exit (code 75, for a supervisor to restart the node) once the event loop made "
        "no progress this long (default 3000)",
    )
    parser.add_argument(
        "--snapshot-entries",
        type=int,
        default=None,
        metavar="N",
        help="snapshot a partition's state once N entries were applied since its last "
        "snapshot (default 10000)",
    )
    parser.add_argument(
        "--snapshot-bytes",
        type=int,
        default=None,
        metavar="BYTES",
        help="or once its log holds this many bytes after the last snapshot (default 16 MiB)",
    )
    parser.add_argument(
        "--snapshot-catchup-entries",
        type=int,
        default=None,
        metavar="N",
        help="entries kept behind a snapshot for backups that lag (default 5000)",
    )
    parser.add_argument(
        "--snapshot-transfer-bytes-per-s",
        type=float,
        default=None,
        metavar="BYTES",
        help="the byte rate of all snapshot transfers this node sends to backups that need "
        "compacted entries (default 64 MiB/s)",
    )
    parser.add_argument(
        "--maxmemory",
        default="0",
        metavar="SIZE",
        help="refuse commands that may grow the data (SET, INCR, APPEND, ...) with Redis' "
        "OOM error once the node's resident memory passes SIZE (bytes, or 100mb, 2gb; as "
        "Redis' maxmemory with the noeviction policy); 0, the default: no limit",
    )
    parser.add_argument(
        "--gil-switch-interval-ms",
        type=float,
        default=GIL_SWITCH_INTERVAL_MS,
        metavar="MS",
        help="how long the event loop may hold the interpreter's lock before a disk or "
        "storage thread whose call returned gets it (sys.setswitchinterval; default "
        f"{GIL_SWITCH_INTERVAL_MS}, Python's own 5)",
    )
    parser.add_argument(
        "--bug",
        action="append",
        default=[],
        metavar="NAME",
        help="turn on a known-bug switch (tests of the tests only; e.g. ack-before-replicate)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def metrics_address(text: str | None) -> str | None:
    """``--metrics-listen`` as a listen address (a bare port: on loopback); checked here, so
    a bad one is a usage error before anything starts."""
    from planaria.address import format_address, parse_address  # noqa: PLC0415

    if text is None:
        return None
    if text.strip().isdigit():
        text = f"127.0.0.1:{text.strip()}"
    host, port = parse_address(text, what="--metrics-listen", listen=True)
    return format_address(host, port)


def run(args: argparse.Namespace) -> int:
    # Lazy, so `planaria --help` starts fast.
    from dataclasses import replace  # noqa: PLC0415

    from planaria.coord import CoordinatorUnavailable  # noqa: PLC0415
    from planaria.coord.url import connect, grantable_ttl_ms, parse_url  # noqa: PLC0415
    from planaria.core.compaction import SnapshotPolicy  # noqa: PLC0415
    from planaria.core.lease import lease_max_ms  # noqa: PLC0415
    from planaria.core.transfer import TransferSettings  # noqa: PLC0415
    from planaria.errors import UsageError  # noqa: PLC0415
    from planaria.node import (  # noqa: PLC0415
        DRIFT_MAX,
        LEASE_MARGIN_MS,
        Node,
        NodeSettings,
        parse_memory,
    )
    from planaria.storage import FsyncPolicy  # noqa: PLC0415

    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format=f"%(asctime)s {args.node_id} %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.gil_switch_interval_ms > 0:
        raise UsageError(f"--gil-switch-interval-ms must be > 0, not {args.gil_switch_interval_ms}")
    metrics_listen = metrics_address(args.metrics_listen)
    sys.setswitchinterval(args.gil_switch_interval_ms / 1000)
    fsync = f"interval:{DEFAULT_INTERVAL_MS}" if args.fsync == "interval" else args.fsync
    snapshot_defaults = SnapshotPolicy()
    snapshots = SnapshotPolicy(
        entries=(
            snapshot_defaults.entries if args.snapshot_entries is None else args.snapshot_entries
        ),
        log_bytes=(
            snapshot_defaults.log_bytes if args.snapshot_bytes is None else args.snapshot_bytes
        ),
        catchup_entries=(
            snapshot_defaults.catchup_entries
            if args.snapshot_catchup_entries is None
            else args.snapshot_catchup_entries
        ),
    )
    transfer = TransferSettings()
    if args.snapshot_transfer_bytes_per_s is not None:
        transfer = replace(transfer, bytes_per_s=args.snapshot_transfer_bytes_per_s)
    defaults = NodeSettings(
        fsync=FsyncPolicy.parse(fsync),
        snapshots=snapshots,
        transfer=transfer,
        maxmemory_bytes=parse_memory(args.maxmemory),
    )

    def settings_for(session_ttl_ms: float, ttl_given: bool) -> NodeSettings:
        if args.lease_ms is not None:
            lease_ms = float(args.lease_ms)
        elif ttl_given:  # the longest lease the TTL allows
            lease_ms = lease_max_ms(session_ttl_ms, drift_max=DRIFT_MAX, margin_ms=LEASE_MARGIN_MS)
        else:
            lease_ms = defaults.lease_ms
        return replace(
            defaults,
            session_ttl_ms=session_ttl_ms,
            lease_ms=lease_ms,
            keepalive_interval_ms=min(defaults.keepalive_interval_ms, lease_ms / 4),
            loop_stall_max_ms=(
                defaults.loop_stall_max_ms
                if args.loop_stall_max_ms is None
                else float(args.loop_stall_max_ms)
            ),
            replica=replace(defaults.replica, bugs=frozenset(args.bug)),
        )

    async def choose_settings() -> NodeSettings:
        if args.session_ttl_ms is not None:
            return settings_for(float(args.session_ttl_ms), True)
        if parse_url(args.coordinator).scheme not in ("zk", "etcd"):
            return settings_for(defaults.session_ttl_ms, False)
        # ZooKeeper and etcd grant only some TTLs: take the nearest to the default.
        probe = connect(args.coordinator)
        try:
            delay_s, deadline = 0.05, asyncio.get_running_loop().time() + PROBE_TIMEOUT_S
            while True:
                try:
                    ttl_ms = await grantable_ttl_ms(probe, defaults.session_ttl_ms)
                    break
                except CoordinatorUnavailable:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(delay_s)
                    delay_s = min(delay_s * 2, 1.0)
        finally:
            await probe.close()
        if ttl_ms != defaults.session_ttl_ms:
            logging.getLogger("planaria.node").info(
                "session TTL %.0f ms: the nearest %s grants", ttl_ms, args.coordinator
            )
        return settings_for(ttl_ms, ttl_ms != defaults.session_ttl_ms)

    async def main() -> int:
        settings = await choose_settings()
        coordinator = connect(args.coordinator)
        node = Node(
            args.node_id,
            listen=args.listen,
            coordinator=coordinator,
            data_dir=args.data,
            settings=settings,
            zone=args.zone,
            weight=args.weight,
            bus_listen=args.bus,
            advertise=args.advertise,
            bus_advertise=args.bus_advertise,
            # Keep-alives from their own thread and connection: a busy loop cannot starve them.
            keepalive_connect=lambda: connect(args.coordinator),
            metrics_listen=metrics_listen,
        )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await node.start()
            await stop.wait()
            logging.getLogger("planaria.node").info("stopping on a signal")
        finally:
            await node.close()
            await coordinator.close()
        return 0

    from planaria import _loop  # noqa: PLC0415

    return _loop.run(main())
