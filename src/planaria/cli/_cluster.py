"""``planaria up``, ``down``, ``status`` and ``node start|stop|kill|add|drain|remove``: a
local cluster from the command line (see :mod:`planaria.cluster`; membership changes:
docs/membership.md).

Each command has ``add_<name>_arguments(parser)`` and ``run_<name>(args) -> int``; cli/_main.py
wires them. :func:`render_status` is the rich view that ``up`` refreshes and ``status``
prints once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from planaria.cluster import (
    DEFAULT_BASE_PORT,
    ClusterStatus,
    LocalCluster,
    NoCluster,
    PartitionStatus,
    status_from_seed,
)
from planaria.errors import UsageError
from planaria.node import write_cluster_metadata

__all__ = [
    "DEFAULT_DATA_DIR",
    "add_down_arguments",
    "add_node_control_arguments",
    "add_status_arguments",
    "add_up_arguments",
    "follow_moves",
    "missing_run_options",
    "positive_int",
    "render_status",
    "run_down",
    "run_node_control",
    "run_status",
    "run_up",
]

DEFAULT_DATA_DIR = "planaria-data"
NODE_ACTIONS = ("start", "stop", "kill", "add", "drain", "remove")
_MOVES_TIMEOUT_S = 600.0
_SIGNALS = {"KILL": signal.SIGKILL, "STOP": signal.SIGSTOP, "CONT": signal.SIGCONT}
_REFRESH_S = 0.5


def _add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"the cluster's data directory (default ./{DEFAULT_DATA_DIR})",
    )


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# --- up -----------------------------------------------------------------------------------


_RECORDED = "; a stopped cluster's DIR: what it recorded"


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nodes", type=positive_int, default=None, help=f"node processes (default 3{_RECORDED})"
    )
    parser.add_argument(
        "--partitions",
        type=positive_int,
        default=None,
        help=f"partitions, fixed at creation (default 64{_RECORDED})",
    )
    parser.add_argument(
        "--replicas",
        type=positive_int,
        default=None,
        help=f"replicas per partition (default 3{_RECORDED})",
    )
    _add_data(parser)
    parser.add_argument(
        "--port",
        type=positive_int,
        default=None,
        help="RESP port of the first node; the next nodes count up (default "
        f"{DEFAULT_BASE_PORT}{_RECORDED})",
    )
    parser.add_argument(
        "--coordinator-port",
        type=positive_int,
        default=None,
        help=f"the coordinator's port (default 7000, or PORT - 1 for another --port{_RECORDED})",
    )
    parser.add_argument(
        "--coordinator",
        default=None,
        metavar="URL",
        help="use this coordinator instead of starting one: zk://H1:2181,H2:2181/CHROOT, "
        "etcd://H1:2379,H2:2379/NAMESPACE or planaria://HOST:PORT",
    )
    parser.add_argument(
        "--fsync", choices=("always", "interval", "never"), default=None, help="nodes' fsync policy"
    )
    parser.add_argument(
        "--detach", action="store_true", help="return once the cluster serves; stop it with down"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the cluster to serve"
    )


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM to the launcher stops the cluster as Ctrl-C does."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` instead of raising: raised in the middle of the live
    status (a state-file lock, rich's own locks), the interrupt could leave the launcher
    stuck before it stopped anything (seen under load: ``planaria up`` alive 90 s after
    SIGINT)."""

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _up_options(args: argparse.Namespace) -> dict[str, Any]:
    """``LocalCluster`` options: those given, else what a stopped cluster in ``--data``
    recorded (a restarted or restored cluster keeps its shape), else the defaults."""
    try:
        recorded: LocalCluster | None = LocalCluster.open(args.data)
    except NoCluster:
        recorded = None
    options: dict[str, Any] = {
        "nodes": args.nodes,
        "partitions": args.partitions,
        "replicas": args.replicas,
        "base_port": args.port,
        "coordinator_port": args.coordinator_port,
        "coordinator_url": args.coordinator,
    }
    if recorded is not None:
        found = {
            "nodes": len(recorded.node_ids),
            "partitions": recorded.partitions,
            "replicas": recorded.replicas,
            "base_port": recorded.base_port,
            "coordinator_port": recorded.coordinator_port,
            "coordinator_url": recorded.coordinator_url if recorded.external_coordinator else None,
        }
        options = {name: found[name] if value is None else value for name, value in options.items()}
        if options["replicas"] == recorded.replicas:
            options["min_insync"] = recorded.min_insync
    defaults = {"nodes": 3, "partitions": 64, "replicas": 3, "base_port": DEFAULT_BASE_PORT}
    return {name: defaults.get(name) if value is None else value for name, value in options.items()}


