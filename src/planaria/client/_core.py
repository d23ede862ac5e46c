"""The decisions of the client, shared by ``Client`` and ``AsyncClient``: what to send where,
what a reply means, when to refresh the map, what to retry, and what to raise on giving up.
The two clients only add the I/O (sockets or asyncio) around these: ``AsyncClient`` is
written by hand, ``Client`` generated from it (scripts/unasync.py)."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Final, Generic, Protocol, TypeVar

import hiredis

from planaria.address import parse_address
from planaria.breaker import BreakerState, CircuitBreaker
from planaria.client._protocol import (
    ClusterDown,
    TryAgain,
    encode_command,
    error_from_reply,
    to_bytes,
)
from planaria.client._routing import Shard, SlotMap
from planaria.core.messages import DEDUP_WINDOW
from planaria.core.slots import keyslot
from planaria.errors import (
    CircuitOpenError,
    InternalError,
    Moved,
    PeerError,
    Unavailable,
    UnknownOutcome,
    UsageError,
)
from planaria.retry import RandomLike, RetryBudget, Retrying, RetryPolicy

__all__ = [
    "APPEND",
    "CLUSTER_SHARDS",
    "CLUSTER_SLOTS",
    "DBSIZE",
    "DECRBY",
    "DEL",
    "EXISTS",
    "EXISTS_COUNT",
    "GET",
    "GETDEL",
    "GETRANGE",
    "GETSET",
    "INCRBY",
    "INCRBYFLOAT",
    "KEYS",
    "MGET",
    "MSET",
    "MSETNX",
    "PRIMARY_UNREACHABLE",
    "RANDOMKEY",
    "REDIRECTS_MAX",
    "REFRESH_FAILURES",
    "SCAN",
    "SET",
    "SETNX",
    "SETRANGE",
    "STALE_SKIP",
    "STRLEN",
    "TRANSPORT_FAILURES",
    "TYPE",
    "UNLINK",
    "Call",
    "ClientCore",
    "Command",
    "RandomSource",
    "ReadResult",
    "WriteWindow",
    "by_slot",
    "default_breaker",
    "float_argument",
    "number",
    "set_arguments",
]

log = logging.getLogger("planaria.client")

CLUSTER_SHARDS = encode_command([b"CLUSTER", b"SHARDS"])
CLUSTER_SLOTS = encode_command([b"CLUSTER", b"SLOTS"])
# A node that failed in transport this recently is asked for the map after the others.
UNREACHABLE_DEMOTE_S = 5.0
REDIRECTS_MAX = 2  # MOVED redirects followed inside one attempt, without backoff


class RandomSource(RandomLike, Protocol):
    """What the client needs of ``random.Random``: ids and jitter."""

    def getrandbits(self, k: int, /) -> int: ...


# The node is unreachable or not serving: a stale read may try a backup instead.
PRIMARY_UNREACHABLE = (ConnectionError, UnknownOutcome, CircuitOpenError, TryAgain, ClusterDown)
# After these the map may be wrong: refresh it (at most every refresh_interval_s).
_MAP_SUSPECT = (*PRIMARY_UNREACHABLE, Moved, TimeoutError)
# A stale read skips a backup that fails with one of these and asks the next.
STALE_SKIP = (*PRIMARY_UNREACHABLE, Moved)
# Failures of the exchange itself (not a node's answer): the node may be down or paused.
TRANSPORT_FAILURES = (ConnectionError, TimeoutError, UnknownOutcome)
# A node that fails one of these cannot give the map now: ask the next one.
REFRESH_FAILURES = (
    ConnectionError,
    TimeoutError,
    UnknownOutcome,
    CircuitOpenError,
    PeerError,
    UsageError,
)


def set_arguments(value: object, *, nx: bool, xx: bool, if_value: object) -> tuple[bytes, ...]:
    """SET's arguments after the key: the value and its condition (at most one)."""
    if (nx, xx, if_value is not None).count(True) > 1:
        raise UsageError("set takes at most one of nx, xx and if_value")
    data = to_bytes("value", value)
    if nx:
        return (data, b"NX")
    if xx:
        return (data, b"XX")
    if if_value is not None:
        return (data, b"IFEQ", to_bytes("if_value", if_value))
    return (data,)


