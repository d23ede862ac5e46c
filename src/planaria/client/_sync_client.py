# Generated from _async_client.py by scripts/unasync.py. Do not edit: edit the source and run
# `python scripts/unasync.py` (`make lint` fails while this file is out of date).
"""``Client``: the client's I/O around :class:`ClientCore`'s decisions, blocking and
thread-safe. Generated from ``AsyncClient`` (_async_client.py), which documents the design.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self

import hiredis

from planaria.breaker import CircuitBreaker
from planaria.client._connection import Pool
from planaria.client._core import (
    CLUSTER_SHARDS,
    CLUSTER_SLOTS,
    DEL,
    EXISTS,
    GET,
    PRIMARY_UNREACHABLE,
    REDIRECTS_MAX,
    REFRESH_FAILURES,
    SET,
    STALE_SKIP,
    TRANSPORT_FAILURES,
    Call,
    ClientCore,
    Command,
    RandomSource,
    ReadResult,
    ResultT,
    set_arguments,
)
from planaria.client._protocol import to_bytes
from planaria.client._waiting import RefreshLock, WriteGate
from planaria.core.messages import DEDUP_WINDOW
from planaria.errors import Moved
from planaria.retry import RetryBudget

__all__ = ["Client"]


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
        self._core = ClientCore(
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
        self._refresh_lock = RefreshLock()
        self._writes = WriteGate(self._core.window)

    @property
    def client_id(self) -> str:
        """The 32-hex-digit id this client's writes carry in REQID."""
        return self._core.client_id

    # ------------------------------------------------------------------ the API

    def get(self, key: str | bytes, *, timeout_s: float | None = None) -> bytes | None:
        """The value of ``key`` from its primary, or None if there is no such key."""
        call = self._core.call(GET, to_bytes("key", key), timeout_s=timeout_s)
        value, _ = self._run(call)
        return value

    def get_result(
        self, key: str | bytes, *, stale: bool = False, timeout_s: float | None = None
    ) -> ReadResult:
        """Like ``get``; with ``stale=True`` a backup answers when the primary cannot, and
        the result says so."""
        call = self._core.call(GET, to_bytes("key", key), timeout_s=timeout_s, stale_ok=stale)
        value, was_stale = self._run(call)
        return ReadResult(value, was_stale)

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
        return self._write(SET, to_bytes("key", key), extra, timeout_s)

    def delete(self, key: str | bytes, *, timeout_s: float | None = None) -> bool:
        """Delete ``key``; True if it existed."""
        return self._write(DEL, to_bytes("key", key), (), timeout_s)

    def exists(self, key: str | bytes, *, timeout_s: float | None = None) -> bool:
        """Whether ``key`` exists (on its primary)."""
        call = self._core.call(EXISTS, to_bytes("key", key), timeout_s=timeout_s)
        found, _ = self._run(call)
        return found

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
        self,
        command: Command[bool],
        key: bytes,
        extra: tuple[bytes, ...],
        timeout_s: float | None,
    ) -> bool:
        """A write, with a sequence number from the window (waited for within its deadline)."""
        core = self._core
        if not core.request_ids:
            call = core.call(command, key, extra, is_write=True, timeout_s=timeout_s)
            applied, _ = self._run(call)
            return applied
        call_timeout_s = core.call_timeout(timeout_s)
        deadline_s = core.clock() + call_timeout_s
        seq = self._writes.take(deadline_s, core.clock)
        if seq is None:
            raise core.window_full(command, key, call_timeout_s)
        try:
            call = core.call(command, key, extra, is_write=True, timeout_s=call_timeout_s, seq=seq)
            applied, _ = self._run(call, deadline_s)
            return applied
        finally:
            self._writes.release(seq)

    def _run(
        self,
        call: Call[ResultT],
        deadline_s: float | None = None,
    ) -> tuple[ResultT, bool]:
        """The call's result and whether a backup gave it (a stale read)."""
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

    def _retry(
        self,
        call: Call[ResultT],
        deadline_s: float,
        first: Exception,
    ) -> tuple[ResultT, bool]:
        core = self._core
        retrying = core.retrying(call, deadline_s)
        try:
            if retrying is None:
                raise first
            pending: Exception | None = first
            for attempt in retrying:
                with attempt:
                    if pending is not None:  # the first attempt's failure, already suffered
                        failed, pending = pending, None
                        raise failed
                    try:
                        return self._attempt(call, deadline_s)
                    except Exception as error:
                        core.note_failure(call, error)
                        raise
        except Exception as error:
            final = core.give_up(call, error)
            if final is error:
                raise
            raise final from error
        raise AssertionError("unreachable: every attempt returns or raises")  # pragma: no cover

    def _attempt(self, call: Call[ResultT], deadline_s: float) -> tuple[ResultT, bool]:
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
                except STALE_SKIP as error:
                    core.note_failure(call, error)
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(
        self,
        address: str,
        readonly: bool,
        payload: bytes,
        deadline_s: float,
    ) -> object:
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
        if not self._refresh_lock.acquire(deadline_s - core.clock()):
            return  # another caller is refreshing; go on with the map we have, if any
        try:
            if not core.refresh_due():
                return  # another caller refreshed meanwhile
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
