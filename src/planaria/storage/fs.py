"""The file layer the log is written against, and ``SimFS``, its in-memory twin for simulation.

The log code only calls the small ``FileLayer`` interface, so the very same code runs on the
real disk (``planaria.storage.osfs.OsFS``) and inside the deterministic simulator (``SimFS``).
This module is pure: no os, time, threading or asyncio. Errors are raised as ``OSError`` with
the errno a real disk would give (ENOSPC, EROFS, ENOENT, EWOULDBLOCK, EIO), so the log's error
handling is exercised the same way in both worlds.

``SimFS`` keeps, per file, the content that was fsynced and the content written since, and per
directory the entries that were fsynced (``fsync_dir``) and those that were not. ``crash(rng)``
models a power loss: in each file the writes since its last fsync reached the disk up to a
random byte (none of them, all of them, or torn in the middle, over the old content, e.g.
preallocated zeros), and each directory keeps either its synced or its current entries.
Directories themselves (``makedirs``) are durable at once.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from random import Random
from typing import Protocol

from planaria.errors import UsageError

__all__ = [
    "WRITE_OPS",
    "AppendFile",
    "FileLayer",
    "FileLock",
    "SimFS",
    "SimFSStats",
    "join",
    "write_atomic",
]


def join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


class AppendFile(Protocol):
    """A file open for appending at a write position (initially the end of the file)."""

    def append(self, data: bytes) -> None:
        """Write all of ``data`` at the write position and advance it; on error some prefix
        of it may have been written."""

    def seek(self, offset: int) -> None:
        """Move the write position (onto preallocated space, say)."""

    def preallocate(self, size: int) -> None:
        """Grow the file to ``size`` bytes of written zeros, so later appends overwrite
        allocated blocks and an fdatasync need not commit a size change. The write position
        does not move."""

    def fsync(self) -> None: ...

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes; the write position moves back to it if beyond."""

    def size(self) -> int:
        """The file's size in bytes (preallocated zeros included)."""

    def close(self) -> None: ...


class FileLock(Protocol):
    def release(self) -> None: ...


class FileLayer(Protocol):
    """What the storage code needs from a file system; paths are '/'-separated strings."""

    def open_append(self, path: str, *, create: bool) -> AppendFile: ...

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer at the end of the file)."""

    def size(self, path: str) -> int: ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` by ``src``."""

    def listdir(self, directory: str) -> list[str]: ...

    def remove(self, path: str) -> None: ...

    def fsync_dir(self, directory: str) -> None: ...

    def makedirs(self, directory: str) -> None: ...

    def is_dir(self, directory: str) -> bool: ...

    def lock(self, directory: str) -> FileLock:
        """Exclusive lock on ``directory``; ``OSError(EWOULDBLOCK)`` if someone holds it."""


# --------------------------------------------------------------------------- SimFS


@dataclass
class _Inode:
    data: bytearray = field(default_factory=bytearray)  # what reads see now
    synced: bytearray = field(default_factory=bytearray)  # what survives any crash
    dirty_from: int | None = None  # lowest offset changed since the last fsync
    dirty_to: int = 0  # just past the highest offset written since the last fsync

    def touch(self, offset: int, end: int) -> None:
        self.dirty_from = offset if self.dirty_from is None else min(self.dirty_from, offset)
        self.dirty_to = max(self.dirty_to, end)


@dataclass
class SimFSStats:
    fsyncs: int = 0
    dir_fsyncs: int = 0
    appends: int = 0
    bytes_appended: int = 0
    crashes: int = 0


# The ops ``SimFS.fail_after`` counts: every step that changes a file or a directory.
WRITE_OPS = frozenset(
    {"append", "fsync", "truncate", "preallocate", "rename", "remove", "fsync_dir", "create"}
)


def write_atomic(fs: FileLayer, directory: str, name: str, data: bytes) -> None:
    """Replace ``directory/name`` by ``data`` atomically and durably: a temporary file
    written and fsynced, renamed over it, the directory fsynced (OSError as the layer
    raises it)."""
    temporary = join(directory, name + ".tmp")
    handle = fs.open_append(temporary, create=True)
    try:
        handle.truncate(0)
        handle.append(data)
        handle.fsync()
    finally:
        handle.close()
    fs.rename(temporary, join(directory, name))
    fs.fsync_dir(directory)


def _oserror(code: int, path: str) -> OSError:
    return OSError(code, errno.errorcode.get(code, "error"), path)


class _SimLock:
    def __init__(self, fs: SimFS, directory: str) -> None:
        self._fs = fs
        self._directory = directory
        self._generation = fs.generation

    def release(self) -> None:
        if self._generation == self._fs.generation:
            self._fs._locks.discard(self._directory)


