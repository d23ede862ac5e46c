# Generated from _async_client.py by scripts/unasync.py. Do not edit: edit the source and run
# `python scripts/unasync.py` (`make lint` fails while this file is out of date).
"""``Client``: the client's I/O around :class:`ClientCore`'s decisions, blocking and
thread-safe. Generated from ``AsyncClient`` (_async_client.py), which documents the design.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

import hiredis

from planaria.breaker import CircuitBreaker
from planaria.client._connection import Pool
from planaria.client._containers import (
    HDEL,
    HEXISTS,
    HGET,
    HGETALL,
    HINCRBY,
    HINCRBYFLOAT,
    HKEYS,
    HLEN,
    HMGET,
    HSCAN,
    HSET,
    HSETNX,
    HSTRLEN,
    HVALS,
    SADD,
    SCARD,
    SDIFF,
    SDIFFSTORE,
    SINTER,
    SINTERSTORE,
    SISMEMBER,
    SMEMBERS,
    SMISMEMBER,
    SPOP,
    SPOP_COUNT,
    SRANDMEMBER,
    SRANDMEMBER_COUNT,
    SREM,
    SSCAN,
    SUNION,
    SUNIONSTORE,
    FieldMapping,
    count_argument,
    hash_pairs,
    items,
    scan_options,
)
from planaria.client._core import (
    APPEND,
    CLUSTER_SHARDS,
    CLUSTER_SLOTS,
    DBSIZE,
    DECRBY,
    DEL,
    EXISTS,
    GET,
    GETDEL,
    GETRANGE,
    GETSET,
    INCRBY,
    INCRBYFLOAT,
    KEYS,
    MGET,
    MSET,
    MSETNX,
    PRIMARY_UNREACHABLE,
    RANDOMKEY,
    REDIRECTS_MAX,
    REFRESH_FAILURES,
    SCAN,
    SET,
    SETNX,
    SETRANGE,
    STALE_SKIP,
    STRLEN,
    TRANSPORT_FAILURES,
    TYPE,
    UNLINK,
    Call,
    ClientCore,
    Command,
    RandomSource,
    ReadResult,
    ResultT,
    by_slot,
    float_argument,
    number,
    set_arguments,
)
from planaria.client._expiry import (
    EXPIRE,
    EXPIREAT,
    EXPIRETIME,
    GETEX,
    PERSIST,
    PEXPIRE,
    PEXPIREAT,
    PEXPIRETIME,
    PSETEX,
    PTTL,
    RENAME,
    RENAMENX,
    SETEX,
    TTL,
    absolute_time,
    expire_conditions,
    expiry_arguments,
    relative_time,
)
from planaria.client._protocol import to_bytes
from planaria.client._waiting import RefreshLock, WriteGate, gather
from planaria.core.messages import DEDUP_WINDOW
from planaria.errors import Moved, Unavailable, UsageError
from planaria.retry import RetryBudget

__all__ = ["Client"]


def _keys(keys: str | bytes | Iterable[str | bytes], more: tuple[str | bytes, ...]) -> list[bytes]:
    """MGET's keys as redis-py takes them: one key or an iterable of them, then more."""
    first = [keys] if isinstance(keys, str | bytes) else list(keys)
    wanted = [to_bytes("key", key) for key in (*first, *more)]
    if not wanted:
        raise UsageError("mget needs at least one key")
    return wanted


def _pairs(mapping: Mapping[str | bytes, str | bytes]) -> dict[bytes, bytes]:
    pairs = {to_bytes("key", key): to_bytes("value", value) for key, value in mapping.items()}
    if not pairs:
        raise UsageError("mset and msetnx need at least one key")
    return pairs


def _flat(group: list[bytes], pairs: Mapping[bytes, bytes]) -> tuple[bytes, ...]:
    """MSET's arguments for the keys of ``group``: key, value, key, value, ..."""
    return tuple(part for key in group for part in (key, pairs[key]))


