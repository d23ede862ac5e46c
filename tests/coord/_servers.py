"""Real ZooKeeper and etcd ensembles on loopback for tests: 3 servers each, fresh temporary
directories, free ports, fast timing, stopped (and killed if need be) after.

Timing, chosen so failover stays fast (and recorded in docs/coordination.md):

- ZooKeeper: ``tickTime=50`` ms, so sessions between 100 ms (2 ticks) and 30 s
  (``maxSessionTimeout``); ``initLimit=40``/``syncLimit=20`` ticks (2 s / 1 s: a loaded
  2-core machine must not drop followers). Run as ``java -cp zookeeper.jar QuorumPeerMain``
  (no pid files, no shell wrapper), with a small heap and the client JIT for a quick start.
- etcd: ``--heartbeat-interval 50 --election-timeout 500`` (ms), so the smallest lease it
  grants is 1 s (etcd's minimum is 1.5 election timeouts, rounded up to whole seconds).

Used by tests/coord/conftest.py (session-scoped fixtures) and the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ETCD_BINARY",
    "ZOOKEEPER_JAR",
    "Ensemble",
    "EnsembleMissing",
    "QuorumRelays",
    "etcd_ensemble",
    "free_port",
    "zookeeper_ensemble",
]

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
ETCD_BINARY = shutil.which("etcd") or "/usr/bin/etcd"
ZK_TICK_MS = 50
ETCD_HEARTBEAT_MS = 50
ETCD_ELECTION_MS = 500
START_TIMEOUT_S = 45.0


class EnsembleMissing(RuntimeError):
    """The server binary is not installed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@dataclass
