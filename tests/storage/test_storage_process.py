"""Real processes and real disks: SIGKILL crashes, the directory lock, full and read-only disks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from random import Random

import pytest

from planaria.storage import (
    OsFS,
    PartitionLog,
    StorageFailed,
    StorageFull,
    StorageLocked,
    StorageReadOnly,
)

from ._helpers import fill

CHILD = Path(__file__).resolve().parent / "crash_child.py"
CRASH_BUDGET_S = 4.0
ACK_LINE = re.compile(r"(?P<index>\d+) (?P<record>t\d+-s\d+-v*)")


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    rng = Random(20261128)
    acknowledged: dict[int, str] = {}
    deadline = time.monotonic() + CRASH_BUDGET_S
    rounds = 0
    while time.monotonic() < deadline or rounds < 3:
        child = spawn("append", str(tmp_path), str(rng.choice([1, 8, 32])))
        assert child.stdout is not None
        first = child.stdout.readline()  # wait until it is really appending
        assert first, "child died before acknowledging anything"
        time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate()
        assert child.returncode == -signal.SIGKILL
        for line in (first + rest).splitlines():
            # Each line is one write() of less than PIPE_BUF bytes, so a kill never cuts one.
            parsed = ACK_LINE.fullmatch(line)
            assert parsed is not None, line
            acknowledged[int(parsed["index"])] = parsed["record"]
        log = PartitionLog.open(OsFS(), str(tmp_path))
        records = {e.index: e.record.decode() for e in log.entries()}
        log.close()
        missing = [i for i, r in acknowledged.items() if records.get(i) != r]
        assert missing == [], f"round {rounds}: acknowledged records lost: {missing[:5]}"
        rounds += 1
    assert rounds >= 3 and len(acknowledged) > 100, (rounds, len(acknowledged))
    print(f"{rounds} SIGKILL rounds, {len(acknowledged)} acknowledged records checked")


def test_second_process_cannot_open_a_locked_directory(tmp_path: Path) -> None:
    holder = spawn("hold", str(tmp_path))
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(StorageLocked, match=r"locked by another process \(pid \d+\)"):
            PartitionLog.open(OsFS(), str(tmp_path))
    finally:
        holder.kill()
        holder.wait()
    PartitionLog.open(OsFS(), str(tmp_path)).close()  # the kernel dropped the dead lock


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_real_disk_full_then_read_only(tiny_tmpfs: Path) -> None:
    directory = tiny_tmpfs / "p0"
    log = PartitionLog.open(OsFS(), str(directory))
    log.set_epoch(1)
    acked = 0
    with pytest.raises(StorageFull, match="disk full"):
        for _ in range(100_000):
            log.append_many([(1, b"v" * 100)] * 10)
            log.sync()
            acked = log.last_index
    assert log.last_index == acked == log.durable_index
    with pytest.raises(StorageFailed):
        log.append(1, b"after")
    log.close()
    segment_bytes = sum(f.stat().st_size for f in directory.glob("seg-*"))
    log = PartitionLog.open(OsFS(), str(directory))
    assert log.last_index == acked and log.recovery.torn_tail_bytes == 0
    assert sum(1 for _ in log.entries()) == acked
    log.close()
    assert sum(f.stat().st_size for f in directory.glob("seg-*")) == segment_bytes

    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    with pytest.raises(StorageReadOnly, match="read-only"):
        PartitionLog.open(OsFS(), str(directory))
    with pytest.raises(StorageReadOnly):
        PartitionLog.open(OsFS(), str(tiny_tmpfs / "new"))


def test_missing_parent_with_create_false(tmp_path: Path) -> None:
    from planaria.storage import StorageMissing

    with pytest.raises(StorageMissing):
        PartitionLog.open(OsFS(), str(tmp_path / "nope"), create=False)
    log = PartitionLog.open(OsFS(), str(tmp_path / "a" / "b"))
    fill(log, 2)
    log.close()
    assert os.path.exists(tmp_path / "a" / "b" / "meta")