def _scan_arguments(
    cursor: int, match: str | bytes | None, count: int | None, type_name: str | None
) -> tuple[bytes, ...]:
    arguments = [number("cursor", cursor)]
    if match is not None:
        arguments += [b"MATCH", to_bytes("match", match)]
    if count is not None:
        arguments += [b"COUNT", number("count", count)]
    if type_name is not None:
        arguments += [b"TYPE", to_bytes("_type", type_name)]
    return tuple(arguments)


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
        ex: int | timedelta | None = None,
        px: int | timedelta | None = None,
        exat: int | datetime | None = None,
        pxat: int | datetime | None = None,
        keepttl: bool = False,
        timeout_s: float | None = None,
    ) -> bool:
        """Set ``key`` to ``value``; True when applied, False when the condition did not hold
        (``nx``: only if absent; ``xx``: only if present; ``if_value``: only if it equals).
        With at most one of ``ex``/``px`` (seconds/ms from now, by the primary's clock),
        ``exat``/``pxat`` (a Unix time in seconds/ms) the key expires then; ``keepttl``
        keeps its expiry; none of them removes it."""
        extra = set_arguments(value, nx=nx, xx=xx, if_value=if_value)
        extra += expiry_arguments(ex=ex, px=px, exat=exat, pxat=pxat, keepttl=keepttl)
        return self._write(SET, to_bytes("key", key), extra, timeout_s)

    def delete(self, key: str | bytes, *, timeout_s: float | None = None) -> bool:
        """Delete ``key``; True if it existed."""
        return self._write(DEL, to_bytes("key", key), (), timeout_s)

    def exists(self, key: str | bytes, *, timeout_s: float | None = None) -> bool:
        """Whether ``key`` exists (on its primary)."""
        call = self._core.call(EXISTS, to_bytes("key", key), timeout_s=timeout_s)
        found, _ = self._run(call)
        return found

    # ------------------------------------------------------------------ strings and counters

    def incr(
        self,
        key: str | bytes,
        amount: int = 1,
        *,
        timeout_s: float | None = None,
    ) -> int:
        """Add ``amount`` to the integer at ``key`` (0 when absent); the new value."""
        return self.incrby(key, amount, timeout_s=timeout_s)

    def incrby(self, key: str | bytes, amount: int, *, timeout_s: float | None = None) -> int:
        """Add ``amount`` to the integer at ``key`` (0 when absent); the new value. Raises
        CommandRefused when the value is not a 64-bit integer or the sum would overflow."""
        extra = (number("amount", amount),)
        return self._write(INCRBY, to_bytes("key", key), extra, timeout_s)

    def decr(
        self,
        key: str | bytes,
        amount: int = 1,
        *,
        timeout_s: float | None = None,
    ) -> int:
        """Subtract ``amount`` from the integer at ``key`` (0 when absent); the new value."""
        return self.decrby(key, amount, timeout_s=timeout_s)

    def decrby(self, key: str | bytes, amount: int, *, timeout_s: float | None = None) -> int:
        """Subtract ``amount`` from the integer at ``key`` (0 when absent); the new value."""
        extra = (number("amount", amount),)
        return self._write(DECRBY, to_bytes("key", key), extra, timeout_s)

    def incrbyfloat(
        self, key: str | bytes, amount: float = 1.0, *, timeout_s: float | None = None
    ) -> float:
        """Add ``amount`` to the number at ``key`` (0 when absent, in Redis' long double
        precision); the new value."""
        extra = (float_argument("amount", amount),)
        return self._write(INCRBYFLOAT, to_bytes("key", key), extra, timeout_s)

    def append(
        self, key: str | bytes, value: str | bytes, *, timeout_s: float | None = None
    ) -> int:
        """Append ``value`` to the string at ``key`` (made when absent); the new length."""
        extra = (to_bytes("value", value),)
        return self._write(APPEND, to_bytes("key", key), extra, timeout_s)

    def strlen(self, key: str | bytes, *, timeout_s: float | None = None) -> int:
        """The length of the string at ``key`` (0 when absent)."""
        return self._read(STRLEN, to_bytes("key", key), (), timeout_s)

    def getrange(
        self, key: str | bytes, start: int, end: int, *, timeout_s: float | None = None
    ) -> bytes:
        """The bytes of the string at ``key`` from ``start`` to ``end``, both included
        (negative: from the end), clamped to the string."""
        extra = (number("start", start), number("end", end))
        return self._read(GETRANGE, to_bytes("key", key), extra, timeout_s)

    def setrange(
        self,
        key: str | bytes,
        offset: int,
        value: str | bytes,
        *,
        timeout_s: float | None = None,
    ) -> int:
        """Overwrite the string at ``key`` from ``offset`` with ``value`` (padding with zero
        bytes); the new length."""
        extra = (number("offset", offset), to_bytes("value", value))
        return self._write(SETRANGE, to_bytes("key", key), extra, timeout_s)

    def getset(
        self, key: str | bytes, value: str | bytes, *, timeout_s: float | None = None
    ) -> bytes | None:
        """Set ``key`` to ``value``; its previous value (None when absent)."""
        extra = (to_bytes("value", value),)
        return self._write(GETSET, to_bytes("key", key), extra, timeout_s)

    def getdel(self, key: str | bytes, *, timeout_s: float | None = None) -> bytes | None:
        """Delete ``key``; the value it had (None when absent)."""
        return self._write(GETDEL, to_bytes("key", key), (), timeout_s)

    def setnx(
        self, key: str | bytes, value: str | bytes, *, timeout_s: float | None = None
    ) -> bool:
        """Set ``key`` to ``value`` only if it does not exist; whether it did."""
        extra = (to_bytes("value", value),)
        return self._write(SETNX, to_bytes("key", key), extra, timeout_s)

    def mget(
        self,
        keys: str | bytes | Iterable[str | bytes],
        *args: str | bytes,
        timeout_s: float | None = None,
    ) -> list[bytes | None]:
        """The values of the keys in order (None for an absent one). Keys of different slots
        are asked slot by slot (one MGET each), so the whole is not one atomic read."""
        wanted = _keys(keys, args)
        groups = [list(dict.fromkeys(group)) for group in by_slot(wanted).values()]
        answers = gather(
            *(self._read(MGET, group[0], tuple(group[1:]), timeout_s) for group in groups)
        )
        found: dict[bytes, bytes | None] = {}
        for unique, values in zip(groups, answers, strict=True):
            if len(values) != len(unique):
                raise UsageError(f"MGET of {len(unique)} keys answered {len(values)} values")
            found.update(zip(unique, values, strict=True))
        return [found[key] for key in wanted]

    def mset(
        self, mapping: Mapping[str | bytes, str | bytes], *, timeout_s: float | None = None
    ) -> bool:
        """Set every key to its value: atomically within a slot; keys of different slots
        are set slot by slot (one MSET each, as redis-py's cluster client does)."""
        pairs = _pairs(mapping)
        gather(
            *(
                self._write(MSET, group[0], _flat(group, pairs)[1:], timeout_s)
                for group in by_slot(pairs).values()
            )
        )
        return True

    def msetnx(
        self, mapping: Mapping[str | bytes, str | bytes], *, timeout_s: float | None = None
    ) -> bool:
        """Set every key to its value only if none of them exists (atomic: the keys must
        share a slot, as Redis Cluster requires); whether it did."""
        pairs = _pairs(mapping)
        if len(by_slot(pairs)) != 1:
            raise UsageError("msetnx takes keys of one slot only (use a {hash tag})")
        first = next(iter(pairs))
        return self._write(MSETNX, first, _flat(list(pairs), pairs)[1:], timeout_s)

    # ------------------------------------------------------------------ the key space

    def type(self, key: str | bytes, *, timeout_s: float | None = None) -> str:
        """The type of the value at ``key``: ``"string"``, ``"hash"``, ``"set"``, or ``"none"``
        when absent."""
        return self._read(TYPE, to_bytes("key", key), (), timeout_s)

    def unlink(self, *keys: str | bytes, timeout_s: float | None = None) -> int:
        """Delete the keys (any slots); how many existed. Each key is its own UNLINK with
        its own request id, all sent at once, so a retry never deletes a key twice (the
        keys are not deleted together atomically, as with redis-py's cluster client)."""
        unique = list(dict.fromkeys(to_bytes("key", key) for key in keys))
        if not unique:
            raise UsageError("unlink needs at least one key")
        counts = gather(*(self._write(UNLINK, key, (), timeout_s) for key in unique))
        return sum(counts)

    def primaries(self, *, timeout_s: float | None = None) -> list[str]:
        """The primaries of the cluster map, as ``host:port``: the nodes DBSIZE, KEYS and
        SCAN answer for (each for the partitions it leads)."""
        return list((self._primary_slots(timeout_s)).keys())

    def dbsize(self, *, timeout_s: float | None = None) -> int:
        """The number of keys in the cluster: every primary's DBSIZE, added up (as redis-py's
        cluster client does); not one atomic count while keys come and go."""
        slots = self._primary_slots(timeout_s)
        calls = (self._run_node(DBSIZE, slot, (), timeout_s) for slot in slots.values())
        sizes = gather(*calls)
        return sum(sizes)

    def keys(
        self,
        pattern: str | bytes = "*",
        *,
        timeout_s: float | None = None,
    ) -> list[bytes]:
        """The keys matching ``pattern`` (Redis' glob) on every primary, node after node.
        A node refuses with an error past its ``keys_max`` keys: use :meth:`scan_iter`."""
        extra = (to_bytes("pattern", pattern),)
        slots = self._primary_slots(timeout_s)
        lists = (self._run_node(KEYS, slot, extra, timeout_s) for slot in slots.values())
        found = gather(*lists)
        return [key for keys in found for key in keys]

    def randomkey(self, *, timeout_s: float | None = None) -> bytes | None:
        """A random key: from a random primary, or the next one while they have none; None
        when no primary has a key."""
        slots = list((self._primary_slots(timeout_s)).values())
        first = self._core.rng.getrandbits(32) % len(slots)
        for slot in slots[first:] + slots[:first]:
            key = self._run_node(RANDOMKEY, slot, (), timeout_s)
            if key is not None:
                return key
        return None

    def scan(
        self,
        node: str,
        cursor: int = 0,
        match: str | bytes | None = None,
        count: int | None = None,
        _type: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> tuple[int, list[bytes]]:
        """One SCAN step on ``node`` (one of :meth:`primaries`): the next cursor (0: done)
        and the keys. The cursor is a position in a scan order shared by every node (see
        docs/compatibility.md), so if the node's partitions move, the primary now serving
        the node's first slot goes on with it."""
        slots = self._primary_slots(timeout_s)
        if node not in slots:
            raise UsageError(f"{node} is not a primary of the cluster map: {list(slots)}")
        extra = _scan_arguments(cursor, match, count, _type)
        return self._run_node(SCAN, slots[node], extra, timeout_s)

    def scan_iter(
        self,
        match: str | bytes | None = None,
        count: int | None = None,
        _type: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Iterator[bytes]:
        """Every key of the cluster (matching ``match`` and ``_type``), primary after
        primary, SCAN by SCAN (``timeout_s`` bounds each SCAN). A key present for the whole
        iteration is yielded at least once while its partition stays with its primary;
        a key may be yielded twice."""
        for slot in (self._primary_slots(timeout_s)).values():
            cursor = 0
            while True:
                extra = _scan_arguments(cursor, match, count, _type)
                cursor, keys = self._run_node(SCAN, slot, extra, timeout_s)
                for key in keys:  # noqa: RUF100, UP028 (the generated twin could yield from)
                    yield key
                if cursor == 0:
                    break

    # ------------------------------------------------------------------ expiry

    def setex(
        self,
        key: str | bytes,
        time: int | timedelta,
        value: str | bytes,
        *,
        timeout_s: float | None = None,
    ) -> bool:
        """Set ``key`` to ``value``, expiring ``time`` seconds from now."""
        extra = (relative_time("time", time, ms=False), to_bytes("value", value))
        return self._write(SETEX, to_bytes("key", key), extra, timeout_s)

    def psetex(
        self,
        key: str | bytes,
        time_ms: int | timedelta,
        value: str | bytes,
        *,
        timeout_s: float | None = None,
    ) -> bool:
        """Set ``key`` to ``value``, expiring ``time_ms`` milliseconds from now."""
        extra = (relative_time("time_ms", time_ms, ms=True), to_bytes("value", value))
        return self._write(PSETEX, to_bytes("key", key), extra, timeout_s)

    def getex(
        self,
        key: str | bytes,
        *,
        ex: int | timedelta | None = None,
        px: int | timedelta | None = None,
        exat: int | datetime | None = None,
        pxat: int | datetime | None = None,
        persist: bool = False,
        timeout_s: float | None = None,
    ) -> bytes | None:
        """The value of ``key`` (None when absent), setting its expiry (at most one of
        ``ex``, ``px``, ``exat``, ``pxat``) or removing it (``persist``)."""
        extra = expiry_arguments(ex=ex, px=px, exat=exat, pxat=pxat)
        if persist:
            if extra:
                raise UsageError("getex takes persist or an expiry, not both")
            extra = (b"PERSIST",)
        return self._write(GETEX, to_bytes("key", key), extra, timeout_s)

    def expire(
        self,
        key: str | bytes,
        time: int | timedelta,
        *,
        nx: bool = False,
        xx: bool = False,
        gt: bool = False,
        lt: bool = False,
        timeout_s: float | None = None,
    ) -> bool:
        """Let ``key`` expire ``time`` seconds from now (0 or less: delete it), if it exists
        and the conditions hold (``nx``: it has no expiry; ``xx``: it has one; ``gt``/``lt``:
        the new one is later/earlier); whether it did."""
        extra = (
            relative_time("time", time, ms=False),
            *expire_conditions(nx=nx, xx=xx, gt=gt, lt=lt),
        )
        return self._write(EXPIRE, to_bytes("key", key), extra, timeout_s)

    def pexpire(
        self,
        key: str | bytes,
        time_ms: int | timedelta,
        *,
        nx: bool = False,
        xx: bool = False,
        gt: bool = False,
        lt: bool = False,
        timeout_s: float | None = None,
    ) -> bool:
        """:meth:`expire` in milliseconds."""
        extra = (
            relative_time("time_ms", time_ms, ms=True),
            *expire_conditions(nx=nx, xx=xx, gt=gt, lt=lt),
        )
        return self._write(PEXPIRE, to_bytes("key", key), extra, timeout_s)

    def expireat(
        self,
        key: str | bytes,
        when: int | datetime,
        *,
        nx: bool = False,
        xx: bool = False,
        gt: bool = False,
        lt: bool = False,
        timeout_s: float | None = None,
    ) -> bool:
        """Let ``key`` expire at ``when`` (a Unix time in seconds, or a datetime); see
        :meth:`expire` for the conditions."""
        extra = (
            absolute_time("when", when, ms=False),
            *expire_conditions(nx=nx, xx=xx, gt=gt, lt=lt),
        )
        return self._write(EXPIREAT, to_bytes("key", key), extra, timeout_s)

    def pexpireat(
        self,
        key: str | bytes,
        when: int | datetime,
        *,
        nx: bool = False,
        xx: bool = False,
        gt: bool = False,
        lt: bool = False,
        timeout_s: float | None = None,
    ) -> bool:
        """:meth:`expireat` in Unix milliseconds."""
        extra = (
            absolute_time("when", when, ms=True),
            *expire_conditions(nx=nx, xx=xx, gt=gt, lt=lt),
        )
        return self._write(PEXPIREAT, to_bytes("key", key), extra, timeout_s)

    def persist(self, key: str | bytes, *, timeout_s: float | None = None) -> bool:
        """Remove the expiry of ``key``; whether it had one."""
        return self._write(PERSIST, to_bytes("key", key), (), timeout_s)

    def rename(
        self,
        src: str | bytes,
        dst: str | bytes,
        *,
        timeout_s: float | None = None,
    ) -> bool:
        """Rename ``src`` to ``dst`` (one slot: use a hash tag), its value and expiry moved,
        ``dst``'s old value replaced; True. Raises CommandRefused (``ERR no such key``) when
        ``src`` does not exist."""
        return self._write(RENAME, to_bytes("src", src), (to_bytes("dst", dst),), timeout_s)

    def renamenx(
        self,
        src: str | bytes,
        dst: str | bytes,
        *,
        timeout_s: float | None = None,
    ) -> bool:
        """Rename ``src`` to ``dst`` only if ``dst`` does not exist; whether it did."""
        return self._write(RENAMENX, to_bytes("src", src), (to_bytes("dst", dst),), timeout_s)

    def ttl(self, key: str | bytes, *, timeout_s: float | None = None) -> int:
        """Seconds until ``key`` expires (rounded); -1 without an expiry, -2 when absent."""
        return self._read(TTL, to_bytes("key", key), (), timeout_s)

    def pttl(self, key: str | bytes, *, timeout_s: float | None = None) -> int:
        """Milliseconds until ``key`` expires; -1 without an expiry, -2 when absent."""
        return self._read(PTTL, to_bytes("key", key), (), timeout_s)

    def expiretime(self, key: str | bytes, *, timeout_s: float | None = None) -> int:
        """The Unix time (seconds) ``key`` expires at; -1 without an expiry, -2 when absent."""
        return self._read(EXPIRETIME, to_bytes("key", key), (), timeout_s)

    def pexpiretime(self, key: str | bytes, *, timeout_s: float | None = None) -> int:
        """The Unix time (ms) ``key`` expires at; -1 without an expiry, -2 when absent."""
        return self._read(PEXPIRETIME, to_bytes("key", key), (), timeout_s)

    # ------------------------------------------------------------------ hashes

    def hset(
        self,
        name: str | bytes,
        key: str | bytes | None = None,
        value: str | bytes | None = None,
        mapping: FieldMapping | None = None,
        items: Iterable[str | bytes] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> int:
        """Set fields of the hash ``name``: ``key`` to ``value``, and ``mapping``'s and
        ``items``' (field, value, ...) pairs; how many fields were new."""
        extra = hash_pairs(key, value, mapping, items)
        return self._write(HSET, to_bytes("name", name), extra, timeout_s)

    def hsetnx(
        self,
        name: str | bytes,
        key: str | bytes,
        value: str | bytes,
        *,
        timeout_s: float | None = None,
    ) -> bool:
        """Set the field ``key`` of the hash ``name`` only if it is not there; whether it
        was set."""
        extra = (to_bytes("key", key), to_bytes("value", value))
        return self._write(HSETNX, to_bytes("name", name), extra, timeout_s)

    def hget(
        self, name: str | bytes, key: str | bytes, *, timeout_s: float | None = None
    ) -> bytes | None:
        """The value of the field ``key`` of the hash ``name`` (None when absent)."""
        return self._read(HGET, to_bytes("name", name), (to_bytes("key", key),), timeout_s)

    def hmget(
        self,
        name: str | bytes,
        keys: str | bytes | Iterable[str | bytes],
        *args: str | bytes,
        timeout_s: float | None = None,
    ) -> list[bytes | None]:
        """The values of the fields in order (None for an absent one)."""
        extra = items("key", keys, args)
        return self._read(HMGET, to_bytes("name", name), extra, timeout_s)

    def hdel(
        self,
        name: str | bytes,
        *keys: str | bytes,
        timeout_s: float | None = None,
    ) -> int:
        """Delete fields of the hash ``name`` (the hash goes with its last); how many were there."""
        extra = items("key", (), keys)
        return self._write(HDEL, to_bytes("name", name), extra, timeout_s)

    def hgetall(
        self,
        name: str | bytes,
        *,
        timeout_s: float | None = None,
    ) -> dict[bytes, bytes]:
        """The fields and values of the hash ``name`` (empty when absent)."""
        return self._read(HGETALL, to_bytes("name", name), (), timeout_s)

    def hkeys(self, name: str | bytes, *, timeout_s: float | None = None) -> list[bytes]:
        """The fields of the hash ``name``."""
        return self._read(HKEYS, to_bytes("name", name), (), timeout_s)

    def hvals(self, name: str | bytes, *, timeout_s: float | None = None) -> list[bytes]:
        """The values of the hash ``name``."""
        return self._read(HVALS, to_bytes("name", name), (), timeout_s)

    def hlen(self, name: str | bytes, *, timeout_s: float | None = None) -> int:
        """The number of fields of the hash ``name``."""
        return self._read(HLEN, to_bytes("name", name), (), timeout_s)

    def hexists(
        self, name: str | bytes, key: str | bytes, *, timeout_s: float | None = None
    ) -> bool:
        """Whether the hash ``name`` has the field ``key``."""
        extra = (to_bytes("key", key),)
        return self._read(HEXISTS, to_bytes("name", name), extra, timeout_s)

    def hincrby(
        self,
        name: str | bytes,
        key: str | bytes,
        amount: int = 1,
        *,
        timeout_s: float | None = None,
    ) -> int:
        """Add ``amount`` to the integer in the field ``key`` (0 when absent); the new value."""
        extra = (to_bytes("key", key), number("amount", amount))
        return self._write(HINCRBY, to_bytes("name", name), extra, timeout_s)

    def hincrbyfloat(
        self,
        name: str | bytes,
        key: str | bytes,
        amount: float = 1.0,
        *,
        timeout_s: float | None = None,
    ) -> float:
        """Add ``amount`` to the number in the field ``key`` (0 when absent, in Redis' long
        double precision); the new value."""
        extra = (to_bytes("key", key), float_argument("amount", amount))
        return self._write(HINCRBYFLOAT, to_bytes("name", name), extra, timeout_s)

    def hstrlen(
        self, name: str | bytes, key: str | bytes, *, timeout_s: float | None = None
    ) -> int:
        """The length of the value of the field ``key`` (0 when absent)."""
        extra = (to_bytes("key", key),)
        return self._read(HSTRLEN, to_bytes("name", name), extra, timeout_s)

    def hscan(
        self,
        name: str | bytes,
        cursor: int = 0,
        match: str | bytes | None = None,
        count: int | None = None,
        *,
        timeout_s: float | None = None,
    ) -> tuple[int, dict[bytes, bytes]]:
        """One HSCAN step of the hash ``name``: the next cursor (0: done) and fields with
        their values (a field present throughout is returned at least once)."""
        extra = (number("cursor", cursor), *scan_options(match, count))
        return self._read(HSCAN, to_bytes("name", name), extra, timeout_s)

    # ------------------------------------------------------------------ sets

    def sadd(
        self,
        name: str | bytes,
        *values: str | bytes,
        timeout_s: float | None = None,
    ) -> int:
        """Add members to the set ``name``; how many were new."""
        extra = items("value", (), values)
        return self._write(SADD, to_bytes("name", name), extra, timeout_s)

    def srem(
        self,
        name: str | bytes,
        *values: str | bytes,
        timeout_s: float | None = None,
    ) -> int:
        """Remove members of the set ``name`` (the set goes with its last); how many were there."""
        extra = items("value", (), values)
        return self._write(SREM, to_bytes("name", name), extra, timeout_s)

    def sismember(
        self, name: str | bytes, value: str | bytes, *, timeout_s: float | None = None
    ) -> bool:
        """Whether ``value`` is a member of the set ``name``."""
        extra = (to_bytes("value", value),)
        return self._read(SISMEMBER, to_bytes("name", name), extra, timeout_s)

    def smismember(
        self,
        name: str | bytes,
        values: str | bytes | Iterable[str | bytes],
        *args: str | bytes,
        timeout_s: float | None = None,
    ) -> list[bool]:
        """For each value in order, whether it is a member of the set ``name``."""
        extra = items("value", values, args)
        return self._read(SMISMEMBER, to_bytes("name", name), extra, timeout_s)

    def smembers(
        self,
        name: str | bytes,
        *,
        timeout_s: float | None = None,
    ) -> builtins.set[bytes]:
        """The members of the set ``name`` (empty when absent)."""
        return self._read(SMEMBERS, to_bytes("name", name), (), timeout_s)

    def scard(self, name: str | bytes, *, timeout_s: float | None = None) -> int:
        """The number of members of the set ``name``."""
        return self._read(SCARD, to_bytes("name", name), (), timeout_s)

    def spop(
        self, name: str | bytes, count: int | None = None, *, timeout_s: float | None = None
    ) -> bytes | list[bytes] | None:
        """Remove and return a random member (None when empty), or with ``count`` a list of
        up to that many. The primary's log decides which, so every replica removes the same."""
        key = to_bytes("name", name)
        if count is None:
            return self._write(SPOP, key, (), timeout_s)
        return self._write(SPOP_COUNT, key, (number("count", count),), timeout_s)

    def srandmember(
        self, name: str | bytes, number: int | None = None, *, timeout_s: float | None = None
    ) -> bytes | list[bytes] | None:
        """A random member (None when empty), or with ``number`` a list: that many distinct
        members at most, or for a negative one that many with repeats."""
        key = to_bytes("name", name)
        if number is None:
            return self._read(SRANDMEMBER, key, (), timeout_s)
        extra = (count_argument("number", number),)
        return self._read(SRANDMEMBER_COUNT, key, extra, timeout_s)

    def sscan(
        self,
        name: str | bytes,
        cursor: int = 0,
        match: str | bytes | None = None,
        count: int | None = None,
        *,
        timeout_s: float | None = None,
    ) -> tuple[int, list[bytes]]:
        """One SSCAN step of the set ``name``: the next cursor (0: done) and members (a
        member present throughout is returned at least once)."""
        extra = (number("cursor", cursor), *scan_options(match, count))
        return self._read(SSCAN, to_bytes("name", name), extra, timeout_s)

    def sinter(
        self,
        keys: str | bytes | Iterable[str | bytes],
        *args: str | bytes,
        timeout_s: float | None = None,
    ) -> builtins.set[bytes]:
        """The members of every set of ``keys`` (one slot: use a {hash tag})."""
        first, *rest = items("key", keys, args)
        return self._read(SINTER, first, tuple(rest), timeout_s)

    def sunion(
        self,
        keys: str | bytes | Iterable[str | bytes],
        *args: str | bytes,
        timeout_s: float | None = None,
    ) -> builtins.set[bytes]:
        """The members of any set of ``keys`` (one slot: use a {hash tag})."""
        first, *rest = items("key", keys, args)
        return self._read(SUNION, first, tuple(rest), timeout_s)

    def sdiff(
        self,
        keys: str | bytes | Iterable[str | bytes],
        *args: str | bytes,
        timeout_s: float | None = None,
    ) -> builtins.set[bytes]:
        """The members of the first set of ``keys`` in none of the others (one slot)."""
        first, *rest = items("key", keys, args)
        return self._read(SDIFF, first, tuple(rest), timeout_s)

    def sinterstore(
        self,
        dest: str | bytes,
        keys: str | bytes | Iterable[str | bytes],
        *args: str | bytes,
        timeout_s: float | None = None,
    ) -> int:
        """Store SINTER of ``keys`` at ``dest`` (one slot with them); its size."""
        extra = items("key", keys, args)
        return self._write(SINTERSTORE, to_bytes("dest", dest), extra, timeout_s)

    def sunionstore(
        self,
        dest: str | bytes,
        keys: str | bytes | Iterable[str | bytes],
        *args: str | bytes,
        timeout_s: float | None = None,
    ) -> int:
        """Store SUNION of ``keys`` at ``dest`` (one slot with them); its size."""
        extra = items("key", keys, args)
        return self._write(SUNIONSTORE, to_bytes("dest", dest), extra, timeout_s)

    def sdiffstore(
        self,
        dest: str | bytes,
        keys: str | bytes | Iterable[str | bytes],
        *args: str | bytes,
        timeout_s: float | None = None,
    ) -> int:
        """Store SDIFF of ``keys`` at ``dest`` (one slot with them); its size."""
        extra = items("key", keys, args)
        return self._write(SDIFFSTORE, to_bytes("dest", dest), extra, timeout_s)

    def close(self) -> None:
        """Close every connection; later calls raise UsageError."""
        self._core.closed = True
        for pool in list(self._pools.values()):
            pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: builtins.type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ one call

    def _primary_slots(self, timeout_s: float | None) -> dict[str, int]:
        """The primaries with a slot each (reading the map first if there is none yet)."""
        core = self._core
        core.check_open()
        if core.refresh_due():
            self._refresh(core.clock() + core.call_timeout(timeout_s))
        slots = core.primary_slots()
        if not slots:
            raise Unavailable("the cluster map names no primary")
        return slots

    def _run_node(
        self,
        command: Command[ResultT],
        slot: int,
        extra: tuple[bytes, ...],
        timeout_s: float | None,
    ) -> ResultT:
        """A read of the whole node that is primary of ``slot``."""
        call = self._core.node_call(command, slot, extra, timeout_s=timeout_s)
        value, _ = self._run(call)
        return value

    def _read(
        self,
        command: Command[ResultT],
        key: bytes,
        extra: tuple[bytes, ...],
        timeout_s: float | None,
    ) -> ResultT:
        """A read from the key's primary."""
        call = self._core.call(command, key, extra, timeout_s=timeout_s)
        value, _ = self._run(call)
        return value

    def _write(
        self,
        command: Command[ResultT],
        key: bytes,
        extra: tuple[bytes, ...],
        timeout_s: float | None,
    ) -> ResultT:
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