def run_up(args: argparse.Namespace) -> int:
    console = Console()
    options = _up_options(args)
    cluster = LocalCluster(args.data, fsync=args.fsync, **options)
    nodes, partitions, replicas = options["nodes"], options["partitions"], options["replicas"]
    what = f"{nodes} nodes on {args.coordinator}" if args.coordinator else (
        f"a coordinator and {nodes} nodes"
    )  # fmt: skip
    with _sigterm_as_interrupt():
        try:
            with console.status(f"starting {what} in {cluster.data_dir} ..."):
                started = time.monotonic()
                cluster.start(timeout_s=args.timeout)
            console.print(
                f"[bold green]cluster serving[/] after {time.monotonic() - started:.1f} s: "
                f"{partitions} partitions x {replicas} replicas on {nodes} nodes"
            )
            _print_addresses(console, cluster)
            if args.detach:
                console.print(f"stop it with: planaria down --data {cluster.data_dir}")
                return 0
            console.print("[dim]live status below; Ctrl-C stops the cluster[/]")
            stop = threading.Event()
            with _signals_set(stop), Live(console=console, refresh_per_second=4) as live:
                while not stop.is_set():
                    live.update(render_status(cluster.status(), compact=True))
                    stop.wait(_REFRESH_S)
            console.print("stopping the cluster ...")
            cluster.stop()
            console.print("[bold]stopped[/]")
            return 130
        except KeyboardInterrupt:
            console.print("stopping the cluster ...")
            cluster.stop()
            console.print("[bold]stopped[/]")
            return 130
    return 0


def _print_addresses(console: Console, cluster: LocalCluster) -> None:
    console.print(f"  coordinator  {cluster.coordinator_url}")
    for node_id, address in cluster.addresses.items():
        console.print(f"  {node_id:<12} {address}   (redis-cli -c -p {address.rsplit(':', 1)[1]})")
    console.print(f"  data         {cluster.data_dir}")


# --- down ---------------------------------------------------------------------------------


def add_down_arguments(parser: argparse.ArgumentParser) -> None:
    _add_data(parser)


def run_down(args: argparse.Namespace) -> int:
    cluster = LocalCluster.open(args.data)
    cluster.stop()
    print(f"stopped the cluster in {cluster.data_dir}")
    return 0


# --- init ---------------------------------------------------------------------------------


def add_init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coordinator", required=True, metavar="URL", help="zk://..., etcd://... or planaria://"
    )
    parser.add_argument(
        "--nodes",
        required=True,
        metavar="ID,ID,...",
        help="the ids of the first nodes (each started with planaria node --id ID)",
    )
    parser.add_argument(
        "--partitions", type=positive_int, default=64, help="partitions, fixed for good (64)"
    )
    parser.add_argument("--replicas", type=positive_int, default=3, help="replicas (3)")
    parser.add_argument(
        "--min-insync", type=positive_int, default=None, help="default min(2, replicas)"
    )
    parser.add_argument(
        "--first-epoch",
        type=positive_int,
        default=1,
        help="the epoch of the first configs (default 1; for the node directories of a "
        "restored backup: the first_epoch in the cluster.json planaria restore wrote)",
    )


def run_init(args: argparse.Namespace) -> int:
    """Write a new cluster's shape to its coordinator (once; the same shape again is fine)."""
    nodes = [node.strip() for node in args.nodes.split(",") if node.strip()]
    if not nodes:
        raise UsageError("--nodes needs at least one node id")
    if args.replicas > len(nodes):
        raise UsageError(f"{args.replicas} replicas need at least as many nodes, not {nodes}")
    min_insync = args.min_insync if args.min_insync is not None else min(2, args.replicas)
    if min_insync > args.replicas:
        raise UsageError(f"--min-insync {min_insync} > --replicas {args.replicas}")
    metadata = asyncio.run(
        write_cluster_metadata(
            args.coordinator,
            partitions=args.partitions,
            replicas=args.replicas,
            min_insync=min_insync,
            nodes=nodes,
            first_epoch=args.first_epoch,
        )
    )
    print(
        f"cluster at {args.coordinator}: {metadata.partitions} partitions, "
        f"{metadata.replicas} replicas, min in-sync {metadata.min_insync}, "
        f"nodes {', '.join(metadata.nodes)}"
        + (f", first epoch {metadata.first_epoch}" if metadata.first_epoch != 1 else "")
    )
    return 0


# --- node start|stop|kill -----------------------------------------------------------------