def default_breaker(address: str, clock: Callable[[], float]) -> CircuitBreaker:
    """Opens after 3 of the last 10 calls to the node failed (at least half of them), for
    0.5 s doubling up to 5 s; then one trial call decides."""
    return CircuitBreaker(
        address,
        failure_rate_threshold=0.5,
        window_size=10,
        calls_min=3,
        open_s=0.5,
        open_max_s=5.0,
        half_open_calls=1,
        clock=clock,
    )


ResultT = TypeVar("ResultT")


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A read's value (None: no such key) and whether a backup served it (``stale``: it may
    miss the latest writes)."""

    value: bytes | None
    stale: bool


@dataclass(frozen=True, slots=True)
class Command(Generic[ResultT]):
    """A command the clients send, and what its reply means to the caller (``decode``
    raises InternalError for a reply the command never gets)."""

    name: str
    decode: Callable[[Call[ResultT], object], ResultT]


def _unexpected(call: Call[ResultT], reply: object) -> InternalError:
    return InternalError(f"unexpected reply to {call.describe()}: {reply!r}")


def _value(call: Call[bytes | None], reply: object) -> bytes | None:
    if reply is None or isinstance(reply, bytes):
        return reply
    raise _unexpected(call, reply)


def _applied(call: Call[bool], reply: object) -> bool:
    if reply == b"OK" or reply is None:  # nil: SET's condition did not hold
        return reply is not None
    raise _unexpected(call, reply)


def _counted(call: Call[bool], reply: object) -> bool:
    if isinstance(reply, int) and not isinstance(reply, bool):
        return reply > 0
    raise _unexpected(call, reply)


def _integer(call: Call[int], reply: object) -> int:
    if isinstance(reply, int) and not isinstance(reply, bool):
        return reply
    raise _unexpected(call, reply)


def _float(call: Call[float], reply: object) -> float:
    if isinstance(reply, bytes):
        try:
            return float(reply)
        except ValueError:
            pass
    raise _unexpected(call, reply)


def _string(call: Call[bytes], reply: object) -> bytes:
    if isinstance(reply, bytes):
        return reply
    raise _unexpected(call, reply)


def _ok(call: Call[bool], reply: object) -> bool:
    if reply == b"OK":
        return True
    raise _unexpected(call, reply)


def _values(call: Call[list[bytes | None]], reply: object) -> list[bytes | None]:
    if isinstance(reply, list) and all(item is None or isinstance(item, bytes) for item in reply):
        return reply
    raise _unexpected(call, reply)


GET: Final = Command("GET", _value)
SET: Final = Command("SET", _applied)
DEL: Final = Command("DEL", _counted)
EXISTS: Final = Command("EXISTS", _counted)
INCRBY: Final = Command("INCRBY", _integer)
DECRBY: Final = Command("DECRBY", _integer)
INCRBYFLOAT: Final = Command("INCRBYFLOAT", _float)
APPEND: Final = Command("APPEND", _integer)
STRLEN: Final = Command("STRLEN", _integer)
GETRANGE: Final = Command("GETRANGE", _string)
SETRANGE: Final = Command("SETRANGE", _integer)
GETSET: Final = Command("GETSET", _value)
GETDEL: Final = Command("GETDEL", _value)
SETNX: Final = Command("SETNX", _counted)
MGET: Final = Command("MGET", _values)
MSET: Final = Command("MSET", _ok)
MSETNX: Final = Command("MSETNX", _counted)


def _type_name(call: Call[str], reply: object) -> str:
    if isinstance(reply, bytes):
        return reply.decode("ascii", "replace")
    raise _unexpected(call, reply)


def _keys(call: Call[list[bytes]], reply: object) -> list[bytes]:
    if isinstance(reply, list) and all(isinstance(item, bytes) for item in reply):
        return reply
    raise _unexpected(call, reply)


def _scan_step(call: Call[tuple[int, list[bytes]]], reply: object) -> tuple[int, list[bytes]]:
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[0], bytes):
        cursor, keys = reply
        if cursor.isdigit() and isinstance(keys, list) and all(isinstance(k, bytes) for k in keys):
            return int(cursor), keys
    raise _unexpected(call, reply)


TYPE: Final = Command("TYPE", _type_name)
UNLINK: Final = Command("UNLINK", _integer)
EXISTS_COUNT: Final = Command("EXISTS", _integer)
DBSIZE: Final = Command("DBSIZE", _integer)
KEYS: Final = Command("KEYS", _keys)
RANDOMKEY: Final = Command("RANDOMKEY", _value)
SCAN: Final = Command("SCAN", _scan_step)


def by_slot(keys: Iterable[bytes]) -> dict[int, list[bytes]]:
    """``keys`` grouped by slot, in their first appearance's order (MGET, MSET per slot)."""
    groups: dict[int, list[bytes]] = {}
    for key in keys:
        groups.setdefault(keyslot(key), []).append(key)
    return groups