class _SimFile:
    def __init__(self, fs: SimFS, path: str, inode: _Inode) -> None:
        self._fs = fs
        self._path = path
        self._inode = inode
        self._generation = fs.generation
        self._closed = False
        self._position = len(inode.data)

    def _check(self, op: str) -> None:
        if self._closed or self._generation != self._fs.generation:
            raise _oserror(errno.EBADF, self._path)
        self._fs._maybe_fail(op, self._path)

    def append(self, data: bytes) -> None:
        self._check("append")
        self._write(data, move=True)

    def _write(self, data: bytes, *, move: bool) -> None:
        if self._fs.read_only:
            raise _oserror(errno.EROFS, self._path)
        inode, position = self._inode, self._position
        fits = len(data)
        if self._fs.capacity_bytes is not None:
            growth = max(0, position + fits - len(inode.data))
            room = self._fs.capacity_bytes - self._fs.used_bytes()
            if growth > room:
                fits = max(0, len(inode.data) + room - position)
        # A real disk may write part of a buffer before reporting ENOSPC.
        inode.data[position : position + fits] = data[:fits]
        inode.touch(position, position + fits)
        if move:
            self._position += fits
        self._fs.stats.appends += 1
        self._fs.stats.bytes_appended += fits
        if fits < len(data):
            raise _oserror(errno.ENOSPC, self._path)

    def seek(self, offset: int) -> None:
        self._check("seek")
        self._position = offset

    def preallocate(self, size: int) -> None:
        self._check("preallocate")
        current = len(self._inode.data)
        if size > current:
            saved, self._position = self._position, current
            try:
                self._write(bytes(size - current), move=False)
            finally:
                self._position = saved

    def fsync(self) -> None:
        self._check("fsync")
        self._fs.stats.fsyncs += 1
        inode = self._inode
        if inode.dirty_from is not None:
            del inode.synced[inode.dirty_from :]
            inode.synced += inode.data[inode.dirty_from :]
            inode.dirty_from = None
            inode.dirty_to = 0

    def truncate(self, size: int) -> None:
        self._check("truncate")
        if self._fs.read_only:
            raise _oserror(errno.EROFS, self._path)
        if size < len(self._inode.data):
            del self._inode.data[size:]
            self._inode.touch(size, size)
        self._position = min(self._position, size)

    def size(self) -> int:
        self._check("size")
        return len(self._inode.data)

    def close(self) -> None:
        self._closed = True


