"""``planaria chaos``: one chaos run, or ``planaria chaos compare DIR...``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from planaria.check.linearizability import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "compare",
        nargs="*",
        metavar="compare DIR",
        help="'compare DIR...': the side-by-side table of earlier runs' results.json",
    )
    parser.add_argument(
        "--target",
        choices=("planaria", "redis-sentinel", "etcd"),
        default="planaria",
        help="system under test (default planaria)",
    )
    parser.add_argument("--nodes", type=int, default=3, help="nodes (default 3)")
    parser.add_argument(
        "--duration-s", type=float, default=60.0, help="workload seconds (default 60)"
    )
    parser.add_argument(
        "--faults",
        default="kill,pause,partition",
        help="fault kinds for the random schedule (default kill,pause,partition)",
    )
    parser.add_argument(
        "--schedule",
        default=None,
        metavar="SPEC",
        help="a scripted schedule instead, e.g. kill:leader@2+3,partition:n2@8+4",
    )
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--seed", type=int, default=None, help="schedule seed (default: random)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output directory")
    parser.add_argument(
        "--bug",
        action="append",
        default=[],
        metavar="NAME",
        help="planaria only: a known-bug switch for the nodes (e.g. ack-before-replicate; "
        "read-ignores-expiry and retry-applies-again for the TTL and counter checks)",
    )
    parser.add_argument("--partitions", type=int, default=8, help="planaria partitions (default 8)")
    parser.add_argument(
        "--check-timeout-s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="bound on the linearizability check; beyond it the verdict is unknown "
        f"({DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--check-memory-mb",
        type=float,
        default=DEFAULT_MEMORY_MB,
        help="bound on the linearizability check's memory; beyond it the verdict is unknown "
        f"({DEFAULT_MEMORY_MB:g})",
    )
    parser.add_argument(
        "--net",
        choices=("auto", "netns", "iptables", "proxy"),
        default="auto",
        help="how partitions are made: network namespaces (root), iptables on loopback "
        "(root), or a fault-injecting proxy on every link (anyone; planaria only); "
        "auto: netns as root, else proxy",
    )
    parser.add_argument(
        "--snapshot-entries",
        type=int,
        default=None,
        metavar="N",
        help="planaria only: the nodes' --snapshot-entries (snapshot and compact a partition "
        "every N entries; small values force compaction every few seconds)",
    )
    parser.add_argument(
        "--snapshot-catchup-entries",
        type=int,
        default=None,
        metavar="N",
        help="planaria only: the nodes' --snapshot-catchup-entries (entries kept for backups "
        "that lag; small values make a node back from a kill need a snapshot transfer)",
    )
    parser.add_argument(
        "--counters",
        type=int,
        default=3,
        metavar="N",
        help="planaria only: N counter keys beside the registers, incremented with INCRBY "
        "and checked for increments lost or applied twice (default 3; 0: none; at most 64; "
        "other targets skip them)",
    )
    parser.add_argument(
        "--ttls",
        type=int,
        default=4,
        metavar="N",
        help="planaria only: N keys set with PX (200-2000 ms) and read, checked for reads "
        "of an expired key (default 4; 0: none; at most 64; other targets skip them)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the harness's finally blocks clean up, as on Ctrl-C


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from planaria.chaos.harness import ChaosConfig, run_chaos
    from planaria.chaos.results import compare_rows, passed
    from planaria.chaos.schedule import parse_faults, parse_schedule
    from planaria.errors import UsageError

    console = Console()
    if args.compare:
        if args.compare[0] != "compare" or len(args.compare) < 2:
            raise UsageError("usage: planaria chaos compare DIR... (or no positional arguments)")
        records = []
        for name in args.compare[1:]:
            path = Path(name) / "results.json"
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                raise UsageError(f"{path}: {exc}") from exc
        table = Table(title="planaria chaos compare")
        table.add_column("measure")
        for name in args.compare[1:]:
            table.add_column(Path(name).name, justify="right")
        for measure, cells in compare_rows(records):
            table.add_row(measure, *cells)
        # one column a run: wider than a terminal when piped, never truncated to "pl…"
        Console(width=max(console.width, 24 + 15 * len(records))).print(table)
        return 0
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    schedule = None if args.schedule is None else parse_schedule(args.schedule, nodes=args.nodes)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="planaria-chaos-"))
    config = ChaosConfig(
        out=out,
        target=args.target,
        nodes=args.nodes,
        duration_s=args.duration_s,
        faults=parse_faults(args.faults),
        clients=args.clients,
        seed=seed,
        schedule=schedule,
        bugs=tuple(args.bug),
        partitions=args.partitions,
        check_timeout_s=args.check_timeout_s,
        check_memory_mb=args.check_memory_mb,
        plots=not args.no_plots,
        net=args.net,
        snapshot_entries=args.snapshot_entries,
        snapshot_catchup_entries=args.snapshot_catchup_entries,
        counters=args.counters,
        ttls=args.ttls,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = run_chaos(config, console)
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print(f"output: {out}")
    ok = passed(results)
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1
