"""``planaria backup DIR``, ``planaria backup --verify DIR`` and ``planaria restore DIR
--data NEWDIR`` (docs/operations.md, "Backup and restore"; the files:
``planaria.storage.backup``; the node's side: ``planaria.node._backup``).

A backup asks each partition's primary for its committed state (BACKUP BEGIN: only a
serving primary answers, so every write acknowledged before the command started is in it),
copies it in chunks (BACKUP READ) into ``DIR/p<N>.snap``, checking it as it streams, and
writes ``DIR/manifest.json`` last. A primary that fails over meanwhile is asked again, at its
successor. The partitions are copied one after another, each at its own index: the backup
is a consistent cut per partition, as every write is to one partition.

A restore verifies the whole backup first, lays out a stopped local cluster of the same shape
in a temporary directory beside NEWDIR (each node's log of each partition starting at the
backed-up snapshot; its first configs at an epoch above the backup's), then renames it to
NEWDIR: a failure leaves nothing behind. ``planaria up --data NEWDIR`` starts it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from planaria import __version__
from planaria.cli._cluster import positive_int
from planaria.cluster import (
    DEFAULT_BASE_PORT,
    ClusterError,
    ClusterStatus,
    LocalCluster,
    resp_command,
    status_from_seed,
)
from planaria.cluster._resp import is_error
from planaria.core.slots import slot_range
from planaria.errors import UsageError
from planaria.storage import OsFS
from planaria.storage.backup import (
    ClusterShape,
    Manifest,
    PartitionBackup,
    partition_file,
    restore_partition_log,
    verify_backup,
    write_manifest,
    write_partition_file,
)
from planaria.storage.errors import BackupInvalid

__all__ = [
    "add_backup_arguments",
    "add_restore_arguments",
    "run_backup",
    "run_restore",
]

DEFAULT_DATA_DIR = "planaria-data"
CHUNK_BYTES_DEFAULT = 1024 * 1024
CHUNK_BYTES_MAX = 4 * 1024 * 1024  # what a node sends at most per BACKUP READ
_COMMAND_TIMEOUT_S = 30.0  # one BEGIN serialises a whole partition


def _chunk_bytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= CHUNK_BYTES_MAX:
        raise argparse.ArgumentTypeError(f"must be in 1..{CHUNK_BYTES_MAX}, not {value}")
    return value


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _require_empty(directory: Path, what: str) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"{directory} is not an empty directory: {what}")


# --- backup ----------------------------------------------------------------------------------


def add_backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory",
        metavar="DIR",
        help="where the backup goes (a new or empty directory); with --verify, the backup",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--data",
        default=None,
        metavar="CLUSTER_DIR",
        help=f"a local cluster's data directory (default ./{DEFAULT_DATA_DIR})",
    )
    where.add_argument("--seed", metavar="HOST:PORT", help="any node of a running cluster")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check every file of the backup in DIR against its manifest; copy nothing",
    )
    parser.add_argument(
        "--chunk-bytes",
        type=_chunk_bytes,
        default=CHUNK_BYTES_DEFAULT,
        metavar="N",
        help=f"bytes asked of a node at once (default {CHUNK_BYTES_DEFAULT}, at most "
        f"{CHUNK_BYTES_MAX}): what the command holds in memory",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="give up on a partition whose primary cannot be copied within S seconds "
        "(failovers are waited for meanwhile; default 120)",
    )


class _Source:
    """The cluster being backed up: its status (who is primary), re-read after a failure."""

    def __init__(self, data: str | None, seed: str | None) -> None:
        self._cluster = None if seed is not None else LocalCluster.open(data or DEFAULT_DATA_DIR)
        self._seed = seed
        self.status = self.refresh()

    def refresh(self) -> ClusterStatus:
        if self._cluster is not None:
            self.status = self._cluster.status()
        else:
            assert self._seed is not None
            self.status = status_from_seed(self._seed)
        return self.status

    def shape(self) -> ClusterShape:
        status = self.status
        if not any(node.alive and not node.paused for node in status.nodes):
            raise ClusterError(f"no node of the cluster is running ({'; '.join(status.errors)})")
        if not status.partitions:
            raise ClusterError(f"the cluster reports no partitions ({'; '.join(status.errors)})")
        replicas = max(len(p.replicas) for p in status.partitions)
        min_insync = self._cluster.min_insync if self._cluster is not None else None
        return ClusterShape(
            partitions=len(status.partitions),
            replicas=max(replicas, 1),
            min_insync=None if min_insync is None else min(min_insync, max(replicas, 1)),
            nodes=tuple(sorted(node.id for node in status.nodes)),
        )

    def primary(self, partition: int) -> tuple[str, str] | None:
        """(node id, address) of the partition's primary as last read, if any."""
        if partition >= len(self.status.partitions):  # no node that answered holds it
            return None
        primary = self.status.partitions[partition].primary
        for node in self.status.nodes:
            if node.id == primary:
                return node.id, node.address
        return None