def add_node_control_arguments(parser: argparse.ArgumentParser) -> None:
    """``planaria node start|stop|kill ID [--data DIR] [--signal S]`` as sub-commands of the
    ``node`` parser, beside the options of ``planaria node --id ...`` (run a node process),
    which stay on the parser itself: ``args.node_action`` is None for that one."""
    actions = parser.add_subparsers(dest="node_action", metavar="{" + ",".join(NODE_ACTIONS) + "}")
    helps = {
        "start": "start a stopped node of a local cluster from its data directory",
        "stop": "stop a node of a local cluster cleanly (SIGTERM)",
        "kill": "send a node of a local cluster a signal (default KILL: a crash)",
        "add": "start a new node and move its share of the replicas to it",
        "drain": "move every replica away from a node (it stays up; then remove it)",
        "remove": "drain a node, wait until it holds nothing, stop and forget it",
    }
    for action in NODE_ACTIONS:
        sub = actions.add_parser(action, help=helps[action], description=helps[action])
        if action != "add":
            sub.add_argument("node_id", metavar="ID", help="the node, e.g. n2")
        _add_data(sub)
        if action == "add":
            sub.add_argument(
                "--weight", type=float, default=1.0, help="relative capacity (default 1)"
            )
            sub.add_argument("--zone", default=None, help="failure zone (replicas avoid sharing)")
        if action in ("add", "drain", "remove"):
            sub.add_argument(
                "--no-wait",
                action="store_true",
                help="return at once instead of following the moves"
                if action != "remove"
                else argparse.SUPPRESS,
            )
            sub.add_argument(
                "--timeout",
                type=float,
                default=_MOVES_TIMEOUT_S,
                metavar="S",
                help=f"give up following the moves after S seconds (default {_MOVES_TIMEOUT_S:g})",
            )
        if action == "kill":
            sub.add_argument(
                "--signal",
                choices=tuple(_SIGNALS),
                default="KILL",
                help="KILL (a crash, default), STOP (a pause) or CONT (resume)",
            )
    # ``planaria node kill n1`` carries none of the run options: none may be required.
    required = [a for a in parser._actions if a.required and a.option_strings]
    for option in required:
        option.required = False
    parser.set_defaults(node_required_options=[a.dest for a in required])


def missing_run_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fail as argparse would when ``planaria node`` (run) lacks an option it requires."""
    missing = [
        "/".join(a.option_strings)
        for a in parser._actions
        if a.dest in getattr(args, "node_required_options", ()) and getattr(args, a.dest) is None
    ]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")


def run_node_control(args: argparse.Namespace) -> int:
    cluster = LocalCluster.open(args.data)
    if args.node_action == "start":
        cluster.start(args.node_id)
        print(f"started {args.node_id} (pid {cluster.pid(args.node_id)})")
    elif args.node_action == "stop":
        cluster.stop_node(args.node_id)
        print(f"stopped {args.node_id}")
    elif args.node_action == "kill":
        pid = cluster.pid(args.node_id)
        cluster.kill(args.node_id, _SIGNALS[args.signal])
        print(f"sent SIG{args.signal} to {args.node_id} (pid {pid})")
    elif args.node_action == "add":
        node_id = cluster.add_node(weight=args.weight, zone=args.zone)
        print(f"started {node_id} (pid {cluster.pid(node_id)}); it joins as a member")
        if not args.no_wait:
            return follow_moves(cluster, f"moving replicas to {node_id}", None, args.timeout)
    elif args.node_action in ("drain", "remove"):
        cluster.drain(args.node_id)
        print(f"{args.node_id} drains: its replicas move to the other nodes")
        if args.node_action == "drain" and args.no_wait:
            return 0
        code = follow_moves(cluster, f"draining {args.node_id}", args.node_id, args.timeout)
        if code != 0 or args.node_action == "drain":
            return code
        cluster.remove_node(args.node_id)
        print(f"removed {args.node_id} (stopped; its data directory is kept)")
    else:
        raise UsageError(f"unknown node action {args.node_action!r}")
    return 0


def follow_moves(cluster: LocalCluster, what: str, draining: str | None, timeout_s: float) -> int:
    """A progress bar (replicas moved of those to move, with an ETA) until the moves are
    done: every replica in place, or with ``draining``, that node holds nothing. 1 after
    ``timeout_s`` (the moves go on in the background)."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("replicas"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    deadline = time.monotonic() + timeout_s
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(what, total=None)
        total = 0
        while True:
            state = cluster.move_progress()
            if state is not None:
                left = state.remaining + len(state.moving)
                if draining is not None:
                    left = state.held.get(draining, 0)
                total = max(total, left)
                progress.update(task, total=total, completed=total - left)
                if (draining is None and state.done) or (draining is not None and left == 0):
                    return 0
            if time.monotonic() >= deadline:
                progress.console.print(
                    f"[yellow]still moving after {timeout_s:g} s; see planaria status[/]"
                )
                return 1
            time.sleep(_REFRESH_S)


