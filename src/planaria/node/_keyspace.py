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
"""

from __future__ import annotations

import random

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

__all__ = ["KeyspaceReads"]


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
        led = self._led(monotonic_ms())
        if isinstance(led, bytes):
            return led
        if isinstance(request, DbSize):
            return resp.integer(sum(len(replica.applied) for replica in led.values()))
        if isinstance(request, RandomKey):
            return resp.bulk(self._random_key(led))
        if isinstance(request, Keys):
            return self._keys(led, request)
        return self._scan(led, request, count)

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

    def _random_key(self, led: dict[int, Replica]) -> bytes | None:
        sizes = [(len(replica.key_index), replica.key_index) for replica in led.values()]
        total = sum(size for size, _ in sizes)
        if total == 0:
            return None
        place = self._rng.randrange(total)
        for size, index in sizes:  # a partition as likely as its share of the keys
            if place < size:
                return index.random_key(self._rng)
            place -= size
        return None  # pragma: no cover (the sizes add up to total)

    def _keys(self, led: dict[int, Replica], request: Keys) -> bytes:
        total = sum(len(replica.key_index) for replica in led.values())
        limit = self._settings.keys_max
        if total > limit:
            return resp.error(
                f"ERR KEYS would walk {total} keys on this node, over its limit of {limit} "
                "(keys_max); use SCAN"
            )
        matches = glob_matcher(request.pattern)
        found = [
            resp.bulk(key) for replica in led.values() for key in replica.key_index if matches(key)
        ]
        return resp.array(found)

    def _scan(self, led: dict[int, Replica], request: Scan, count: int) -> bytes:
        keys: list[bytes] = []
        cursor = 0
        if request.cursor < ORDER_END:
            parts: list[tuple[range, KeyIndex]] = [
                (slot_range(partition, count), replica.key_index)
                for partition, replica in led.items()
            ]
            visit = min(request.count, SCAN_COUNT_MAX)
            cursor, keys = scan_ranges(parts, request.cursor, visit)
        # As Redis: COUNT counts the keys visited; MATCH and TYPE filter what was visited.
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
