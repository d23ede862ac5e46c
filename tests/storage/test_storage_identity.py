"""The data directory's identity (storage/identity.py): made once, durably, atomically."""

from __future__ import annotations

from random import Random

import pytest

from planaria.errors import UsageError
from planaria.storage import SimFS, StorageDamaged
from planaria.storage.identity import (
    DATA_ID,
    DATA_ID_NEW,
    confirm_data_id,
    create_data_id,
    read_data_id,
)


def test_an_id_is_made_new_survives_a_crash_and_is_confirmed() -> None:
    fs = SimFS()
    fs.makedirs("/data")
    assert read_data_id(fs, "/data") is None
    create_data_id(fs, "/data", 42)
    fs.crash(Random(1))
    assert read_data_id(fs, "/data") == (42, True)
    confirm_data_id(fs, "/data")
    fs.crash(Random(2))
    assert read_data_id(fs, "/data") == (42, False)
    assert sorted(fs.listdir("/data")) == [DATA_ID]


def test_a_crash_before_the_rename_leaves_no_id() -> None:
    fs = SimFS()
    fs.makedirs("/data")
    fs.fail_next("rename")
    with pytest.raises(OSError):
        create_data_id(fs, "/data", 42)
    fs.crash(Random(3))
    assert read_data_id(fs, "/data") is None  # the next start makes another one
    create_data_id(fs, "/data", 43)
    assert read_data_id(fs, "/data") == (43, True)


def test_a_damaged_id_is_an_error_and_ids_are_positive() -> None:
    fs = SimFS()
    fs.makedirs("/data")
    damaged = fs.open_append(f"/data/{DATA_ID}", create=True)
    damaged.append(b"4x")
    damaged.close()
    with pytest.raises(StorageDamaged, match="not a data id"):
        read_data_id(fs, "/data")
    with pytest.raises(UsageError):
        create_data_id(fs, "/data", 0)
    assert DATA_ID_NEW not in fs.listdir("/data")
