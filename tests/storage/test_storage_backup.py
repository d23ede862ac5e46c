"""Backups on disk (storage/backup.py): the manifest, verification (every kind of damage is
refused, and each check is shown to be the one that bites), and the partition logs a
restore builds, opened by the log's own recovery."""

from __future__ import annotations

import dataclasses
import json
from types import MappingProxyType

import pytest

from planaria.core.codec import encode_state
from planaria.core.messages import ReplicaSnapshot, Version
from planaria.storage import PartitionLog, SimFS, Snapshot
from planaria.storage import backup as backup_module
from planaria.storage.backup import (
    MANIFEST_NAME,
    ClusterShape,
    Manifest,
    PartitionBackup,
    SnapshotCheck,
    decode_manifest,
    encode_manifest,
    iter_file,
    restore_partition_log,
    verify_backup,
    write_manifest,
    write_partition_file,
)
from planaria.storage.errors import BackupInvalid
from planaria.storage.format import encode_snapshot
from planaria.storage.fs import join
from planaria.storage.persist import recovered_state

DIR = "/backup"


def snapshot_bytes(partition: int, index: int, epoch: int, keys: int = 50) -> bytes:
    kv = {b"k%d" % i: (b"v%d@%d" % (i, index), Version(epoch, index)) for i in range(keys)}
    state = ReplicaSnapshot(partition, index, epoch, MappingProxyType(kv), MappingProxyType({}))
    return encode_snapshot(Snapshot(index, epoch, encode_state(state)))


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def make_backup(fs: SimFS, partitions: int = 3) -> Manifest:
    fs.makedirs(DIR)
    entries = []
    for p in range(partitions):
        data = snapshot_bytes(p, index=10 + p, epoch=2 + p)
        check, index, epoch = write_partition_file(fs, DIR, p, chunks(data, 97))
        entries.append(
            PartitionBackup(p, (p * 10, p * 10 + 9), f"p{p}.snap", index, epoch, epoch + 1,
                            "n1", check.size_bytes, check.sha256)
        )  # fmt: skip
    manifest = Manifest(
        ClusterShape(partitions, 3, 2, ("n1", "n2", "n3")),
        tuple(entries),
        "0.1.0",
        "2026-12-07T12:00:00Z",
        "2026-12-07T12:00:01Z",
    )
    write_manifest(fs, DIR, manifest)
    return manifest


def test_a_backup_verifies_and_its_manifest_round_trips() -> None:
    fs = SimFS()
    manifest = make_backup(fs)
    assert verify_backup(fs, DIR) == manifest
    assert decode_manifest(encode_manifest(manifest)) == manifest
    assert manifest.first_epoch == 6  # above every partition's epoch (3, 4, 5)
    assert sorted(fs.listdir(DIR)) == [MANIFEST_NAME, "p0.snap", "p1.snap", "p2.snap"]


def test_the_streaming_check_agrees_with_the_whole_file_for_any_chunking() -> None:
    data = snapshot_bytes(0, 7, 1)
    for size in (1, 3, 4, 5, 64, len(data)):
        check = SnapshotCheck()
        for chunk in chunks(data, size):
            check.feed(chunk)
        assert check.header() == (7, 1), size
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    check = SnapshotCheck()
    for chunk in chunks(bytes(flipped), 5):
        check.feed(chunk)
    assert check.header() == "snapshot checksum mismatch (its CRC32 trailer)"


def flip_byte(fs: SimFS, path: str, offset: int) -> None:
    data = bytearray(fs.read(path, 0, fs.size(path)))
    data[offset] ^= 0x40
    fs.remove(path)
    handle = fs.open_append(path, create=True)
    handle.append(bytes(data))
    handle.close()


def test_a_damaged_file_is_refused_and_named() -> None:
    fs = SimFS()
    make_backup(fs)
    flip_byte(fs, join(DIR, "p1.snap"), 40)
    with pytest.raises(BackupInvalid, match=r"1 of 3 partition files are bad: p1\.snap: SHA-256"):
        verify_backup(fs, DIR)


def test_a_missing_file_and_a_missing_manifest_are_refused() -> None:
    fs = SimFS()
    make_backup(fs)
    fs.remove(join(DIR, "p2.snap"))
    with pytest.raises(BackupInvalid, match=r"p2\.snap: missing"):
        verify_backup(fs, DIR)
    fs.remove(join(DIR, MANIFEST_NAME))
    with pytest.raises(BackupInvalid, match=r"no manifest\.json"):
        verify_backup(fs, DIR)


def test_a_swapped_file_is_refused_by_its_checksum() -> None:
    fs = SimFS()
    make_backup(fs)
    other = fs.read(join(DIR, "p0.snap"), 0, fs.size(join(DIR, "p0.snap")))
    fs.remove(join(DIR, "p1.snap"))
    handle = fs.open_append(join(DIR, "p1.snap"), create=True)
    handle.append(other)
    handle.close()
    with pytest.raises(BackupInvalid, match=r"p1\.snap"):
        verify_backup(fs, DIR)


