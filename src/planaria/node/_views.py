"""What a node reports (:class:`NodeViews`): INFO's sections, the partitions it serves,
and the answers to every command that is not a data command (INFO, CLUSTER, BACKUP)."""

from __future__ import annotations

import gc
import itertools
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import NamedTuple

from planaria import _native
from planaria.core.replica import Role
from planaria.errors import UsageError
from planaria.net import resp
from planaria.net.commands import (
    BackupBegin,
    BackupEnd,
    BackupRead,
    ClusterInfo,
    ClusterMyId,
    ClusterNodes,
    ClusterShards,
    ClusterSlots,
    ConnectionState,
    Info,
    NodeRequest,
    render_info,
)
from planaria.net.server import RespServer
from planaria.net.topology import (
    cluster_info,
    cluster_nodes,
    cluster_shards,
    cluster_slots,
    node_id_hex,
)
from planaria.node._backup import BackupExports
from planaria.node._configs import ConfigFollower
from planaria.node._context import NodeContext
from planaria.node._effects import ReplicaEffects
from planaria.node._memory import MemoryGauge, resident_bytes
from planaria.node._partition import PartitionRuntime
from planaria.node._requests import ClientRequests
from planaria.node._session import SessionKeeper
from planaria.node._settings import monotonic_ms
from planaria.storage import GroupCommitter

__all__ = ["NodeViews", "PartitionNumbers"]


class PartitionNumbers(NamedTuple):
    """What INFO's partition line and the metrics say of one replica here."""

    role: Role
    serving: bool
    epoch: int
    last_index: int
    commit_index: int
    isr: tuple[str, ...]  # sorted; empty before the replica has a config
    replicas: int  # in its config (0 before it has one)
    lag_entries: int  # a primary's: entries its furthest-behind peer lacks; else 0
    storage_failed: bool
    storage_failures: int
    snapshot_index: int
    log_entries: int
    log_bytes: int
    memory_entries: int
    snapshots: int
    needs_snapshot: int
    transfers: int


