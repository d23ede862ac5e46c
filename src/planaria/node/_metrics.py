"""A node's Prometheus metrics (``planaria node --metrics-listen``): a collector that reads
the counters the node keeps anyway when scraped (:class:`NodeCollector`), and a small HTTP
server on the node's own event loop (:class:`MetricsServer`).

Nothing is counted on a command's path for the metrics alone: the collector reads INFO's
numbers (:class:`~planaria.node._views.NodeViews`) and the RESP server's command counts at
scrape time. Serving from the event loop, not a thread, means a scrape sees the node's
tables between two events, never in the middle of a change; one scrape costs well under a
millisecond a partition (benchmarks/bench_metrics.py). The series are bounded: per partition
here, per command of the command table, never per key or client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any, cast

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from planaria.address import parse_address
from planaria.core.replica import Role
from planaria.net.server import LATENCY_BOUNDS_S, CommandStats
from planaria.node._memory import resident_bytes
from planaria.node._settings import monotonic_ms
from planaria.node._views import NodeViews

__all__ = ["MetricsServer", "NodeCollector", "new_registry"]

log = logging.getLogger("planaria.node")

# Bounds on what one scraper may send: a request line and headers, and how long it may take.
REQUEST_BYTES_MAX = 16 * 1024
REQUEST_TIMEOUT_S = 10.0
# Scrapes served at once; one more connection is answered 503 and closed.
CONNECTIONS_MAX = 16


class NodeCollector(Collector):
    """Every metric of a node, read from ``views`` when collected."""

    def __init__(self, views: NodeViews) -> None:
        self._views = views

    def collect(self) -> Iterator[Metric]:
        views = self._views
        views.observe_epochs()  # up to now, not to the last tick
        node = views.node_id
        now_ms = monotonic_ms()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["node"])
            family.add_metric([node], value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["node"])
            family.add_metric([node], value)
            return family

        # -- per partition
        labels = ["node", "partition"]
        primary = GaugeMetricFamily(
            "planaria_partition_primary", "1 when this node's replica is the primary", labels=labels
        )
        serving = GaugeMetricFamily(
            "planaria_partition_serving",
            "1 when the replica serves (leased primary)",
            labels=labels,
        )
        epoch = GaugeMetricFamily("planaria_partition_epoch", "the replica's epoch", labels=labels)
        isr = GaugeMetricFamily(
            "planaria_partition_isr_size",
            "replicas in the partition's ISR (its config here)",
            labels=labels,
        )
        lag = GaugeMetricFamily(
            "planaria_partition_replication_lag_entries",
            "a primary's entries its furthest-behind replica lacks (0 on a backup)",
            labels=labels,
        )
        log_entries = GaugeMetricFamily(
            "planaria_partition_log_entries", "entries in the partition's log files", labels=labels
        )
        log_bytes = GaugeMetricFamily(
            "planaria_partition_log_bytes", "bytes of the partition's log files", labels=labels
        )
        snapshot_index = GaugeMetricFamily(
            "planaria_partition_snapshot_index", "the index the last snapshot covers", labels=labels
        )
        # Eight series a partition: each costs its rendering at every scrape (a few µs);
        # the rest of INFO's partition line is summed over the partitions here.
        under_replicated = primaries = serving_count = snapshots = storage_failures = 0
        for partition, runtime in sorted(views.partitions.items()):
            n = views.partition_numbers(runtime, now_ms)
            values = [node, str(partition)]
            is_primary = n.role is Role.PRIMARY
            primaries += is_primary
            serving_count += n.serving
            if is_primary and len(n.isr) < n.replicas:
                under_replicated += 1
            snapshots += n.snapshots
            storage_failures += n.storage_failures
            primary.add_metric(values, int(is_primary))
            serving.add_metric(values, int(n.serving))
            epoch.add_metric(values, n.epoch)
            isr.add_metric(values, len(n.isr))
            lag.add_metric(values, n.lag_entries)
            log_entries.add_metric(values, n.log_entries)
            log_bytes.add_metric(values, n.log_bytes)
            snapshot_index.add_metric(values, n.snapshot_index)
        yield from (primary, serving, epoch, isr, lag, log_entries, log_bytes, snapshot_index)
        yield gauge("planaria_partitions", "partitions with a replica here", len(views.partitions))
        yield gauge("planaria_partitions_primary", "partitions led here", primaries)
        yield gauge("planaria_partitions_serving", "partitions served here now", serving_count)
        yield gauge(
            "planaria_under_replicated_partitions",
            "partitions led here whose ISR is smaller than their replica set",
            under_replicated,
        )
        yield counter("planaria_snapshots", "snapshots taken of the partitions here", snapshots)
        yield counter(
            "planaria_storage_failures",
            "storage failures of the partitions here",
            storage_failures,
        )
        yield counter(
            "planaria_epoch_changes",
            "failovers seen here: rises of the epochs of the partitions here",
            views.epoch_changes,
        )

        # -- disk (the group committer)
        stats = views.committer.stats
        yield counter("planaria_disk_jobs", "log writes handed to the disk thread", stats.jobs)
        yield counter(
            "planaria_disk_jobs_inline", "log writes run at once (committer idle)", stats.inline
        )
        yield counter(
            "planaria_disk_batches",
            "group-commit batches (the mean batch size: rate of jobs / rate of batches)",
            stats.batches,
        )
        yield counter("planaria_disk_fsyncs", "fsync calls on log files", stats.syncs)
        yield gauge(
            "planaria_disk_batch_size_max",
            "the largest group-commit batch so far",
            stats.batch_size_max,
        )

        # -- clients and commands
        server = views.server
        yield gauge("planaria_client_connections", "open client connections", server.connections)
        yield gauge(
            "planaria_pending_writes",
            "client writes waiting for their commit",
            views.requests.pending,
        )
        rows = sorted(server.stats.rows.items())
        commands = CounterMetricFamily(
            "planaria_commands",
            "commands answered, by name and outcome (error: an error reply)",
            labels=["node", "command", "outcome"],
        )
        latency = HistogramMetricFamily(
            "planaria_command_latency_seconds",
            "time from a command's parse to its reply being ready",
            labels=["node", "command"],
        )
        bounds = [*(repr(b) for b in LATENCY_BOUNDS_S), "+Inf"]
        first = CommandStats.BUCKETS
        for name, row in rows:
            commands.add_metric([node, name, "ok"], row[CommandStats.OK])
            commands.add_metric([node, name, "error"], row[CommandStats.ERRORS])
            cumulative: list[tuple[str, float]] = []
            total = 0.0
            for bound, count in zip(bounds, row[first:], strict=True):
                total += count
                cumulative.append((bound, total))
            latency.add_metric([node, name], cumulative, row[CommandStats.LATENCY_SUM_S])
        yield commands
        yield latency

        # -- memory, session, transfers
        memory = views.memory
        yield gauge(
            "planaria_memory_used_bytes", "the process's resident set size", resident_bytes()
        )
        yield gauge(
            "planaria_memory_limit_bytes", "maxmemory (0: no limit)", memory.maxmemory_bytes
        )
        yield counter(
            "planaria_oom_refusals", "commands refused for maxmemory (OOM)", memory.refused
        )
        keeper = views.keeper
        yield counter(
            "planaria_sessions_lost", "coordinator sessions this node lost", keeper.sessions_lost
        )
        yield gauge(
            "planaria_lease_remaining_seconds",
            "time left on the node's lease",
            max(0.0, keeper.lease_until_ms - now_ms) / 1000,
        )
        effects = views.effects
        sender = effects.sender
        yield gauge(
            "planaria_transfers_sending", "snapshot transfers being sent", len(sender.transfers)
        )
        yield gauge(
            "planaria_transfers_receiving",
            "snapshot transfers being received",
            len(effects.receiver.receiving),
        )
        yield counter("planaria_transfers_completed", "snapshot transfers sent", sender.completed)
        yield counter("planaria_transfers_aborted", "snapshot transfers aborted", sender.aborted)
        yield counter(
            "planaria_transfer_sent_bytes", "bytes of snapshot transfers sent", sender.bytes_sent
        )
        yield counter(
            "planaria_snapshots_installed",
            "snapshots installed here from a primary",
            sum(r.snapshots_installed for r in views.partitions.values()),
        )


class MetricsServer:
    """Serves ``GET /metrics`` (any path: the registry's text) over HTTP/1.0 on the running
    event loop, one request a connection. Bounded: ``CONNECTIONS_MAX`` at once, a request of
    at most ``REQUEST_BYTES_MAX`` read within ``REQUEST_TIMEOUT_S``."""

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        self.host, self.port = parse_address(listen, what="metrics address", listen=True)
        self._registry = registry
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.scrapes = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True, limit=REQUEST_BYTES_MAX
        )
        # uvloop's Server.sockets is a list, not typeshed's tuple.
        self.port = int(cast(Any, self._server).sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.transport.abort()  # its read fails: its task ends by itself
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= CONNECTIONS_MAX:
            writer.write(_response(503, "text/plain", b"too many scrapes at once\n"))
            writer.close()
            return
        self._connections.add(writer)
        try:
            try:
                head = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), timeout=REQUEST_TIMEOUT_S
                )
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
                log.debug("metrics: a bad or slow request: %r", exc)
                head = b""
            writer.write(self._answer(head))
            await writer.drain()
        except ConnectionError as exc:
            log.debug("metrics: the scraper went away: %r", exc)
        finally:
            self._connections.discard(writer)
            writer.close()

    def _answer(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response(400, "text/plain", b"bad request\n")
        if parts[0] != "GET":
            return _response(405, "text/plain", b"only GET\n")
        accept = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        encoder, content_type = choose_encoder(accept)
        self.scrapes += 1
        return _response(200, content_type, encoder(self._registry))


def _response(status: int, content_type: str, body: bytes) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 503: "Unavailable"}
    return (
        f"HTTP/1.0 {status} {reason[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1") + body


def new_registry(views: NodeViews) -> CollectorRegistry:
    """A registry of the node's metrics alone (not the process-wide default one: each node
    of an in-process cluster has its own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(views))
    return registry
