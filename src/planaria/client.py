"""planaria's smart client: ``Client`` (blocking, thread-safe) and ``AsyncClient`` (asyncio).

    with Client("127.0.0.1:7001") as db:
        db.set("user:1", "ada")            # True: applied
        db.get("user:1")                   # b"ada"
        db.get_result("user:1", stale=True)  # ReadResult(value=b"ada", stale=False)

Routing. The cluster map comes from any seed node (CLUSTER SHARDS, else CLUSTER SLOTS); a key
goes to its slot's primary. A MOVED redirect is followed at once (up to two per attempt) and,
like TRYAGAIN, CLUSTERDOWN, timeouts and unreachable nodes, makes the client refresh the map
(at most once per ``refresh_interval_s``, so also periodically while errors persist).

Deadlines and retries. Each call has a deadline (``timeout_s``, default 5 s) that bounds
everything: map refreshes, every attempt (each at most ``attempt_timeout_s``) and the waits
between them. Retries use ``planaria.retry``: exponential backoff with full jitter, under a
``RetryBudget`` shared by every call of the client, so an outage does not multiply the load.
Each node has a ``CircuitBreaker``: a node that keeps failing is skipped at once until a trial
call finds it healthy again.

Request ids and outcomes. Every write carries ``REQID <client id> <seq>`` (a random 128-bit
client id and a per-client sequence); every attempt of one call sends the same id, so the
primary applies a write retried across a failover once. Writes in flight at once (threads,
``asyncio.gather``) reach a primary in any order; each is applied once as long as their
sequence numbers stay within the nodes' dedup window (``ReplicaSettings.dedup_window``, 64),
so a write waits for a sequence number while it would be ``write_window`` (64) or more above
the oldest write still in flight. What a call raises:

- ``UsageError`` at once for bad input and for requests the node refuses as malformed;
- ``UnknownOutcome`` when it gave up and some attempt was sent but never answered (a timeout,
  a lost connection): the write may or may not have been applied. Never a failure;
- ``Unavailable`` when it gave up and every attempt was definitely refused or never sent:
  nothing was applied (also a write that found no free sequence number within its deadline).

With ``request_ids=False`` (for servers that do not know REQID, such as Redis itself) a write
whose outcome is unknown is not retried: it raises ``UnknownOutcome`` at once.

Stale reads. ``get_result(key, stale=True)`` reads from the primary when it can; when the
primary is unreachable (or has no lease) it reads from a backup over a READONLY connection
and says so: ``ReadResult.stale`` is True. Such a value may be behind the latest write.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import hiredis

from planaria._client.connection import AsyncPool, Pool
from planaria._client.core import (
    CLUSTER_SHARDS,
    CLUSTER_SLOTS,
    PRIMARY_UNREACHABLE,
    REDIRECTS_MAX,
    REFRESH_FAILURES,
    Call,
    ClientCore,
    RandomSource,
    set_arguments,
)
from planaria._client.protocol import ClusterDown, CommandRefused, Overloaded, TryAgain, to_bytes
from planaria.breaker import CircuitBreaker
from planaria.core.messages import DEDUP_WINDOW
from planaria.errors import Moved, UnknownOutcome
from planaria.retry import RetryBudget

__all__ = [
    "AsyncClient",
    "Client",
    "ClusterDown",
    "CommandRefused",
    "Overloaded",
    "ReadResult",
    "TryAgain",
]

_STALE_SKIP = (*PRIMARY_UNREACHABLE, Moved)
# Failures of the exchange itself (not a node's answer): the node may be down or paused.
TRANSPORT_FAILURES = (ConnectionError, TimeoutError, UnknownOutcome)


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A read's value (None: no such key) and whether a backup served it (``stale``: it may
    miss the latest writes)."""

    value: bytes | None
    stale: bool


