"""Storage errors: what went wrong with the disk, in words an operator can act on.

All are ``PlanariaError`` subclasses (not ``PeerError``): a storage failure is this node's
problem. Bad arguments (an epoch going backwards, a record that is not bytes) raise
``planaria.errors.UsageError`` instead.
"""

from __future__ import annotations

import errno

from planaria.errors import PlanariaError

__all__ = [
    "BackupInvalid",
    "StorageDamaged",
    "StorageError",
    "StorageFailed",
    "StorageFull",
    "StorageLocked",
    "StorageMissing",
    "StorageReadOnly",
    "storage_error_from_os",
]


class StorageError(PlanariaError):
    """A data directory could not be read or written. ``path`` names the file or directory."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.reason = message


class StorageMissing(StorageError):
    """The data directory (or its disk) does not exist."""


class StorageReadOnly(StorageError):
    """The disk or directory refuses writes (read-only mount, no permission)."""


class StorageFull(StorageError):
    """The disk is full. Nothing half-written was kept; the log refuses writes until reopened."""


class StorageLocked(StorageError):
    """Another process holds the data directory's lock."""


class StorageDamaged(StorageError):
    """Corruption that is not a torn tail: the replica is out of sync and must be refilled.

    ``offset`` is the byte offset of the first bad byte in ``path``, when known.
    """

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"damaged{where}: {message}", path=path)
        self.offset = offset


class BackupInvalid(StorageError):
    """A backup that cannot be restored or verified: a missing or damaged file, a manifest
    that does not describe the files, or a restore target that is not empty. Nothing was
    changed when it is raised."""


class StorageFailed(StorageError):
    """An earlier write or fsync failed; the log refuses writes until it is reopened.

    After a failed fsync the page cache cannot be trusted, so only a reopen (which re-reads
    what is really on disk) may continue. ``cause`` is the original error.
    """

    def __init__(self, message: str, *, path: str | None = None, cause: BaseException) -> None:
        super().__init__(f"{message} (log refuses writes until reopened): {cause}", path=path)
        self.cause = cause


def storage_error_from_os(exc: OSError, action: str, path: str) -> StorageError:
    """Translate an ``OSError`` into the storage error that says what the operator must fix."""
    code = exc.errno
    detail = f"{action} failed: {exc.strerror or exc}"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"{detail} (disk full)", path=path)
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StorageReadOnly(f"{detail} (read-only or not permitted)", path=path)
    if code in (errno.ENOENT, errno.ENOTDIR):
        return StorageMissing(f"{detail} (missing)", path=path)
    if code in (errno.EWOULDBLOCK, errno.EAGAIN):
        hint = "" if "locked" in detail else " (locked by another process)"
        return StorageLocked(f"{detail}{hint}", path=path)
    return StorageError(detail, path=path)
