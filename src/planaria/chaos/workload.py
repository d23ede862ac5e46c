"""The workload: N client threads doing get/set/cas on a few keys (checked for
linearizability) and writes of unique keys (counted for lost writes), every operation
recorded as invoke, then ok, fail or info, in ``planaria.check``'s history format.

Beside the registers, when asked for (``counters``, ``ttls``; planaria only): INCRBY of 1 to
5 on a few counter keys ``c<j>`` and reads of them (recorded as ``incr``, its ok value the
new value, and ``get``), and on a few TTL keys ``t<j>`` SET with PX (a unique value, a
relative expiry of :data:`TTL_MIN_MS` to :data:`TTL_MAX_MS`; recorded as ``set-px
[value, ttl_ms]``) and reads. Those keys are fixed (bounded), and their events are checked
by ``planaria.check.counters`` and ``planaria.check.expiry``, not by the register model.

Keys for linearizability rotate every few seconds (``r<generation>-<j>``): a key's history
stays short, so the checker's search stays bounded even with many operations of unknown
outcome. A process whose operation timed out (info) never invokes again: the thread carries
on as a fresh process id, Jepsen's rule.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from planaria.check import Event
from planaria.check.expiry import SET_PX
from planaria.check.history import event_line
from planaria.errors import PlanariaError

__all__ = [
    "COUNTER_SHARE",
    "TTL_MAX_MS",
    "TTL_MIN_MS",
    "TTL_SHARE",
    "CounterTtlAdapter",
    "KvAdapter",
    "OpFailed",
    "OpUnknown",
    "Recorder",
    "Worker",
    "counter_keys",
    "read_final",
    "ttl_keys",
    "write_history",
    "written_keys",
]

ROTATE_S: Final = 5.0
_UNIQUE_SHARE: Final = 0.4
_GET_SHARE: Final = 0.4  # of the operations on rotating keys; the rest split put / cas
_CAS_SHARE: Final = 0.3
COUNTER_SHARE: Final = 0.2  # of all operations, with counter keys (3/4 INCRBY, 1/4 GET)
TTL_SHARE: Final = 0.2  # of all operations, with TTL keys (mostly GET; SET below)
_COUNTER_READ_SHARE: Final = 0.25
# A client sets a TTL key mostly once it read it absent (expired), so keys do expire and
# are read around their expiry; a live key is set again only now and then.
_TTL_SET_ABSENT: Final = 0.3
_TTL_SET_LIVE: Final = 0.005
TTL_MIN_MS: Final = 200
TTL_MAX_MS: Final = 2000
_AMOUNT_MAX: Final = 5


class OpFailed(PlanariaError):
    """The operation certainly did not take effect (refused, or never sent)."""


class OpUnknown(PlanariaError):
    """The operation may or may not have taken effect (a timeout, a lost connection)."""


class KvAdapter(Protocol):
    """One client connection to the system under test; errors are :class:`OpFailed` or
    :class:`OpUnknown`, anything else is a bug in the harness."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...

    def cas(self, key: str, old: str | None, new: str) -> bool: ...

    def close(self) -> None: ...


@runtime_checkable
class CounterTtlAdapter(KvAdapter, Protocol):
    """A client that also increments counters and sets keys with a relative expiry."""

    def incrby(self, key: str, amount: int) -> int: ...

    def set_px(self, key: str, value: str, ttl_ms: int) -> None: ...


def counter_keys(count: int) -> list[str]:
    return [f"c{j}" for j in range(count)]


def ttl_keys(count: int) -> list[str]:
    return [f"t{j}" for j in range(count)]