# --- status -------------------------------------------------------------------------------


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help=f"a local cluster's data directory (default ./{DEFAULT_DATA_DIR})",
    )
    where.add_argument("--seed", metavar="HOST:PORT", help="any node of a running cluster")
    parser.add_argument("--json", action="store_true", help="print JSON: nodes and partitions")


def run_status(args: argparse.Namespace) -> int:
    if args.seed is not None:
        status = status_from_seed(args.seed)
    else:
        status = LocalCluster.open(args.data or DEFAULT_DATA_DIR).status()
    if args.json:
        json.dump(status.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        Console().print(render_status(status, compact=False))
    return 0


def _partition_table(partitions: Sequence[PartitionStatus]) -> Table:
    table = Table(title="partitions")
    for column in ("id", "slots", "primary", "replicas", "isr", "epoch", "lag"):
        table.add_column(column)
    for p in partitions:
        table.add_row(
            str(p.id),
            f"{p.slots[0]}-{p.slots[1]}",
            p.primary or "[red]none[/]",
            " ".join(p.replicas),
            " ".join(p.isr),
            str(p.epoch),
            "?" if p.lag is None else str(p.lag),
        )
    return table


def _troubles(partitions: Sequence[PartitionStatus]) -> Table:
    """Unhealthy partitions grouped by what is wrong (one row per primary and set of
    replicas out of the ISR), so the live view fits a terminal even when a node is down."""
    groups: dict[tuple[str, tuple[str, ...]], list[PartitionStatus]] = {}
    for p in partitions:
        outside = tuple(r for r in p.replicas if r not in p.isr)
        groups.setdefault((p.primary or "", outside), []).append(p)
    table = Table(title="partitions needing attention", title_justify="left")
    for column in ("partitions", "primary", "out of the ISR", "max lag", "epochs"):
        table.add_column(column)
    for (primary, outside), members in sorted(groups.items()):
        ids = [str(p.id) for p in members]
        shown = " ".join(ids[:12]) + (f" ... ({len(ids)})" if len(ids) > 12 else "")
        lags = [p.lag for p in members if p.lag is not None]
        epochs = sorted({p.epoch for p in members})
        table.add_row(
            shown,
            primary or "[red]none[/]",
            " ".join(outside) or "-",
            str(max(lags)) if lags else "?",
            f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}",
        )
    return table


def _moves_table(partitions: Sequence[PartitionStatus]) -> Table:
    """Partitions with a membership move under way: who is learning, who hands over."""
    table = Table(title="moves under way", title_justify="left")
    for column in ("partition", "primary", "learning", "caught up", "handoff to"):
        table.add_column(column)
    for p in partitions:
        table.add_row(
            str(p.id),
            p.primary or "[red]none[/]",
            " ".join(p.learners) or "-",
            " ".join(n for n in p.learners if n in p.isr) or "-",
            p.handoff or "-",
        )
    return table


def _healthy(partition: PartitionStatus) -> bool:
    return partition.primary is not None and len(partition.isr) == len(partition.replicas)


def render_status(status: ClusterStatus, *, compact: bool) -> RenderableType:
    """Nodes and partitions as rich tables. ``compact`` (the live view) shows only the
    partitions that are not healthy (no primary, or a replica out of the ISR), grouped."""
    nodes = Table(title="nodes", title_justify="left")
    for column in ("id", "address", "pid", "state", "primary of", "in ISR of"):
        nodes.add_column(column)
    primaries = status.primary_counts()
    for node in status.nodes:
        if node.paused:
            state = "[yellow]paused[/]"
        elif node.alive:
            state = "[green]up[/]" if node.registered is not False else "[yellow]unregistered[/]"
        else:
            state = "[red]down[/]"
        in_isr = sum(node.id in p.isr for p in status.partitions)
        nodes.add_row(
            node.id,
            node.address,
            str(node.pid or "-"),
            state,
            str(primaries.get(node.id, 0)),
            str(in_isr),
        )
    healthy = sum(_healthy(p) for p in status.partitions)
    lags = [p.lag for p in status.partitions if p.lag is not None]
    summary = Text(
        f"{healthy}/{len(status.partitions)} partitions healthy (a primary and every replica "
        "in the ISR)" + (f"; largest lag {max(lags)} entries" if lags else ""),
        style="green" if healthy == len(status.partitions) else "yellow",
    )
    parts: list[RenderableType] = [nodes, summary]
    moving = [p for p in status.partitions if p.learners or p.handoff]
    if moving:
        parts.append(_moves_table(moving))
    if compact:
        troubled = [p for p in status.partitions if not _healthy(p)]
        if troubled:
            parts.append(_troubles(troubled))
    else:
        parts.append(_partition_table(status.partitions))
    parts += [Text(f"! {error}", style="red") for error in status.errors]
    return Group(*parts)