def number(what: str, value: object) -> bytes:
    """An integer argument (INCRBY's amount, GETRANGE's ends) as Redis reads it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{what} must be an int, not {type(value).__name__}")
    return b"%d" % value


def float_argument(what: str, value: object) -> bytes:
    """INCRBYFLOAT's amount: an int or a finite float, written so Redis reads it exactly."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{what} must be a number, not {type(value).__name__}")
    return repr(value).encode() if isinstance(value, float) else b"%d" % value


@dataclass(slots=True)
class Call(Generic[ResultT]):
    """One logical call: the same ``payload`` (and so the same request id) on every attempt."""

    command: Command[ResultT]
    key: bytes
    slot: int
    payload: bytes
    is_write: bool
    timeout_s: float
    stale_ok: bool = False
    request_id: tuple[str, int] | None = None
    outcome_unknown: bool = False  # some attempt was sent and never answered

    def describe(self) -> str:
        rid = (
            ""
            if self.request_id is None
            else f" (request id {self.request_id[0]}:{self.request_id[1]})"
        )
        if not self.key:  # a node-wide command, routed by a slot of its node
            return f"{self.command.name} (the primary of slot {self.slot})"
        return f"{self.command.name} {self.key!r}{rid}"


class WriteWindow:
    """The sequence numbers of one client's writes in flight. A new one is handed out only
    while it is less than ``size`` above the oldest still in flight, so whatever order the
    writes and their retries reach a primary in, each is inside the client's dedup window
    there (``ReplicaSettings.dedup_window``, which must be at least ``size``) and is applied
    exactly once. Not thread-safe: the clients guard it."""

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise UsageError(f"write_window must be a positive integer, got {size!r}")
        self.size = size
        self._next = 1
        self._in_flight: set[int] = set()

    def take(self) -> int | None:
        """The next sequence number, or None while it would be ``size`` or more above the
        oldest write in flight (wait for a :meth:`release`)."""
        oldest = min(self._in_flight, default=self._next)
        if self._next - oldest >= self.size:
            return None
        seq = self._next
        self._next += 1
        self._in_flight.add(seq)
        return seq

    def release(self, seq: int) -> bool:
        """The write with ``seq`` finished (answered, refused, or given up on). True when
        that moved the window (it was the oldest in flight): waiters may go on."""
        moved = seq == min(self._in_flight, default=None)
        self._in_flight.discard(seq)
        return moved

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise UsageError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _seeds(seeds: str | Iterable[str]) -> tuple[str, ...]:
    found = (seeds,) if isinstance(seeds, str) else tuple(seeds)
    if not found:
        raise UsageError("give at least one seed address 'host:port'")
    for seed in found:
        parse_address(seed, what="seed address")
    return found


