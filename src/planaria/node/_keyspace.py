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

A key past its expiry is not listed by KEYS, SCAN or RANDOMKEY (judged by the replica's
clock, as a GET of it is), though active expiry may not have deleted it yet; DBSIZE counts
it until then, as Redis' does.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from planaria.core.keyspace import ORDER_END, KeyIndex, glob_matcher, scan_ranges, type_name
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

__all__ = ["RANDOM_KEY_TRIES", "KeyspaceReads"]

# RANDOMKEY draws at most this many keys looking for one not past its expiry.
RANDOM_KEY_TRIES = 100


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
        self._node_id = context.node_id
        self._settings = context.settings
        self._partitions = context.partitions
        self._cluster = cluster
        self._rng = rng if rng is not None else random.Random()

    def answer(self, request: KeyspaceRead) -> bytes:
        count = self._cluster.partition_count
        if count is None:
            return resp.error("CLUSTERDOWN the cluster has no partitions yet")
        now_ms = monotonic_ms()
        led = self._led(now_ms)
        if isinstance(led, bytes):
            return led
        if isinstance(request, DbSize):
            return resp.integer(sum(len(replica.applied) for replica in led.values()))
        if isinstance(request, RandomKey):
            return resp.bulk(self._random_key(led, now_ms))
        if isinstance(request, Keys):
            return self._keys(led, request, now_ms)
        return self._scan(led, request, count, now_ms)

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

    def _random_key(self, led: dict[int, Replica], now_ms: float) -> bytes | None:
        """A key chosen at random, skipping expired ones (at most ``RANDOM_KEY_TRIES``
        draws: nil if every one was expired, when nearly all are)."""
        sizes = [(len(replica.key_index), replica) for replica in led.values()]
        total = sum(size for size, _ in sizes)
        if total == 0:
            return None
        for _ in range(RANDOM_KEY_TRIES):
            place = self._rng.randrange(total)
            for size, replica in sizes:  # a partition as likely as its share of the keys
                if place < size:
                    key = replica.key_index.random_key(self._rng)
                    if key is not None and _live(replica, now_ms)(key):
                        return key
                    break
                place -= size
        return None

    def _keys(self, led: dict[int, Replica], request: Keys, now_ms: float) -> bytes:
        total = sum(len(replica.key_index) for replica in led.values())
        limit = self._settings.keys_max
        if total > limit:
            return resp.error(
                f"ERR KEYS would walk {total} keys on this node, over its limit of {limit} "
                "(keys_max); use SCAN"
            )
        matches = glob_matcher(request.pattern)
        found = []
        for replica in led.values():
            live = _live(replica, now_ms)
            found += [resp.bulk(key) for key in replica.key_index if matches(key) and live(key)]
        return resp.array(found)

    def _scan(self, led: dict[int, Replica], request: Scan, count: int, now_ms: float) -> bytes:
        keys: list[bytes] = []
        cursor = 0
        if request.cursor < ORDER_END:
            parts: list[tuple[range, KeyIndex]] = [
                (slot_range(partition, count), replica.key_index)
                for partition, replica in led.items()
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
