"""The client's cluster map: which node is primary for each of the 16384 slots, and which
backups may answer stale reads. Built from a CLUSTER SHARDS or CLUSTER SLOTS reply (RESP2,
as hiredis parses it); a MOVED redirect repoints one slot until the next refresh."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from planaria.address import format_address
from planaria.core.slots import SLOTS
from planaria.errors import PeerError, UsageError

__all__ = ["MalformedTopology", "Shard", "SlotMap"]


class MalformedTopology(PeerError):
    """A node answered CLUSTER SHARDS / SLOTS with something that is not a cluster map."""


@dataclass(frozen=True, slots=True)
class Shard:
    """The nodes of one slot range: ``primary`` and the ``replicas`` for stale reads, as
    ``host:port``."""

    primary: str
    replicas: tuple[str, ...] = ()


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str | int):
        return str(value)
    raise MalformedTopology(f"expected a string in the cluster map, got {value!r}")


def _int(value: object) -> int:
    try:
        return int(_text(value))
    except ValueError:
        raise MalformedTopology(f"expected an integer in the cluster map, got {value!r}") from None


def _pairs(value: object) -> dict[str, object]:
    if isinstance(value, dict):
        return {_text(k): v for k, v in value.items()}
    if not isinstance(value, list) or len(value) % 2:
        raise MalformedTopology(f"expected a map in the cluster map, got {value!r}")
    return {_text(value[i]): value[i + 1] for i in range(0, len(value), 2)}


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise MalformedTopology(f"expected an array in the cluster map, got {value!r}")
    return value


def _address(host: str, port: int, origin_host: str) -> str:
    # Redis leaves the host empty (or '?') when a node does not know its own address:
    # it is then the host the reply came from.
    if host in ("", "?"):
        host = origin_host
    return format_address(host, port)


class SlotMap:
    """slot -> :class:`Shard` (None: nobody serves it). Read without locks: a refresh
    replaces the whole map, a redirect one list item."""

    __slots__ = ("_owners",)

    def __init__(self, owners: Sequence[Shard | None]) -> None:
        if len(owners) != SLOTS:
            raise UsageError(f"a slot map has {SLOTS} entries, got {len(owners)}")
        self._owners = list(owners)

    @classmethod
    def from_ranges(cls, ranges: Sequence[tuple[int, int, Shard]]) -> SlotMap:
        owners: list[Shard | None] = [None] * SLOTS
        for start, end, shard in ranges:
            if not 0 <= start <= end < SLOTS:
                raise MalformedTopology(f"slot range {start}-{end} is outside 0..{SLOTS - 1}")
            owners[start : end + 1] = [shard] * (end - start + 1)
        return cls(owners)

    @classmethod
    def from_cluster_shards(cls, reply: object, origin_host: str) -> SlotMap:
        """From CLUSTER SHARDS: per shard, flat ``slots`` start/end pairs and ``nodes``
        with ``endpoint``/``ip``, ``port``, ``role``, ``health``."""
        ranges: list[tuple[int, int, Shard]] = []
        for shard_value in _list(reply):
            shard = _pairs(shard_value)
            slots = [_int(slot) for slot in _list(shard.get("slots", []))]
            primary: str | None = None
            replicas: list[str] = []
            for node_value in _list(shard.get("nodes", [])):
                node = _pairs(node_value)
                if "port" not in node:
                    continue  # TLS-only node: not reachable by this client
                host = _text(node.get("endpoint") or node.get("ip") or "")
                address = _address(host, _int(node["port"]), origin_host)
                if _text(node.get("role", "")) == "master":
                    primary = address
                elif _text(node.get("health", "online")) == "online":
                    replicas.append(address)
            if primary is None or len(slots) % 2:
                continue  # a shard without a primary serves nobody
            entry = Shard(primary, tuple(replicas))
            ranges += [(slots[i], slots[i + 1], entry) for i in range(0, len(slots), 2)]
        return cls.from_ranges(ranges)

    @classmethod
    def from_cluster_slots(cls, reply: object, origin_host: str) -> SlotMap:
        """From CLUSTER SLOTS: ``[start, end, [host, port, id, ...] (primary), replicas...]``."""
        ranges: list[tuple[int, int, Shard]] = []
        for range_value in _list(reply):
            row = _list(range_value)
            if len(row) < 3:
                raise MalformedTopology(f"a CLUSTER SLOTS row needs a primary: {row!r}")
            nodes = []
            for node_value in row[2:]:
                node = _list(node_value)
                if len(node) < 2:
                    raise MalformedTopology(f"a CLUSTER SLOTS node needs host and port: {node!r}")
                nodes.append(_address(_text(node[0]), _int(node[1]), origin_host))
            ranges.append((_int(row[0]), _int(row[1]), Shard(nodes[0], tuple(nodes[1:]))))
        return cls.from_ranges(ranges)

    def shard(self, slot: int) -> Shard | None:
        return self._owners[slot]

    def redirect(self, slot: int, address: str) -> None:
        """MOVED: ``address`` is now primary of ``slot`` (the old primary, if it still
        serves, may do stale reads)."""
        old = self._owners[slot]
        replicas = () if old is None else (old.primary, *old.replicas)
        self._owners[slot] = Shard(address, tuple(r for r in replicas if r != address))

    def addresses(self) -> Iterator[str]:
        """Every node once, primaries first."""
        shards = {shard for shard in self._owners if shard is not None}
        seen: dict[str, None] = {}
        for shard in sorted(shards, key=lambda s: (s.primary, s.replicas)):
            seen.setdefault(shard.primary)
        for shard in sorted(shards, key=lambda s: (s.primary, s.replicas)):
            for replica in shard.replicas:
                seen.setdefault(replica)
        return iter(seen)

    def primary_slots(self) -> dict[str, int]:
        """Every primary once, by address (sorted), with the first slot it serves: a node-wide
        command (DBSIZE, KEYS, SCAN) goes to that slot's primary."""
        first: dict[str, int] = {}
        for slot, shard in enumerate(self._owners):
            if shard is not None:
                first.setdefault(shard.primary, slot)
        return dict(sorted(first.items()))

    def __contains__(self, address: object) -> bool:
        return any(
            shard is not None and (shard.primary == address or address in shard.replicas)
            for shard in set(self._owners)
        )

    @property
    def slots_served(self) -> int:
        return sum(shard is not None for shard in self._owners)
