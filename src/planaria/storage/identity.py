"""A data directory's identity: the ``data-id`` file, made at the directory's first start.

A node registers the id with its coordinator session. A node whose disk was replaced (or
wiped) finds no ``data-id``, makes another and registers that: the controller, which keeps
the id each replica had (``PartitionConfig.data_ids``), sees the change and handles it as a
loss of every log the node held (docs/design.md §4, invariant 7), with nobody having to say so.

``data-id-new`` marks an id made here that the configs may not know yet: until they do, the
node builds its replicas as ``lost`` (it leads only a config made for its current session),
as a replaced disk must (an empty log knows no epoch it led). The marker is written before
the id, so a crash in between leaves no id (the next start makes another one).

Pure (any :class:`~planaria.storage.fs.FileLayer`: the node's disk and the simulator's);
``OSError`` from the file layer propagates; the caller makes the random id.
"""

from __future__ import annotations

from planaria.errors import UsageError
from planaria.storage.errors import StorageDamaged
from planaria.storage.fs import FileLayer, join

__all__ = ["DATA_ID", "DATA_ID_NEW", "confirm_data_id", "create_data_id", "read_data_id"]

DATA_ID = "data-id"
DATA_ID_NEW = "data-id-new"  # the id was made here and the configs may not know it yet
DATA_ID_MAX = 2**63 - 1  # ids are 1 .. this (0 means "none" where one is registered)
_TEMP = "data-id.tmp"


def read_data_id(fs: FileLayer, directory: str) -> tuple[int, bool] | None:
    """The directory's id and whether it is new (``data-id-new``), or None without one.
    Raises StorageDamaged for a ``data-id`` that holds no id."""
    path = join(directory, DATA_ID)
    names = fs.listdir(directory)
    if DATA_ID not in names:
        return None
    text = fs.read(path, 0, fs.size(path)).decode("ascii", "replace").strip()
    if not text.isdigit() or not 1 <= int(text) <= DATA_ID_MAX:
        raise StorageDamaged(
            f"holds {text[:40]!r}, not a data id (remove it and the node starts as on a new "
            "disk: every replica here is refilled)",
            path=path,
        )
    return int(text), DATA_ID_NEW in names


def create_data_id(fs: FileLayer, directory: str, data_id: int) -> None:
    """Make ``data_id`` the directory's id, durably and atomically (marked new): the
    marker, then the id written to a temporary file, fsynced, renamed, and the directory
    fsynced."""
    if not 1 <= data_id <= DATA_ID_MAX:
        raise UsageError(f"a data id is 1 .. 2**63 - 1, not {data_id}")
    fs.makedirs(directory)
    _write_synced(fs, join(directory, DATA_ID_NEW), b"")
    fs.fsync_dir(directory)
    _write_synced(fs, join(directory, _TEMP), str(data_id).encode())
    fs.rename(join(directory, _TEMP), join(directory, DATA_ID))
    fs.fsync_dir(directory)


def confirm_data_id(fs: FileLayer, directory: str) -> None:
    """Every config that lists the node knows its id: drop the ``data-id-new`` marker."""
    fs.remove(join(directory, DATA_ID_NEW))
    fs.fsync_dir(directory)


def _write_synced(fs: FileLayer, path: str, data: bytes) -> None:
    created = fs.open_append(path, create=True)
    try:
        created.truncate(0)
        if data:
            created.append(data)
        created.fsync()
    finally:
        created.close()