class ClientCore:
    def __init__(
        self,
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
        write_window: int = DEDUP_WINDOW,
        breaker_factory: Callable[[str], CircuitBreaker] | None,
        sleep: Callable[[float], object] | None = None,
        async_sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> None:
        self.seeds = _seeds(seeds)
        self.timeout_s = _positive("timeout_s", timeout_s)
        self.attempt_timeout_s = _positive("attempt_timeout_s", attempt_timeout_s)
        self.refresh_interval_s = _positive("refresh_interval_s", refresh_interval_s)
        self.request_ids = bool(request_ids)
        self.clock = clock
        if rng is None:
            rng = random.Random()
        self.client_id = f"{rng.getrandbits(128):032x}"
        self.rng = rng
        self.window = WriteWindow(write_window)
        self.budget = retry_budget if retry_budget is not None else RetryBudget(clock=clock)
        self._breaker_factory = breaker_factory or (lambda address: default_breaker(address, clock))
        self.breakers: dict[str, CircuitBreaker] = {}
        self.slot_map: SlotMap | None = None
        self.map_suspect = True
        self.refreshed_at_s = float("-inf")
        self.refresh_error: Exception | None = None  # why the last refresh found no map
        self.unreachable_at_s: dict[str, float] = {}  # address -> last transport failure
        self.closed = False
        base = RetryPolicy(
            attempts_max=attempts_max,
            timeout_s=self.timeout_s,
            wait_initial_s=0.005,
            wait_max_s=0.25,
            budget=self.budget,
            clock=clock,
            rng=rng,
        )
        # The clients' own waits between attempts (tests inject fakes): the blocking one
        # sleeps, the asyncio one awaits.
        if sleep is not None:
            base = replace(base, sleep=sleep)
        if async_sleep is not None:
            base = replace(base, async_sleep=async_sleep)
        # Writes without request ids must not be repeated once their outcome is unknown.
        self._policy_any = replace(base, retry_on=_retryable_any)
        self._policy_definite = replace(base, retry_on=_retryable_definite)

    # ------------------------------------------------------------------ calls

    def check_open(self) -> None:
        if self.closed:
            raise UsageError("the client is closed")

    def call(
        self,
        command: Command[ResultT],
        key: bytes,
        extra: tuple[bytes, ...] = (),
        *,
        is_write: bool = False,
        timeout_s: float | None = None,
        stale_ok: bool = False,
        seq: int | None = None,
    ) -> Call[ResultT]:
        """One call; a write with request ids needs ``seq`` from :attr:`window`."""
        self.check_open()
        args = [command.name.encode(), key, *extra]
        request_id = None
        if is_write and self.request_ids:
            if seq is None:
                raise InternalError(f"{command.name} {key!r}: a write without its sequence number")
            request_id = (self.client_id, seq)
            args += [b"REQID", self.client_id.encode(), b"%d" % seq]
        return Call(
            command,
            key,
            keyslot(key),
            encode_command(args),
            is_write,
            self.call_timeout(timeout_s),
            stale_ok,
            request_id,
        )

    def node_call(
        self,
        command: Command[ResultT],
        slot: int,
        extra: tuple[bytes, ...] = (),
        *,
        timeout_s: float | None = None,
    ) -> Call[ResultT]:
        """A read of a whole node (DBSIZE, KEYS, SCAN, RANDOMKEY): sent to the primary of
        ``slot`` (one of the slots that node serves: see :meth:`primary_slots`)."""
        self.check_open()
        payload = encode_command([command.name.encode(), *extra])
        return Call(command, b"", slot, payload, False, self.call_timeout(timeout_s))

    def primary_slots(self) -> dict[str, int]:
        """Every primary of the map with a slot it serves (empty before the first map)."""
        return {} if self.slot_map is None else self.slot_map.primary_slots()

    def call_timeout(self, timeout_s: float | None) -> float:
        """A call's deadline in seconds: ``timeout_s``, else the client's default."""
        return self.timeout_s if timeout_s is None else _positive("timeout_s", timeout_s)

    def window_full(self, command: Command[ResultT], key: bytes, timeout_s: float) -> Unavailable:
        """What a write raises when no sequence number came free within its deadline."""
        return Unavailable(
            f"{command.name} {key!r} was not sent: for its whole {timeout_s:g} s deadline, this "
            f"client's writes in flight spanned its write window ({self.window.size} "
            "sequence numbers from the oldest unfinished one)"
        )

    def attempt_timeout(self, deadline_s: float) -> float:
        """The time one exchange may take; TimeoutError (nothing sent) once the deadline passed."""
        remaining_s = deadline_s - self.clock()
        if remaining_s <= 0:
            raise TimeoutError("the call's deadline passed before the request was sent")
        return min(self.attempt_timeout_s, remaining_s)

    def shard(self, call: Call[ResultT]) -> Shard:
        slot_map = self.slot_map
        shard = None if slot_map is None else slot_map.shard(call.slot)
        if shard is None:
            raise ClusterDown(f"no node serves slot {call.slot} in the cluster map")
        return shard

    def breaker(self, address: str) -> CircuitBreaker:
        breaker = self.breakers.get(address)
        if breaker is None:
            breaker = self.breakers.setdefault(address, self._breaker_factory(address))
        return breaker

    @staticmethod
    def check_reply(reply: object, address: str) -> object:
        """The reply from ``address``, or raise what its error reply means."""
        if isinstance(reply, hiredis.ReplyError):
            raise error_from_reply(str(reply), parse_address(address)[0])
        return reply

    def on_moved(self, moved: Moved) -> str:
        """Follow a redirect: repoint the slot; refresh soon (the whole partition moved)."""
        parse_address(moved.address, what="MOVED address")
        if self.slot_map is not None:
            self.slot_map.redirect(moved.slot, moved.address)
        self.map_suspect = True
        return moved.address

    @staticmethod
    def decode(call: Call[ResultT], reply: object) -> ResultT:
        """What ``reply`` (not an error reply) means to the caller of ``call``."""
        return call.command.decode(call, reply)

    # ------------------------------------------------------------------ failures and retries

    def note_failure(self, call: Call[ResultT], error: Exception) -> None:
        if isinstance(error, UnknownOutcome):
            call.outcome_unknown = True
        if isinstance(error, _MAP_SUSPECT):
            self.map_suspect = True

    def retryable(self, call: Call[ResultT], error: Exception) -> bool:
        policy = self._policy(call)
        return policy.is_retryable(error)

    def _policy(self, call: Call[ResultT]) -> RetryPolicy:
        if call.is_write and call.request_id is None:
            return self._policy_definite
        return self._policy_any

    def retrying(self, call: Call[ResultT], deadline_s: float) -> Retrying | None:
        """The retry loop for the rest of the call, or None when the deadline has passed."""
        remaining_s = deadline_s - self.clock()
        if remaining_s <= 0:
            return None
        return Retrying(self._policy(call), name=call.command.name, timeout_s=remaining_s)

    def deposit(self) -> None:
        self.budget.deposit()

    def give_up(self, call: Call[ResultT], error: Exception) -> Exception:
        """What a call raises when retrying stopped on ``error``: errors that are not worth
        retrying as they are; UnknownOutcome if some attempt went unanswered; else Unavailable."""
        if not self.retryable(call, error) and not isinstance(error, UnknownOutcome):
            return error
        if call.outcome_unknown:
            return UnknownOutcome(
                f"{call.describe()}: no answer within {call.timeout_s:g} s; it may or may not "
                f"have been applied (last error: {error})"
            )
        return Unavailable(f"{call.describe()} was not applied: {error}")

    # ------------------------------------------------------------------ the map

    def refresh_due(self) -> bool:
        return self.slot_map is None or (
            self.map_suspect and self.clock() - self.refreshed_at_s >= self.refresh_interval_s
        )

    def note_unreachable(self, address: str) -> None:
        """An exchange with ``address`` failed in transport (refused, reset, no answer)."""
        self.unreachable_at_s[address] = self.clock()

    def refresh_candidates(self) -> list[str]:
        """Nodes to ask for the map: known nodes, then seeds; nodes that failed lately and
        open breakers last (a paused node's breaker may still be closed: asking it first would
        cost a whole attempt timeout before the map could move on)."""
        known = list(self.slot_map.addresses()) if self.slot_map is not None else []
        ordered = list(dict.fromkeys([*known, *self.seeds]))
        now = self.clock()

        def rank(address: str) -> int:
            if self.breaker(address).state is BreakerState.OPEN:
                return 2
            failed_at_s = self.unreachable_at_s.get(address)
            recent = failed_at_s is not None and now - failed_at_s < UNREACHABLE_DEMOTE_S
            return 1 if recent else 0

        return sorted(ordered, key=rank)  # stable: known order within a rank

    def install(self, reply: object, address: str, *, shards: bool) -> None:
        """Take the map from ``address``'s reply to CLUSTER SHARDS (``shards``) or SLOTS."""
        parse = SlotMap.from_cluster_shards if shards else SlotMap.from_cluster_slots
        self.slot_map = parse(self.check_reply(reply, address), parse_address(address)[0])
        self.map_suspect = False
        self.refreshed_at_s = self.clock()
        self.refresh_error = None

    def refresh_failed(self, errors: list[Exception]) -> None:
        """No node gave a map: keep the old one (if any) and wait before asking again."""
        self.refreshed_at_s = self.clock()
        self.refresh_error = Unavailable(
            "no node answered CLUSTER SHARDS / SLOTS: " + "; ".join(str(e) for e in errors)
        )
        log.debug("cluster map refresh failed: %s", self.refresh_error)
        if self.slot_map is None:
            raise self.refresh_error


def _retryable_definite(error: Exception) -> bool:
    return isinstance(error, ConnectionError | TimeoutError | PeerError | CircuitOpenError)


def _retryable_any(error: Exception) -> bool:
    return _retryable_definite(error) or isinstance(error, UnknownOutcome)
