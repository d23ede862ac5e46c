"""Real processes on loopback: ``planaria coordinator`` and ``planaria node`` children."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from planaria.node import write_cluster_metadata

BUS_OFFSET = 10_000
CLI = ("-m", "planaria.cli")
# A node whose event loop a test can wedge: SIGUSR1 runs a handler on the loop's thread that
# blocks it, as a C call that never returns would; the node's other threads run on.
WEDGEABLE_CLI = (
    "-c",
    "import signal, sys, time; signal.signal(signal.SIGUSR1, lambda *_: time.sleep(3600)); "
    "from planaria.cli import main; sys.exit(main(sys.argv[1:]))",
)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` ports p, each with p + 10000 free too (the node's bus). Both stay below
    Linux's ephemeral range (32768+), so no outgoing connection takes one meanwhile."""
    rng = random.Random()
    found: list[int] = []
    while len(found) < count:
        port = rng.randrange(12_000, 22_000)
        if port not in found and _free(port) and _free(port + BUS_OFFSET):
            found.append(port)
    return found


class ProcCluster:
    def __init__(
        self, root: Path, *, nodes: int = 3, partitions: int = 8, fsync: str = "always"
    ) -> None:
        self.root = root
        self.names = [f"n{i + 1}" for i in range(nodes)]
        self.partitions = partitions
        self.fsync = fsync
        coordinator_port, *node_ports = free_ports(nodes + 1)
        self.coordinator_url = f"planaria://127.0.0.1:{coordinator_port}"
        self.coordinator_port = coordinator_port
        self.ports = dict(zip(self.names, node_ports, strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.launchers: dict[str, tuple[str, ...]] = {}  # name -> python args, default CLI
        self.node_args: dict[str, list[str]] = {}  # name -> more `planaria node` options

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (the child owns it)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.procs[name] = subprocess.Popen(
            [sys.executable, *self.launchers.get(name, CLI), *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()

    def start_coordinator(self) -> None:
        self._spawn(
            "coordinator",
            [
                "coordinator",
                "--listen",
                f"127.0.0.1:{self.coordinator_port}",
                "--data",
                str(self.root / "coordinator"),
            ],
        )
        wait_listening(self.coordinator_port, 10.0)

    def start_node(self, name: str) -> None:
        self._spawn(
            name,
            [
                "node", "--id", name, "--listen", self.address(name), "--coordinator",
                self.coordinator_url, "--data", str(self.root / name), "--fsync", self.fsync,
                *self.node_args.get(name, []),
            ],
        )  # fmt: skip

    def start(self) -> None:
        self.start_coordinator()
        asyncio.run(
            write_cluster_metadata(
                self.coordinator_url,
                partitions=self.partitions,
                replicas=3,
                min_insync=2,
                nodes=self.names,
            )
        )
        for name in self.names:
            self.start_node(name)
        self.wait_serving(30.0)

    def info(self, name: str) -> dict[str, object] | None:
        try:
            with redis.Redis(port=self.ports[name], socket_timeout=1.0) as client:
                return client.info("all")  # type: ignore[no-any-return]
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return None

    def epochs(self, name: str) -> dict[int, int]:
        """partition -> the epoch ``name``'s replica is in (from its INFO)."""
        info = self.info(name)
        assert info is not None
        return {
            int(field[1:]): int(value["epoch"])
            for field, value in info.items()
            if field.startswith("p") and field[1:].isdigit() and isinstance(value, dict)
        }

    def serving(self, names: list[str] | None = None) -> dict[int, str]:
        """partition -> the node serving it as primary now (from the nodes' INFO)."""
        found: dict[int, str] = {}
        for name in names or list(self.procs):
            if name == "coordinator" or self.procs[name].poll() is not None:
                continue
            info = self.info(name)
            if info is None:
                continue
            for field, value in info.items():
                is_partition = field.startswith("p") and field[1:].isdigit()
                if is_partition and isinstance(value, dict) and value.get("serving") == 1:
                    found[int(field[1:])] = name
        return found

    def wait_serving(self, timeout_s: float, names: list[str] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.serving(names)) < self.partitions:
            if time.monotonic() > deadline:
                raise AssertionError(f"not every partition served after {timeout_s} s")
            time.sleep(0.05)

    def signal(self, name: str, signum: int) -> None:
        self.procs[name].send_signal(signum)
        if signum == signal.SIGKILL:
            self.procs[name].wait(5)

    def stop(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                if name != "coordinator":
                    proc.terminate()
        for name, proc in self.procs.items():
            if name != "coordinator":
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        coordinator = self.procs.get("coordinator")
        if coordinator is not None and coordinator.poll() is None:
            coordinator.terminate()
            try:
                coordinator.wait(10)
            except subprocess.TimeoutExpired:
                coordinator.kill()
                coordinator.wait(5)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.root.glob("*.log"))
        )


def wait_listening(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
