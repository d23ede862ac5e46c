"""Backups of a whole cluster on disk: their manifest, their verification, and the partition
logs a restore builds from them (pure: a ``FileLayer``, no clock; ``planaria backup`` and
``planaria restore`` in ``cli/_backup.py`` drive it, docs/operations.md "Backup and restore").

A backup directory::

    p<N>.snap        partition N's state at one committed index: a snapshot file exactly as
                     a partition log stores it (``format.encode_snapshot``: header with index
                     and epoch, state, CRC32 trailer over everything before it)
    manifest.json    written last (temporary file, fsync, rename, fsync of the directory):
                     the cluster's shape, and per partition its file, index, epochs, size and
                     SHA-256. A directory without it is an unfinished backup.

Every file is checked twice over, by streaming it in ``CHUNK_BYTES`` pieces (never whole in
memory): its size and SHA-256 against the manifest (a wrong, truncated or swapped file), and
its own structure (magic, the index and epoch the manifest names, the CRC32 trailer). A
restore verifies everything before it writes anything.

A restored partition log is the directory layout ``PartitionLog.open`` recovers: the snapshot
as ``snap-<index>.snap`` and a meta file at (the partition's epoch, the snapshot's index), no
segments. The cluster started on it must give its first configs an epoch above every
partition's (``Manifest.first_epoch``): a replica ignores configs of older epochs, and its log
never goes back to an older epoch after the snapshot.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from planaria.storage.errors import BackupInvalid
from planaria.storage.format import SNAPSHOT_MAGIC, Meta, encode_meta
from planaria.storage.fs import FileLayer, join, write_atomic
from planaria.storage.log import META_NAME, snapshot_name

__all__ = [
    "BACKUP_FORMAT",
    "CHUNK_BYTES",
    "MANIFEST_NAME",
    "ClusterShape",
    "Manifest",
    "PartitionBackup",
    "SnapshotCheck",
    "decode_manifest",
    "encode_manifest",
    "iter_file",
    "partition_file",
    "restore_partition_log",
    "verify_backup",
    "write_manifest",
    "write_partition_file",
]

BACKUP_FORMAT = "planaria-backup/1"
MANIFEST_NAME = "manifest.json"
# How much of a file is read or held at once when checking or copying it.
CHUNK_BYTES = 1024 * 1024
_HEAD = struct.Struct("<8sQQQI")  # format._SNAPSHOT_HEAD: magic, index, epoch, data length, pairs
_TRAILER = 4
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def partition_file(partition: int) -> str:
    """The file name of ``partition``'s snapshot in a backup directory."""
    return f"p{partition}.snap"


@dataclass(frozen=True, slots=True)
class ClusterShape:
    """What a restore must rebuild: the partition count (fixed for a cluster's life), the
    replicas per partition, the write quorum (None: unknown, the default then) and the
    node ids of the cluster that was backed up."""

    partitions: int
    replicas: int
    min_insync: int | None
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PartitionBackup:
    """One partition's file: its state at ``index`` (committed), the snapshot's own epoch
    (of the entry at ``index``), and the epoch of the primary that took it (>= that)."""

    partition: int
    slots: tuple[int, int]  # first and last slot
    file: str
    index: int
    snapshot_epoch: int
    epoch: int
    primary: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    cluster: ClusterShape
    partitions: tuple[PartitionBackup, ...]
    planaria_version: str
    started_at: str  # UTC, ISO 8601: every write acknowledged before it is in the backup
    finished_at: str

    def __post_init__(self) -> None:
        problems = _manifest_problems(self)
        if problems:
            raise BackupInvalid("; ".join(problems))

    @property
    def first_epoch(self) -> int:
        """The epoch a cluster restored from this backup must start its configs at."""
        return 1 + max((p.epoch for p in self.partitions), default=0)

    @property
    def total_bytes(self) -> int:
        return sum(p.size_bytes for p in self.partitions)


def _manifest_problems(manifest: Manifest) -> list[str]:
    shape = manifest.cluster
    problems: list[str] = []
    if not 1 <= shape.partitions <= 16384:
        problems.append(f"partitions {shape.partitions} is not in 1..16384")
    if not 1 <= shape.replicas <= max(len(shape.nodes), 1) or not shape.nodes:
        problems.append(f"{shape.replicas} replicas on nodes {list(shape.nodes)}")
    if shape.min_insync is not None and not 1 <= shape.min_insync <= shape.replicas:
        problems.append(f"min_insync {shape.min_insync} is not in 1..{shape.replicas}")
    if len(set(shape.nodes)) != len(shape.nodes) or not all(
        n and "/" not in n and n.isprintable() and " " not in n for n in shape.nodes
    ):
        problems.append(f"bad node ids {list(shape.nodes)}")
    found = [p.partition for p in manifest.partitions]
    if found != list(range(shape.partitions)):
        problems.append(f"partitions listed {found}, expected 0..{shape.partitions - 1} in order")
    for p in manifest.partitions:
        # The file name is fixed: a manifest must never point a restore at another path.
        if p.file != partition_file(p.partition):
            problems.append(
                f"p{p.partition}: file {p.file!r}, expected {partition_file(p.partition)}"
            )
        if p.index < 0 or p.snapshot_epoch < 0 or p.epoch < p.snapshot_epoch:
            problems.append(
                f"p{p.partition}: index {p.index}, snapshot epoch {p.snapshot_epoch}, "
                f"epoch {p.epoch}"
            )
        if p.size_bytes < _HEAD.size + _TRAILER or not _SHA256_HEX.fullmatch(p.sha256):
            problems.append(f"p{p.partition}: size {p.size_bytes}, sha256 {p.sha256!r}")
    return problems


