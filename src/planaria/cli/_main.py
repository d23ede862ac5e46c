"""The ``planaria`` command: wiring only. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from planaria import __version__
from planaria.errors import PlanariaError, UsageError

Runner = Callable[[argparse.Namespace], int]


def _demo(parser: argparse.ArgumentParser) -> Runner:
    from planaria.cli import _demo as demo

    demo.add_arguments(parser)
    return demo.run


def _check(parser: argparse.ArgumentParser) -> Runner:
    from planaria.cli import _check as check_cli

    check_cli.add_arguments(parser)
    return check_cli.run


def _sim(parser: argparse.ArgumentParser) -> Runner:
    from planaria.cli import _sim as sim_cli

    sim_cli.add_arguments(parser)
    return sim_cli.run


def _coordinator(parser: argparse.ArgumentParser) -> Runner:
    from planaria.cli import _coord as coord_cli

    coord_cli.add_arguments(parser)
    return coord_cli.run


def _chaos(parser: argparse.ArgumentParser) -> Runner:
    from planaria.cli import _chaos as chaos_cli

    chaos_cli.add_arguments(parser)
    return chaos_cli.run


def _up(parser: argparse.ArgumentParser) -> Runner:
    from planaria.cli import _cluster as cluster_cli

    cluster_cli.add_up_arguments(parser)
    return cluster_cli.run_up


def _down(parser: argparse.ArgumentParser) -> Runner:
    from planaria.cli import _cluster as cluster_cli

    cluster_cli.add_down_arguments(parser)
    return cluster_cli.run_down


def _status(parser: argparse.ArgumentParser) -> Runner:
    from planaria.cli import _cluster as cluster_cli

    cluster_cli.add_status_arguments(parser)
    return cluster_cli.run_status


def _init(parser: argparse.ArgumentParser) -> Runner:
    from planaria.cli import _cluster as cluster_cli

    cluster_cli.add_init_arguments(parser)
    return cluster_cli.run_init


def _backup(parser: argparse.ArgumentParser) -> Runner:
    from planaria.cli import _backup as backup_cli

    backup_cli.add_backup_arguments(parser)
    return backup_cli.run_backup


def _restore(parser: argparse.ArgumentParser) -> Runner:
    from planaria.cli import _backup as backup_cli

    backup_cli.add_restore_arguments(parser)
    return backup_cli.run_restore


def _node(parser: argparse.ArgumentParser) -> Runner:
    from planaria.cli import _cluster as cluster_cli
    from planaria.cli import _node as node_cli

    # ``planaria node --id ...`` runs a node; ``planaria node start|stop|kill ID`` manages one.
    node_cli.add_arguments(parser)
    cluster_cli.add_node_control_arguments(parser)

    def run(args: argparse.Namespace) -> int:
        if args.node_action is not None:
            return cluster_cli.run_node_control(args)
        cluster_cli.missing_run_options(parser, args)
        return node_cli.run(args)

    return run


# name -> (help, builder); the builder adds the subcommand's arguments and returns its runner.
_SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Runner]]] = {
    "demo": ("watch the fault-recovery toolkit at work", _demo),
    "check": ("check histories for linearizability and lost writes", _check),
    "sim": ("run the deterministic fault simulator over seeds", _sim),
    "node": ("run one planaria node (RESP server, replicas, controller candidate)", _node),
    "coordinator": ("run the embedded coordinator (sessions, configs, elections)", _coordinator),
    "init": ("write a new cluster's shape to its coordinator (one node per machine)", _init),
    "up": ("start a local cluster: a coordinator and nodes on loopback", _up),
    "down": ("stop the local cluster in a data directory", _down),
    "status": ("nodes and partitions of a cluster", _status),
    "backup": ("copy every partition's committed state to a directory, or --verify one", _backup),
    "restore": ("lay out a new local cluster from a backup (then: planaria up)", _restore),
    "chaos": ("chaos-test a cluster of real processes (planaria, redis-sentinel, etcd)", _chaos),
}


def build_parser(
    argv: Sequence[str] | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, Runner]]:
    """The parser and the runners of the subcommands. Given ``argv`` that names a
    subcommand, only that one's arguments are built: building one imports its module, and
    importing them all (the simulator, the chaos harness...) made every start of a node
    about half a second slower (docs/BENCHMARKS.md, restart)."""
    parser = argparse.ArgumentParser(
        prog="planaria",
        description="A self-healing, sharded, replicated key-value store and its toolkit.",
    )
    parser.add_argument("--version", action="version", version=f"planaria {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen_subcommand(argv)
    runners: dict[str, Runner] = {}
    for name, (help_text, builder) in _SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if chosen is None or name == chosen:
            runners[name] = builder(sub_parser)
    return parser, runners


def _chosen_subcommand(argv: Sequence[str] | None) -> str | None:
    """The subcommand ``argv`` runs, if it names one before any other word (the top level
    takes only options without values: ``--version``, ``--help``)."""
    words = [word for word in (argv or ()) if not word.startswith("-")]
    if words and words[0] in _SUBCOMMANDS:
        return words[0]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser, runners = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return runners[args.command](args)
    except UsageError as error:
        print(f"planaria {args.command}: {error}", file=sys.stderr)
        return 2
    except PlanariaError as error:
        print(f"planaria {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`planaria sim | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
