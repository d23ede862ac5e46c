"""The real-disk ``FileLayer``: thin wrappers around ``os`` calls (the only I/O in storage)."""

from __future__ import annotations

import errno
import fcntl
import os

from planaria.storage.fs import AppendFile, FileLock, join

__all__ = ["OsFS"]

LOCK_NAME = "LOCK"
_ZERO_CHUNK_BYTES = 1 << 20


class _OsFile:
    def __init__(self, path: str, fd: int) -> None:
        self._path = path
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self._position = self._size

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self._position)
            self._position += written
            self._size = max(self._size, self._position)
            view = view[written:]

    def seek(self, offset: int) -> None:
        self._position = offset

    def preallocate(self, size: int) -> None:
        # Real zeros, not fallocate: writing into fallocated (unwritten) extents still makes
        # every fdatasync commit extent changes to the journal.
        chunk = bytes(min(size - self._size, _ZERO_CHUNK_BYTES)) if size > self._size else b""
        while self._size < size:
            self._size += os.pwrite(self._fd, chunk[: size - self._size], self._size)

    def fsync(self) -> None:
        # fdatasync also flushes a size change, which is all an append needs.
        os.fdatasync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self._size = size
        self._position = min(self._position, size)

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        os.close(self._fd)


class _OsLock:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class OsFS:
    """``FileLayer`` on the real file system."""

    def open_append(self, path: str, *, create: bool) -> AppendFile:
        flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        return _OsFile(path, os.open(path, flags, 0o644))

    def read(self, path: str, offset: int, length: int) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def listdir(self, directory: str) -> list[str]:
        return sorted(
            entry.name for entry in os.scandir(directory) if entry.is_file(follow_symlinks=False)
        )

    def remove(self, path: str) -> None:
        os.remove(path)

    def fsync_dir(self, directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def makedirs(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)

    def is_dir(self, directory: str) -> bool:
        return os.path.isdir(directory)

    def lock(self, directory: str) -> FileLock:
        path = join(directory, LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OSError(
                errno.EWOULDBLOCK, f"locked by another process (pid {holder})", directory
            ) from exc
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return _OsLock(fd)