def encode_manifest(manifest: Manifest) -> bytes:
    shape = manifest.cluster
    record = {
        "format": BACKUP_FORMAT,
        "planaria_version": manifest.planaria_version,
        "started_at": manifest.started_at,
        "finished_at": manifest.finished_at,
        "cluster": {
            "partitions": shape.partitions,
            "replicas": shape.replicas,
            "min_insync": shape.min_insync,
            "nodes": list(shape.nodes),
        },
        "total_bytes": manifest.total_bytes,
        "partitions": [
            {
                "partition": p.partition,
                "slots": list(p.slots),
                "file": p.file,
                "index": p.index,
                "snapshot_epoch": p.snapshot_epoch,
                "epoch": p.epoch,
                "primary": p.primary,
                "bytes": p.size_bytes,
                "sha256": p.sha256,
            }
            for p in manifest.partitions
        ],
    }
    return (json.dumps(record, indent=2) + "\n").encode()


def decode_manifest(data: bytes, *, path: str | None = None) -> Manifest:
    """The manifest in ``data``; ``BackupInvalid`` saying why it is not a valid one."""
    try:
        record = json.loads(data)
        if not isinstance(record, dict) or record.get("format") != BACKUP_FORMAT:
            found = record.get("format") if isinstance(record, dict) else None
            raise BackupInvalid(f"not a {BACKUP_FORMAT} manifest (format {found!r})", path=path)
        cluster = record["cluster"]
        min_insync = cluster["min_insync"]
        return Manifest(
            cluster=ClusterShape(
                partitions=_int(cluster["partitions"]),
                replicas=_int(cluster["replicas"]),
                min_insync=None if min_insync is None else _int(min_insync),
                nodes=tuple(str(n) for n in cluster["nodes"]),
            ),
            partitions=tuple(_partition(p) for p in record["partitions"]),
            planaria_version=str(record["planaria_version"]),
            started_at=str(record["started_at"]),
            finished_at=str(record["finished_at"]),
        )
    except BackupInvalid as exc:
        if exc.path is None and path is not None:
            raise BackupInvalid(exc.reason, path=path) from exc
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise BackupInvalid(
            f"not a valid manifest: {type(exc).__name__}: {exc}", path=path
        ) from exc


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, found {value!r}")
    return value


def _partition(record: Mapping[str, Any]) -> PartitionBackup:
    first, last = record["slots"]
    return PartitionBackup(
        partition=_int(record["partition"]),
        slots=(_int(first), _int(last)),
        file=str(record["file"]),
        index=_int(record["index"]),
        snapshot_epoch=_int(record["snapshot_epoch"]),
        epoch=_int(record["epoch"]),
        primary=str(record["primary"]),
        size_bytes=_int(record["bytes"]),
        sha256=str(record["sha256"]),
    )


class SnapshotCheck:
    """Checks a snapshot file as it streams by, one chunk at a time: its size and SHA-256,
    its header (magic, index, epoch) and its CRC32 trailer. Holds one header and four
    trailing bytes, never the file."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._crc = 0
        self._head = b""
        self._tail = b""  # the last bytes seen: the trailer once the stream ends
        self.size_bytes = 0

    def feed(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self.size_bytes += len(chunk)
        if len(self._head) < _HEAD.size:
            self._head += chunk[: _HEAD.size - len(self._head)]
        joined = self._tail + chunk
        # Everything but the last four bytes is covered by the trailer's CRC.
        covered = max(len(joined) - _TRAILER, 0)
        self._crc = zlib.crc32(joined[:covered], self._crc)
        self._tail = joined[covered:]

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def header(self) -> tuple[int, int] | str:
        """(index, epoch) of a well-formed snapshot that ended here, else why not."""
        if self.size_bytes < _HEAD.size + _TRAILER:
            return f"cut short at {self.size_bytes} bytes"
        magic, index, epoch, _data_len, _pairs = _HEAD.unpack(self._head)
        if magic != SNAPSHOT_MAGIC:
            return "not a snapshot file"
        if int.from_bytes(self._tail, "little") != self._crc:
            return "snapshot checksum mismatch (its CRC32 trailer)"
        return int(index), int(epoch)


def iter_file(fs: FileLayer, path: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The bytes of ``path`` in chunks of at most ``chunk_bytes`` (OSError if unreadable)."""
    size = fs.size(path)
    offset = 0
    while offset < size:
        chunk = fs.read(path, offset, min(chunk_bytes, size - offset))
        if not chunk:
            raise OSError(f"{path}: ends at {offset} of {size} bytes")
        offset += len(chunk)
        yield chunk


