"""A tiny cluster-aware async client for the node tests: follows MOVED, retries refusals,
and records which writes were acknowledged (an unknown outcome is not an ack)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, MovedError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

RETRY_PREFIXES = ("TRYAGAIN", "CLUSTERDOWN", "BUSY")


class Writer:
    def __init__(self, seeds: Sequence[str], *, timeout_s: float = 2.0) -> None:
        self.seeds = list(seeds)
        self.timeout_s = timeout_s
        self._clients: dict[str, aredis.Redis] = {}
        self.acked: dict[bytes, bytes] = {}
        # (when, key, the node that acknowledged it)
        self.ack_times: list[tuple[float, bytes, str]] = []
        self.last_address = ""
        self.unknown = 0
        self.errors: list[tuple[float, str, str]] = []

    def _client(self, address: str) -> aredis.Redis:
        client = self._clients.get(address)
        if client is None:
            host, port = address.rsplit(":", 1)
            client = aredis.Redis(
                host=host,
                port=int(port),
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0),  # retries are ours (redis-py's back off for seconds)
            )
            self._clients[address] = client
        return client

    async def command(self, *args: str | bytes, deadline_s: float = 10.0) -> object:
        """Run one command, following MOVED; retries refusals until ``deadline_s``."""
        deadline = time.monotonic() + deadline_s
        address = self.seeds[0]
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self._client(address).execute_command(*args)
                self.last_address = address
                return result
            except MovedError as exc:
                address = f"{exc.host}:{exc.port}"
                continue
            except (TryAgainError, ClusterDownError):
                pass
            except ResponseError as exc:
                if not str(exc).startswith(RETRY_PREFIXES):
                    raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.errors.append((time.monotonic(), address, repr(exc)))
                address = self.seeds[attempt % len(self.seeds)]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{args[:2]} not done in {deadline_s} s")
            await asyncio.sleep(0.01)

    async def write(self, key: bytes, value: bytes) -> bool:
        """SET; True when acknowledged. A timeout or lost connection is an unknown outcome."""
        try:
            reply = await self.command(b"SET", key, value)
            address = self.last_address
        except (TimeoutError, RedisConnectionError, RedisTimeoutError, ResponseError):
            self.unknown += 1
            return False
        if reply is True or reply == b"OK":
            self.acked[key] = value
            self.ack_times.append((time.monotonic(), key, address))
            return True
        return False

    async def write_acked(self, key: bytes, value: bytes, *, deadline_s: float = 60.0) -> bool:
        """SET until acknowledged, for a test whose subject is not this write: an unknown
        outcome (a loaded machine stalls the in-process nodes past their session TTL, and a
        write in flight is answered with an unknown outcome) is tried again with the same
        value, which leaves the same state whether the first try applied or not. False only
        past ``deadline_s``."""
        deadline = time.monotonic() + deadline_s
        while not await self.write(key, value):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
