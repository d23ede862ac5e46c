"""``planaria sim``: run the deterministic simulator over one seed or many (I/O adapter).

Exit status: 0 when every seed passes, 1 when any seed violates a check (each failing seed
is printed with the command that replays it and the trace around the violation), 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

from planaria.errors import UsageError
from planaria.sim.client import ClientSettings
from planaria.sim.monitor import CHECK_MODES
from planaria.sim.nemesis import FAULT_KINDS, MEMBERSHIP, parse_faults
from planaria.sim.node import NodeSettings
from planaria.sim.run import SimConfig, SimResult, run_seed

__all__ = ["add_arguments", "run"]

EXIT_OK = 0
EXIT_VIOLATION = 1
BUG_NAMES = (
    "ack-before-replicate",
    "dedup-last-only",
    "ignore-data-id",
    "no-epoch-fence",
    "promote-out-of-sync",
    "no-lease-wait",
    "release-before-durable",
    "skip-truncate",
    "wiped-stays-in-sync",
    "compact-past-commit",
    "install-without-epoch-check",
    "read-ignores-expiry",
    "backup-expires-on-its-own",
)
# Switches no run is known to catch (docs/simulator.md says why): the pure tests do.
BUGS_NOT_REACHED = ("install-without-epoch-check",)
# Switches only an in-run monitor catches (``--checks all``): an expired key read from a
# primary is judged by the primary's clock, which no client sees (``expired-read``).
BUGS_MONITOR_ONLY = ("read-ignores-expiry",)
# The run stats summed over the seeds in the summary (with how many seeds saw each): what
# the snapshot machinery went through, so a sweep shows that it ran under the faults.
SNAPSHOT_STATS = (
    "snapshots_taken",
    "snapshot_crashes",
    "snapshots_torn",
    "snapshots_installed",
    "install_crashes",
    "transfers_started",
    "transfers_completed",
    "transfers_resends",
    "transfers_superseded",
    "transfers_stale_refused",
    "transfers_stale_taken",
    "stale_installs",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=int, metavar="N", help="run seeds 0..N-1 (default 1)")
    which.add_argument("--seed", type=int, metavar="S", help="run (replay) seed S only")
    parser.add_argument(
        "--first-seed", type=int, default=0, metavar="S", help="with --seeds: start at S"
    )
    parser.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        metavar="LIST",
        help=f"comma-separated fault kinds, or none (default: {','.join(FAULT_KINDS)}; "
        f"also: {MEMBERSHIP}, nodes added, drained and removed while replicas move)",
    )
    parser.add_argument("--nodes", type=int, default=5, help="nodes (default 5)")
    parser.add_argument("--partitions", type=int, default=8, help="partitions (default 8)")
    parser.add_argument("--replicas", type=int, default=3, help="replicas each (default 3)")
    parser.add_argument("--ops", type=int, default=300, help="operations per seed (default 300)")
    parser.add_argument("--clients", type=int, default=5, help="clients (default 5)")
    parser.add_argument(
        "--keys", type=int, default=SimConfig.keys, help=f"shared keys (default {SimConfig.keys})"
    )
    parser.add_argument(
        "--counters",
        type=int,
        default=SimConfig.counters,
        metavar="N",
        help="counter keys the clients also increment (INCR), checked for increments lost "
        "or applied twice (default 0: registers only)",
    )
    parser.add_argument(
        "--counter-share",
        type=float,
        default=SimConfig.counter_share,
        metavar="SHARE",
        help=f"with --counters: the share of operations that increment (default "
        f"{SimConfig.counter_share:g})",
    )
    parser.add_argument(
        "--ttls",
        type=int,
        default=SimConfig.ttls,
        metavar="N",
        help="keys the clients also set with an expiry (SET PX, PEXPIRE, PERSIST) and read: "
        "no read from a primary may return one past its expiry, and the replicas must agree "
        "on every expiry (default 0)",
    )
    parser.add_argument(
        "--lanes",
        type=int,
        default=ClientSettings.lanes,
        metavar="N",
        help=f"operations in flight per client (default {ClientSettings.lanes})",
    )
    parser.add_argument(
        "--fsync-max-ms",
        type=float,
        default=None,
        metavar="MS",
        help="a batch of persists is durable a random delay of at most MS after it was "
        f"written (default: each seed draws {NodeSettings.fsync_max_ms / 5:g} or "
        f"{NodeSettings.fsync_max_ms:g}; longer: more lost by a crash)",
    )
    parser.add_argument(
        "--checks",
        choices=CHECK_MODES,
        default="all",
        help="all: every check (default); history: only what a client sees (its history, "
        "final reads, unanswered retries, no primary) and convergence at the end",
    )
    parser.add_argument(
        "--bug",
        action="append",
        default=[],
        choices=BUG_NAMES,
        metavar="NAME",
        help=f"switch on a known bug (repeatable): {', '.join(BUG_NAMES)} (runs do not "
        f"reach {', '.join(BUGS_NOT_REACHED)}: docs/simulator.md)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="run seeds in N processes (default 1)"
    )
    parser.add_argument(
        "--trace-lines", type=int, default=40, metavar="N", help="trace lines per failing seed"
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of text")


def _configs(args: argparse.Namespace) -> list[SimConfig]:
    faults = parse_faults(args.faults)
    if args.seed is not None:
        seeds = [args.seed]
    else:
        count = 1 if args.seeds is None else args.seeds
        if count < 1:
            raise UsageError(f"--seeds must be >= 1, got {count}")
        seeds = list(range(args.first_seed, args.first_seed + count))
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    return [
        SimConfig(
            seed=seed,
            nodes=args.nodes,
            partitions=args.partitions,
            replicas=args.replicas,
            ops=args.ops,
            clients=args.clients,
            keys=args.keys,
            counters=args.counters,
            counter_share=args.counter_share,
            ttls=args.ttls,
            checks=args.checks,
            client=replace(ClientSettings(), lanes=args.lanes),
            node=NodeSettings()
            if args.fsync_max_ms is None
            else NodeSettings(fsync_max_ms=args.fsync_max_ms, fsync_max_drawn=False),
            faults=faults,
            bugs=frozenset(args.bug),
        )
        for seed in seeds
    ]


def _results(configs: list[SimConfig], jobs: int) -> Iterator[SimResult]:
    if jobs == 1 or len(configs) == 1:
        yield from map(run_seed, configs)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(run_seed, configs, chunksize=4)


def run(args: argparse.Namespace) -> int:
    configs = _configs(args)
    started = time.perf_counter()
    failed: list[SimResult] = []
    totals: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    seeds_with: Counter[str] = Counter()
    with _ProgressBar(len(configs)) as advance:
        for result in _results(configs, args.jobs):
            totals["seeds"] += 1
            totals["operations"] += result.operations
            totals["ok"] += result.ok_operations
            totals["info"] += result.info_operations
            faults.update(result.faults)
            for name in SNAPSHOT_STATS:
                count = int(result.stats.get(name, 0))
                stats[name] += count
                seeds_with[name] += count > 0
            if not result.passed:
                failed.append(result)
                _print_failure(result, args)
            elif args.json and len(configs) == 1:
                print(json.dumps(result.summary(), sort_keys=True))
            advance(not result.passed)
    elapsed_s = time.perf_counter() - started
    summary = {
        "seeds": totals["seeds"],
        "operations": totals["operations"],
        "ok": totals["ok"],
        "info": totals["info"],
        "faults": dict(sorted(faults.items())),
        "faults_total": sum(faults.values()),
        "violations": len(failed),
        "failed_seeds": [r.seed for r in failed],
        # name -> [total, seeds with any]
        "snapshot_stats": {name: [stats[name], seeds_with[name]] for name in SNAPSHOT_STATS},
        "elapsed_s": round(elapsed_s, 3),
    }
    if args.json:
        print(json.dumps({"summary": summary}, sort_keys=True))
    else:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(faults.items()))
        shown = ", ".join(
            f"{name} {stats[name]} ({seeds_with[name]} seeds)"
            for name in SNAPSHOT_STATS
            if stats[name]
        )
        # One line: what the snapshot machinery went through, when anything.
        print(
            f"sim: {summary['seeds']} seeds, {summary['operations']} operations "
            f"({summary['ok']} ok, {summary['info']} unknown), {summary['faults_total']} faults "
            f"injected ({kinds or 'none'}), {len(failed)} violations, {elapsed_s:.1f} s"
            + (f"; snapshots: {shown}" if shown else "")
        )
    return EXIT_VIOLATION if failed else EXIT_OK


def _print_failure(result: SimResult, args: argparse.Namespace) -> None:
    if args.json:
        payload = result.summary()
        payload["trace"] = result.trace[-args.trace_lines :]
        print(json.dumps(payload, sort_keys=True))
        return
    print(f"seed {result.seed} FAILED {result.check}: {result.detail}")
    print(f"  replay: {result.command}")
    print("  trace (last events before the violation):")
    for line in result.trace[-args.trace_lines :]:
        print(f"    {line}")


class _ProgressBar:
    """A rich progress bar on stderr over the seeds, only for many seeds on a TTY."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._bar: Any = None

    def __enter__(self) -> Callable[[bool], None]:
        if self.total < 2 or not sys.stderr.isatty():
            return lambda failed: None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task("seeds", total=self.total)
        failures = [0]

        def advance(failed: bool) -> None:
            failures[0] += failed
            self._bar.update(task, advance=1, description=f"seeds ({failures[0]} failed)")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