class _Retry(Exception):
    """A partition's copy failed in a way a retry (perhaps at a new primary) may fix."""


def _command(address: str, *args: str) -> Any:
    (reply,) = resp_command(address, args, timeout_s=_COMMAND_TIMEOUT_S)
    if is_error(reply):
        raise _Retry(f"{address}: {reply}")
    return reply


def _chunks(address: str, token: str, size: int, chunk_bytes: int) -> Iterator[bytes]:
    offset = 0
    while offset < size:
        chunk = _command(address, "BACKUP", "READ", token, str(offset), str(chunk_bytes))
        if not isinstance(chunk, bytes) or not chunk:
            raise _Retry(f"{address}: no bytes at offset {offset} of {size}")
        offset += len(chunk)
        yield chunk


def _copy_partition(
    source: _Source,
    shape: ClusterShape,
    partition: int,
    directory: Path,
    *,
    chunk_bytes: int,
    timeout_s: float,
) -> PartitionBackup:
    """Copy one partition from its primary, retrying (re-reading who is primary) until
    ``timeout_s``; every attempt starts from BACKUP BEGIN, after the backup started."""
    deadline = time.monotonic() + timeout_s
    delay_s = 0.05
    while True:
        found = source.primary(partition)
        try:
            if found is None:
                raise _Retry("no primary known")
            node_id, address = found
            begun = _command(address, "BACKUP", "BEGIN", str(partition))
            if not (isinstance(begun, list) and len(begun) == 5 and isinstance(begun[0], bytes)):
                raise _Retry(f"{address} answered BACKUP BEGIN with {begun!r}")
            token = begun[0].decode()
            index, snapshot_epoch, epoch, size = (int(n) for n in begun[1:])
            try:
                check, got_index, got_epoch = write_partition_file(
                    OsFS(), str(directory), partition, _chunks(address, token, size, chunk_bytes)
                )
            finally:
                _end(address, token)
            if (got_index, got_epoch, check.size_bytes) != (index, snapshot_epoch, size):
                raise _Retry(
                    f"{address} sent the state at ({got_index}, {got_epoch}), {check.size_bytes} "
                    f"bytes; it announced ({index}, {snapshot_epoch}), {size} bytes"
                )
            owned = slot_range(partition, shape.partitions)
            slots = (owned.start, owned.stop - 1)
            return PartitionBackup(
                partition, slots, partition_file(partition), index, snapshot_epoch, epoch,
                node_id, check.size_bytes, check.sha256,
            )  # fmt: skip
        except (_Retry, OSError, BackupInvalid, ValueError, TypeError) as exc:
            failure: Exception = exc
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"partition {partition}: not copied within {timeout_s:g} s; last error: {failure}"
            ) from failure
        time.sleep(delay_s)  # a failover takes a moment: then ask whoever is primary now
        delay_s = min(delay_s * 2, 1.0)
        try:
            source.refresh()
        except ClusterError as exc:
            failure = exc  # reported if the deadline passes; the next attempt reads again


def _end(address: str, token: str) -> None:
    """BACKUP END: the node removes its copy (it would expire by itself after a minute)."""
    try:
        resp_command(address, ("BACKUP", "END", token), timeout_s=_COMMAND_TIMEOUT_S)
    except OSError as exc:
        print(f"  (could not end backup snapshot {token} on {address}: {exc}; it expires)")


