"""Shared helpers for the storage tests."""

from __future__ import annotations

from planaria.storage import FileLayer, PartitionLog, SimFS
from planaria.storage.fs import AppendFile, FileLock


def open_sim(fs: SimFS | None = None, path: str = "/data/p0", **kwargs: object) -> PartitionLog:
    return PartitionLog.open(fs or SimFS(), path, **kwargs)  # type: ignore[arg-type]


def record_for(index: int, size: int = 20) -> bytes:
    return (b"record-%d-" % index).ljust(size, b"x")


def fill(log: PartitionLog, count: int, epoch: int = 1) -> list[int]:
    if log.epoch < epoch:
        log.set_epoch(epoch)
    indexes = [log.append(epoch, record_for(log.last_index + 1)) for _ in range(count)]
    log.sync()
    return indexes


class _CountingFile:
    def __init__(self, inner: AppendFile, owner: CountingFS) -> None:
        self._inner = inner
        self._owner = owner

    def append(self, data: bytes) -> None:
        self._owner.appends += 1
        self._inner.append(data)

    def fsync(self) -> None:
        self._owner.fsyncs += 1
        self._inner.fsync()

    def seek(self, offset: int) -> None:
        self._inner.seek(offset)

    def preallocate(self, size: int) -> None:
        self._inner.preallocate(size)

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def size(self) -> int:
        return self._inner.size()

    def close(self) -> None:
        self._inner.close()


class CountingFS:
    """Wraps a FileLayer and counts file fsyncs and appends."""

    def __init__(self, inner: FileLayer) -> None:
        self.inner = inner
        self.fsyncs = 0
        self.appends = 0

    def open_append(self, path: str, *, create: bool) -> AppendFile:
        return _CountingFile(self.inner.open_append(path, create=create), self)

    def read(self, path: str, offset: int, length: int) -> bytes:
        return self.inner.read(path, offset, length)

    def size(self, path: str) -> int:
        return self.inner.size(path)

    def rename(self, src: str, dst: str) -> None:
        self.inner.rename(src, dst)

    def listdir(self, directory: str) -> list[str]:
        return self.inner.listdir(directory)

    def remove(self, path: str) -> None:
        self.inner.remove(path)

    def fsync_dir(self, directory: str) -> None:
        self.inner.fsync_dir(directory)

    def makedirs(self, directory: str) -> None:
        self.inner.makedirs(directory)

    def is_dir(self, directory: str) -> bool:
        return self.inner.is_dir(directory)

    def lock(self, directory: str) -> FileLock:
        return self.inner.lock(directory)