def test_the_inner_checks_bite_where_the_manifest_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file damaged before its SHA-256 was taken (the manifest matches it) is still
    caught by the snapshot's own CRC32 trailer; and a manifest naming another index by the
    header check. With each inner check switched off, the same damage passes."""
    fs = SimFS()
    manifest = make_backup(fs, partitions=1)
    path = join(DIR, "p0.snap")
    flip_byte(fs, path, 60)
    check = SnapshotCheck()
    for chunk in iter_file(fs, path):
        check.feed(chunk)
    entry = dataclasses.replace(manifest.partitions[0], sha256=check.sha256)
    write_manifest(fs, DIR, dataclasses.replace(manifest, partitions=(entry,)))
    with pytest.raises(BackupInvalid, match="CRC32 trailer"):
        verify_backup(fs, DIR)
    # The bug switch: a check that trusts the manifest's hash alone lets it through.
    monkeypatch.setattr(SnapshotCheck, "header", lambda self: (entry.index, entry.snapshot_epoch))
    assert verify_backup(fs, DIR).partitions == (entry,)
    monkeypatch.undo()

    fs2 = SimFS()
    manifest2 = make_backup(fs2, partitions=1)
    wrong = dataclasses.replace(manifest2.partitions[0], index=manifest2.partitions[0].index + 1)
    write_manifest(fs2, DIR, dataclasses.replace(manifest2, partitions=(wrong,)))
    with pytest.raises(BackupInvalid, match=r"holds the state at \(index 10, epoch 2\)"):
        verify_backup(fs2, DIR)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(format="other/1"), "not a planaria-backup/1 manifest"),
        (lambda r: r["partitions"].pop(), r"partitions listed \[0, 1\], expected 0\.\.2"),
        (lambda r: r["partitions"][0].update(file="../../etc/passwd"), "file '../../etc/passwd'"),
        (lambda r: r["partitions"][1].update(sha256="xyz"), "sha256 'xyz'"),
        (lambda r: r["partitions"][1].update(epoch=0), "snapshot epoch 3, epoch 0"),
        (lambda r: r["cluster"].update(replicas=4), r"4 replicas on nodes"),
        (lambda r: r["cluster"].pop("nodes"), "KeyError"),
        (lambda r: r["partitions"][0].update(index="7"), "expected an integer"),
    ],
)
def test_a_bad_manifest_is_refused_with_the_reason(change: object, message: str) -> None:
    fs = SimFS()
    manifest = make_backup(fs)
    record = json.loads(encode_manifest(manifest))
    change(record)  # type: ignore[operator]
    with pytest.raises(BackupInvalid, match=message):
        decode_manifest(json.dumps(record).encode())


def test_a_truncated_stream_is_never_kept() -> None:
    fs = SimFS()
    fs.makedirs(DIR)
    data = snapshot_bytes(0, 5, 1)
    with pytest.raises(BackupInvalid, match="checksum mismatch"):
        write_partition_file(fs, DIR, 0, [data[:-10]])
    assert fs.listdir(DIR) == []


def test_a_restored_log_opens_at_the_snapshot_with_its_epoch() -> None:
    fs = SimFS()
    manifest = make_backup(fs)
    entry = manifest.partitions[1]
    targets = ["/new/nodes/n1/p1", "/new/nodes/n2/p1"]
    restore_partition_log(fs, DIR, entry, targets)
    for target in targets:
        log = PartitionLog.open(fs, target)
        assert (log.snapshot_index, log.epoch, log.commit_index) == (11, 4, 11)
        assert log.last_index == 11 and log.epoch_at(11) == entry.snapshot_epoch
        state, entries = recovered_state(log)
        assert state is not None and entries == []
        assert state.kv[b"k3"] == (b"v3@11", Version(3, 11))
        # The new cluster's primary (a later epoch) appends after the snapshot.
        log.set_epoch(manifest.first_epoch)
        log.append(manifest.first_epoch, b"barrier")
        log.sync()
        log.close()
        assert PartitionLog.open(fs, target).last_index == 12


def test_a_restore_never_writes_into_a_non_empty_directory() -> None:
    fs = SimFS()
    manifest = make_backup(fs)
    fs.makedirs("/new/p0")
    handle = fs.open_append("/new/p0/keep", create=True)
    handle.append(b"mine")
    handle.close()
    with pytest.raises(BackupInvalid, match="only into empty directories"):
        restore_partition_log(fs, DIR, manifest.partitions[0], ["/new/p0"])
    assert fs.listdir("/new/p0") == ["keep"]


def test_reads_are_bounded_by_the_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    fs = SimFS()
    manifest = make_backup(fs, partitions=1)
    reads: list[int] = []
    real_read = fs.read

    def counting_read(path: str, offset: int, length: int) -> bytes:
        reads.append(length)
        return real_read(path, offset, length)

    monkeypatch.setattr(fs, "read", counting_read)
    monkeypatch.setattr(
        backup_module, "iter_file", lambda f, p, chunk_bytes=64: iter_file(f, p, chunk_bytes)
    )
    verify_backup(fs, DIR)
    restore_partition_log(fs, DIR, manifest.partitions[0], ["/new/p0"])
    manifest_read = fs.size(join(DIR, MANIFEST_NAME))
    assert max(length for length in reads if length != manifest_read) <= 64
