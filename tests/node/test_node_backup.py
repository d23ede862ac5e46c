"""BACKUP BEGIN / READ / END on in-process nodes: the primary exports its committed state
(with every acknowledged write), anything but a serving primary refuses (and the bug switch
that skips the check is caught), and the exports stay bounded in number and time."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from planaria.cli import _backup as backup_cli
from planaria.cli._main import main
from planaria.cluster import resp_command
from planaria.cluster._resp import is_error
from planaria.core.codec import decode_state
from planaria.core.slots import keyslot, partition_of_slot
from planaria.storage import OsFS
from planaria.storage.backup import verify_backup
from planaria.storage.format import decode_snapshot

from ._cluster import FAST, LocalCluster
from ._writer import Writer

PARTITIONS = 2


async def command(address: str, *args: str | bytes) -> Any:
    (reply,) = await asyncio.to_thread(resp_command, address, args, timeout_s=10.0)
    return reply


async def export(address: str, partition: int, chunk_bytes: int = 1000) -> tuple[list[Any], bytes]:
    begun = await command(address, "BACKUP", "BEGIN", str(partition))
    assert not is_error(begun), begun
    token, _index, _snapshot_epoch, _epoch, size = begun
    data = b""
    while len(data) < size:
        chunk = await command(address, "BACKUP", "READ", token, str(len(data)), str(chunk_bytes))
        assert not is_error(chunk), chunk
        assert 0 < len(chunk) <= chunk_bytes
        data += chunk
    return begun, data


def test_the_primary_exports_every_acknowledged_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=PARTITIONS)
        await cluster.start()
        writer = Writer([n.address for n in cluster.nodes.values()])
        try:
            written = {}
            for i in range(60):
                key, value = b"k%d" % i, b"v%d" % i
                assert await writer.write_acked(key, value)
                written[key] = value
            for partition in range(PARTITIONS):
                primary = cluster.primary_of(partition)
                assert primary is not None
                node = cluster.nodes[primary]
                replica = node.partitions[partition].replica
                begun, data = await export(node.address, partition)
                token, index, snapshot_epoch, epoch, size = begun
                assert index == replica.applied_index and epoch == replica.epoch
                snapshot = decode_snapshot(data)
                assert not isinstance(snapshot, str) and len(data) == size
                assert (snapshot.index, snapshot.epoch) == (index, snapshot_epoch)
                state = decode_state(snapshot.index, snapshot.epoch, snapshot.data)
                mine = {
                    k: v
                    for k, v in written.items()
                    if partition_of_slot(keyslot(k), PARTITIONS) == partition
                }
                assert mine and {k: state.kv[k][0] for k in mine} == mine
                assert await command(node.address, "BACKUP", "END", token) == 1
                gone = await command(node.address, "BACKUP", "READ", token, "0", "10")
                assert is_error(gone) and "ended or expired" in str(gone)
                assert not list((node.data_dir / "backups").iterdir())
            info = cluster.nodes["n1"].info(["cluster"])["Cluster"]
            assert info["backups_open"] == 0
        finally:
            await writer.close()
            await cluster.close()

    asyncio.run(scenario())


async def begin_on_a_backup(cluster: LocalCluster) -> Any:
    primary = cluster.primary_of(0)
    backup = next(n for name, n in cluster.nodes.items() if name != primary)
    return await command(backup.address, "BACKUP", "BEGIN", "0")


def test_only_a_serving_primary_exports_and_the_bug_switch_is_caught(tmp_path: Path) -> None:
    async def scenario(bugs: frozenset[str], root: Path) -> Any:
        settings = replace(FAST, replica=replace(FAST.replica, bugs=bugs))
        cluster = LocalCluster(root, partitions=PARTITIONS, settings=settings)
        await cluster.start()
        try:
            return await begin_on_a_backup(cluster)
        finally:
            await cluster.close()

    refused = asyncio.run(scenario(frozenset(), tmp_path / "right"))
    assert is_error(refused) and str(refused).startswith("TRYAGAIN partition 0 has no serving")
    # The bug: a backup exports its state, which may lack writes its primary acknowledged.
    answered = asyncio.run(scenario(frozenset({"backup-unserving"}), tmp_path / "bug"))
    assert not is_error(answered)


def test_exports_are_bounded_in_number_and_idle_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=PARTITIONS)
        await cluster.start()
        try:
            primary = cluster.primary_of(0)
            assert primary is not None
            node = cluster.nodes[primary]
            exports = node._backups
            exports.exports_max = 2
            for _ in range(2):
                assert not is_error(await command(node.address, "BACKUP", "BEGIN", "0"))
            busy = await command(node.address, "BACKUP", "BEGIN", "0")
            assert is_error(busy) and str(busy).startswith("BUSY 2 backup snapshots")
            too_long = str(exports.read_bytes_max + 1)
            token = next(iter(exports._exports))
            over = await command(node.address, "BACKUP", "READ", token, "0", too_long)
            assert is_error(over) and "over the limit" in str(over)
            exports.idle_ms = 50.0  # a backup tool that died: its exports go by themselves
            directory = node.data_dir / "backups"
            await cluster.wait_for(
                lambda: len(exports) == 0 and not list(directory.iterdir()), 10.0, "expired"
            )
            assert not is_error(await command(node.address, "BACKUP", "BEGIN", "0"))
        finally:
            await cluster.close()
        assert not (node.data_dir / "backups").exists()  # removed at close

    asyncio.run(scenario())


def test_planaria_backup_by_seed_copies_every_partition(tmp_path: Path) -> None:
    """The command itself (``--seed``: the primaries found from the nodes' INFO) against
    in-process nodes: a verified backup whose files hold every acknowledged write."""

    async def scenario() -> None:
        cluster = LocalCluster(tmp_path / "nodes", partitions=PARTITIONS)
        await cluster.start()
        writer = Writer([n.address for n in cluster.nodes.values()])
        try:
            written = {b"key%d" % i: b"value%d" % i for i in range(40)}
            for key, value in written.items():
                assert await writer.write_acked(key, value)
            seed = cluster.nodes["n2"].address
            argv = ["backup", str(tmp_path / "backup"), "--seed", seed, "--chunk-bytes", "512"]
            assert await asyncio.to_thread(main, argv) == 0
        finally:
            await writer.close()
            await cluster.close()
        manifest = verify_backup(OsFS(), str(tmp_path / "backup"))
        assert manifest.cluster.partitions == PARTITIONS
        assert manifest.cluster.nodes == ("n1", "n2", "n3")
        found: dict[bytes, bytes] = {}
        for entry in manifest.partitions:
            data = (tmp_path / "backup" / entry.file).read_bytes()
            snapshot = decode_snapshot(data)
            assert not isinstance(snapshot, str)
            state = decode_state(snapshot.index, snapshot.epoch, snapshot.data)
            found.update({k: v for k, (v, _version) in state.kv.items() if isinstance(v, bytes)})
        assert found == written

    asyncio.run(scenario())


def test_planaria_backup_asks_again_when_a_node_is_not_the_primary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale view of who is primary (a failover under way): the node refuses BEGIN, the
    command re-reads the status and asks again, at the primary."""
    asked: list[tuple[int, str]] = []
    real_primary = backup_cli._Source.primary

    def stale_first(self: backup_cli._Source, partition: int) -> tuple[str, str] | None:
        found = real_primary(self, partition)
        first = all(p != partition for p, _ in asked)
        if first and found is not None:
            found = next((n.id, n.address) for n in self.status.nodes if n.id != found[0])
        if found is not None:
            asked.append((partition, found[0]))
        return found

    monkeypatch.setattr(backup_cli._Source, "primary", stale_first)

    async def scenario() -> None:
        cluster = LocalCluster(tmp_path / "nodes", partitions=PARTITIONS)
        await cluster.start()
        try:
            argv = ["backup", str(tmp_path / "backup"), "--seed", cluster.nodes["n1"].address]
            assert await asyncio.to_thread(main, argv) == 0
            primaries = {p: cluster.primary_of(p) for p in range(PARTITIONS)}
        finally:
            await cluster.close()
        manifest = verify_backup(OsFS(), str(tmp_path / "backup"))
        assert {e.partition: e.primary for e in manifest.partitions} == primaries
        for partition in range(PARTITIONS):
            tried = [node for p, node in asked if p == partition]
            assert len(tried) >= 2 and tried[0] != primaries[partition], tried

    asyncio.run(scenario())