class SimFS:
    """An in-memory file system that can lose unsynced writes on ``crash(rng)``.

    ``capacity_bytes`` bounds the total file bytes (ENOSPC beyond it, possibly after a partial
    write); ``read_only`` makes every mutation fail with EROFS; ``fail_next(op, code)`` makes
    the next ``op`` ("append", "fsync", "truncate", "seek", "preallocate", "rename", "remove",
    "fsync_dir", "open", "read") fail with ``code``; ``fail_after(count)`` makes the
    ``count``-th write from now (any op of :data:`WRITE_OPS`) fail, which the simulator uses
    to crash a node at a drawn step of a multi-step write (a snapshot, an install);
    ``tear(path, size)`` cuts a file short, durably (a file whose tail the disk lost).
    """

    def __init__(self, *, capacity_bytes: int | None = None) -> None:
        self.capacity_bytes = capacity_bytes
        self.read_only = False
        self.generation = 0
        self.stats = SimFSStats()
        self._dirs: dict[str, dict[str, _Inode]] = {"": {}}
        self._synced_dirs: dict[str, dict[str, _Inode]] = {"": {}}
        self._locks: set[str] = set()
        self._failures: list[tuple[str, int]] = []
        self._fail_countdown: tuple[int, int] | None = None  # (writes left, error code)
        self.failed_op: str | None = None  # the op the last injected failure struck

    # ----------------------------------------------------------- fault injection

    def fail_next(self, op: str, code: int = errno.EIO) -> None:
        self._failures.append((op, code))

    def fail_after(self, count: int, code: int = errno.EIO) -> None:
        """The ``count``-th write op (:data:`WRITE_OPS`) from now fails with ``code``."""
        if count < 1:
            raise UsageError(f"count must be >= 1, got {count}")
        self._fail_countdown = (count, code)

    def cancel_failures(self) -> None:
        """Forget every failure armed and not struck yet."""
        self._failures.clear()
        self._fail_countdown = None

    def _maybe_fail(self, op: str, path: str) -> None:
        for i, (failing_op, code) in enumerate(self._failures):
            if failing_op == op:
                del self._failures[i]
                self.failed_op = op
                raise _oserror(code, path)
        if self._fail_countdown is not None and op in WRITE_OPS:
            left, code = self._fail_countdown
            self._fail_countdown = (left - 1, code) if left > 1 else None
            if left == 1:
                self.failed_op = op
                raise _oserror(code, path)

    def used_bytes(self) -> int:
        inodes = {id(inode): inode for entries in self._dirs.values() for inode in entries.values()}
        return sum(len(inode.data) for inode in inodes.values())

    def crash(self, rng: Random) -> None:
        """Power loss: unsynced bytes and directory entries may be lost, the last write torn."""
        self.generation += 1
        self.stats.crashes += 1
        self._locks.clear()
        for directory in self._dirs:
            if self._dirs[directory] != self._synced_dirs[directory] and rng.random() < 0.5:
                self._dirs[directory] = dict(self._synced_dirs[directory])
            else:
                self._synced_dirs[directory] = dict(self._dirs[directory])
        seen: set[int] = set()
        for entries in self._dirs.values():
            for inode in entries.values():
                if id(inode) in seen:
                    continue
                seen.add(id(inode))
                self._crash_inode(inode, rng)

    @staticmethod
    def _crash_inode(inode: _Inode, rng: Random) -> None:
        if inode.dirty_from is not None:
            # The unsynced changes reached the disk up to some byte: none, all, or torn.
            new, old = inode.data, inode.synced
            mode = rng.randrange(3)
            cut = (
                inode.dirty_from
                if mode == 0
                else len(new)
                if mode == 1
                else rng.randint(inode.dirty_from, max(inode.dirty_from, inode.dirty_to))
            )
            kept = new[:cut] + old[cut:] if mode != 1 else bytearray(new)
            inode.data = bytearray(kept)
            inode.synced = bytearray(kept)
            inode.dirty_from = None
            inode.dirty_to = 0

    # ----------------------------------------------------------- helpers

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        directory, _, name = path.rstrip("/").rpartition("/")
        return directory, name

    def _entries(self, directory: str, path: str) -> dict[str, _Inode]:
        entries = self._dirs.get(directory.rstrip("/"))
        if entries is None:
            raise _oserror(errno.ENOENT, path)
        return entries

    def _inode(self, path: str) -> _Inode:
        directory, name = self._split(path)
        inode = self._entries(directory, path).get(name)
        if inode is None:
            raise _oserror(errno.ENOENT, path)
        return inode

    def _mutating(self, op: str, path: str) -> None:
        self._maybe_fail(op, path)
        if self.read_only:
            raise _oserror(errno.EROFS, path)

    # ----------------------------------------------------------- FileLayer

    def open_append(self, path: str, *, create: bool) -> AppendFile:
        self._maybe_fail("open", path)
        directory, name = self._split(path)
        entries = self._entries(directory, path)
        inode = entries.get(name)
        if inode is None:
            if not create:
                raise _oserror(errno.ENOENT, path)
            self._mutating("create", path)
            inode = entries[name] = _Inode()
        elif self.read_only:
            raise _oserror(errno.EROFS, path)
        return _SimFile(self, path, inode)

    def read(self, path: str, offset: int, length: int) -> bytes:
        self._maybe_fail("read", path)
        return bytes(self._inode(path).data[offset : offset + length])

    def size(self, path: str) -> int:
        return len(self._inode(path).data)

    def damage(self, path: str, offset: int) -> None:
        """A bad sector: flip every bit of the byte at ``offset``, in what reads see and in
        what survives a crash (fault injection)."""
        inode = self._inode(path)
        for data in (inode.data, inode.synced):
            if offset < len(data):
                data[offset] ^= 0xFF

    def tear(self, path: str, size: int) -> None:
        """The file keeps only its first ``size`` bytes, in what reads see and in what
        survives a crash (fault injection: a disk that lost a file's tail)."""
        inode = self._inode(path)
        for data in (inode.data, inode.synced):
            del data[size:]

    def rename(self, src: str, dst: str) -> None:
        self._mutating("rename", src)
        src_dir, src_name = self._split(src)
        dst_dir, dst_name = self._split(dst)
        inode = self._inode(src)
        dst_entries = self._entries(dst_dir, dst)
        del self._entries(src_dir, src)[src_name]
        dst_entries[dst_name] = inode

    def listdir(self, directory: str) -> list[str]:
        return sorted(self._entries(directory, directory))

    def remove(self, path: str) -> None:
        self._mutating("remove", path)
        directory, name = self._split(path)
        self._inode(path)
        del self._entries(directory, path)[name]

    def fsync_dir(self, directory: str) -> None:
        self._maybe_fail("fsync_dir", directory)
        key = directory.rstrip("/")
        self._synced_dirs[key] = dict(self._entries(key, directory))
        self.stats.dir_fsyncs += 1

    def makedirs(self, directory: str) -> None:
        key = directory.rstrip("/")
        if key in self._dirs:
            return
        self._mutating("makedirs", directory)
        parts = key.split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            self._dirs.setdefault(prefix, {})
            self._synced_dirs.setdefault(prefix, {})

    def is_dir(self, directory: str) -> bool:
        return directory.rstrip("/") in self._dirs

    def lock(self, directory: str) -> FileLock:
        key = directory.rstrip("/")
        self._entries(key, directory)
        if key in self._locks:
            raise _oserror(errno.EWOULDBLOCK, directory)
        self._locks.add(key)
        return _SimLock(self, key)
