"""Ports and processes: which ports a cluster takes, and :class:`Supervisor`, which starts
the ``planaria`` processes, tells whether one is alive or paused, and stops them.

Ports: node ``i`` (from 1) serves RESP on ``base_port + i - 1`` and replication on that port
plus 10,000 (Redis Cluster's bus convention); the coordinator listens on
``coordinator_port`` (default 7000, or ``base_port - 1`` for a base port other than 7001).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from planaria.cluster._errors import ClusterError, PortInUse
from planaria.cluster._state import Process

__all__ = [
    "BUS_PORT_OFFSET",
    "CLI_MODULE",
    "DEFAULT_BASE_PORT",
    "DEFAULT_COORDINATOR_PORT",
    "Supervisor",
    "free_base_port",
]

BUS_PORT_OFFSET: Final = 10_000
DEFAULT_BASE_PORT: Final = 7001
DEFAULT_COORDINATOR_PORT: Final = 7000
CLI_MODULE: Final = "planaria.cli"  # what the processes run: python -m <this> coordinator|node
_LOG_TAIL_LINES: Final = 15
_POLL_S: Final = 0.05


def _port_free(host: str, port: int) -> bool:
    # SO_REUSEADDR as asyncio servers set it: a port in TIME_WAIT is usable, a listener's not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            # Not an address of this network namespace (a node started in another one, say):
            # nothing here can tell, so the node's own bind will.
            return exc.errno == errno.EADDRNOTAVAIL
    return True


def _cluster_ports(base_port: int, nodes: int, coordinator_port: int) -> list[tuple[int, str]]:
    ports = [(coordinator_port, "coordinator")]
    for i in range(nodes):
        ports.append((base_port + i, f"node n{i + 1}"))
        ports.append((base_port + i + BUS_PORT_OFFSET, f"node n{i + 1} replication bus"))
    return ports


def free_base_port(nodes: int, host: str = "127.0.0.1") -> int:
    """A base port such that ``base - 1`` (the coordinator), the nodes' ports and their bus
    ports are all free now (for tests and the demo, which must not collide with a cluster
    the user runs on the default ports). Nodes get ports in 20001..22767, so their bus ports
    stay below Linux's ephemeral range (32768 and up), where outgoing connections could take
    them; the search starts at a random port, and the ports it gives are noted for a while
    (``_PortNotes``) so that a launcher beside it (another test worker) that searches before
    they are bound does not take them too."""
    low, high = 20_001, 32_768 - BUS_PORT_OFFSET
    span = high - low
    offset = random.Random().randrange(span)
    with _PortNotes() as noted:
        for step in range(0, span, nodes + 7):
            base = low + (offset + step) % span
            ports = [port for port, _ in _cluster_ports(base, nodes, base - 1)]
            if not noted.taken(ports) and all(_port_free(host, port) for port in ports):
                noted.take(ports)
                return base
    raise ClusterError(f"no {2 * nodes + 1} free ports found on {host}")


_NOTED_S = 60.0


class _PortNotes:
    """Ports ``free_base_port`` gave lately, in a file every launcher on this machine shares
    (under an exclusive lock while one searches): given, a port stays taken for
    ``_NOTED_S``, time enough for its cluster to bind it (two test workers searching at
    once both found the same free ports, and one cluster's start failed)."""

    _PATH: Final = Path(tempfile.gettempdir()) / "planaria-ports-given"

    def __enter__(self) -> _PortNotes:
        self._file = open(self._PATH, "a+")  # closed (and unlocked) in __exit__
        fcntl.flock(self._file, fcntl.LOCK_EX)
        self._file.seek(0)
        now = time.time()
        self._given: dict[int, float] = {}
        for line in self._file.read().splitlines():
            port, _, at = line.partition(" ")
            with contextlib.suppress(ValueError):  # a line cut short: that note is lost
                if now - float(at) < _NOTED_S:
                    self._given[int(port)] = float(at)
        return self

    def taken(self, ports: Sequence[int]) -> bool:
        return any(port in self._given for port in ports)

    def take(self, ports: Sequence[int]) -> None:
        now = time.time()
        self._given.update(dict.fromkeys(ports, now))
        self._file.seek(0)
        self._file.truncate()
        self._file.write("".join(f"{port} {at}\n" for port, at in self._given.items()))
        self._file.flush()

    def __exit__(self, *exc: object) -> None:
        self._file.close()  # the lock goes with it


def _proc_state(pid: int) -> str | None:
    """The process state letter from /proc (R, S, T, Z, ...), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: the state follows the last ')'.
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0]


def _is_ours(pid: int) -> bool:
    """Whether ``pid`` runs the planaria CLI (and is not another process that reused a
    recorded pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return CLI_MODULE.encode() in cmdline


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"


class Supervisor:
    """The cluster's processes, run as ``sys.executable -m planaria.cli ...`` with ``data_dir``
    as their working directory and their output appended to their log there. It knows the
    children it started (and reaps them); a recorded pid of another launcher's process counts
    as alive only while /proc says it still runs the planaria CLI."""

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self._env = dict(env) if env is not None else None
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def alive(self, pid: int | None) -> bool:
        if pid is None:
            return False
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None  # also reaps it, so a dead child is no zombie
        state = _proc_state(pid)
        return state is not None and state not in ("Z", "X") and _is_ours(pid)

    def paused(self, pid: int | None) -> bool:
        return pid is not None and self.alive(pid) and _proc_state(pid) == "T"

    def log_tail(self, process: Process, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` of ``process``'s log, for an error message."""
        return _tail(self.data_dir / process.log, lines)

    def spawn(self, process: Process, argv: Sequence[str]) -> Process:
        """Start ``planaria <argv>`` for ``process``; returns it with its pid."""
        log_path = self.data_dir / process.log
        log_path.parent.mkdir(parents=True, exist_ok=True)
        (self.data_dir / process.data).mkdir(parents=True, exist_ok=True)
        env = dict(os.environ if self._env is None else self._env)
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} planaria {' '.join(argv)}\n".encode())
            log.flush()
            child = subprocess.Popen(
                [*process.prefix, sys.executable, "-m", CLI_MODULE, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=env,
                # Its own session: Ctrl-C in the terminal reaches the launcher only, which
                # then stops every process in order.
                start_new_session=True,
            )
        self._children[child.pid] = child
        return replace(process, pid=child.pid)

    @staticmethod
    def check_ports(processes: Sequence[Process]) -> None:
        """``PortInUse`` unless every port of ``processes`` (a node's bus port too) is free."""
        for process in processes:
            ports = [(process.port, process.name)]
            if process.name != "coordinator":
                ports.append((process.port + BUS_PORT_OFFSET, f"{process.name} replication bus"))
            for port, what in ports:
                if not _port_free(process.host, port):
                    raise PortInUse(port, process.host, what)

    def wait_listening(self, process: Process, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive(process.pid):
                raise self.died(process, "while starting")
            try:
                with socket.create_connection((process.host, process.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"{process.name} (pid {process.pid}) did not listen on {process.address} "
                    f"within {timeout_s:g} s; last lines of {self.data_dir / process.log}:\n"
                    + self.log_tail(process)
                )
            time.sleep(_POLL_S)

    def died(self, process: Process, when: str) -> ClusterError:
        """The error for ``process`` found dead ``when``, with its exit code and log."""
        child = self._children.get(process.pid or -1)
        code = (
            "" if child is None or child.returncode is None else f", exit code {child.returncode}"
        )
        return ClusterError(
            f"{process.name} (pid {process.pid}{code}) died {when}; last lines of "
            f"{self.data_dir / process.log}:\n{self.log_tail(process)}"
        )

    def signal(self, pid: int, sig: int) -> None:
        """Send ``sig`` to ``pid``; after SIGKILL, wait (bounded) until it is gone."""
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            self._wait_gone(pid, 5.0)

    def terminate(self, processes: Sequence[Process], timeout_s: float) -> None:
        """SIGTERM (and SIGCONT, so a paused one sees it), then wait; SIGKILL after
        ``timeout_s``."""
        pids = [p.pid for p in processes if p.pid is not None and self.alive(p.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + timeout_s
        for pid in pids:
            if not self._wait_gone(pid, max(0.0, deadline - time.monotonic())):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_gone(pid, 5.0)

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        self._children.pop(pid, None)
        return True
