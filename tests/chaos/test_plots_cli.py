"""Plots from synthetic operations, and ``planaria chaos compare`` / argument errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planaria.chaos.plots import plot_run
from planaria.chaos.results import CompletedOp, FaultRecord
from planaria.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_are_written(tmp_path: Path) -> None:
    ops = [
        CompletedOp(
            i % 4, "put", f"k{i}", 0, kind, i * 0.01, None if kind == "info" else i * 0.01 + 0.002
        )
        for i, kind in enumerate(["ok", "ok", "fail", "info"] * 50)
    ]
    faults = [FaultRecord("kill", "n1", 0.5, 1.0, (0,)), FaultRecord("partition", "n2", 1.2, 1.6)]
    paths = plot_run(ops, faults, tmp_path / "out", "test run")
    assert [p.name for p in paths] == ["latency.png", "throughput.png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_plots_of_an_empty_run(tmp_path: Path) -> None:
    paths = plot_run([], [], tmp_path, "empty")
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in paths)


def results(target: str, lost: int, linearizable: bool | None) -> dict[str, object]:
    return {
        "target": target, "seed": 1, "net": "iptables", "duration_s": 60,
        "ops": {"ok": 100, "fail": 2, "info": 1}, "acked_writes_lost": lost,
        "linearizable": linearizable, "faults": [],
        "failover_ms": {"p50": 1000.0, "p99": 1500.0, "max": 1500.0, "unrecovered": 0},
        "longest_write_gap_ms": 1600.0,
    }  # fmt: skip


def test_compare_prints_the_runs_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dirs = []
    for name, lost, lin in [("p", 0, True), ("r", 5529, False)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results(name, lost, lin)))
        dirs.append(str(tmp_path / name))
    assert main(["chaos", "compare", *dirs]) == 0
    out = capsys.readouterr().out
    assert "acked writes lost" in out and "5529" in out and "NO" in out


def test_compare_of_a_missing_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chaos", "compare", str(tmp_path / "nothing")]) == 2
    assert "results.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["chaos", "--faults", "melt"],
        ["chaos", "--schedule", "kill@1"],
        ["chaos", "--target", "etcd", "--bug", "ack-before-replicate", "--faults", "kill"],
        ["chaos", "--bug", "no-such-bug", "--faults", "kill"],
        ["chaos", "--nodes", "2", "--faults", "kill"],
        ["chaos", "--counters", "-1", "--faults", "kill"],
        ["chaos", "--ttls", "65", "--faults", "kill"],
        ["chaos", "frobnicate"],
    ],
)
def test_bad_arguments_fail_before_starting_anything(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip()
    assert not (tmp_path / "out" / "data").exists()


def test_the_summary_shows_counters_and_ttl_keys_or_that_they_were_skipped() -> None:
    import io

    from rich.console import Console

    from planaria.chaos.harness import summary_table

    record: dict[str, object] = {
        **results("planaria", 0, True),
        "failover_ms": {"p50": None, "p99": None, "max": None, "samples": 0, "unrecovered": 0},
        "counters": {
            "checked": True,
            "keys": [
                {"key": "c0", "acked": 3, "acked_sum": 7, "unknown": 1, "unknown_sum": 2,
                 "failed": 0, "final": 10, "lost": 0, "doubled": 1,
                 "problems": [{"check": "counter-doubled", "detail": "counter c0: 10 > 9"}]},
            ],
        },
        "ttl": {"checked": False, "skipped": "etcd target: registers only"},
    }  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table(record))
    text = out.getvalue()
    assert "counter c0" in text and "doubled 1" in text and "counter-doubled" in text
    assert "TTL keys" in text and "skipped" in text and "registers only" in text