class Recorder:
    """The shared history: events in time order (times taken under the lock, so they never
    go backwards line by line) and outcome counters."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._start = clock()
        self.events: list[Event] = []
        self.counts: Counter[str] = Counter()

    def now(self) -> float:
        return self._clock() - self._start

    def invoke(self, process: Hashable, f: str, key: str, value: Hashable) -> None:
        with self._lock:
            self.events.append(Event(process, "invoke", f, key, value, self.now()))

    def complete(self, process: Hashable, kind: str, f: str, key: str, value: Hashable) -> None:
        with self._lock:
            self.events.append(Event(process, kind, f, key, value, self.now()))  # type: ignore[arg-type]
            self.counts[kind] += 1


class Worker(threading.Thread):
    """One client thread: operations until ``stop`` is set (see the module docstring)."""

    def __init__(
        self,
        index: int,
        clients: int,
        recorder: Recorder,
        make_client: Callable[[], KvAdapter],
        stop: threading.Event,
        *,
        seed: int,
        keys: int = 3,
        counters: int = 0,
        ttls: int = 0,
    ) -> None:
        super().__init__(name=f"chaos-client-{index}", daemon=True)
        self._index = index
        self._clients = clients
        self._process = index
        self._recorder = recorder
        self._make_client = make_client
        self._stopping = stop
        self._keys = keys
        self._counter_keys = counter_keys(counters)
        self._ttl_keys = ttl_keys(ttls)
        self._rng = random.Random(seed * 1_000_003 + index)
        self._seen: dict[str, str | None] = {}
        self._seq = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = self._make_client()
            try:
                while not self._stopping.is_set():
                    self._one(client)
            finally:
                client.close()
        except BaseException as exc:  # reported by the harness, which then fails the run
            self.error = exc

    def _value(self) -> str:
        self._seq += 1
        return f"{self._index}.{self._seq}"

    def _one(self, client: KvAdapter) -> None:
        rng = self._rng
        if self._counter_keys and rng.random() < COUNTER_SHARE:
            key = rng.choice(self._counter_keys)
            if rng.random() < _COUNTER_READ_SHARE:
                self._do(client, "get", key, None)
            else:
                self._do(client, "incr", key, rng.randint(1, _AMOUNT_MAX))
            return
        if self._ttl_keys and rng.random() < TTL_SHARE:
            key = rng.choice(self._ttl_keys)
            live = self._seen.get(key) is not None
            if rng.random() < (_TTL_SET_LIVE if live else _TTL_SET_ABSENT):
                ttl_ms = rng.randint(TTL_MIN_MS, TTL_MAX_MS)
                self._do(client, SET_PX, key, (self._value(), ttl_ms))
            else:
                self._do(client, "get", key, None)
            return
        if rng.random() < _UNIQUE_SHARE:
            value = self._value()
            self._do(client, "put", f"u{self._index}-{self._seq}", value)
            return
        key = f"r{int(self._recorder.now() // ROTATE_S)}-{rng.randrange(self._keys)}"
        draw = rng.random()
        if draw < _GET_SHARE:
            self._do(client, "get", key, None)
        elif draw < 1.0 - _CAS_SHARE:
            self._do(client, "put", key, self._value())
        else:
            self._do(client, "cas", key, (self._seen.get(key), self._value()))

    def _do(self, client: KvAdapter, f: str, key: str, argument: Hashable) -> None:
        process = self._process
        self._recorder.invoke(process, f, key, argument)
        try:
            if f == "get":
                result: Hashable = client.get(key)
                self._seen[key] = result  # type: ignore[assignment]
            elif f == "put":
                client.put(key, str(argument))
                result = argument
                self._seen[key] = str(argument)
            elif f == "incr":
                result = _extended(client).incrby(key, int(str(argument)))
            elif f == SET_PX:
                value, ttl_ms = _pair(argument)
                _extended(client).set_px(key, value, int(ttl_ms))
                result = argument
                self._seen[key] = value
            else:
                old, new = _cas_argument(argument)
                if not client.cas(key, old, new):
                    self._seen.pop(key, None)
                    # The condition did not hold: no effect, certainly.
                    self._recorder.complete(process, "fail", f, key, None)
                    return
                result = argument
                self._seen[key] = new
        except OpFailed:
            self._recorder.complete(process, "fail", f, key, None)
            return
        except OpUnknown:
            self._recorder.complete(process, "info", f, key, None)
            if f == "get":
                return  # a read changes nothing; the checker drops unknown reads anyway
            self._process += self._clients
            return
        self._recorder.complete(process, "ok", f, key, result)


def _extended(client: KvAdapter) -> CounterTtlAdapter:
    if not isinstance(client, CounterTtlAdapter):
        raise TypeError(f"{type(client).__name__} has no incrby / set_px")
    return client


def _pair(argument: Hashable) -> tuple[str, str]:
    if not isinstance(argument, tuple) or len(argument) != 2:
        raise TypeError(f"expected a pair, not {argument!r}")
    first, second = argument
    return str(first), str(second)


def _cas_argument(argument: Hashable) -> tuple[str | None, str]:
    if not isinstance(argument, tuple) or len(argument) != 2:
        raise TypeError(f"cas takes (old, new), not {argument!r}")
    old, new = argument
    return (None if old is None else str(old)), str(new)


def written_keys(events: Iterable[Event]) -> list[str]:
    """Every key some write was invoked on, in first-seen order."""
    keys: dict[str, None] = {}
    for event in events:
        if event.type == "invoke" and event.f in ("put", "cas"):
            keys.setdefault(str(event.key), None)
    return list(keys)


def read_final(
    read_many: Callable[[list[str]], dict[str, str | None]],
    keys: list[str],
    *,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    batch: int = 200,
) -> dict[Hashable, Hashable]:
    """The final value of every key (absent keys left out), in batches, each retried until
    it answers or ``timeout_s`` has passed (then the error is raised)."""
    deadline = clock() + timeout_s
    final: dict[Hashable, Hashable] = {}
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        while True:
            try:
                values = read_many(chunk)
                break
            except (OpFailed, OpUnknown):
                if clock() >= deadline:
                    raise
                sleep(0.2)
        final.update({k: v for k, v in values.items() if v is not None})
    return final


def write_history(path: Path, events: Iterable[Event]) -> None:
    """JSON lines in the format ``planaria check`` reads (docs/history-format.md)."""
    with open(path, "w") as out:
        for event in events:
            out.write(event_line(event) + "\n")