def write_partition_file(
    fs: FileLayer, directory: str, partition: int, chunks: Iterable[bytes]
) -> tuple[SnapshotCheck, int, int]:
    """Write ``partition``'s snapshot from ``chunks`` into the backup ``directory``: a
    temporary file, checked as it streams, fsynced, renamed into place. Returns the check
    (size, SHA-256), the index and the epoch; ``BackupInvalid`` if the bytes are not one
    well-formed snapshot (nothing is left behind then)."""
    final = join(directory, partition_file(partition))
    temporary = final + ".tmp"
    check = SnapshotCheck()
    handle = fs.open_append(temporary, create=True)
    try:
        handle.truncate(0)
        for chunk in chunks:
            check.feed(chunk)
            handle.append(chunk)
        handle.fsync()
    except BaseException:
        handle.close()
        fs.remove(temporary)
        raise
    handle.close()
    header = check.header()
    if isinstance(header, str):
        fs.remove(temporary)
        raise BackupInvalid(f"the snapshot received for p{partition}: {header}", path=final)
    fs.rename(temporary, final)
    fs.fsync_dir(directory)
    return check, header[0], header[1]


def write_manifest(fs: FileLayer, directory: str, manifest: Manifest) -> None:
    """Write the manifest atomically (temporary file, fsync, rename, fsync of the
    directory): the last step of a backup, which makes it one."""
    final = join(directory, MANIFEST_NAME)
    write_atomic(fs, directory, MANIFEST_NAME, encode_manifest(manifest))
    if fs.size(final) == 0:  # paranoia of the cheap kind: an empty manifest is no backup
        raise BackupInvalid("manifest written empty", path=final)


def read_manifest(fs: FileLayer, directory: str) -> Manifest:
    path = join(directory, MANIFEST_NAME)
    try:
        data = fs.read(path, 0, fs.size(path))
    except FileNotFoundError:
        raise BackupInvalid(
            "no manifest.json: not a backup, or one that did not finish", path=directory
        ) from None
    return decode_manifest(data, path=path)


def check_partition(fs: FileLayer, directory: str, entry: PartitionBackup) -> str | None:
    """Why ``entry``'s file in ``directory`` does not match the manifest (None: it does)."""
    path = join(directory, entry.file)
    check = SnapshotCheck()
    try:
        for chunk in iter_file(fs, path):
            check.feed(chunk)
    except FileNotFoundError:
        return f"{entry.file}: missing"
    except OSError as exc:
        return f"{entry.file}: unreadable: {exc}"
    if check.size_bytes != entry.size_bytes:
        return f"{entry.file}: {check.size_bytes} bytes, the manifest says {entry.size_bytes}"
    if check.sha256 != entry.sha256:
        return f"{entry.file}: SHA-256 {check.sha256}, the manifest says {entry.sha256}"
    header = check.header()
    if isinstance(header, str):
        return f"{entry.file}: {header}"
    if header != (entry.index, entry.snapshot_epoch):
        return (
            f"{entry.file}: holds the state at (index {header[0]}, epoch {header[1]}), the "
            f"manifest says ({entry.index}, {entry.snapshot_epoch})"
        )
    return None


def verify_backup(fs: FileLayer, directory: str) -> Manifest:
    """The manifest of the backup in ``directory`` once every file matches it; else
    ``BackupInvalid`` naming every problem found (each file is read once, streamed)."""
    manifest = read_manifest(fs, directory)
    problems = [
        problem
        for entry in manifest.partitions
        if (problem := check_partition(fs, directory, entry)) is not None
    ]
    if problems:
        raise BackupInvalid(
            f"{len(problems)} of {len(manifest.partitions)} partition files are bad: "
            + "; ".join(problems),
            path=directory,
        )
    return manifest


def restore_partition_log(
    fs: FileLayer, backup_dir: str, entry: PartitionBackup, log_dirs: Sequence[str]
) -> None:
    """Build a partition log from ``entry``'s file in each of ``log_dirs`` (each must not
    exist yet or be empty): the snapshot copied in chunks and checked again as it is
    copied, then the meta file at (the partition's epoch, the snapshot's index)."""
    source = join(backup_dir, entry.file)
    name = snapshot_name(entry.index)
    for log_dir in log_dirs:
        fs.makedirs(log_dir)
        if fs.listdir(log_dir):
            raise BackupInvalid("a restore writes only into empty directories", path=log_dir)
        temporary = join(log_dir, name + ".tmp")
        check = SnapshotCheck()
        handle = fs.open_append(temporary, create=True)
        try:
            for chunk in iter_file(fs, source):
                check.feed(chunk)
                handle.append(chunk)
            handle.fsync()
        finally:
            handle.close()
        if check.sha256 != entry.sha256 or check.size_bytes != entry.size_bytes:
            raise BackupInvalid(f"{entry.file} changed while it was copied", path=source)
        fs.rename(temporary, join(log_dir, name))
        write_atomic(fs, log_dir, META_NAME, encode_meta(Meta(entry.epoch, entry.index)))
