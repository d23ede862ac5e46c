"""``planaria backup`` under load and ``planaria restore`` + ``planaria up`` on real
processes: the restored cluster holds every write acknowledged before the backup began
(at least as new as the last one acknowledged per key), and nothing never written.

Bad input to the commands (a damaged backup, a non-empty target) is refused before anything
is written: tests/cluster/test_backup_cli.py (no processes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import planaria
from planaria.cluster import LocalCluster, _processes, free_base_port
from planaria.errors import PlanariaError

# Generous bounds for a loaded 2-core CI: the run takes about 20 s on an idle machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

PARTITIONS = 4
KEYS_PER_WRITER = 40


def _planaria(*args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", _processes.CLI_MODULE, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)


@dataclass
class Writer:
    """Writes increasing sequence numbers to its own keys and records, per key, every
    acknowledged one (with the time its acknowledgement arrived) and the highest tried."""

    name: str
    seeds: list[str]
    acked: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    tried: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: int = 0

    @property
    def acks(self) -> int:
        return sum(len(a) for a in self.acked.values())

    def run(self) -> None:
        client = planaria.Client(self.seeds)
        seq = 0
        try:
            while not self.stop.is_set():
                seq += 1
                key = f"{self.name}-k{seq % KEYS_PER_WRITER}"
                self.tried[key] = seq
                try:
                    client.set(key, str(seq))
                except PlanariaError:  # unknown outcome or refused: not acknowledged
                    self.errors += 1
                    continue
                self.acked.setdefault(key, []).append((time.monotonic(), seq))
        finally:
            client.close()


def test_a_backup_under_load_restores_every_write_acknowledged_before_it(tmp_path: Path) -> None:
    source = LocalCluster(
        tmp_path / "source", nodes=3, partitions=PARTITIONS, base_port=free_base_port(3)
    )
    writers: list[Writer] = []
    threads: list[threading.Thread] = []
    try:
        source.start(timeout_s=60.0)
        seeds = list(source.addresses.values())
        writers = [Writer(f"w{i}", seeds) for i in range(2)]
        threads = [threading.Thread(target=w.run, name=w.name) for w in writers]
        for thread in threads:
            thread.start()
        _wait(lambda: all(w.acks >= 200 for w in writers), 60.0, "writes acknowledged")
        # A crash and a restart first: the partitions n1 led fail over to a new epoch, so
        # the restored logs start above epoch 1 (the new cluster's first configs must not).
        source.kill("n1")
        source.start("n1")
        source.wait_serving(timeout_s=60.0)
        acks_now = [w.acks for w in writers]
        _wait(lambda: all(w.acks >= a + 50 for w, a in zip(writers, acks_now, strict=True)),
              60.0, "writes acknowledged after the failover")  # fmt: skip
        began = time.monotonic()
        backup = _planaria("backup", str(tmp_path / "backup"), "--data", str(source.data_dir))
        ended = time.monotonic()
        assert backup.returncode == 0, backup.stderr
        assert "every write acknowledged before" in backup.stdout
        # Under load: writes went on being acknowledged while the backup ran.
        during = [t for w in writers for acks in w.acked.values() for t, _ in acks]
        assert any(began < t < ended for t in during), "no write acknowledged during the backup"
    finally:
        for writer in writers:
            writer.stop.set()
        for thread in threads:
            thread.join(timeout=60.0)
        source.stop()
    assert not any(thread.is_alive() for thread in threads)

    verify = _planaria("backup", "--verify", str(tmp_path / "backup"))
    assert verify.returncode == 0, verify.stderr
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert max(p["epoch"] for p in manifest["partitions"]) >= 2
    restored_dir = tmp_path / "restored"
    restore = _planaria(
        "restore", str(tmp_path / "backup"), "--data", str(restored_dir),
        "--port", str(free_base_port(3)),
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr
    up = _planaria("up", "--data", str(restored_dir), "--detach", "--timeout", "90")
    restored = LocalCluster.open(restored_dir)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        client = planaria.Client(list(restored.addresses.values()))
        try:
            checked = 0
            for writer in writers:
                for key, acks in writer.acked.items():
                    before = [seq for t, seq in acks if t < began]
                    value = client.get(key)
                    if not before:
                        continue  # not acknowledged before the backup: may or may not be there
                    assert value is not None, f"{key}: lost (acknowledged {before[-1]})"
                    seq = int(value)
                    # At least as new as the last acknowledged before the backup began, and
                    # a value that was written (tried), nothing invented.
                    assert before[-1] <= seq <= writer.tried[key], (key, before[-1], seq)
                    checked += 1
            assert checked == 2 * KEYS_PER_WRITER
            # The restored cluster takes writes on top of the backed-up state.
            client.set("w0-k1", "after")
            assert client.get("w0-k1") == b"after"
        finally:
            client.close()
    finally:
        restored.stop()
