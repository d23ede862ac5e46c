"""``planaria node add|drain|remove`` and the moves in ``planaria status``, against a fake
cluster (the real-process flow is test_membership_processes.py)."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from planaria.cli import _cluster as cluster_cli
from planaria.cli._main import build_parser
from planaria.cluster import ClusterStatus, NodeStatus, PartitionStatus
from planaria.node import MoveProgress


class FakeCluster:
    """Moves progress by one replica per look; records what the CLI asked for."""

    def __init__(self, remaining: int, held: int = 0) -> None:
        self.remaining = remaining
        self.held = held
        self.calls: list[str] = []

    def add_node(self, *, weight: float, zone: str | None) -> str:
        self.calls.append(f"add weight={weight:g} zone={zone}")
        return "n4"

    def pid(self, node_id: str) -> int:
        return 4242

    def drain(self, node_id: str) -> None:
        self.calls.append(f"drain {node_id}")

    def remove_node(self, node_id: str) -> None:
        self.calls.append(f"remove {node_id}")

    def move_progress(self) -> MoveProgress:
        progress = MoveProgress(self.remaining, (), {"n2": self.held} if self.held else {})
        self.remaining = max(0, self.remaining - 1)
        self.held = max(0, self.held - 1)
        return progress


def run(argv: list[str], fake: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("planaria.cli._cluster.LocalCluster.open", lambda _: fake)
    monkeypatch.setattr(cluster_cli, "_REFRESH_S", 0.001)
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    return runners[argv[0]](args)


def test_node_add_starts_a_member_and_follows_the_moves(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCluster(remaining=3)
    assert run(["node", "add", "--weight", "2", "--zone", "z1"], fake, monkeypatch) == 0
    assert fake.calls == ["add weight=2 zone=z1"] and fake.remaining == 0
    out = capsys.readouterr().out
    assert "started n4" in out and "moving replicas to n4" in out and "3/3" in out


def test_node_remove_drains_waits_then_removes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCluster(remaining=0, held=4)
    assert run(["node", "remove", "n2"], fake, monkeypatch) == 0
    assert fake.calls == ["drain n2", "remove n2"] and fake.held == 0
    assert "removed n2" in capsys.readouterr().out


def test_a_drain_that_does_not_finish_in_time_exits_1_and_removes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeCluster(remaining=0, held=10_000)
    assert run(["node", "remove", "n2", "--timeout", "0.01"], fake, monkeypatch) == 1
    assert fake.calls == ["drain n2"]
    assert run(["node", "drain", "n2", "--no-wait"], FakeCluster(0, 5), monkeypatch) == 0


def test_status_shows_moves_under_way() -> None:
    partitions = (
        PartitionStatus(0, (0, 8191), "n1", ("n1", "n2", "n3", "n4"), ("n1", "n2", "n3"), 2,
                        learners=("n4",)),
        PartitionStatus(1, (8192, 16383), "n2", ("n2", "n3", "n4"), ("n2", "n3", "n4"), 3,
                        handoff="n3"),
    )  # fmt: skip
    nodes = tuple(NodeStatus(n, "127.0.0.1:1", 1, True) for n in ("n1", "n2", "n3", "n4"))
    console = Console(width=120, record=True)
    console.print(cluster_cli.render_status(ClusterStatus(nodes, partitions), compact=False))
    text: Any = console.export_text()
    assert "moves under way" in text
    moves = text.split("moves under way")[1].split("partitions")[0].splitlines()
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in moves if "│" in line]
    assert ["0", "n1", "n4", "-", "-"] in cells  # learning, not caught up yet
    assert ["1", "n2", "-", "-", "n3"] in cells  # handing over to n3
    assert ClusterStatus(nodes, partitions).to_json()["partitions"][0]["learners"] == ["n4"]
