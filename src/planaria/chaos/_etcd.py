"""etcd 3.4 as a chaos target: 3 members on loopback, fresh data directories,
``--heartbeat-interval 100 --election-timeout 1000`` (the ~1 s detection the other targets
get; etcd's tuning guide recommends an election timeout of about 10 heartbeats), every
other setting at its default (fsync on every commit, linearizable reads).

Clients use etcd's v3 gRPC gateway JSON API over ``http.client`` (no extra dependency, the
way benchmarks/_cluster_anchors.py drives it): one keep-alive connection per client thread,
moving to the next member on any error. CAS is a transaction comparing the value (or, for
an absent key, the version 0). A refused connection fails an operation; a timeout or an
error answer leaves a write unknown (info).
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Final

from planaria.chaos._procs import free_ports, spawn, stop_process, wait_port
from planaria.chaos.net import Net
from planaria.chaos.targets import OP_TIMEOUT_S, Target, TargetError
from planaria.chaos.workload import KvAdapter, OpFailed, OpUnknown

__all__ = ["EtcdTarget"]

HEARTBEAT_MS: Final = 100
ELECTION_MS: Final = 1000
_START_TIMEOUT_S: Final = 30.0


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(b64: str) -> str:
    return base64.b64decode(b64).decode()


class _Client:
    def __init__(
        self, members: list[tuple[str, int]], first: int = 0, timeout_s: float = OP_TIMEOUT_S
    ) -> None:
        self._members = members
        self._current = first % len(members)
        self._timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None

    def _post(self, path: str, body: dict[str, Any], *, write: bool) -> dict[str, Any]:
        if self._connection is None:
            host, port = self._members[self._current]
            self._connection = http.client.HTTPConnection(host, port, timeout=self._timeout_s)
        try:
            self._connection.request(
                "POST", path, json.dumps(body), {"Content-Type": "application/json"}
            )
            response = self._connection.getresponse()
            data = response.read()
        except ConnectionRefusedError as exc:
            self._next()
            raise OpFailed(repr(exc)) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._next()
            raise (OpUnknown if write else OpFailed)(repr(exc)) from exc
        if response.status != 200:
            self._next()
            message = f"etcd {path} answered {response.status}: {data[:200]!r}"
            raise (OpUnknown if write else OpFailed)(message)
        answer: dict[str, Any] = json.loads(data)
        return answer

    def _next(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._current = (self._current + 1) % len(self._members)

    def get(self, key: str) -> str | None:
        kvs = self._post("/v3/kv/range", {"key": _b64(key)}, write=False).get("kvs")
        return _text(kvs[0].get("value", "")) if kvs else None

    def put(self, key: str, value: str) -> None:
        self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, write=True)

    def cas(self, key: str, old: str | None, new: str) -> bool:
        if old is None:
            compare = {"key": _b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}
        else:
            compare = {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(old)}
        body = {
            "compare": [compare],
            "success": [{"requestPut": {"key": _b64(key), "value": _b64(new)}}],
        }
        return bool(self._post("/v3/kv/txn", body, write=True).get("succeeded", False))

    def read_all(self) -> dict[str, str]:
        everything = {"key": _b64("\0"), "range_end": _b64("\0")}
        kvs = self._post("/v3/kv/range", everything, write=False).get("kvs", [])
        return {_text(kv["key"]): _text(kv.get("value", "")) for kv in kvs}

    def status(self) -> dict[str, Any]:
        return self._post("/v3/maintenance/status", {}, write=False)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class EtcdTarget(Target):
    name = "etcd"
    read_batch = 1_000_000  # one range read returns every key

    def __init__(self, workdir: Path, nodes: int, net: Net | None = None) -> None:
        super().__init__(workdir, nodes, net)
        if shutil.which("etcd") is None:
            raise TargetError("etcd is not installed (make system-deps: etcd-server)")
        ports = free_ports(2 * nodes)
        self._client_ports = dict(zip(self.node_names, ports[:nodes], strict=True))
        self._peer_ports = dict(zip(self.node_names, ports[nodes:], strict=True))
        self._token = f"chaos-{secrets.token_hex(4)}"
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._clients_made = 0

    def _argv(self, node: str) -> list[str]:
        host = self.placement.host
        client = f"http://{host(node)}:{self._client_ports[node]}"
        peer = f"http://{host(node)}:{self._peer_ports[node]}"
        cluster = ",".join(f"{n}=http://{host(n)}:{self._peer_ports[n]}" for n in self.node_names)
        return [
            "etcd", "--name", node, "--data-dir", str(self.workdir / node / "data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", self._token,
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            "--logger", "zap", "--log-level", "warn",
        ]  # fmt: skip

    def _spawn(self, node: str) -> None:
        path = self.workdir / node
        path.mkdir(parents=True, exist_ok=True)
        process = spawn(self._argv(node), path / "etcd.log", path, self.placement.prefix(node))
        self._processes[node] = process

    def start(self) -> None:
        for node in self.node_names:
            self._spawn(node)
        for node in self.node_names:
            self._wait_port(node)
        deadline = time.monotonic() + _START_TIMEOUT_S
        client = _Client(self._members(), timeout_s=2.0)
        try:
            while True:
                try:
                    client.put("chaos-ready", "1")
                    return
                except (OpFailed, OpUnknown) as exc:
                    if time.monotonic() >= deadline:
                        raise TargetError(
                            f"etcd accepted no write in {_START_TIMEOUT_S:g} s: {exc}"
                        ) from exc
                    time.sleep(0.1)
        finally:
            client.close()

    def stop(self) -> None:
        for process in self._processes.values():
            stop_process(process)

    def client(self) -> KvAdapter:
        self._clients_made += 1
        return _Client(self._members(), first=self._clients_made)

    def read_many(self, keys: list[str]) -> dict[str, str | None]:
        client = _Client(self._members(), timeout_s=5.0)
        try:
            everything = client.read_all()
        finally:
            client.close()
        return {key: everything.get(key) for key in keys}

    def leaders(self) -> dict[int, str]:
        members: dict[str, str] = {}
        leader = None
        for node, port in self._client_ports.items():
            client = _Client([(self.placement.host(node), port)], timeout_s=0.5)
            try:
                status = client.status()
            except (OpFailed, OpUnknown):
                continue
            finally:
                client.close()
            members[str(status.get("header", {}).get("member_id"))] = node
            leader = str(status.get("leader")) if status.get("leader") else leader
        return {0: members[leader]} if leader in members else {}

    def pids(self, node: str) -> list[int]:
        process = self._processes.get(node)
        return [] if process is None or process.poll() is not None else [process.pid]

    def ports(self, node: str) -> list[int]:
        return [self._client_ports[node], self._peer_ports[node]]

    def kill(self, node: str) -> None:
        process = self._processes[node]
        process.kill()
        process.wait(5.0)

    def restart(self, node: str) -> None:
        self._spawn(node)
        self._wait_port(node)

    def _wait_port(self, node: str) -> None:
        log = self.workdir / node / "etcd.log"
        port, host = self._client_ports[node], self.placement.host(node)
        wait_port(self._processes[node], port, log, _START_TIMEOUT_S, host)

    def _members(self) -> list[tuple[str, int]]:
        return [(self.placement.host(n), port) for n, port in self._client_ports.items()]

    def config(self) -> dict[str, object]:
        return {"heartbeat_ms": HEARTBEAT_MS, "election_timeout_ms": ELECTION_MS}
