"""The conformance harness for a real ensemble (ZooKeeper or etcd): every backend gets a fresh
namespace; time passes for real; ``cut``/``heal`` go through TCP relays in front of every
server (``Proxy`` from test_remote), so a client sees the whole ensemble go away and return."""

from __future__ import annotations

import asyncio
import uuid

from planaria.coord import Coordinator
from planaria.coord.url import connect

from ._servers import Ensemble
from .conformance import Backend
from .test_remote import Proxy


class EnsembleBackend(Backend):
    def __init__(
        self,
        ensemble: Ensemble,
        *,
        ttl_ms: float,
        expiry_slack_ms: float,
        request_timeout_s: float = 2.0,
        proxied: bool = False,
    ) -> None:
        self.ensemble = ensemble
        self.ttl_ms = ttl_ms
        self.expiry_slack_ms = expiry_slack_ms
        self.namespace = f"/test-{uuid.uuid4().hex[:12]}"
        self.request_timeout_s = request_timeout_s
        self.proxied = proxied
        self.clients: list[Coordinator] = []
        self.proxies: dict[int, list[Proxy]] = {}

    async def client(self) -> Coordinator:
        hosts = self.ensemble.hosts
        proxies: list[Proxy] = []
        if self.proxied:
            for member in self.ensemble.members:
                proxy = Proxy(member.client_port)
                await proxy.start()
                proxies.append(proxy)
            hosts = ",".join(f"127.0.0.1:{proxy.port}" for proxy in proxies)
        url = f"{self.ensemble.kind}://{hosts}{self.namespace}"
        client = connect(url, request_timeout_s=self.request_timeout_s)
        self.proxies[id(client)] = proxies
        self.clients.append(client)
        return client

    async def advance(self, ms: float) -> None:
        await asyncio.sleep(ms / 1000.0)

    async def cut(self, client: Coordinator) -> None:
        if not self.proxied:
            await super().cut(client)
        for proxy in self.proxies[id(client)]:
            await proxy.cut()

    async def heal(self, client: Coordinator) -> None:
        if not self.proxied:
            await super().heal(client)
        for proxy in self.proxies[id(client)]:
            await proxy.heal()

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()
        for proxies in self.proxies.values():
            for proxy in proxies:
                await proxy.cut()