class _Options:
    """The constructor options both clients share (documented on ``Client``)."""

    @staticmethod
    def core(
        seeds: str | Iterable[str],
        *,
        timeout_s: float,
        attempt_timeout_s: float,
        request_ids: bool,
        attempts_max: int,
        retry_budget: RetryBudget | None,
        refresh_interval_s: float,
        clock: Callable[[], float],
        rng: RandomSource | None,
        breaker_factory: Callable[[str], CircuitBreaker] | None,
        write_window: int,
        sleep: Callable[[float], object] | None = None,
        async_sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> ClientCore:
        options: dict[str, object] = {}
        if sleep is not None:
            options["sleep"] = sleep
        if async_sleep is not None:
            options["async_sleep"] = async_sleep
        return ClientCore(
            seeds,
            timeout_s=timeout_s,
            attempt_timeout_s=attempt_timeout_s,
            request_ids=request_ids,
            attempts_max=attempts_max,
            retry_budget=retry_budget,
            refresh_interval_s=refresh_interval_s,
            clock=clock,
            rng=rng if rng is not None else random.Random(),
            breaker_factory=breaker_factory,
            write_window=write_window,
            policy_options=options,
        )


class Client:
    """A blocking planaria client, safe to share between threads.

    ``seeds``: one ``"host:port"`` or several; any node of the cluster will do.
    ``timeout_s``: the default deadline of a call (each method also takes ``timeout_s``).
    ``attempt_timeout_s``: the longest one exchange with a node may take.
    ``request_ids``: send REQID with writes (False only for servers that reject it).
    ``attempts_max``: attempts per call at most (the deadline usually stops it first).
    ``retry_budget``: share one across clients to cap their retries together.
    ``refresh_interval_s``: the least time between two map refreshes.
    ``pool_idle_max``: idle connections kept per node; ``health_check_s``: a connection idle
    that long is checked with PING before reuse.
    ``clock``, ``sleep``, ``rng`` (``random.Random``-like): injected for tests.
    ``breaker_factory(address)``: the CircuitBreaker of a node (default: opens after 3 of the
    last 10 calls failed, for 0.5 s doubling up to 5 s).
    ``write_window``: a write is sent only while its sequence number is less than this above
    the oldest write in flight; at most the nodes' ``dedup_window`` (default 64 on both).
    """

    def __init__(
        self,
        seeds: str | Iterable[str],
        *,
        timeout_s: float = 5.0,
        attempt_timeout_s: float = 0.5,
        request_ids: bool = True,
        attempts_max: int = 32,
        retry_budget: RetryBudget | None = None,
        refresh_interval_s: float = 0.1,
        pool_idle_max: int = 4,
        health_check_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        rng: RandomSource | None = None,
        breaker_factory: Callable[[str], CircuitBreaker] | None = None,
        write_window: int = DEDUP_WINDOW,
    ) -> None:
        self._core = _Options.core(
            seeds,
            timeout_s=timeout_s,
            attempt_timeout_s=attempt_timeout_s,
            request_ids=request_ids,
            attempts_max=attempts_max,
            retry_budget=retry_budget,
            refresh_interval_s=refresh_interval_s,
            clock=clock,
            rng=rng,
            breaker_factory=breaker_factory,
            write_window=write_window,
            sleep=sleep,
        )
        self._pool_idle_max = pool_idle_max
        self._health_check_s = health_check_s
        self._pools: dict[tuple[str, bool], Pool] = {}
        self._refresh_lock = threading.Lock()
        self._window_moved = threading.Condition()  # guards core.window

    @property
    def client_id(self) -> str:
        """The 32-hex-digit id this client's writes carry in REQID."""
        return self._core.client_id

    # ------------------------------------------------------------------ the API

    def get(self, key: str | bytes, *, timeout_s: float | None = None) -> bytes | None:
        """The value of ``key`` from its primary, or None if there is no such key."""
        call = self._core.call("GET", to_bytes("key", key), timeout_s=timeout_s)
        return self._run(call)[0]  # type: ignore[return-value]

    def get_result(
        self, key: str | bytes, *, stale: bool = False, timeout_s: float | None = None
    ) -> ReadResult:
        """Like ``get``; with ``stale=True`` a backup answers when the primary cannot, and
        the result says so."""
        call = self._core.call("GET", to_bytes("key", key), timeout_s=timeout_s, stale_ok=stale)
        value, was_stale = self._run(call)
        return ReadResult(value, was_stale)  # type: ignore[arg-type]

    def set(
        self,
        key: str | bytes,
        value: str | bytes,
        *,
        nx: bool = False,
        xx: bool = False,
        if_value: str | bytes | None = None,
        timeout_s: float | None = None,
    ) -> bool:
        """Set ``key`` to ``value``; True when applied, False when the condition did not hold
        (``nx``: only if absent; ``xx``: only if present; ``if_value``: only if it equals)."""
        extra = set_arguments(value, nx=nx, xx=xx, if_value=if_value)
        return self._write("SET", to_bytes("key", key), extra, timeout_s)  # type: ignore[return-value]

    def delete(self, key: str | bytes, *, timeout_s: float | None = None) -> bool:
        """Delete ``key``; True if it existed."""
        return self._write("DEL", to_bytes("key", key), (), timeout_s)  # type: ignore[return-value]

    def exists(self, key: str | bytes, *, timeout_s: float | None = None) -> bool:
        """Whether ``key`` exists (on its primary)."""
        call = self._core.call("EXISTS", to_bytes("key", key), timeout_s=timeout_s)
        return self._run(call)[0]  # type: ignore[return-value]

    def close(self) -> None:
        """Close every connection; later calls raise UsageError."""
        self._core.closed = True
        for pool in list(self._pools.values()):
            pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ one call

    def _write(
        self, command: str, key: bytes, extra: tuple[bytes, ...], timeout_s: float | None
    ) -> object:
        """A write, with a sequence number from the window (waited for within its deadline)."""
        core = self._core
        if not core.request_ids:
            return self._run(core.call(command, key, extra, is_write=True, timeout_s=timeout_s))[0]
        call_timeout_s = core.call_timeout(timeout_s)
        deadline_s = core.clock() + call_timeout_s
        with self._window_moved:
            while (seq := core.window.take()) is None:
                remaining_s = deadline_s - core.clock()
                if remaining_s <= 0:
                    raise core.window_full(command, key, call_timeout_s)
                self._window_moved.wait(remaining_s)
        try:
            call = core.call(command, key, extra, is_write=True, timeout_s=call_timeout_s, seq=seq)
            return self._run(call, deadline_s)[0]
        finally:
            with self._window_moved:
                if core.window.release(seq):
                    self._window_moved.notify_all()

    def _run(self, call: Call, deadline_s: float | None = None) -> tuple[object, bool]:
        core = self._core
        if deadline_s is None:
            deadline_s = core.clock() + call.timeout_s
        try:
            result = self._attempt(call, deadline_s)
        except Exception as error:
            core.note_failure(call, error)
            if core.retryable(call, error):
                return self._retry(call, deadline_s, error)
            core.deposit()
            final = core.give_up(call, error)
            if final is error:
                raise
            raise final from error
        core.deposit()
        return result

    def _retry(self, call: Call, deadline_s: float, first: Exception) -> tuple[object, bool]:
        core = self._core
        retrying = core.retrying(call, deadline_s)
        result: tuple[object, bool] = (None, False)
        pending: Exception | None = first
        try:
            if retrying is None:
                raise first
            for attempt in retrying:
                with attempt:
                    if pending is not None:  # the first attempt's failure, already suffered
                        failed, pending = pending, None
                        raise failed
                    try:
                        result = self._attempt(call, deadline_s)
                    except Exception as error:
                        core.note_failure(call, error)
                        raise
        except Exception as error:
            final = core.give_up(call, error)
            if final is error:
                raise
            raise final from error
        return result

    def _attempt(self, call: Call, deadline_s: float) -> tuple[object, bool]:
        core = self._core
        core.check_open()
        if core.refresh_due():
            self._refresh(deadline_s)
        shard = core.shard(call)
        address = shard.primary
        try:
            for redirects in range(REDIRECTS_MAX + 1):
                reply = self._exchange(address, False, call.payload, deadline_s)
                try:
                    return core.decode(call, core.check_reply(reply, address)), False
                except Moved as moved:
                    if redirects == REDIRECTS_MAX:
                        raise
                    address = core.on_moved(moved)
        except PRIMARY_UNREACHABLE:
            if not call.stale_ok:
                raise
            for replica in shard.replicas:
                try:
                    reply = self._exchange(replica, True, call.payload, deadline_s)
                    return core.decode(call, core.check_reply(reply, replica)), True
                except _STALE_SKIP as error:
                    core.note_failure(call, error)
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(self, address: str, readonly: bool, payload: bytes, deadline_s: float) -> object:
        timeout_s = self._core.attempt_timeout(deadline_s)
        pool = self._pools.get((address, readonly))
        if pool is None:
            pool = self._pools.setdefault(
                (address, readonly),
                Pool(
                    address,
                    readonly=readonly,
                    idle_max=self._pool_idle_max,
                    health_check_s=self._health_check_s,
                ),
            )
        try:
            return self._core.breaker(address).call(pool.request, payload, timeout_s)
        except TRANSPORT_FAILURES:
            self._core.note_unreachable(address)
            raise

    def _refresh(self, deadline_s: float) -> None:
        core = self._core
        wait_s = max(deadline_s - core.clock(), 0.0)
        if not self._refresh_lock.acquire(timeout=wait_s):
            return  # another thread is refreshing; go on with the map we have, if any
        try:
            if not core.refresh_due():
                return  # another thread refreshed meanwhile
            errors: list[Exception] = []
            for address in core.refresh_candidates():
                try:
                    reply = self._exchange(address, False, CLUSTER_SHARDS, deadline_s)
                    shards = not isinstance(reply, hiredis.ReplyError)
                    if not shards:  # older than Redis 7: no CLUSTER SHARDS
                        reply = self._exchange(address, False, CLUSTER_SLOTS, deadline_s)
                    core.install(reply, address, shards=shards)
                    return
                except REFRESH_FAILURES as error:
                    errors.append(error)
            core.refresh_failed(errors)
        finally:
            self._refresh_lock.release()


class AsyncClient:
    """The asyncio twin of :class:`Client`: the same options (``async_sleep`` instead of
    ``sleep``) and methods, as coroutines. Use it from one event loop."""

    def __init__(
        self,
        seeds: str | Iterable[str],
        *,
        timeout_s: float = 5.0,
        attempt_timeout_s: float = 0.5,
        request_ids: bool = True,
        attempts_max: int = 32,
        retry_budget: RetryBudget | None = None,
        refresh_interval_s: float = 0.1,
        pool_idle_max: int = 4,
        health_check_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        async_sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: RandomSource | None = None,
        breaker_factory: Callable[[str], CircuitBreaker] | None = None,
        write_window: int = DEDUP_WINDOW,
    ) -> None:
        self._core = _Options.core(
            seeds,
            timeout_s=timeout_s,
            attempt_timeout_s=attempt_timeout_s,
            request_ids=request_ids,
            attempts_max=attempts_max,
            retry_budget=retry_budget,
            refresh_interval_s=refresh_interval_s,
            clock=clock,
            rng=rng,
            breaker_factory=breaker_factory,
            write_window=write_window,
            async_sleep=async_sleep,
        )
        self._pool_idle_max = pool_idle_max
        self._health_check_s = health_check_s
        self._pools: dict[tuple[str, bool], AsyncPool] = {}
        self._refresh_lock: asyncio.Lock | None = None
        self._window_moved: asyncio.Event | None = None  # set when a write left the window

    @property
    def client_id(self) -> str:
        return self._core.client_id

    async def get(self, key: str | bytes, *, timeout_s: float | None = None) -> bytes | None:
        call = self._core.call("GET", to_bytes("key", key), timeout_s=timeout_s)
        return (await self._run(call))[0]  # type: ignore[return-value]

    async def get_result(
        self, key: str | bytes, *, stale: bool = False, timeout_s: float | None = None
    ) -> ReadResult:
        call = self._core.call("GET", to_bytes("key", key), timeout_s=timeout_s, stale_ok=stale)
        value, was_stale = await self._run(call)
        return ReadResult(value, was_stale)  # type: ignore[arg-type]

    async def set(
        self,
        key: str | bytes,
        value: str | bytes,
        *,
        nx: bool = False,
        xx: bool = False,
        if_value: str | bytes | None = None,
        timeout_s: float | None = None,
    ) -> bool:
        extra = set_arguments(value, nx=nx, xx=xx, if_value=if_value)
        return await self._write("SET", to_bytes("key", key), extra, timeout_s)  # type: ignore[return-value]

    async def delete(self, key: str | bytes, *, timeout_s: float | None = None) -> bool:
        return await self._write("DEL", to_bytes("key", key), (), timeout_s)  # type: ignore[return-value]

    async def exists(self, key: str | bytes, *, timeout_s: float | None = None) -> bool:
        call = self._core.call("EXISTS", to_bytes("key", key), timeout_s=timeout_s)
        return (await self._run(call))[0]  # type: ignore[return-value]

    async def close(self) -> None:
        self._core.closed = True
        for pool in list(self._pools.values()):
            pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ one call

    async def _write(
        self, command: str, key: bytes, extra: tuple[bytes, ...], timeout_s: float | None
    ) -> object:
        """A write, with a sequence number from the window (waited for within its deadline)."""
        core = self._core
        if not core.request_ids:
            call = core.call(command, key, extra, is_write=True, timeout_s=timeout_s)
            return (await self._run(call))[0]
        call_timeout_s = core.call_timeout(timeout_s)
        deadline_s = core.clock() + call_timeout_s
        while (seq := core.window.take()) is None:
            remaining_s = deadline_s - core.clock()
            if remaining_s <= 0:
                raise core.window_full(command, key, call_timeout_s)
            if self._window_moved is None:
                self._window_moved = asyncio.Event()
            with contextlib.suppress(TimeoutError):  # then the loop's check raises
                await asyncio.wait_for(self._window_moved.wait(), remaining_s)
        try:
            call = core.call(command, key, extra, is_write=True, timeout_s=call_timeout_s, seq=seq)
            return (await self._run(call, deadline_s))[0]
        finally:
            if core.window.release(seq) and self._window_moved is not None:
                self._window_moved.set()  # wake every waiter: some may go on
                self._window_moved = None

    async def _run(self, call: Call, deadline_s: float | None = None) -> tuple[object, bool]:
        core = self._core
        if deadline_s is None:
            deadline_s = core.clock() + call.timeout_s
        try:
            result = await self._attempt(call, deadline_s)
        except Exception as error:
            core.note_failure(call, error)
            if core.retryable(call, error):
                return await self._retry(call, deadline_s, error)
            core.deposit()
            final = core.give_up(call, error)
            if final is error:
                raise
            raise final from error
        core.deposit()
        return result

    async def _retry(self, call: Call, deadline_s: float, first: Exception) -> tuple[object, bool]:
        core = self._core
        retrying = core.retrying(call, deadline_s)
        result: tuple[object, bool] = (None, False)
        pending: Exception | None = first
        try:
            if retrying is None:
                raise first
            async for attempt in retrying:
                with attempt:
                    if pending is not None:
                        failed, pending = pending, None
                        raise failed
                    try:
                        result = await self._attempt(call, deadline_s)
                    except Exception as error:
                        core.note_failure(call, error)
                        raise
        except Exception as error:
            final = core.give_up(call, error)
            if final is error:
                raise
            raise final from error
        return result

    async def _attempt(self, call: Call, deadline_s: float) -> tuple[object, bool]:
        core = self._core
        core.check_open()
        if core.refresh_due():
            await self._refresh(deadline_s)
        shard = core.shard(call)
        address = shard.primary
        try:
            for redirects in range(REDIRECTS_MAX + 1):
                reply = await self._exchange(address, False, call.payload, deadline_s)
                try:
                    return core.decode(call, core.check_reply(reply, address)), False
                except Moved as moved:
                    if redirects == REDIRECTS_MAX:
                        raise
                    address = core.on_moved(moved)
        except PRIMARY_UNREACHABLE:
            if not call.stale_ok:
                raise
            for replica in shard.replicas:
                try:
                    reply = await self._exchange(replica, True, call.payload, deadline_s)
                    return core.decode(call, core.check_reply(reply, replica)), True
                except _STALE_SKIP as error:
                    core.note_failure(call, error)
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(
        self, address: str, readonly: bool, payload: bytes, deadline_s: float
    ) -> object:
        timeout_s = self._core.attempt_timeout(deadline_s)
        pool = self._pools.get((address, readonly))
        if pool is None:
            pool = self._pools.setdefault(
                (address, readonly),
                AsyncPool(
                    address,
                    readonly=readonly,
                    idle_max=self._pool_idle_max,
                    health_check_s=self._health_check_s,
                ),
            )
        try:
            return await self._core.breaker(address).call_async(pool.request, payload, timeout_s)
        except TRANSPORT_FAILURES:
            self._core.note_unreachable(address)
            raise

    async def _refresh(self, deadline_s: float) -> None:
        core = self._core
        if self._refresh_lock is None:
            self._refresh_lock = asyncio.Lock()
        async with self._refresh_lock:
            if not core.refresh_due():
                return
            errors: list[Exception] = []
            for address in core.refresh_candidates():
                try:
                    reply = await self._exchange(address, False, CLUSTER_SHARDS, deadline_s)
                    shards = not isinstance(reply, hiredis.ReplyError)
                    if not shards:
                        reply = await self._exchange(address, False, CLUSTER_SLOTS, deadline_s)
                    core.install(reply, address, shards=shards)
                    return
                except REFRESH_FAILURES as error:
                    errors.append(error)
            core.refresh_failed(errors)