def run_backup(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if args.verify:
        manifest = verify_backup(OsFS(), str(directory))
        print(
            f"{directory}: a good backup of {manifest.cluster.partitions} partitions "
            f"({manifest.total_bytes} bytes, planaria {manifest.planaria_version}), taken "
            f"{manifest.started_at} .. {manifest.finished_at}; every file matches its checksum"
        )
        return 0
    _require_empty(directory, "a backup goes into a new or empty directory")
    started = _now()  # every write acknowledged before this is in the backup
    source = _Source(args.data, args.seed)
    shape = source.shape()
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    entries: list[PartitionBackup] = []
    try:
        for partition in range(shape.partitions):
            entry = _copy_partition(
                source, shape, partition, directory,
                chunk_bytes=args.chunk_bytes, timeout_s=args.timeout,
            )  # fmt: skip
            entries.append(entry)
            print(
                f"p{partition}: index {entry.index}, epoch {entry.epoch}, "
                f"{entry.size_bytes} bytes from {entry.primary}",
                flush=True,
            )
        manifest = Manifest(shape, tuple(entries), __version__, started, _now())
        write_manifest(OsFS(), str(directory), manifest)
    except BaseException:
        # Not a backup without its manifest: take back what this run wrote.
        for partition in range(shape.partitions):
            for name in (partition_file(partition), partition_file(partition) + ".tmp"):
                (directory / name).unlink(missing_ok=True)
        if created:
            directory.rmdir()
        raise
    print(
        f"backup of {shape.partitions} partitions ({manifest.total_bytes} bytes) in "
        f"{directory}: every write acknowledged before {started} is in it"
    )
    return 0


# --- restore ---------------------------------------------------------------------------------


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="a backup made by planaria backup")
    parser.add_argument(
        "--data",
        required=True,
        metavar="NEWDIR",
        help="the restored cluster's data directory (a new or empty directory); "
        "start the cluster with planaria up --data NEWDIR",
    )
    parser.add_argument(
        "--nodes",
        type=positive_int,
        default=None,
        help="node processes of the new cluster (default: as many as the backed-up cluster "
        "had; at least its replicas per partition)",
    )
    parser.add_argument(
        "--port",
        type=positive_int,
        default=DEFAULT_BASE_PORT,
        help=f"RESP port of the first node; the next nodes count up (default {DEFAULT_BASE_PORT})",
    )
    parser.add_argument(
        "--coordinator-port",
        type=positive_int,
        default=None,
        help="the coordinator's port (default 7000, or PORT - 1 for another --port)",
    )


def run_restore(args: argparse.Namespace) -> int:
    fs = OsFS()
    backup = Path(args.directory)
    target = Path(args.data).resolve()
    _require_empty(target, "a restore never writes over data")
    manifest = verify_backup(fs, str(backup))  # every file, before anything is written
    shape = manifest.cluster
    nodes = args.nodes if args.nodes is not None else len(shape.nodes)
    if nodes < shape.replicas:
        raise UsageError(
            f"the backup's partitions have {shape.replicas} replicas: --nodes must be at "
            f"least {shape.replicas}, not {nodes}"
        )
    staging = target.parent / f".{target.name}.restoring-{os.getpid()}"
    if staging.exists():
        raise UsageError(f"{staging} exists: remove what an earlier restore left there")
    try:
        cluster = LocalCluster(
            staging,
            nodes=nodes,
            partitions=shape.partitions,
            replicas=shape.replicas,
            min_insync=shape.min_insync,
            base_port=args.port,
            coordinator_port=args.coordinator_port,
            first_epoch=manifest.first_epoch,
        )
        # Every node gets every partition: the new controller places the replicas, and
        # any node it names must start from the backup, never from an empty log.
        for entry in manifest.partitions:
            restore_partition_log(
                fs,
                str(backup),
                entry,
                [
                    str(staging / "nodes" / node / f"p{entry.partition}")
                    for node in cluster.node_ids
                ],
            )
            print(f"p{entry.partition}: index {entry.index} on {len(cluster.node_ids)} nodes",
                  flush=True)  # fmt: skip
        cluster.record()
        if target.exists():
            target.rmdir()  # empty (checked above)
        os.rename(staging, target)
        fs.fsync_dir(str(target.parent))
    except BaseException:
        if staging.exists():
            shutil.rmtree(staging)  # ours alone, and never the backup
        raise
    print(
        f"restored {shape.partitions} partitions ({manifest.total_bytes} bytes, taken "
        f"{manifest.started_at}) into {target} for {nodes} nodes; start it with: "
        f"planaria up --data {target}"
    )
    return 0