class NodeViews:
    """Reads every part of the node, changes none (BACKUP aside: ``backups`` exports).
    ``ports`` gives the RESP and bus ports the node listens on (known once it does)."""

    def __init__(
        self,
        context: NodeContext,
        *,
        cluster: ConfigFollower,
        keeper: SessionKeeper,
        effects: ReplicaEffects,
        requests: ClientRequests,
        server: RespServer,
        committer: GroupCommitter,
        backups: BackupExports,
        memory: MemoryGauge,
        ports: Callable[[], tuple[int, int]],
    ) -> None:
        self._memory = memory
        self._node_id = context.node_id
        self._settings = context.settings
        self._partitions = context.partitions
        self._cluster = cluster
        self._keeper = keeper
        self._effects = effects
        self._requests = requests
        self._server = server
        self._committer = committer
        self._backups = backups
        self._ports = ports
        self._started_ms = monotonic_ms()
        # Failovers seen here: each partition's newest epoch, and the rises counted so far.
        # Bounded by the cluster's partitions (a partition that leaves keeps its entry).
        self._epochs_seen: dict[int, int] = {}
        self.epoch_changes = 0
        self.metrics_address: Callable[[], str | None] = lambda: None

    def observe_epochs(self) -> None:
        """Count the epoch rises since the last call (the node's tick calls it), so the
        count does not depend on anyone reading it. A partition's first epoch here counts
        nothing (it opened, it did not fail over)."""
        seen = self._epochs_seen
        for partition, runtime in self._partitions.items():
            epoch = runtime.replica.epoch
            before = seen.get(partition)
            if before != epoch:
                if before is not None and epoch > before:
                    self.epoch_changes += epoch - before
                seen[partition] = epoch

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def partitions(self) -> dict[int, PartitionRuntime]:
        return self._partitions

    @property
    def server(self) -> RespServer:
        return self._server

    @property
    def committer(self) -> GroupCommitter:
        return self._committer

    @property
    def memory(self) -> MemoryGauge:
        return self._memory

    @property
    def effects(self) -> ReplicaEffects:
        return self._effects

    @property
    def keeper(self) -> SessionKeeper:
        return self._keeper

    @property
    def requests(self) -> ClientRequests:
        return self._requests

    def answer(self, state: ConnectionState, request: NodeRequest) -> bytes | Awaitable[bytes]:
        """INFO, CLUSTER MYID / SLOTS / SHARDS / NODES / INFO, BACKUP BEGIN / READ / END."""
        if isinstance(request, Info):
            return render_info(self.info(request.sections))
        if isinstance(request, ClusterMyId):
            return resp.bulk(node_id_hex(self._node_id).encode())
        if isinstance(request, BackupBegin):
            runtime = self._partitions.get(request.partition)
            return self._backups.begin(request.partition, runtime, self._node_id)
        if isinstance(request, BackupRead):
            return self._backups.read(request.token, request.offset, request.length)
        if isinstance(request, BackupEnd):
            return self._backups.end(request.token)
        topology = self._cluster.topology()
        if isinstance(request, ClusterSlots):
            return cluster_slots(topology)
        if isinstance(request, ClusterShards):
            return cluster_shards(topology, state.protocol)
        if isinstance(request, ClusterNodes):
            return cluster_nodes(topology, self._node_id)
        if isinstance(request, ClusterInfo):
            return cluster_info(topology, self._node_id)
        raise UsageError(f"unsupported request {type(request).__name__}")

    def serving_partitions(self) -> list[int]:
        now = monotonic_ms()
        return sorted(p for p, r in self._partitions.items() if r.replica.serving(now))

    def info(self, sections: Iterable[str] = ()) -> dict[str, dict[str, object]]:
        """INFO's sections: server, cluster (roles, serving), partitions (epoch, lag)."""
        now = monotonic_ms()
        partitions = self._partitions
        keeper = self._keeper
        sender = self._effects.sender
        stats = self._committer.stats
        tcp_port, bus_port = self._ports()
        primaries = sum(r.replica.role is Role.PRIMARY for r in partitions.values())
        result: dict[str, dict[str, object]] = {
            "Server": {
                "redis_version": "7.0.0",
                "planaria_node": self._node_id,
                "process_id": os.getpid(),
                "tcp_port": tcp_port,
                "bus_port": bus_port,
                "uptime_in_seconds": int((now - self._started_ms) / 1000),
                "session": keeper.session if keeper.session is not None else "none",
                "lease_remaining_ms": max(0, int(keeper.lease_until_ms - now))
                if keeper.lease_until_ms > now
                else 0,
                "sessions_lost": keeper.sessions_lost,
                "replies_unleased": self._effects.replies_unleased,
                "fsync": self._settings.fsync.mode,
                "compiled": "yes" if _native.compiled() else "no",  # mypyc hot modules
                # Where Prometheus scrapes this node (planaria node --metrics-listen).
                "metrics_address": self.metrics_address() or "",
            },
            "Cluster": {
                "cluster_enabled": 1,
                "partitions_total": self._cluster.partition_count or 0,
                "partitions_here": len(partitions),
                "primaries": primaries,
                "backups": len(partitions) - primaries,
                "serving": len(self.serving_partitions()),
                "connected_clients": self._server.connections,
                "pending_writes": self._requests.pending,
                "epoch_changes": self.epoch_changes,
                "gc_frozen_objects": gc.get_freeze_count(),
                "disk_jobs": stats.jobs,
                "disk_jobs_inline": stats.inline,
                "disk_batches": stats.batches,
                "disk_fsyncs": stats.syncs,
                "appends_merged": sum(r.appends_merged for r in partitions.values()),
                # Snapshot transfers: sending now / done / aborted, bytes sent, installed here.
                "transfers": len(sender.transfers),
                "transfers_done": sender.completed,
                "transfers_aborted": sender.aborted,
                "transfer_bytes_sent": sender.bytes_sent,
                "transfers_receiving": len(self._effects.receiver.receiving),
                "snapshots_installed": sum(r.snapshots_installed for r in partitions.values()),
                # Snapshots taken for planaria backup (BACKUP BEGIN): open now, taken in all.
                "backups_open": len(self._backups),
                "backups_taken": self._backups.exported,
            },
            "Memory": {
                # The process's RSS (node/_memory.py), as Redis reports its allocator's.
                "used_memory": (used := resident_bytes()),
                "used_memory_human": _human(used),
                "used_memory_rss": used,
                "maxmemory": self._memory.maxmemory_bytes,
                "maxmemory_human": _human(self._memory.maxmemory_bytes),
                "maxmemory_policy": "noeviction",
                "oom_refused": self._memory.refused,
            },
            "Partitions": {
                f"p{p}": self._partition_line(r, now) for p, r in sorted(partitions.items())
            },
        }
        keyspace = self._keyspace_line(now)
        if keyspace:  # as Redis: no line for an empty database
            result["Keyspace"] = {"db0": keyspace}
        wanted = {s.lower() for s in sections} - {"all", "everything", "default"}
        if wanted:
            result = {name: body for name, body in result.items() if name.lower() in wanted}
        return result

    def _keyspace_line(self, now_ms: float) -> str:
        """INFO's ``db0`` line over the partitions this node leads (the keys DBSIZE counts):
        keys, keys with an expiry, and their average time left in ms, estimated as Redis
        does from a sample (up to ``_TTL_SAMPLE`` keys a partition: INFO stays cheap)."""
        keys = expires = 0
        left_ms: list[int] = []
        for runtime in self._partitions.values():
            replica = runtime.replica
            if replica.role is not Role.PRIMARY:
                continue
            keys += len(replica.applied)
            expiries = replica.expiries
            expires += len(expiries)
            clock_ms = replica.clock_ms(now_ms)
            for key in itertools.islice(expiries, _TTL_SAMPLE):
                time_ms = expiries.get_time(key)
                if time_ms is not None:
                    left_ms.append(max(time_ms - clock_ms, 0))
        if not keys:
            return ""
        avg_ttl = sum(left_ms) // len(left_ms) if left_ms else 0
        return f"keys={keys},expires={expires},avg_ttl={avg_ttl}"

    def partition_numbers(self, runtime: PartitionRuntime, now_ms: float) -> PartitionNumbers:
        replica = runtime.replica
        config = runtime.config
        lag = 0
        if replica.role is Role.PRIMARY and config is not None:
            peers = [n for n in config.replicas if n != self._node_id]
            lag = max((replica.last_index - replica.match_index(n) for n in peers), default=0)
        log_ = runtime.log
        partition = runtime.partition
        return PartitionNumbers(
            role=replica.role,
            serving=replica.serving(now_ms),
            epoch=replica.epoch,
            last_index=replica.last_index,
            commit_index=replica.commit_index,
            isr=tuple(sorted(config.isr)) if config is not None else (),
            replicas=len(config.replicas) if config is not None else 0,
            lag_entries=lag,
            storage_failed=runtime.storage_failure is not None,
            storage_failures=runtime.storage_failures,
            snapshot_index=log_.snapshot_index if log_ is not None else 0,
            log_entries=log_.log_entries if log_ is not None else 0,
            log_bytes=log_.log_bytes if log_ is not None else 0,
            memory_entries=replica.log_entries,
            snapshots=runtime.snapshots_taken,
            needs_snapshot=len(replica.peers_needing_snapshot),
            transfers=sum(p == partition for p, _ in self._effects.sender.transfers),
        )

    def _partition_line(self, runtime: PartitionRuntime, now_ms: float) -> str:
        n = self.partition_numbers(runtime, now_ms)
        return (
            f"role={n.role},serving={int(n.serving)},epoch={n.epoch},"
            f"last={n.last_index},commit={n.commit_index},isr={'|'.join(n.isr)},"
            f"lag={n.lag_entries},storage={'failed' if n.storage_failed else 'ok'},"
            f"storage_failures={n.storage_failures},"
            f"snapshot_index={n.snapshot_index},log_entries={n.log_entries},"
            f"log_bytes={n.log_bytes},memory_entries={n.memory_entries},"
            f"snapshots={n.snapshots},needs_snapshot={n.needs_snapshot},"
            f"transfers={n.transfers}"
        )


# Keys of each led partition whose expiries INFO's avg_ttl is estimated from.
_TTL_SAMPLE = 64


def _human(size: int) -> str:
    """Bytes as Redis' INFO writes them (``1.50M``)."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.2f}{unit}"
    return f"{size}B"
