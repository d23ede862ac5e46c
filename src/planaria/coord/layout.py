"""Where planaria keeps its cluster state in the coordinator, and how it is encoded.

Keys are relative to the backend's namespace (a ZooKeeper chroot, an etcd key prefix), so
several clusters can share one ensemble::

    /members/<node id>          ephemeral: a live node's address and metadata (its session)
    /partitions/<partition>     persistent: the partition's PartitionConfig
    /controller/<token>         ephemeral: controller candidates (the election)

Values are UTF-8 JSON with sorted keys: readable with zkCli/etcdctl, and byte-identical for
equal records, so the simulator's traces are deterministic. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from planaria.coord.errors import MalformedRecord
from planaria.coord.types import SessionId, VersionedValue, validate_segment
from planaria.core.messages import PartitionConfig, PartitionId
from planaria.errors import UsageError

__all__ = [
    "CONFIGS_PREFIX",
    "CONTROLLER_ELECTION",
    "MEMBERS_PREFIX",
    "Registration",
    "config_key",
    "decode_config",
    "decode_registration",
    "encode_config",
    "encode_registration",
    "member_key",
    "partition_of_key",
]

MEMBERS_PREFIX = "/members/"
# PartitionConfig fields written only when set (added with membership changes).
_OPTIONAL_FIELDS = ("learners", "handoff", "wiped", "data_ids")
CONFIGS_PREFIX = "/partitions/"
CONTROLLER_ELECTION = "/controller/"


@dataclass(frozen=True, slots=True)
class Registration:
    """A live node, as registered under its session (``session`` is also its incarnation)."""

    node_id: str
    address: str
    metadata: tuple[tuple[str, str], ...]  # sorted (name, value) pairs: weight, zone, ...
    session: SessionId
    version: int

    def meta(self) -> dict[str, str]:
        return dict(self.metadata)


def member_key(node_id: str) -> str:
    return MEMBERS_PREFIX + validate_segment(node_id, "node id")


def config_key(partition: PartitionId) -> str:
    if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
        raise UsageError(f"a partition is an int >= 0, not {partition!r}")
    return f"{CONFIGS_PREFIX}{partition}"


def partition_of_key(key: str) -> PartitionId | None:
    """The partition a config key names, or None for any other key."""
    name = key[len(CONFIGS_PREFIX) :] if key.startswith(CONFIGS_PREFIX) else ""
    return int(name) if name.isascii() and name.isdigit() else None


def _dumps(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def _loads(data: bytes, what: str) -> dict[str, Any]:
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRecord(f"not a {what}: {exc}") from exc
    if not isinstance(record, dict):
        raise MalformedRecord(f"not a {what}: {data[:80]!r}")
    return record


def encode_registration(address: str, metadata: Mapping[str, str] | None = None) -> bytes:
    if not isinstance(address, str) or not address:
        raise UsageError(f"an address must be a non-empty str, not {address!r}")
    meta = dict(metadata or {})
    for name, value in meta.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise UsageError(f"metadata must map str to str, not {name!r}: {value!r}")
    return _dumps({"address": address, "metadata": meta})


def decode_registration(item: VersionedValue) -> Registration:
    """The registration stored at ``item`` (a key under MEMBERS_PREFIX)."""
    node_id = item.key[len(MEMBERS_PREFIX) :]
    if not item.key.startswith(MEMBERS_PREFIX) or "/" in node_id or item.session is None:
        raise MalformedRecord(f"{item.key} is not an ephemeral member key")
    record = _loads(item.value, "registration")
    address, metadata = record.get("address"), record.get("metadata")
    if not isinstance(address, str) or not isinstance(metadata, dict):
        raise MalformedRecord(f"{item.key}: registration without address or metadata")
    pairs = tuple(sorted((str(k), str(v)) for k, v in metadata.items()))
    return Registration(node_id, address, pairs, item.session, item.version)


def encode_config(config: PartitionConfig) -> bytes:
    if not isinstance(config, PartitionConfig):
        raise UsageError(f"not a PartitionConfig: {config!r}")
    record: dict[str, Any] = {f.name: getattr(config, f.name) for f in fields(config)}
    record["replicas"] = list(config.replicas)
    record["isr"] = sorted(config.isr)
    # Membership fields only when a move is under way: a config without one encodes to the
    # same bytes as before they existed, and older readers still decode it.
    record["learners"] = list(config.learners)
    record["wiped"] = [[node, incarnation] for node, incarnation in config.wiped]
    record["data_ids"] = [[node, data_id] for node, data_id in config.data_ids]
    for name in _OPTIONAL_FIELDS:
        if not record[name]:
            del record[name]
    return _dumps(record)


def decode_config(data: bytes) -> PartitionConfig:
    record = _loads(data, "partition config")
    try:
        record["replicas"] = tuple(record["replicas"])
        record["isr"] = frozenset(record["isr"])
        record["learners"] = tuple(record.get("learners", ()))
        record["wiped"] = tuple(
            (node, incarnation) for node, incarnation in record.get("wiped", ())
        )
        record["data_ids"] = tuple((node, data_id) for node, data_id in record.get("data_ids", ()))
        config = PartitionConfig(**record)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedRecord(f"not a partition config: {exc}") from exc
    names = [
        *config.replicas,
        *config.isr,
        *config.learners,
        *([config.primary] if config.primary else []),
        *([config.handoff] if config.handoff else []),
        *(node for node, _ in config.wiped),
        *(node for node, _ in config.data_ids),
    ]
    numbers = [
        config.partition,
        config.epoch,
        config.version,
        config.primary_incarnation,
        *(incarnation for _, incarnation in config.wiped),
        *(data_id for _, data_id in config.data_ids),
    ]
    if not all(isinstance(n, str) for n in names) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in numbers
    ):
        raise MalformedRecord(f"partition config with wrong field types: {data[:120]!r}")
    return config