class Member:
    name: str
    client_port: int
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    quorum_relays: list[int] = field(default_factory=list)  # its links to the others' quorum

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9 (the whole process group: nothing is left behind)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def pause(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGCONT)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Ensemble:
    """Three running servers of one kind. ``url`` is what ``planaria.coord.url.connect``
    takes (without a chroot); ``hosts`` is ``h:p,h:p,h:p``."""

    kind: str  # "zk" or "etcd"
    members: list[Member] = field(default_factory=list)

    @property
    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)

    @property
    def url(self) -> str:
        return f"{self.kind}://{self.hosts}"

    def start(self) -> None:
        for member in self.members:
            member.start()

    def stop(self) -> None:
        for member in self.members:
            member.resume() if member.running else None
            member.kill()

    def leader(self) -> Member:
        """The member that leads the ensemble now (waits for one)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for member in self.members:
                if member.running and self._is_leader(member):
                    return member
            time.sleep(0.05)
        raise RuntimeError(f"no {self.kind} leader: {self._tails()}")

    def _is_leader(self, member: Member) -> bool:
        if self.kind == "zk":
            return "Mode: leader" in four_letter(member.client_port, b"srvr")
        status = _etcd_post(member.client_port, "/v3/maintenance/status", {})
        header = status.get("header", {})
        assert isinstance(header, dict), status
        return bool(status) and status.get("leader") == header.get("member_id")

    def wait_ready(self) -> None:
        """Until every running member serves and one leads."""
        deadline = time.monotonic() + START_TIMEOUT_S
        for member in self.members:
            while member.running and not self._serves(member):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{member.name} did not start: {self._tails()}")
                time.sleep(0.05)
            if not member.running:
                raise RuntimeError(f"{member.name} exited: {member.log_tail()}")
        self.leader()

    def _serves(self, member: Member) -> bool:
        if self.kind == "zk":
            mode = four_letter(member.client_port, b"srvr")
            return "Mode: leader" in mode or "Mode: follower" in mode
        return bool(_etcd_post(member.client_port, "/v3/kv/range", {"key": "AA=="}))

    def _tails(self) -> str:
        return "\n".join(f"--- {m.name}\n{m.log_tail()}" for m in self.members)


def four_letter(port: int, command: bytes) -> str:
    """A ZooKeeper four-letter-word reply ('' when the server does not answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(command)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


def _etcd_post(port: int, path: str, body: dict[str, object]) -> dict[str, object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            return {}
        reply = json.loads(data)
        return reply if isinstance(reply, dict) else {}
    except (OSError, http.client.HTTPException, ValueError):
        return {}
    finally:
        connection.close()


class QuorumRelays:
    """TCP relays, on a thread and event loop of their own (they must flow while a test
    blocks), that can *blackhole* a link: :meth:`cut` stops forwarding but keeps every
    connection open, so the ends notice only by their own timeouts, as in a partition."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relays", daemon=True)
        self._thread.start()
        self._flowing: dict[int, asyncio.Event] = {}
        self._servers: list[asyncio.Server] = []

    def add(self, target_port: int) -> int:
        """A relay to ``target_port``; returns the port it listens on."""
        return asyncio.run_coroutine_threadsafe(self._listen(target_port), self._loop).result(10)

    async def _listen(self, target_port: int) -> int:
        flowing = asyncio.Event()
        flowing.set()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    await flowing.wait()  # cut: held here, the rest in the kernel buffers
                    dst.write(data)
                    await dst.drain()
            dst.close()

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        self._flowing[port] = flowing
        return port

    def cut(self, ports: list[int]) -> None:
        """Blackhole ``ports``' relays; returns once nothing more is forwarded."""
        self._set_flowing(ports, False)

    def heal(self, ports: list[int]) -> None:
        self._set_flowing(ports, True)

    def _set_flowing(self, ports: list[int], flowing: bool) -> None:
        async def apply() -> None:
            for port in ports:
                if flowing:
                    self._flowing[port].set()
                else:
                    self._flowing[port].clear()

        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(10)

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> QuorumRelays:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _zookeeper(
    root: Path, relays: QuorumRelays | None = None, sync_limit_ticks: int = 20
) -> Ensemble:
    if not ZOOKEEPER_JAR.exists() or shutil.which("java") is None:
        raise EnsembleMissing(f"ZooKeeper needs java and {ZOOKEEPER_JAR} (apt install zookeeper)")
    ports = _free_ports(9)
    client_ports, quorum_ports, election_ports = ports[0:3], ports[3:6], ports[6:9]
    servers = [f"server.{i + 1}=127.0.0.1:{quorum_ports[i]}:{election_ports[i]}" for i in range(3)]
    ensemble = Ensemble("zk")
    for i in range(3):
        quorum_relays: list[int] = []
        if relays is not None:  # server i reaches the others' quorum ports through relays
            servers = []
            for j in range(3):
                quorum_port = quorum_ports[j]
                if j != i:
                    quorum_port = relays.add(quorum_port)
                    quorum_relays.append(quorum_port)
                servers.append(f"server.{j + 1}=127.0.0.1:{quorum_port}:{election_ports[j]}")
        home = root / f"zk{i + 1}"
        (home / "data").mkdir(parents=True)
        (home / "data" / "myid").write_text(f"{i + 1}\n")
        config = [
            f"tickTime={ZK_TICK_MS}",
            "initLimit=40",
            f"syncLimit={sync_limit_ticks}",
            "minSessionTimeout=100",
            "maxSessionTimeout=30000",
            f"dataDir={home / 'data'}",
            f"clientPort={client_ports[i]}",
            "clientPortAddress=127.0.0.1",
            "admin.enableServer=false",
            "4lw.commands.whitelist=srvr,ruok,stat",
            "forceSync=no",  # test data only: no fsync on a shared disk
            *servers,
        ]
        (home / "zoo.cfg").write_text("\n".join(config) + "\n")
        argv = [
            "java",
            "-Xmx128m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            f"-Dzookeeper.log.dir={home}",
            "-Dzookeeper.root.logger=INFO,CONSOLE",
            "-cp",
            f"/etc/zookeeper/conf:{ZOOKEEPER_JAR}",
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(home / "zoo.cfg"),
        ]
        member = Member(f"zk{i + 1}", client_ports[i], argv, home / "log")
        member.quorum_relays = quorum_relays
        ensemble.members.append(member)
    return ensemble


def _etcd(root: Path) -> Ensemble:
    if not Path(ETCD_BINARY).exists():
        raise EnsembleMissing("etcd is not installed (apt install etcd-server)")
    ports = _free_ports(6)
    client_ports, peer_ports = ports[0:3], ports[3:6]
    names = [f"etcd{i + 1}" for i in range(3)]
    cluster = ",".join(
        f"{names[i]}=http://127.0.0.1:{peer_ports[i]}" for i in range(3)
    )  # fmt: skip
    ensemble = Ensemble("etcd")
    for i, name in enumerate(names):
        home = root / name
        home.mkdir(parents=True)
        client = f"http://127.0.0.1:{client_ports[i]}"
        peer = f"http://127.0.0.1:{peer_ports[i]}"
        argv = [
            ETCD_BINARY,
            "--name", name,
            "--data-dir", str(home / "data"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"planaria-test-{os.getpid()}-{client_ports[0]}",
            "--heartbeat-interval", str(ETCD_HEARTBEAT_MS),
            "--election-timeout", str(ETCD_ELECTION_MS),
            "--unsafe-no-fsync",  # test data only
            "--log-level", "warn",
        ]  # fmt: skip
        ensemble.members.append(Member(name, client_ports[i], argv, home / "log"))
    return ensemble


@contextlib.contextmanager
def _running(ensemble: Ensemble) -> Iterator[Ensemble]:
    try:
        ensemble.start()
        ensemble.wait_ready()
        yield ensemble
    finally:
        ensemble.stop()


@contextlib.contextmanager
def zookeeper_ensemble(
    root: Path, relays: QuorumRelays | None = None, sync_limit_ticks: int = 20
) -> Iterator[Ensemble]:
    """A running 3-server ZooKeeper ensemble under ``root`` (stopped on exit). With
    ``relays``, each server reaches the others' quorum ports through relays of its own
    (``Member.quorum_relays``: cut them to cut it off from the leader)."""
    with _running(_zookeeper(root, relays, sync_limit_ticks)) as ensemble:
        yield ensemble


@contextlib.contextmanager
def etcd_ensemble(root: Path) -> Iterator[Ensemble]:
    """A running 3-member etcd cluster under ``root`` (stopped on exit)."""
    with _running(_etcd(root)) as ensemble:
        yield ensemble
