"""``planaria backup --verify`` and ``planaria restore`` without processes: what a restore
lays out (a stopped cluster ``planaria up`` starts at an epoch above the backup's), and bad
input refused with a clear error before anything is written."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import MappingProxyType

import pytest

from planaria.cli._cluster import _up_options
from planaria.cli._main import main
from planaria.cluster import DEFAULT_BASE_PORT, LocalCluster
from planaria.cluster._state import StateFile
from planaria.core.codec import encode_state
from planaria.core.messages import ReplicaSnapshot, Version
from planaria.storage import OsFS, PartitionLog, Snapshot
from planaria.storage.backup import (
    ClusterShape,
    Manifest,
    PartitionBackup,
    write_manifest,
    write_partition_file,
)
from planaria.storage.format import encode_snapshot
from planaria.storage.persist import recovered_state

PARTITIONS = 3


def make_backup(directory: Path) -> Manifest:
    directory.mkdir(parents=True)
    entries = []
    for p in range(PARTITIONS):
        kv = {b"key%d" % p: (b"value%d" % p, Version(4, 20 + p))}
        state = ReplicaSnapshot(p, 20 + p, 4, MappingProxyType(kv), MappingProxyType({}))
        data = encode_snapshot(Snapshot(20 + p, 4, encode_state(state)))
        check, index, epoch = write_partition_file(OsFS(), str(directory), p, [data])
        entries.append(
            PartitionBackup(p, (p, p), f"p{p}.snap", index, epoch, 5 + p, "n1",
                            check.size_bytes, check.sha256)
        )  # fmt: skip
    manifest = Manifest(
        ClusterShape(PARTITIONS, 3, 2, ("a", "b", "c")), tuple(entries), "0.1.0", "t0", "t1"
    )
    write_manifest(OsFS(), str(directory), manifest)
    return manifest


def test_a_restore_lays_out_a_stopped_cluster_above_the_backups_epochs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_backup(tmp_path / "backup")
    target = tmp_path / "new"
    code = main(["restore", str(tmp_path / "backup"), "--data", str(target), "--port", "30001"])
    assert code == 0, capsys.readouterr().err
    assert f"start it with: planaria up --data {target}" in capsys.readouterr().out
    cluster = LocalCluster.open(target)
    assert (cluster.partitions, cluster.replicas, cluster.min_insync) == (PARTITIONS, 3, 2)
    assert cluster.node_ids == ["n1", "n2", "n3"] and cluster.base_port == 30001
    assert StateFile.open(target).state.first_epoch == 8  # above the epochs 5, 6 and 7
    for node in cluster.node_ids:
        for p in range(PARTITIONS):
            log = PartitionLog.open(OsFS(), str(target / "nodes" / node / f"p{p}"))
            try:
                state, entries = recovered_state(log)
                assert (log.snapshot_index, log.epoch, entries) == (20 + p, 5 + p, [])
                assert state is not None and state.kv[b"key%d" % p][0] == b"value%d" % p
            finally:
                log.close()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["backup", "new"]


def test_verify_names_a_damaged_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_backup(tmp_path / "backup")
    assert main(["backup", "--verify", str(tmp_path / "backup")]) == 0
    assert "every file matches its checksum" in capsys.readouterr().out
    damaged = tmp_path / "backup" / "p2.snap"
    data = bytearray(damaged.read_bytes())
    data[-10] ^= 0x01
    damaged.write_bytes(bytes(data))
    assert main(["backup", "--verify", str(tmp_path / "backup")]) == 1
    assert "p2.snap: SHA-256" in capsys.readouterr().err


def test_a_damaged_backup_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_backup(tmp_path / "backup")
    (tmp_path / "backup" / "p1.snap").unlink()
    target = tmp_path / "new"
    assert main(["restore", str(tmp_path / "backup"), "--data", str(target)]) == 1
    assert "p1.snap: missing" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["backup"]


def test_a_restore_never_writes_over_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_backup(tmp_path / "backup")
    target = tmp_path / "existing"
    target.mkdir()
    (target / "precious").write_text("mine")
    assert main(["restore", str(tmp_path / "backup"), "--data", str(target)]) == 2
    assert "is not an empty directory: a restore never writes over data" in (
        capsys.readouterr().err
    )
    assert [p.name for p in target.iterdir()] == ["precious"]


def test_a_restore_needs_nodes_for_every_replica(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_backup(tmp_path / "backup")
    code = main(
        ["restore", str(tmp_path / "backup"), "--data", str(tmp_path / "new"), "--nodes", "2"]
    )
    assert code == 2
    assert "--nodes must be at least 3, not 2" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["backup"]


def test_a_backup_goes_only_into_an_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "backup"
    target.mkdir()
    (target / "old").write_text("old")
    assert main(["backup", str(target), "--seed", "127.0.0.1:1"]) == 2
    assert "a backup goes into a new or empty directory" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["old"]


def test_a_backup_of_a_stopped_cluster_fails_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    LocalCluster(tmp_path / "cluster", partitions=PARTITIONS, base_port=30101).record()
    target = tmp_path / "backup"
    assert main(["backup", str(target), "--data", str(tmp_path / "cluster")]) == 1
    assert "no node of the cluster is running" in capsys.readouterr().err
    assert not target.exists()


def test_up_takes_the_shape_a_stopped_cluster_recorded(tmp_path: Path) -> None:
    def options(data: Path, **given: object) -> dict[str, object]:
        names = ("nodes", "partitions", "replicas", "port", "coordinator_port", "coordinator")
        args = argparse.Namespace(data=str(data), **{name: given.get(name) for name in names})
        return _up_options(args)

    assert options(tmp_path / "none") == {
        "nodes": 3, "partitions": 64, "replicas": 3, "base_port": DEFAULT_BASE_PORT,
        "coordinator_port": None, "coordinator_url": None,
    }  # fmt: skip
    make_backup(tmp_path / "backup")
    assert main(["restore", str(tmp_path / "backup"), "--data", str(tmp_path / "new"),
                 "--port", "30201", "--nodes", "4"]) == 0  # fmt: skip
    assert options(tmp_path / "new") == {
        "nodes": 4, "partitions": PARTITIONS, "replicas": 3, "base_port": 30201,
        "coordinator_port": 30200, "coordinator_url": None, "min_insync": 2,
    }  # fmt: skip
    # Given options win (and the launcher then refuses a shape that differs).
    assert options(tmp_path / "new", partitions=8)["partitions"] == 8
