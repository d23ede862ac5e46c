"""The local cluster launcher and its CLI with real processes on loopback (bounded waits).

Each test starts its own coordinator and 3 nodes on free ports in a temporary directory and
stops them at the end, also when it fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from planaria.cluster import (
    ClusterStatus,
    LocalCluster,
    NoCluster,
    PortInUse,
    _processes,
    _status,
    free_base_port,
    partition_lines,
    probe_keys,
    status_from_seed,
)
from planaria.core.slots import keyslot, partition_of_slot
from planaria.errors import UsageError

pytestmark = pytest.mark.slow

PARTITIONS = 8

STOP_WAIT_S = 90.0  # planaria up's stop after SIGINT (see the Ctrl-C test)


def _planaria(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", _processes.CLI_MODULE, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(
        tmp_path / "data", nodes=3, partitions=PARTITIONS, base_port=free_base_port(3)
    )
    try:
        local.start(timeout_s=60.0)
        yield local
    finally:
        local.stop()


# --- no processes ------------------------------------------------------------------------------


def test_probe_keys_cover_every_partition_once() -> None:
    keys = probe_keys(64)
    assert sorted(keys) == list(range(64))
    assert all(partition_of_slot(keyslot(key), 64) == p for p, key in keys.items())


def test_partition_lines_parse_the_nodes_info() -> None:
    info = {
        "p0": "role=primary,serving=1,epoch=3,last=9,commit=9,isr=n1|n2,lag=2,storage=ok",
        "p12": "role=backup,serving=0,epoch=3,last=7,commit=7,isr=,lag=0,storage=ok",
        "process_id": "42",
        "pX": "role=primary",
    }
    lines = partition_lines(info)
    assert sorted(lines) == [0, 12]
    assert lines[0]["role"] == "primary" and lines[0]["lag"] == "2"
    assert lines[0]["isr"] == "n1|n2"
    assert lines[12]["role"] == "backup"


def test_status_shows_the_primarys_snapshot_and_log() -> None:
    from planaria.core.messages import PartitionConfig

    config = PartitionConfig(0, 3, "n1", ("n1", "n2"), frozenset({"n1", "n2"}), 5)
    line = partition_lines(
        {"p0": "role=primary,lag=1,snapshot_index=40,log_entries=12,log_bytes=2048,transfers=1"}
    )[0]
    [status] = _status.partition_statuses([config], 1, {0: line})
    assert (
        status.lag,
        status.snapshot_index,
        status.log_entries,
        status.log_bytes,
        status.transfers,
    ) == (1, 40, 12, 2048, 1)
    [unknown] = _status.partition_statuses([config], 1, {})
    assert unknown.snapshot_index is None and unknown.lag is None


def test_bad_shapes_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="replicas"):
        LocalCluster(tmp_path, nodes=2, replicas=3)
    with pytest.raises(UsageError, match="partitions"):
        LocalCluster(tmp_path, partitions=0)
    with pytest.raises(UsageError, match="fsync"):
        LocalCluster(tmp_path, fsync="sometimes")
    with pytest.raises(NoCluster, match="no cluster"):
        LocalCluster.open(tmp_path)


def test_a_taken_port_is_named_and_nothing_starts(tmp_path: Path) -> None:
    base = free_base_port(3)
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past a TIME_WAIT
        holder.bind(("127.0.0.1", base + 1))
        holder.listen()
        local = LocalCluster(tmp_path, nodes=3, partitions=PARTITIONS, base_port=base)
        with pytest.raises(PortInUse, match=f"port {base + 1} "):
            local.start(timeout_s=10.0)
    # Checked before anything was spawned or recorded.
    assert not (tmp_path / "cluster.json").exists()


# --- real clusters -----------------------------------------------------------------------------


def _assert_serving(status: ClusterStatus, alive: set[str]) -> None:
    assert {n.id for n in status.nodes if n.alive} == alive
    assert len(status.partitions) == PARTITIONS
    for partition in status.partitions:
        assert partition.primary in alive, partition
        assert partition.primary in partition.isr
        assert set(partition.isr) <= alive
        assert partition.epoch >= 1


def test_kill_9_a_primary_then_restart_it(cluster: LocalCluster) -> None:
    status = cluster.status()
    _assert_serving(status, {"n1", "n2", "n3"})
    assert all(len(p.isr) == 3 for p in status.partitions)
    counts = status.primary_counts()
    victim = max(sorted(counts), key=lambda n: counts[n])
    old_pid = cluster.pid(victim)
    assert old_pid is not None

    cluster.kill(victim, signal.SIGKILL)
    assert _gone(old_pid)
    cluster.wait_serving(timeout_s=20.0)
    after = cluster.status()
    _assert_serving(after, {"n1", "n2", "n3"} - {victim})
    assert all(victim not in p.isr for p in after.partitions)
    assert not next(n for n in after.nodes if n.id == victim).alive

    cluster.start(victim)
    new_pid = cluster.pid(victim)
    assert new_pid is not None and new_pid != old_pid

    def back_in_every_isr() -> bool:
        return all(victim in p.isr for p in cluster.status().partitions)

    _wait(back_in_every_isr, 30.0, f"{victim} back in every ISR")
    _assert_serving(cluster.status(), {"n1", "n2", "n3"})


def test_pause_shows_as_paused_resume_clears_it_and_stop_ends_it(cluster: LocalCluster) -> None:
    cluster.kill("n2", signal.SIGSTOP)
    try:
        n2 = next(n for n in cluster.status().nodes if n.id == "n2")
        assert n2.alive and n2.paused
    finally:
        cluster.kill("n2", signal.SIGCONT)
    n2 = next(n for n in cluster.status().nodes if n.id == "n2")
    assert n2.alive and not n2.paused

    # A paused node still stops cleanly (SIGTERM, then SIGCONT so that it sees it).
    cluster.kill("n3", signal.SIGSTOP)
    pids = [cluster.pid(n) for n in cluster.node_ids]
    cluster.stop(timeout_s=10.0)
    assert all(pid is not None and _gone(pid) for pid in pids)


def test_up_detach_status_node_kill_start_down(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    port = str(free_base_port(3))
    up = _planaria("up", "--detach", "--data", data, "--port", port, "--partitions", "8")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "cluster serving" in up.stdout
        assert f"127.0.0.1:{port}" in up.stdout

        status = _planaria("status", "--data", data, "--json")
        assert status.returncode == 0, status.stderr
        report: dict[str, Any] = json.loads(status.stdout)
        assert [n["id"] for n in report["nodes"]] == ["n1", "n2", "n3"]
        assert all(n["alive"] and n["pid"] for n in report["nodes"])
        assert len(report["partitions"]) == 8
        fields = {"id", "slots", "primary", "replicas", "isr", "epoch", "lag"}
        assert all(fields <= set(p) for p in report["partitions"])
        assert all(p["primary"] and len(p["isr"]) == 3 for p in report["partitions"])

        # The same cluster seen from one of its nodes.
        seen = status_from_seed(f"127.0.0.1:{port}")
        assert {p.id: p.primary for p in seen.partitions} == {
            p["id"]: p["primary"] for p in report["partitions"]
        }
        assert sorted(n.pid or 0 for n in seen.nodes) == sorted(n["pid"] for n in report["nodes"])
        # Every node serves Prometheus metrics; status names their URLs, both ways.
        assert {n.id: n.metrics for n in seen.nodes} == {
            n["id"]: n["metrics"] for n in report["nodes"]
        }
        for node in report["nodes"]:
            assert node["metrics"].startswith("http://127.0.0.1:"), node
            with urllib.request.urlopen(node["metrics"], timeout=30) as response:
                families = {
                    f.name: f for f in text_string_to_metric_families(response.read().decode())
                }
            held = families["planaria_partitions"].samples[0]
            assert held.labels == {"node": node["id"]} and held.value == 8
            epochs = families["planaria_partition_epoch"].samples
            assert sorted(int(s.labels["partition"]) for s in epochs) == list(range(8))

        pids = [n["pid"] for n in report["nodes"]]
        killed = _planaria("node", "kill", "n3", "--data", data)
        assert killed.returncode == 0, killed.stderr
        assert _gone(pids[2])
        started = _planaria("node", "start", "n3", "--data", data)
        assert started.returncode == 0, started.stderr
        again = json.loads(_planaria("status", "--data", data, "--json").stdout)
        assert again["nodes"][2]["alive"] and again["nodes"][2]["pid"] != pids[2]
        pids[2] = again["nodes"][2]["pid"]
    finally:
        down = _planaria("down", "--data", data)
    assert down.returncode == 0, down.stderr
    assert all(_gone(pid) for pid in pids)
    final = json.loads(_planaria("status", "--data", data, "--json").stdout)
    assert not any(n["alive"] for n in final["nodes"])


# Runs argv with SIGINT ignored, as a shell starts a background job (exec keeps it ignored,
# and Python then leaves it so).
_EXEC_WITH_SIGINT_IGNORED = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _recorded_pids(data: Path) -> list[int]:
    state = json.loads((data / "cluster.json").read_text())
    return [p["pid"] for p in (state["coordinator"], *state["nodes"]) if p["pid"] is not None]


@pytest.mark.parametrize("when", ["serving", "starting"])
def test_up_stops_everything_on_ctrl_c(tmp_path: Path, when: str) -> None:
    """SIGINT stops ``planaria up`` and all it started, whenever it lands, even when ``up``
    inherited SIGINT ignored (a job started in the background by a shell): once, a SIGINT
    sent while the cluster was still starting was lost, and ``up`` ran on."""
    data = tmp_path / "data"
    up = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _EXEC_WITH_SIGINT_IGNORED,
            sys.executable,
            "-m",
            _processes.CLI_MODULE,
            "up",
            "--data",
            str(data),
            "--port",
            str(free_base_port(3)),
            "--partitions",
            "8",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        local: LocalCluster | None = None

        def serving() -> bool:
            nonlocal local
            if local is None and (data / "cluster.json").exists():
                local = LocalCluster.open(data)
            return (
                local is not None
                and all(local.pid(n) for n in local.node_ids)
                and (not local.unserved_partitions())
            )

        def coordinator_started() -> bool:
            # The state file records the coordinator's pid before up waits for it to listen:
            # up is inside its start, where the first stop used to be lost.
            return (data / "cluster.json").exists() and bool(_recorded_pids(data))

        if when == "serving":
            _wait(serving, 60.0, "planaria up serving")
        else:
            _wait(coordinator_started, 60.0, "planaria up starting its coordinator")
        before = _recorded_pids(data)
        up.send_signal(signal.SIGINT)
        # Generous: the stop gives each group (nodes, then the coordinator) 10 s before a
        # SIGKILL, and a loaded machine slows every step. Read stderr meanwhile (a full pipe
        # would block the launcher) and show it if the launcher does not end.
        try:
            _, err = up.communicate(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            up.kill()
            _, err = up.communicate()
            raise AssertionError(
                f"planaria up did not stop within {STOP_WAIT_S} s of SIGINT; its stderr:\n"
                + err.decode(errors="replace")[-3000:]
            ) from None
        assert up.returncode == 130, err.decode(errors="replace")[-3000:]
        assert all(_gone(pid) for pid in before)
        left = _recorded_pids(data)
        assert not left, f"the state file still records running processes: {left}"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        if (data / "cluster.json").exists():
            LocalCluster.open(data).stop()


def test_demo_end_to_end(tmp_path: Path) -> None:
    """The short version of ``make demo``: every check must pass, nothing left behind."""
    before = set(os.listdir("/tmp"))
    done = _planaria(
        "demo",
        "--duration-s",
        "2",
        "--partitions",
        "8",
        "--threads",
        "3",
        "--keys",
        "24",
        timeout_s=110.0,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "PASS" in out
    assert "failed over" in out
    assert "caught up" in out
    assert "linearizable" in out
    leftovers = {name for name in set(os.listdir("/tmp")) - before if "planaria-demo" in name}
    assert not leftovers
