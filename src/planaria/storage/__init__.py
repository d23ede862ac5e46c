"""Durable partition logs: segments with checksums, snapshots, recovery, group commit.

``PartitionLog`` and ``SimFS`` are pure (no os/time/threading/asyncio) so the simulator runs
the same code; ``OsFS`` is the real disk and ``GroupCommitter`` the asyncio driver.
"""

from planaria.storage.committer import CommitStats, GroupCommitter
from planaria.storage.errors import (
    StorageDamaged,
    StorageError,
    StorageFailed,
    StorageFull,
    StorageLocked,
    StorageMissing,
    StorageReadOnly,
)
from planaria.storage.format import Entry, Snapshot
from planaria.storage.fs import AppendFile, FileLayer, FileLock, SimFS
from planaria.storage.journal import Journal, JournalRecord, open_node_journal
from planaria.storage.log import FsyncPolicy, PartitionLog, RecoveryReport
from planaria.storage.osfs import OsFS

__all__ = [
    "AppendFile",
    "CommitStats",
    "Entry",
    "FileLayer",
    "FileLock",
    "FsyncPolicy",
    "GroupCommitter",
    "Journal",
    "JournalRecord",
    "OsFS",
    "PartitionLog",
    "RecoveryReport",
    "SimFS",
    "Snapshot",
    "StorageDamaged",
    "StorageError",
    "StorageFailed",
    "StorageFull",
    "StorageLocked",
    "StorageMissing",
    "StorageReadOnly",
    "open_node_journal",
]
