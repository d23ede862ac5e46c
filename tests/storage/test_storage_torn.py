"""Recovery on the real file system: torn tails are dropped, damage elsewhere is reported."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from planaria.storage import OsFS, PartitionLog, StorageDamaged
from planaria.storage.format import RECORD_HEADER, SEGMENT_HEADER

from ._helpers import fill, record_for

RECORDS = 6
RECORD_BYTES = RECORD_HEADER.size + len(record_for(1))


def make_log(directory: Path, segment_bytes: int = 1 << 20) -> list[Path]:
    log = PartitionLog.open(OsFS(), str(directory), segment_bytes=segment_bytes)
    fill(log, RECORDS)
    log.close()
    return sorted(directory.glob("seg-*.log"))


def reopen(directory: Path) -> PartitionLog:
    return PartitionLog.open(OsFS(), str(directory))


def test_last_record_cut_at_every_byte(tmp_path: Path) -> None:
    segment = make_log(tmp_path)[0]
    full = segment.read_bytes()
    assert len(full) == SEGMENT_HEADER.size + RECORDS * RECORD_BYTES
    for cut in range(1, RECORD_BYTES):
        segment.write_bytes(full[: len(full) - cut])
        log = reopen(tmp_path)
        assert log.last_index == RECORDS - 1, cut
        assert log.recovery.torn_tail_bytes == RECORD_BYTES - cut
        assert log.recovery.torn_tail_reason is not None
        assert [e.record for e in log.entries()] == [record_for(i) for i in range(1, RECORDS)]
        # The tail was cut off for good: appending continues from the recovered end.
        log.append(1, record_for(RECORDS))
        log.close()
        assert segment.read_bytes() == full


def test_bit_flips_in_the_tail_are_dropped(tmp_path: Path) -> None:
    segment = make_log(tmp_path)[0]
    full = segment.read_bytes()
    last_record = len(full) - RECORD_BYTES
    for position in range(last_record, len(full)):
        for bit in (0, 7):
            damaged = bytearray(full)
            damaged[position] ^= 1 << bit
            segment.write_bytes(bytes(damaged))
            log = reopen(tmp_path)
            assert log.last_index == RECORDS - 1, (position, bit)
            assert log.recovery.torn_tail_bytes == RECORD_BYTES
            log.close()


@pytest.mark.parametrize("record", range(RECORDS - 1))
def test_bit_flips_in_the_middle_are_damage(tmp_path: Path, record: int) -> None:
    segment = make_log(tmp_path)[0]
    full = segment.read_bytes()
    start = SEGMENT_HEADER.size + record * RECORD_BYTES
    for position in range(start, start + RECORD_BYTES, 3):
        damaged = bytearray(full)
        damaged[position] ^= 0x04
        segment.write_bytes(bytes(damaged))
        with pytest.raises(StorageDamaged, match="valid records after it") as info:
            reopen(tmp_path)
        assert info.value.offset == start
        assert info.value.path == str(segment)
    segment.write_bytes(full)
    assert reopen(tmp_path).last_index == RECORDS  # the lock was released after the error


def test_damage_in_an_older_segment_or_header(tmp_path: Path) -> None:
    segments = make_log(tmp_path, segment_bytes=SEGMENT_HEADER.size + 2 * RECORD_BYTES)
    assert len(segments) == RECORDS // 2
    first = segments[0].read_bytes()
    segments[0].write_bytes(first[:-1])  # an older segment is never a torn tail
    with pytest.raises(StorageDamaged, match="not the last segment"):
        reopen(tmp_path)
    segments[0].write_bytes(first)
    last = segments[-1].read_bytes()
    segments[-1].write_bytes(b"X" + last[1:])
    with pytest.raises(StorageDamaged, match="bad segment header"):
        reopen(tmp_path)
    segments[-1].write_bytes(last)
    os.remove(segments[1])
    with pytest.raises(StorageDamaged, match="gap"):
        reopen(tmp_path)


def test_torn_segment_creation_is_dropped(tmp_path: Path) -> None:
    make_log(tmp_path)
    # A crash while a new segment was created: a header cut short and nothing after it.
    (tmp_path / f"seg-{RECORDS + 1:020d}.log").write_bytes(b"PLNR")
    log = reopen(tmp_path)
    assert log.last_index == RECORDS and log.recovery.removed_files == [
        f"seg-{RECORDS + 1:020d}.log"
    ]
    assert log.append(1, b"next") == RECORDS + 1
    log.close()


def test_zeros_after_the_last_record_are_a_clean_end(tmp_path: Path) -> None:
    segment = make_log(tmp_path)[0]
    full = segment.read_bytes()
    segment.write_bytes(full + bytes(5000))  # preallocated space left by a crash
    log = reopen(tmp_path)
    assert log.last_index == RECORDS and log.recovery.torn_tail_bytes == 0
    assert log.append(1, record_for(RECORDS + 1)) == RECORDS + 1  # overwrites the zeros
    log.close()
    log = reopen(tmp_path)
    assert log.last_index == RECORDS + 1
    log.close()
    # A record torn inside preallocated space: part of it, then zeros.
    segment.write_bytes(full + full[-RECORD_BYTES:][:7] + bytes(5000))
    log = reopen(tmp_path)
    assert log.last_index == RECORDS and log.recovery.torn_tail_bytes == 7 + 5000
