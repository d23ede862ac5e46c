"""``planaria coordinator --listen HOST:PORT [--data DIR]``: run the embedded coordinator
until SIGTERM or SIGINT (then stop cleanly: connections closed, the journal closed)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from planaria import _loop
from planaria.address import parse_address
from planaria.coord.server import DEFAULT_PORT, CoordinatorServer, ServerLimits
from planaria.errors import UsageError

__all__ = ["add_arguments", "parse_listen", "run"]

log = logging.getLogger("planaria.coord")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``: on 127.0.0.1, or ``HOST``: on the default port) ->
    (host, port); UsageError if malformed."""
    if text.startswith(":"):
        text = "127.0.0.1" + text
    return parse_address(text, what="--listen", listen=True, default_port=DEFAULT_PORT)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default=f"127.0.0.1:{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help=f"address to serve on (default 127.0.0.1:{DEFAULT_PORT}; port 0 picks one)",
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="persist keys and sessions here (journal + snapshot); none: in memory only",
    )
    parser.add_argument(
        "--connections-max", type=int, default=ServerLimits().connections_max, metavar="N"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def run(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    if args.connections_max < 1:
        raise UsageError("--connections-max must be >= 1")
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    limits = ServerLimits(connections_max=args.connections_max)
    server = CoordinatorServer(host, port, data_dir=args.data, limits=limits)
    _loop.run(_serve(server, args.data))
    return 0


async def _serve(server: CoordinatorServer, data_dir: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    where = f"data in {data_dir}" if data_dir else "no --data: state is lost on exit"
    # One line on stdout for launchers to wait for (the port is real even with :0).
    print(f"planaria coordinator listening on planaria://{server.address} ({where})", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await server.stop()
