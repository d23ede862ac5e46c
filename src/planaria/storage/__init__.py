"""Durable partition logs: segments with checksums, snapshots, recovery, group commit.

``PartitionLog`` and ``SimFS`` are pure (no os/time/threading/asyncio) so the simulator runs
the same code; ``OsFS`` is the real disk and ``GroupCommitter`` the asyncio driver. The
names below load on first use, so ``from planaria.storage import PartitionLog`` in the
simulator never loads the committer's threads or the real disk (docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from planaria._lazy import lazy_front

if TYPE_CHECKING:
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
    from planaria.storage.journal import (
        Journal,
        JournalRecord,
        OpenLogs,
        close_logs,
        open_node_journal,
    )
    from planaria.storage.log import FsyncPolicy, PartitionLog, RecoveryReport
    from planaria.storage.osfs import OsFS

# name -> the module that defines it, imported on first access
_LAZY = {
    "AppendFile": "planaria.storage.fs",
    "CommitStats": "planaria.storage.committer",
    "Entry": "planaria.storage.format",
    "FileLayer": "planaria.storage.fs",
    "FileLock": "planaria.storage.fs",
    "FsyncPolicy": "planaria.storage.log",
    "GroupCommitter": "planaria.storage.committer",
    "Journal": "planaria.storage.journal",
    "JournalRecord": "planaria.storage.journal",
    "OpenLogs": "planaria.storage.journal",
    "OsFS": "planaria.storage.osfs",
    "PartitionLog": "planaria.storage.log",
    "RecoveryReport": "planaria.storage.log",
    "SimFS": "planaria.storage.fs",
    "Snapshot": "planaria.storage.format",
    "StorageDamaged": "planaria.storage.errors",
    "StorageError": "planaria.storage.errors",
    "StorageFailed": "planaria.storage.errors",
    "StorageFull": "planaria.storage.errors",
    "StorageLocked": "planaria.storage.errors",
    "StorageMissing": "planaria.storage.errors",
    "StorageReadOnly": "planaria.storage.errors",
    "close_logs": "planaria.storage.journal",
    "open_node_journal": "planaria.storage.journal",
}

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
    "OpenLogs",
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
    "close_logs",
    "open_node_journal",
]


__getattr__, __dir__ = lazy_front("planaria.storage", _LAZY, globals())
