"""The key-space reads of a node (:class:`KeyspaceReads`): DBSIZE, KEYS, RANDOMKEY and SCAN
over the partitions the node leads, as a Redis Cluster master answers them over its slots.

They are reads, served only as the node serves a GET: from the applied state of a primary
whose lease is valid (every write acknowledged before the call is in it). When one of the
partitions the node leads cannot serve now (reconciling after a promotion, renewing its
lease, handing over), the answer is TRYAGAIN, as for a GET, and the client asks again.

SCAN's cursor is a position in the scan order of core/keyspace.py, the same on every node:
a cursor given to a node that does not serve its slot (the partition moved) goes on with
the next slot that node serves, and one given to a partition's new primary goes on exactly
where the old one stopped. KEYS refuses, with an error, to walk more than ``keys_max`` keys
(NodeSettings): use SCAN, which holds the loop for at most ``SCAN_COUNT_MAX`` keys a call.

**The key index is built on first use.** A partition keeps its keys in scan order only
once a SCAN, KEYS or RANDOMKEY needs them (DBSIZE and TYPE never do): the first such read
starts a build on every partition it needs, and one task of the node (:meth:`_build`) runs
it, ``BUILD_SLICE_KEYS`` keys at a time, resting between slices (at most
``BUILD_LOOP_SHARE`` of the loop's time) so writes go on (core/keyspace.py's
:class:`~planaria.core.keyspace.LazyKeyIndex` reconciles them). The read waits for the
build, up to ``write_timeout_ms`` (then TRYAGAIN), and every read that arrives meanwhile
shares it. A partition whose replica steps down drops its index (a backup pays nothing for
it); one rebuilt (a snapshot installed, the log reopened) starts without one: a read
waiting on it asks again and starts the new replica's build.

A key past its expiry is not listed by KEYS, SCAN or RANDOMKEY (judged by the replica's
clock, as a GET of it is), though active expiry may not have deleted it yet; DBSIZE counts
it until then, as Redis' does.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from planaria.core.keyspace import (
    BUILD_SLICE_KEYS,
    ORDER_END,
    KeyIndex,
    glob_matcher,
    scan_ranges,
    type_name,
)
from planaria.core.messages import ErrorCode
from planaria.core.replica import Replica, Role
from planaria.core.slots import keyslot, partition_of_slot, slot_range
from planaria.net import resp
from planaria.net.commands import (
    SCAN_COUNT_MAX,
    DbSize,
    Keys,
    KeyspaceRead,
    RandomKey,
    Scan,
    error_reply,
)
from planaria.node._configs import ConfigFollower
from planaria.node._context import NodeContext
from planaria.node._settings import monotonic_ms

__all__ = ["BUILD_LOOP_SHARE", "RANDOM_KEY_TRIES", "KeyspaceReads"]

# RANDOMKEY draws at most this many keys looking for one not past its expiry.
RANDOM_KEY_TRIES = 100
# A key index build takes at most this share of the event loop's time: after each slice it
# rests as long again (the waiting read is not the only client of the node; a million keys
# take about twice 2.2 s, pure Python).
BUILD_LOOP_SHARE = 0.5


def _live(replica: Replica, now_ms: float) -> Callable[[bytes], bool]:
    """Whether a key of ``replica`` is not past its expiry at ``now_ms`` (as a read judges)."""
    expiries = replica.expiries
    if not expiries:
        return lambda key: True
    clock_ms = replica.clock_ms(now_ms)

    def live(key: bytes) -> bool:
        expire_ms = expiries.get_time(key)
        return expire_ms is None or expire_ms >= clock_ms

    return live


class KeyspaceReads:
    """Answers :data:`~planaria.net.commands.KeyspaceRead` requests from the replicas of the
    partitions this node leads (``rng``: RANDOMKEY's choice, node-local)."""

    def __init__(
        self, context: NodeContext, *, cluster: ConfigFollower, rng: random.Random | None = None
    ) -> None:
        self._context = context
        self._node_id = context.node_id
        self._settings = context.settings
        self._partitions = context.partitions
        self._cluster = cluster
        self._rng = rng if rng is not None else random.Random()
        # Partitions whose key index is being built, in the order reads asked (bounded by
        # the partitions this node holds), and the one task building them.
        self._wanted: dict[int, None] = {}
        self._builder: asyncio.Task[None] | None = None
        # Resolved (then replaced) whenever a wanted build ends, complete or dropped: the
        # reads waiting on builds look again then.
        self._progress: asyncio.Future[None] | None = None
        self.slices = 0  # build slices run (a counter, for status and tests)

    def answer(self, request: KeyspaceRead) -> bytes | Awaitable[bytes]:
        """The reply now, or (when a key index must be built first) an awaitable of it."""
        answered = self._answer_now(request)
        if isinstance(answered, bytes):
            return answered
        return self._answer_when_built(request)

    @property
    def building(self) -> tuple[int, ...]:
        """The partitions whose key index is being built for reads waiting on it."""
        return tuple(self._wanted)

    def _answer_now(self, request: KeyspaceRead) -> bytes | None:
        """The reply, or None when a led partition has no key index yet (its build is
        started, or goes on)."""
        count = self._cluster.partition_count
        if count is None:
            return resp.error("CLUSTERDOWN the cluster has no partitions yet")
        now_ms = monotonic_ms()
        led = self._led(now_ms)
        if isinstance(led, bytes):
            return led
        if isinstance(request, DbSize):
            return resp.integer(sum(len(replica.applied) for replica in led.values()))
        if isinstance(request, Keys):
            refusal = self._keys_refusal(led)  # before any build: KEYS may not walk them
            if refusal is not None:
                return refusal
        indexes: dict[int, KeyIndex] = {}
        for partition, replica in led.items():
            index = replica.key_index
            if index is None:
                self._want(partition, replica)
            else:
                indexes[partition] = index
        if len(indexes) < len(led):
            return None
        if isinstance(request, RandomKey):
            return resp.bulk(self._random_key(led, indexes, now_ms))
        if isinstance(request, Keys):
            return self._keys(led, indexes, request, now_ms)
        return self._scan(led, indexes, request, count, now_ms)

    async def _answer_when_built(self, request: KeyspaceRead) -> bytes:
        """Wait for the builds the read needs, then answer it (TRYAGAIN past the deadline).
        The partitions are looked at again after each build ends: one may have stepped
        down, or been rebuilt without an index (then its new build is started)."""
        timeout_ms = self._settings.write_timeout_ms
        deadline_ms = monotonic_ms() + timeout_ms
        while True:
            if self._context.stopping:  # no build runs any more (_build ends on it)
                return resp.error("TRYAGAIN the node is shutting down")
            answered = self._answer_now(request)
            if answered is not None:
                return answered
            if self._progress is None:
                self._progress = asyncio.get_running_loop().create_future()
            left_s = (deadline_ms - monotonic_ms()) / 1000
            try:
                # Shielded: a read that gives up must not cancel the others' wait.
                await asyncio.wait_for(asyncio.shield(self._progress), max(left_s, 0.0))
            except TimeoutError:
                return resp.error(
                    f"TRYAGAIN the key index of partition(s) {sorted(self._wanted)} is still "
                    f"being built on this node after {timeout_ms:.0f} ms"
                )

    def _want(self, partition: int, replica: Replica) -> None:
        """Start (or go on with) the build of ``partition``'s key index."""
        replica.start_key_index()
        self._wanted[partition] = None
        if self._builder is None or self._builder.done():
            self._builder = self._context.spawn(self._build(), "key-index")

    async def _build(self) -> None:
        """Build the wanted partitions' key indexes one after another, a slice per turn
        of the event loop, until none is wanted."""
        try:
            while self._wanted and not self._context.stopping:
                partition = next(iter(self._wanted))
                runtime = self._partitions.get(partition)
                replica = runtime.replica if runtime is not None else None
                # Not building any more: built, dropped (stepped down), or the replica was
                # rebuilt (a new one starts without an index; a read asks for it again).
                ended = replica is None or not replica.key_index_building
                rest_s = 0.0
                if not ended and replica is not None:
                    started = time.perf_counter()
                    ended = replica.key_index_step(BUILD_SLICE_KEYS)
                    rest_s = (time.perf_counter() - started) * (1 / BUILD_LOOP_SHARE - 1)
                    self.slices += 1
                if ended:
                    del self._wanted[partition]
                    self._wake()
                await asyncio.sleep(rest_s)  # the loop's other work goes on between slices
        except Exception as exc:
            # The reads waiting fail with it (an error reply each, logged); the next read
            # starts a new build.
            self._wanted.clear()
            self._wake(exc)
            raise
        finally:
            self._wanted.clear()
            self._wake()  # the reads look again (and start a new build if still needed)

    def _wake(self, failure: Exception | None = None) -> None:
        progress, self._progress = self._progress, None
        if progress is None or progress.done():
            return
        if failure is None:
            progress.set_result(None)
        else:
            progress.set_exception(failure)

    def _led(self, now_ms: float) -> dict[int, Replica] | bytes:
        """The replicas of the partitions this node leads, by partition, or the TRYAGAIN
        error for one that cannot serve a read now."""
        led: dict[int, Replica] = {}
        configs = self._cluster.configs
        for partition, runtime in sorted(self._partitions.items()):
            replica = runtime.replica
            config = configs.get(partition)
            leads = config is not None and config.primary == self._node_id
            if not leads and replica.role is not Role.PRIMARY:
                continue
            if not replica.serving(now_ms):
                return error_reply(ErrorCode.NOT_READY, slot=0, partition=partition)
            led[partition] = replica
        return led

    def _random_key(
        self, led: dict[int, Replica], indexes: dict[int, KeyIndex], now_ms: float
    ) -> bytes | None:
        """A key chosen at random, skipping expired ones (at most ``RANDOM_KEY_TRIES``
        draws: nil if every one was expired, when nearly all are)."""
        sizes = [(len(indexes[p]), indexes[p], replica) for p, replica in led.items()]
        total = sum(size for size, _, _ in sizes)
        if total == 0:
            return None
        for _ in range(RANDOM_KEY_TRIES):
            place = self._rng.randrange(total)
            for size, index, replica in sizes:  # a partition as likely as its share of keys
                if place < size:
                    key = index.random_key(self._rng)
                    if key is not None and _live(replica, now_ms)(key):
                        return key
                    break
                place -= size
        return None

    def _keys_refusal(self, led: dict[int, Replica]) -> bytes | None:
        """KEYS' error when the led partitions hold more keys than ``keys_max``."""
        total = sum(len(replica.applied) for replica in led.values())
        limit = self._settings.keys_max
        if total <= limit:
            return None
        return resp.error(
            f"ERR KEYS would walk {total} keys on this node, over its limit of {limit} "
            "(keys_max); use SCAN"
        )

    def _keys(
        self, led: dict[int, Replica], indexes: dict[int, KeyIndex], request: Keys, now_ms: float
    ) -> bytes:
        matches = glob_matcher(request.pattern)
        found = []
        for partition, replica in led.items():
            live = _live(replica, now_ms)
            found += [resp.bulk(key) for key in indexes[partition] if matches(key) and live(key)]
        return resp.array(found)

    def _scan(
        self,
        led: dict[int, Replica],
        indexes: dict[int, KeyIndex],
        request: Scan,
        count: int,
        now_ms: float,
    ) -> bytes:
        keys: list[bytes] = []
        cursor = 0
        if request.cursor < ORDER_END:
            parts: list[tuple[range, KeyIndex]] = [
                (slot_range(partition, count), index) for partition, index in indexes.items()
            ]
            visit = min(request.count, SCAN_COUNT_MAX)
            cursor, keys = scan_ranges(parts, request.cursor, visit)
        # As Redis: COUNT counts the keys visited; MATCH, TYPE and expiry filter what was
        # visited.
        if keys and any(replica.expiries for replica in led.values()):
            lives = {partition: _live(replica, now_ms) for partition, replica in led.items()}
            keys = [key for key in keys if lives[partition_of_slot(keyslot(key), count)](key)]
        if request.pattern is not None:
            matches = glob_matcher(request.pattern)
            keys = [key for key in keys if matches(key)]
        if request.type is not None:
            wanted = request.type.decode("utf-8", "replace").lower()
            kept: list[bytes] = []
            for key in keys:
                replica = led[partition_of_slot(keyslot(key), count)]
                found = replica.applied.get(key)
                if found is not None and type_name(found[0]) == wanted:
                    kept.append(key)
            keys = kept
        listed = b"".join([b"$%d\r\n%b\r\n" % (len(key), key) for key in keys])  # bulks
        return b"*2\r\n%b*%d\r\n%b" % (resp.bulk(b"%d" % cursor), len(keys), listed)
