"""A node's Prometheus metrics (--metrics-listen): scraped over HTTP from in-process nodes,
parsed with prometheus-client's own parser, and checked against the node's state."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis.asyncio as aredis
from prometheus_client.parser import text_string_to_metric_families

from planaria.cli._node import metrics_address
from planaria.cluster._status import status_from_seed
from planaria.coord import MemoryCoordinator, MemoryStore
from planaria.errors import UsageError
from planaria.net.server import CommandStats
from planaria.node import Node
from planaria.node._metrics import CONNECTIONS_MAX, REQUEST_BYTES_MAX

from ._cluster import LocalCluster
from .test_node_local import key_of

pytestmark = pytest.mark.timeout(90)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape_blocking(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, key  # every series once
            samples[key] = sample.value
    return samples


async def scrape(node: Node) -> Samples:
    """The node's metrics, fetched from a thread: the node serves them on this loop."""
    assert node.metrics_url is not None
    return await asyncio.to_thread(_scrape_blocking, node.metrics_url)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def documented_metrics() -> set[str]:
    """The metric names in the first column of docs/operations.md's table under "Metrics"."""
    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `planaria_"):
            names.update(re.findall(r"`(planaria_\w+)`", line.split(" | ")[0]))
    return names


def partition_series(samples: Samples) -> dict[str, set[str]]:
    """metric name -> the partitions it has a series for."""
    found: dict[str, set[str]] = {}
    for name, labels in samples:
        partition = dict(labels).get("partition")
        if partition is not None:
            found.setdefault(name, set()).add(partition)
    return found


def test_scraped_metrics_match_the_node_and_stay_bounded(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=3, metrics=True)
        await cluster.start()
        clients: list[aredis.Redis] = []
        try:
            primary_id = cluster.primary_of(0)
            assert primary_id is not None
            node = cluster.nodes[primary_id]
            name = node.node_id
            before = await scrape(node)
            client = aredis.Redis(host="127.0.0.1", port=node.port)
            clients.append(client)
            key = key_of(0, cluster.partitions).decode()
            for i in range(25):
                assert await client.set(key, f"v{i}") is True
            with pytest.raises(aredis.ResponseError):
                await client.execute_command("SET", key)  # wrong arity: an error reply
            after = await scrape(node)

            # Counters rise by exactly what was done.
            def rise(metric: str, **labels: str) -> float:
                return value(after, metric, node=name, **labels) - value(
                    before, metric, node=name, **labels
                )

            assert rise("planaria_commands_total", command="set", outcome="ok") == 25
            assert rise("planaria_commands_total", command="set", outcome="error") == 1
            assert rise("planaria_command_latency_seconds_count", command="set") == 26
            assert rise("planaria_command_latency_seconds_bucket", command="set", le="+Inf") == 26
            assert value(after, "planaria_client_connections", node=name) >= 1
            # Per partition: what the replicas here say.
            for partition, runtime in node.partitions.items():
                labels = {"node": name, "partition": str(partition)}
                replica, config = runtime.replica, runtime.config
                assert config is not None
                assert value(after, "planaria_partition_epoch", **labels) == replica.epoch
                assert value(after, "planaria_partition_isr_size", **labels) == len(config.isr)
                log_ = runtime.log
                assert log_ is not None
                assert value(after, "planaria_partition_log_entries", **labels) == (
                    log_.log_entries
                )
                assert value(after, "planaria_partition_snapshot_index", **labels) == (
                    log_.snapshot_index
                )
                assert value(after, "planaria_partition_primary", **labels) == (
                    partition in node.serving_partitions()
                )
            assert value(after, "planaria_partition_log_entries", node=name, partition="0") >= 25
            assert value(after, "planaria_partitions", node=name) == len(node.partitions)
            assert value(after, "planaria_under_replicated_partitions", node=name) == 0

            # Bounded: more keys, clients and unknown commands add no series.
            series = set(after)
            assert partition_series(after)["planaria_partition_epoch"] == {
                str(p) for p in node.partitions
            }
            for c in range(6):
                other = aredis.Redis(host="127.0.0.1", port=node.port)
                clients.append(other)
                for i in range(20):
                    await other.set(key_of(0, cluster.partitions, f"c{c}-{i}-").decode(), "x")
                with pytest.raises(aredis.ResponseError):
                    await other.execute_command(f"NOSUCHCOMMAND{c}")
            later = await scrape(node)
            new = set(later) - series
            assert {dict(labels).get("command") for _, labels in new} <= {"unknown"}, new
            assert value(later, "planaria_commands_total", node=name, command="unknown",
                         outcome="error") == 6  # fmt: skip

            # docs/operations.md lists every metric a node serves, and only those.
            documented = documented_metrics()
            served = {sample_name for sample_name, _ in later}
            histogram = "planaria_command_latency_seconds"
            served = {n for n in served if not n.startswith(histogram)} | {histogram}
            assert served == documented

            # INFO and planaria status give the URL.
            info = node.info(["server"])["Server"]
            assert info["metrics_address"] == node.metrics_url
            status = await asyncio.to_thread(status_from_seed, node.address, 10.0)
            assert {n.id: n.metrics for n in status.nodes} == {
                n.node_id: n.metrics_url for n in cluster.nodes.values()
            }
            assert all(n.metrics is not None for n in status.nodes)
            assert status.to_json()["nodes"][0]["metrics"].startswith("http://127.0.0.1:")

            # A failover shows: another node's epoch rises and it counts the change.
            await cluster.crash(primary_id)
            await cluster.wait_for(lambda: cluster.primary_of(0) is not None, 20.0, "p0 served")
            heir_id = cluster.primary_of(0)
            assert heir_id is not None
            heir = cluster.nodes[heir_id]
            failed_over = await scrape(heir)
            epoch = value(failed_over, "planaria_partition_epoch", node=heir_id, partition="0")
            assert epoch == heir.partitions[0].replica.epoch
            assert epoch > value(after, "planaria_partition_epoch", node=name, partition="0")
            assert value(failed_over, "planaria_epoch_changes_total", node=heir_id) >= 1
            assert value(failed_over, "planaria_partition_primary", node=heir_id,
                         partition="0") == 1  # fmt: skip
        finally:
            for open_client in clients:
                await open_client.aclose()
            await cluster.close()

    asyncio.run(scenario())


def test_the_metrics_server_answers_bad_requests_and_stays_bounded(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, nodes=2, partitions=1, replicas=2, metrics=True)
        await cluster.start()
        try:
            node = cluster.nodes["n1"]
            metrics = node._metrics
            assert metrics is not None
            host, port = metrics.host, metrics.port

            async def exchange(request: bytes) -> bytes:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                await writer.drain()
                answer = await reader.read()
                writer.close()
                return answer

            assert (await exchange(b"nonsense\r\n\r\n")).startswith(b"HTTP/1.0 400")
            assert (await exchange(b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.0 405")
            too_long = b"GET /" + b"x" * REQUEST_BYTES_MAX + b" HTTP/1.1\r\n\r\n"
            assert (await exchange(too_long)).startswith(b"HTTP/1.0 400")
            # Scrapers that send nothing hold a slot each; one more is turned away at once
            # (before it sends anything: its request would be left unread).
            idle = [await asyncio.open_connection(host, port) for _ in range(CONNECTIONS_MAX)]
            await cluster.wait_for(
                lambda: len(metrics._connections) == CONNECTIONS_MAX, 10.0, "all held"
            )
            assert (await exchange(b"")).startswith(b"HTTP/1.0 503")
            for _, writer in idle:
                writer.close()
            await cluster.wait_for(lambda: not metrics._connections, 10.0, "slots freed")
            ok = await exchange(b"GET /metrics HTTP/1.1\r\nAccept: text/plain\r\n\r\n")
            assert ok.startswith(b"HTTP/1.0 200") and b"planaria_partition_epoch" in ok
            # OpenMetrics, when asked for (what Prometheus asks first).
            open_metrics = await exchange(
                b"GET /metrics HTTP/1.1\r\n"
                b"Accept: application/openmetrics-text; version=1.0.0\r\n\r\n"
            )
            assert b"Content-Type: application/openmetrics-text" in open_metrics
            assert open_metrics.endswith(b"# EOF\n")
        finally:
            await cluster.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("text", ["nope", "127.0.0.1", "host:port", "127.0.0.1:99999", ""])
def test_a_bad_metrics_address_is_a_usage_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(UsageError, match="--metrics-listen"):
        metrics_address(text)
    with pytest.raises(UsageError, match="metrics address"):
        Node(
            "n1",
            listen="127.0.0.1:0",
            coordinator=MemoryCoordinator(MemoryStore()),
            data_dir=tmp_path,
            metrics_listen=text,
        )


def test_a_bare_metrics_port_is_on_loopback() -> None:
    assert metrics_address("9100") == "127.0.0.1:9100"
    assert metrics_address("0.0.0.0:9100") == "0.0.0.0:9100"
    assert metrics_address(None) is None


def test_command_counts_are_bounded_by_the_command_table() -> None:
    from planaria.net.server import _command_name

    stats = CommandStats()
    for i in range(1000):
        stats.record(_command_name(f"NoSuch{i}".encode()), True, 0.001)
        stats.record(_command_name(b"sEt" if i % 2 else b"SET"), False, 10.0)
    assert set(stats.rows) == {"unknown", "set"}
    unknown, set_ = stats.rows["unknown"], stats.rows["set"]
    assert (unknown[CommandStats.OK], unknown[CommandStats.ERRORS]) == (0, 1000)
    assert (set_[CommandStats.OK], set_[CommandStats.ERRORS]) == (1000, 0)
    assert set_[-1] == 1000  # beyond the last bound
    assert sum(unknown[CommandStats.BUCKETS :]) == 1000
    assert unknown[CommandStats.LATENCY_SUM_S] == pytest.approx(1.0)


def test_metrics_on_every_interface_are_named_by_the_nodes_host(tmp_path: Path) -> None:
    def url(metrics_listen: str, advertise: str | None = None) -> str | None:
        return Node(
            "n1",
            listen="127.0.0.2:7001",
            coordinator=MemoryCoordinator(MemoryStore()),
            data_dir=tmp_path,
            metrics_listen=metrics_listen,
            advertise=advertise,
        ).metrics_url

    assert url("0.0.0.0:9100") == "http://127.0.0.2:9100/metrics"
    assert url("[::]:9100", advertise="db1.example:7001") == "http://db1.example:9100/metrics"
    assert url("127.0.0.3:9100") == "http://127.0.0.3:9100/metrics"
